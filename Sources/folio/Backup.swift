import ArgumentParser
import FolioServer
import Foundation
import Logging

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup", abstract: "Take a consistent backup while the server runs, or verify one by restoring it.",
        subcommands: [Create.self, Verify.self], defaultSubcommand: Create.self)

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract: "Back up the database (pg_dump custom format, or SQLite's VACUUM INTO) with a manifest; sealed with BACKUP_ENCRYPTION_KEY when set.")
        @OptionGroup var options: EnvironmentOptions
        @Option(help: "Directory to write the backup into (default BACKUP_DIR).") var output: String?

        func run() async throws {
            let started = Date()
            let directory = try await withServices(options) { services in
                var backups = services.backups
                backups.progress = { step in print("… \(step)") }
                // A failure is said once, as the command's own `error:` line, not again as the job's log line.
                backups.logger.logLevel = .critical
                return try await backups.create(into: output.map { URL(fileURLWithPath: $0) })
            }
            print("backup written to \(directory.path) in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The restore test: check the files' SHA-256, restore into a scratch database, run ledger and audit verify, compare the manifest; exit 1 on any difference.")
        @OptionGroup var options: EnvironmentOptions
        @Argument(help: "The backup's directory.") var backup: String
        @Flag(help: "Accept a backup that is not encrypted although BACKUP_ENCRYPTION_KEY is set (one taken before encryption was set up).")
        var allowUnencrypted = false

        func run() async throws {
            let problems = try await withServices(options) { services in
                var backups = services.backups
                backups.progress = { step in print("… \(step)") }
                return try await backups.verify(URL(fileURLWithPath: backup), allowUnencrypted: allowUnencrypted)
            }
            for problem in problems { print("PROBLEM \(problem)") }
            guard problems.isEmpty else {
                print("the backup FAILED its restore test (\(problems.count) problem(s))")
                throw ExitCode.failure
            }
            print("the backup restores, its ledger and audit trail verify, and every manifest figure matches")
        }
    }
}

struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restore a backup into an empty database (anything else is refused). Stop the servers and workers first.")
    @OptionGroup var options: EnvironmentOptions
    @Argument(help: "The backup's directory.") var backup: String
    @Option(help: "The database to restore into: postgres://… or sqlite:PATH. It must be empty.") var into: String
    @Flag(help: "Accept a backup that is not encrypted although BACKUP_ENCRYPTION_KEY is set (one taken before encryption was set up).")
    var allowUnencrypted = false

    func run() async throws {
        let configuration = try options.loadConfiguration()
        guard let target = ConfigurationLoader.databaseLocation(from: into) else {
            throw ValidationError("--into must be postgres://USER:PASSWORD@HOST:PORT/NAME (sslmode disable, prefer or require, if any), postgresql://… or sqlite:PATH")
        }
        let logger = Logger.command(configuration: configuration)
        let problems: [String]
        do {
            problems = try await Backups.restore(
                URL(fileURLWithPath: backup), into: target, configuration: configuration, logger: logger, allowUnencrypted: allowUnencrypted
            ) { step in print("… \(step)") }
        } catch {
            // A refusal (not empty, changed, unknown key) or the tool's own error, in one line.
            FileHandle.standardError.write(Data("restore refused: \(DatabaseErrorText.describe(error))\n".utf8))
            throw ExitCode.failure
        }
        for problem in problems { print("PROBLEM \(problem)") }
        guard problems.isEmpty else {
            print("restored \(backup), but the copy does NOT verify (\(problems.count) problem(s)): do not put it in service. It is left at the target to be looked into; to restore again, empty the target first (drop and create the database, or delete the file).")
            throw ExitCode.failure
        }
        print("restored \(backup); its ledger and audit trail verify and every manifest figure matches. Run `folio migrate` if this build is newer.")
    }
}

struct CopyDatabase: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy-database",
        abstract: "Copy the SQLite database DATABASE_URL names into an empty PostgreSQL database, for production. Stop the servers and workers first.")
    @OptionGroup var options: EnvironmentOptions
    @Option(help: "The PostgreSQL database to copy into: postgres://… It must be empty.") var into: String

    func run() async throws {
        let configuration = try options.loadConfiguration()
        guard let target = ConfigurationLoader.databaseLocation(from: into) else {
            throw ValidationError("--into must be postgres://USER:PASSWORD@HOST:PORT/NAME (sslmode disable, prefer or require, if any) or postgresql://…")
        }
        let logger = Logger.command(configuration: configuration)
        let copied: DatabaseCopy.Copied
        do {
            copied = try await DatabaseCopy.copy(from: configuration.database, into: target, configuration: configuration, logger: logger) { step in
                print("… \(step)")
            }
        } catch let failure as DatabaseCopy.Failure {
            FileHandle.standardError.write(Data("copy-database: \(failure)\n".utf8))
            throw ExitCode.failure
        } catch {
            // The database's own words (the driver's plain description hides them): this is the operator's terminal.
            FileHandle.standardError.write(Data("copy-database failed, nothing was kept: \(DatabaseErrorText.describe(error))\n".utf8))
            throw ExitCode.failure
        }
        let rows = copied.reduce(0) { $0 + $1.rows }
        print("copied \(rows) row(s) in \(copied.count) tables; the copy's ledger and audit trail verify. Point DATABASE_URL at it, keeping SECRET_KEY.")
    }
}
