import ArgumentParser
import FolioServer
import Foundation
import Hummingbird
import Logging

@main
struct Folio: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "folio",
        abstract: "Folio: a self-hostable portfolio-management and trading server.",
        version: FolioVersion.current,
        subcommands: [Serve.self, Worker.self, Migrate.self, Users.self, Outbox.self, MailCommand.self, LedgerCommand.self, AuditCommand.self, SecretsCommand.self, BrokerCommand.self, RetentionCommand.self, BackupCommand.self, Restore.self, CopyDatabase.self, AccessReviewCommand.self]
    )

    /// ArgumentParser's own main, except that an error a command's `run` throws (a `ValidationError` found
    /// only once it runs: a missing `--yes`, say) is told with that command's usage, not the root's.
    static func main() async {
        let command: any ParsableCommand
        do { command = try parseAsRoot() } catch { exit(withError: error) }
        do {
            if var asynchronous = command as? any AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                var synchronous = command
                try synchronous.run()
            }
        } catch let error as ValidationError {
            let name = (path(to: type(of: command)) ?? ["folio"]).joined(separator: " ")
            FileHandle.standardError.write(Data("Error: \(error.message)\nSee '\(name) --help' for more information.\n".utf8))
            exit(withError: ExitCode.validationFailure)
        } catch {
            exit(withError: error)
        }
    }

    /// The words that name `target` on the command line ("folio users erase"), found in the tree of subcommands.
    static func path(to target: any ParsableCommand.Type, from node: any ParsableCommand.Type = Folio.self) -> [String]? {
        if ObjectIdentifier(node) == ObjectIdentifier(target) { return [node._commandName] }
        for subcommand in node.configuration.subcommands {
            if let rest = path(to: target, from: subcommand) { return [node._commandName] + rest }
        }
        return nil
    }
}

/// Options every command shares: which environment and which `.env` file.
struct EnvironmentOptions: ParsableArguments {
    @Option(name: .customLong("env"), help: "Environment: development, testing or production (overrides ENVIRONMENT).")
    var environment: String?

    @Option(name: .customLong("env-file"), help: "Path of the .env file to read (it must exist); the process environment wins over it. Default: ./.env, if there is one.")
    var envFile: String?

    func loadConfiguration(overrides: [String: String] = [:]) throws -> AppConfiguration {
        var override: AppConfiguration.Environment?
        if let environment {
            guard let parsed = AppConfiguration.Environment(rawValue: environment.lowercased()) else {
                throw ValidationError("--env must be development, testing or production")
            }
            override = parsed
        }
        do {
            // A file named on the command line must be there: a typo must not start another configuration.
            return try ConfigurationLoader.load(
                envFile: envFile ?? ".env", envFileRequired: envFile != nil, environmentOverride: override, overrides: overrides)
        } catch let error as ConfigurationError {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(78)  // EX_CONFIG
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the HTTP server.")

    @OptionGroup var options: EnvironmentOptions

    @Option(help: "Address to listen on (overrides HOST).")
    var host: String?

    @Option(help: "Port to listen on (overrides PORT).")
    var port: Int?

    func run() async throws {
        var overrides: [String: String] = [:]
        if let host { overrides["HOST"] = host }
        if let port { overrides["PORT"] = String(port) }
        let configuration = try options.loadConfiguration(overrides: overrides)
        EventLoopExecutor.install(for: configuration.database)
        let logger = Logger.folio(configuration: configuration)
        if case .generated(let path) = configuration.secretKeySource {
            logger.warning("SECRET_KEY is not set: using a generated development key kept in \(path). Set SECRET_KEY outside development.")
        } else {
            // Production refuses these outright; elsewhere, say so once.
            for weakness in ConfigurationLoader.weaknesses(ofSecretKey: configuration.secretKey) { logger.warning("\(weakness)") }
        }

        let database = try FolioDatabase(
            location: configuration.database, poolSize: configuration.databasePoolSize,
            preparedStatements: configuration.databasePreparedStatements, logger: logger)
        try await checkOrClose(database) {
            try await database.prepareConnectionSettings()
            try await refuseNewerSchema(database, saying: "Folio will not start", closing: false)
            let pending = try await database.pendingMigrations()
            if !pending.isEmpty {
                if configuration.isProduction {
                    FileHandle.standardError.write(Data("Folio will not start: \(pending.count) migration(s) pending (\(pending.joined(separator: ", "))). Run `folio migrate` first.\n".utf8))
                    throw ExitCode(78)
                }
                try await database.migrate()
                logger.info("applied pending migrations", metadata: ["migrations": .array(pending.map { .string($0) })])
            }
        }

        logger.info("starting Folio", metadata: [
            "environment": .string(configuration.environment.rawValue), "database": .string(database.kind.rawValue),
            "address": .string("\(configuration.host):\(configuration.port)"), "version": .string(FolioVersion.current),
        ])
        let services = await FolioServices(.live(configuration: configuration, logger: logger, database: database))
        try await prepareOrClose(services, database)
        let application = try services.buildApplication()
        try await runThenClose(database, port: "\(configuration.host):\(configuration.port)") {
            try await FolioServices.runUntilSignalled(application, logger: logger)
        }
        logger.info("Folio stopped")
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply pending database migrations, list them, or revert the last batch.")

    @OptionGroup var options: EnvironmentOptions

    @Flag(help: "List applied and pending migrations by name; change nothing.")
    var list = false

    @Flag(help: "Revert the most recently applied batch.")
    var revert = false

    @Flag(help: "Confirm --revert in production (it drops what the batch added).")
    var yes = false

    func validate() throws {
        if list && revert { throw ValidationError("--list and --revert cannot be combined") }
    }

    func run() async throws {
        let configuration = try options.loadConfiguration()
        if revert, configuration.environment == .production, !yes {
            throw ValidationError("--revert drops the tables and columns the last batch added, with what they hold; in production confirm with --yes (after a backup)")
        }
        // Listing or reverting reads: a SQLite file that does not exist yet is not made (and left behind) for it.
        if list || revert, case .sqlite(let path) = configuration.database, !FileManager.default.fileExists(atPath: path) {
            FileHandle.standardError.write(Data("No database at \(path) yet.\n".utf8))
            if list { for name in FolioDatabase.migrationNames { print("pending  \(name)") } } else { print("Nothing to revert.") }
            return
        }
        let logger = Logger.command(configuration: configuration)
        let database = try FolioDatabase(
            location: configuration.database, poolSize: 1, preparedStatements: configuration.databasePreparedStatements, logger: logger)
        do {
            // busy_timeout and the rest: a migration beside a running server waits for its writes rather than failing.
            try await database.prepareConnectionSettings()
            if list {
                let status = try await database.migrationStatus()
                for (name, batch) in status.applied {
                    print("applied  \(name)  (batch \(batch))" + (status.newer.contains(name) ? "  NEWER: not known to this build" : ""))
                }
                for name in status.pending { print("pending  \(name)") }
                // Nothing applied, yet tables: another application's database, which `folio migrate` refuses.
                if status.applied.isEmpty, try await !database.isEmpty() {
                    FileHandle.standardError.write(Data("warning: \(FolioDatabase.NotFolios().description.replacingOccurrences(of: "; nothing was changed", with: ""))\n".utf8))
                }
            } else if revert {
                let reverted = try await database.revertLastBatch()
                print(reverted.isEmpty ? "Nothing to revert." : reverted.map { "reverted \($0)" }.joined(separator: "\n"))
            } else {
                let applied = try await database.migrate()
                print(applied.isEmpty ? "No pending migrations." : applied.map { "applied  \($0)" }.joined(separator: "\n"))
                // Anchor what an upgrade carried over (the legacy audit chain's head) now, not at the next start; run
                // again with nothing to apply, it finishes what an earlier run that stopped here left.
                try await FolioServices(.live(configuration: configuration, logger: logger, database: database)).prepare()
            }
        } catch {
            await database.shutdown()
            FileHandle.standardError.write(Data("migrate failed: \(DatabaseErrorText.describe(error))\n".utf8))
            throw ExitCode.failure
        }
        await database.shutdown()
    }
}

struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the job worker alone (order submission and matching), without HTTP.")

    @OptionGroup var options: EnvironmentOptions

    func run() async throws {
        let configuration = try options.loadConfiguration()
        EventLoopExecutor.install(for: configuration.database)
        // The worker works on the database `serve` or `migrate` made.
        try requireSQLiteFile(configuration, saying: "Folio will not start")
        let logger = Logger.folio(configuration: configuration)
        let database = try FolioDatabase(
            location: configuration.database, poolSize: configuration.databasePoolSize,
            preparedStatements: configuration.databasePreparedStatements, logger: logger)
        try await checkOrClose(database) {
            try await database.prepareConnectionSettings()
            try await refuseNewerSchema(database, saying: "Folio will not start", closing: false)
            let pending = try await database.pendingMigrations()
            guard pending.isEmpty else {
                FileHandle.standardError.write(Data("\(pending.count) migration(s) pending; run `folio migrate` first.\n".utf8))
                throw ExitCode(78)
            }
        }
        let services = await FolioServices(.live(configuration: configuration, logger: logger, database: database))
        try await prepareOrClose(services, database)
        try await runThenClose(database, port: nil) { try await services.runWorker() }
        logger.info("Folio stopped")
    }
}

/// Exits 66 when the SQLite file configured is not there: opening a path creates it, and a mistyped one must
/// not become an empty database that `folio migrate` is then advised for. `serve` and `migrate` create the
/// database; every other command needs one there.
func requireSQLiteFile(_ configuration: AppConfiguration, saying prefix: String) throws {
    guard case .sqlite(let path) = configuration.database, !FileManager.default.fileExists(atPath: path) else { return }
    FileHandle.standardError.write(Data("\(prefix): there is no SQLite database at \(path); check DATA_DIR or DATABASE_URL (`folio serve` or `folio migrate` creates one)\n".utf8))
    throw ExitCode(66)  // EX_NOINPUT
}

/// Runs `serve`'s or `worker`'s checks of the database it just opened. An exit a check asks for, or any
/// failure (said in one line: the database is not usable), closes the database first.
func checkOrClose(_ database: FolioDatabase, _ checks: () async throws -> Void) async throws {
    do {
        try await checks()
    } catch let error as ExitCode {
        await database.shutdown()
        throw error
    } catch {
        await database.shutdown()
        FileHandle.standardError.write(Data("Folio will not start: the database is not usable: \(DatabaseErrorText.describe(error))\n".utf8))
        throw ExitCode.failure
    }
}

/// Prepares `serve`'s or `worker`'s services (the audit trail's anchors and the
/// like); on a failure the database is closed before the command exits, and the
/// reason said in a line of its own.
func prepareOrClose(_ services: FolioServices, _ database: FolioDatabase) async throws {
    do {
        try await services.prepare()
    } catch {
        await database.shutdown()
        FileHandle.standardError.write(Data("Folio will not start: \(DatabaseErrorText.describe(error))\n".utf8))
        throw ExitCode.failure
    }
}

/// Runs `serve`'s or `worker`'s services, then closes the database: only
/// once every service has stopped, however they stopped. A failure is said on
/// standard error (a port taken, say: the server's own listener is PORT's),
/// and the command exits with failure.
func runThenClose(_ database: FolioDatabase, port: String?, _ services: () async throws -> Void) async throws {
    do {
        try await services()
    } catch {
        await database.shutdown()
        FileHandle.standardError.write(Data("Folio stopped: \(ListenerFailure.reason(stopping: error, port: port))\n".utf8))
        throw ExitCode.failure
    }
    await database.shutdown()
}

extension Logger {
    /// Folio's logger for a one-off command: warnings and worse, on standard error, so its own output (an
    /// export, a list, JSON) stays readable and whole when piped.
    static func command(configuration: AppConfiguration) -> Logger {
        var logger = Logger.folio(configuration: configuration, sink: StandardError.writeLine)
        logger.logLevel = .warning
        return logger
    }
}

/// Exits 78 when a newer Folio migrated the database, saying so after `prefix`; `closing` closes the database
/// first (a caller whose own error path closes it passes false).
func refuseNewerSchema(_ database: FolioDatabase, saying prefix: String, closing: Bool = true) async throws {
    do {
        try await database.refuseNewerSchema()
    } catch let newer as FolioDatabase.NewerSchema {
        if closing { await database.shutdown() }
        FileHandle.standardError.write(Data("\(prefix): \(newer)\n".utf8))
        throw ExitCode(78)
    }
}

/// Stored text (a mail's body, a vendor's words) as a terminal may be given it: every control character but a line
/// break or a tab shown as `^X` or `\u{…}`, and text-direction controls dropped, so nothing in it can move the cursor,
/// retitle the window or reverse what follows.
func terminalSafe(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: { ($0.properties.generalCategory == .control && $0 != "\n" && $0 != "\t") || $0.properties.isBidiControl }) else {
        return text
    }
    var shown = ""
    for scalar in text.unicodeScalars {
        if scalar.properties.isBidiControl { continue }
        if scalar.properties.generalCategory == .control, scalar != "\n", scalar != "\t" {
            shown += scalar.value < 0x20 ? "^" + String(UnicodeScalar(UInt8(scalar.value) + 0x40)) : "\\u{\(String(scalar.value, radix: 16))}"
        } else {
            shown.unicodeScalars.append(scalar)
        }
    }
    return shown
}
