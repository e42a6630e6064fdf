import FluentKit
import FolioDomain
import Foundation
import Logging
import Testing

@testable import FolioServer

/// Runs the built `folio` executable as a user would, in a scratch directory.
struct FolioProcess {
    static let executable: URL = {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("folio")
        if FileManager.default.isExecutableFile(atPath: beside.path) { return beside }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/folio")
    }()

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    let directory: URL

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("folio-cli-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    func cleanUp() {
        // A development run generates its signing key here: it is a configured secret too.
        let files = FileManager.default.enumerator(atPath: directory.path)?.compactMap { $0 as? String } ?? []
        for file in files where file.hasSuffix("secret_key") {
            if let key = try? String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8) {
                TestLogArchive.recordSecrets([key.trimmingCharacters(in: .whitespacesAndNewlines)])
            }
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// Starts `folio` with `arguments` in this directory, its output in pipes
    /// and, with `input`, a pipe for its standard input too.
    func start(_ arguments: [String], environment: [String: String], input: Bool = false) throws -> ChildProcess {
        // Only what the test names: nothing leaks in from the developer's shell.
        let environment = ["PATH": "/usr/bin:/bin", "HOME": directory.path].merging(environment) { _, new in new }
        TestLogArchive.recordSecrets(inEnvironment: environment)
        return try ChildProcess(
            Self.executable.path, arguments, environment: environment, directory: directory.path,
            input: input ? .pipe : .null, output: .pipe, error: .pipe)
    }

    func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> Result {
        try await finish(start(arguments, environment: environment))
    }

    /// Reads both of the process's outputs to their ends and waits for its exit,
    /// without holding a thread (the fakes it talks to run on the same few).
    func finish(_ process: ChildProcess) async -> Result {
        let stdout = OutputLines(), stderr = OutputLines()
        stdout.attach(process.standardOutput!)
        stderr.attach(process.standardError!)
        let status = await process.exited(within: .seconds(300)).status
        return Result(status: status, stdout: await stdout.text(), stderr: await stderr.text())
    }
}

@Suite("folio commands", .serialized)
struct CommandTests {
    @Test("production with no settings exits non-zero naming SECRET_KEY, ALLOWED_ORIGINS and the database")
    func productionRefuses() async throws {
        let folio = try FolioProcess()
        defer { folio.cleanUp() }
        let result = try await folio.run(["serve"], environment: ["ENVIRONMENT": "production"])
        #expect(result.status == 78)
        #expect(result.stderr.contains("SECRET_KEY is not set"))
        #expect(result.stderr.contains("ALLOWED_ORIGINS is empty"))
        #expect(result.stderr.contains("DATABASE_URL does not name PostgreSQL"))
        #expect(!result.stderr.contains("Fatal error"))
        #expect(!FileManager.default.fileExists(atPath: folio.directory.appendingPathComponent("var").path))
    }

    @Test("a command whose PostgreSQL cannot be reached says so in a line of its own words, not PostgresNIO's generic description")
    func unreachableDatabase() async throws {
        let folio = try FolioProcess()
        defer { folio.cleanUp() }
        let port = try LoopbackPort.free()
        for command in [["ledger", "verify"], ["access-review"], ["backup"]] {
            let result = try await folio.run(command, environment: ["DATABASE_URL": "postgres://folio@127.0.0.1:\(port)/folio?sslmode=disable", "SECRET_KEY": ProcessCrashTests.secretKey])
            #expect(result.status == 1, "\(command): \(result.stderr)")
            #expect(result.stderr.contains("cannot connect to PostgreSQL"), "\(command): \(result.stderr)")
            #expect(!result.stderr.contains("Generic description"), "\(command): \(result.stderr)")
            // Where it tried and why, in words: no NIO structures. And the log stays off standard output.
            #expect(result.stderr.contains("127.0.0.1:\(port): connection refused"), "\(command): \(result.stderr)")
            // (The pool's own JSON log line, on standard error too, keeps the driver's detail for whoever reads logs.)
            let said = result.stderr.split(separator: "\n").filter { !$0.hasPrefix("{") }
            #expect(!said.contains { $0.contains("SingleConnectionFailure") }, "\(command): \(said)")
            #expect(result.stdout.isEmpty, "\(command): \(result.stdout)")
        }
        // The worker and the server: no crash (the pool closed before exit), one line, exit 1.
        for command in [["worker"], ["serve", "--port", "0"]] {
            let result = try await folio.run(command, environment: ["DATABASE_URL": "postgres://folio@127.0.0.1:\(port)/folio?sslmode=disable", "SECRET_KEY": ProcessCrashTests.secretKey])
            #expect(result.status == 1, "\(command): \(result.status) \(result.stderr)")
            #expect(result.stderr.contains("Folio will not start: the database is not usable: cannot connect to PostgreSQL"), "\(command): \(result.stderr)")
        }
    }

    @Test("the worker needs the database serve or migrate made: at a SQLite path where there is none it makes none, and says so")
    func workerWithoutDatabase() async throws {
        let folio = try FolioProcess()
        defer { folio.cleanUp() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("folio-worker-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("typo.sqlite").path
        let result = try await folio.run(["worker"], environment: ["DATABASE_URL": "sqlite:" + path, "SECRET_KEY": ProcessCrashTests.secretKey])
        #expect(result.status == 66 && result.stderr.contains("there is no SQLite database at \(path)"), "\(result.status) \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("a settings file that cannot be read is told in words (no Foundation error domains); /dev/null is no settings")
    func unreadableSettingsFile() async throws {
        let folio = try FolioProcess()
        defer { folio.cleanUp() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("folio-env-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let latin1 = directory.appendingPathComponent("latin1.env")
        try Data([0x4C, 0x4F, 0x47, 0x5F, 0x4C, 0x45, 0x56, 0x45, 0x4C, 0x3D, 0xE9, 0x0A]).write(to: latin1)
        let notText = try await folio.run(["migrate", "--list", "--env-file", latin1.path], environment: [:])
        #expect(notText.status == 78 && notText.stderr.contains("latin1.env: is not UTF-8 text"), "\(notText.stderr)")
        #expect(!notText.stderr.contains("NSCocoaErrorDomain"))
        let empty = try await folio.run(["migrate", "--list", "--env-file", "/dev/null"], environment: ["DATABASE_URL": "sqlite:" + directory.appendingPathComponent("none.sqlite").path])
        #expect(empty.status == 0, "\(empty.stderr)")
    }

    @Test("a 16-byte production key is named with its length")
    func productionShortKey() async throws {
        let folio = try FolioProcess()
        defer { folio.cleanUp() }
        let result = try await folio.run(["serve", "--env", "production"], environment: ["SECRET_KEY": "0123456789abcdef"])
        #expect(result.status == 78)
        #expect(result.stderr.contains("SECRET_KEY is 16 bytes; it must be at least 32 bytes"))
    }

    @Test("production refuses to serve while migrations are pending and says to run folio migrate (PostgreSQL only: production refuses SQLite)", .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func productionPendingMigrations() async throws {
        try await withTestDatabase(.postgres, migrated: false) { _, location in
            guard case .postgres(let url) = location else { return }
            let folio = try FolioProcess()
            defer { folio.cleanUp() }
            let result = try await folio.run(["serve", "--port", "0"], environment: [
                "ENVIRONMENT": "production", "BACKUP_ENCRYPTION_KEY": "Qm9yLXRoaXMtaXMtYS10ZXN0LWJhY2t1cC1rZXktb2YtNDgtYnl0ZXMh", "PUBLIC_URL": "https://folio.example.com", "SECRET_KEY": "3f9c2b7e8a1d4c6f0b5e9a2d7c4f1e8b6a3d0c9f5e2b8a7d4c1f6e3b0a9d5c2e",
                "ALLOWED_ORIGINS": "https://app.example.com", "DATABASE_URL": url, "MAIL_BACKEND": "outbox", "MARKET_DATA": "simulated",
            ])
            #expect(result.status == 78)
            let names = MigrationRegistry.all.map(\.name)
            #expect(result.stderr.contains("\(names.count) migration(s) pending (\(names.joined(separator: ", "))). Run `folio migrate` first."))
        }
    }

    @Test("migrate --list, migrate and migrate --revert", arguments: TestDatabaseKind.all)
    func migrateCommands(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind, migrated: false) { _, location in
            let folio = try FolioProcess()
            defer { folio.cleanUp() }
            let url = location.databaseURL
            let environment = ["DATABASE_URL": url]
            let names = MigrationRegistry.all.map(\.name)
            func lines(_ prefix: String, _ names: [String], suffix: String = "") -> String {
                names.map { "\(prefix)\($0)\(suffix)\n" }.joined()
            }
            #expect(try await folio.run(["migrate", "--list"], environment: environment).stdout == lines("pending  ", names))
            #expect(try await folio.run(["migrate"], environment: environment).stdout == lines("applied  ", names))
            #expect(try await folio.run(["migrate", "--list"], environment: environment).stdout == lines("applied  ", names, suffix: "  (batch 1)"))
            #expect(try await folio.run(["migrate"], environment: environment).stdout == "No pending migrations.\n")
            #expect(try await folio.run(["migrate", "--revert"], environment: environment).stdout == lines("reverted ", names.reversed()))
            #expect(try await folio.run(["migrate", "--list"], environment: environment).stdout == lines("pending  ", names))
            // Listing or reverting where no SQLite file is yet: the list, and no file made for it.
            if case .sqlite(let path) = location {
                let missing = path + "-not-yet.db"
                let listed = try await folio.run(["migrate", "--list"], environment: ["DATABASE_URL": "sqlite:" + missing])
                #expect(listed.status == 0 && listed.stdout == lines("pending  ", names) && listed.stderr.contains("No database at"), "\(listed.stderr)")
                #expect(try await folio.run(["migrate", "--revert"], environment: ["DATABASE_URL": "sqlite:" + missing]).stdout == "Nothing to revert.\n")
                #expect(!FileManager.default.fileExists(atPath: missing))
            }

            // A database a newer Folio migrated: this build neither migrates, reverts, serves nor works on it, and says why.
            #expect(try await folio.run(["migrate"], environment: environment).status == 0)
            let newer = try FolioDatabase(location: location, poolSize: 1, preparedStatements: false, logger: Logger(label: "newer"))
            try await newer.sql.raw("INSERT INTO _fluent_migrations (id, name, batch, created_at, updated_at) VALUES (\(bind: UUID()), '999_from_a_newer_folio', 2, \(bind: Date()), \(bind: Date()))").run()
            await newer.shutdown()
            for command in [["migrate"], ["migrate", "--revert"], ["serve"], ["worker"], ["users", "list"]] {
                // A server that started after all is stopped, to fail here rather than hang.
                let process = try folio.start(command, environment: environment.merging(["PORT": "18971", "METRICS_PORT": "18972"]) { a, _ in a })
                let watchdog = Task { try await Task.sleep(for: .seconds(60)); process.signal(SIGKILL) }
                let refused = await folio.finish(process)
                watchdog.cancel()
                #expect(refused.status != 0, "\(command)")
                #expect(refused.stderr.contains("migrated by a newer Folio (999_from_a_newer_folio)"), "\(command): \(refused.stderr)")
            }
            #expect(try await folio.run(["migrate", "--list"], environment: environment).stdout.contains("applied  999_from_a_newer_folio  (batch 2)  NEWER: not known to this build"))
            // A database that is not there: what PostgreSQL said, in a line, not PostgresNIO's generic text.
            if kind == .postgres, let slash = url.range(of: "/", options: .backwards) {
                let base = url[..<slash.lowerBound]
                let missing = try await folio.run(["migrate"], environment: ["DATABASE_URL": base + "/folio_not_there?sslmode=disable"])
                #expect(missing.status == 1)
                #expect(missing.stderr.contains(#"migrate failed: PostgreSQL says: database "folio_not_there" does not exist [SQLSTATE 3D000]"#), "\(missing.stderr)")
            }
        }
    }

    @Test("backup, backup verify and restore as an operator runs them: sealed, verified, into an empty database only", arguments: TestDatabaseKind.all)
    func backupCommands(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind) { _, location in
            let folio = try FolioProcess()
            defer { folio.cleanUp() }
            let environment = ["DATABASE_URL": location.databaseURL, "BACKUP_ENCRYPTION_KEY": String(repeating: "k7", count: 24)]
            let taken = try await folio.run(["backup", "--output", folio.directory.appendingPathComponent("backups").path], environment: environment)
            #expect(taken.status == 0, "\(taken.stderr)")
            let path = try #require(taken.stdout.split(separator: "\n").last { $0.hasPrefix("backup written to ") }?
                .dropFirst("backup written to ".count).split(separator: " ").first.map(String.init))
            #expect(FileManager.default.fileExists(atPath: path + "/" + (kind == .sqlite ? "database.sqlite.enc" : "database.dump.enc")))
            // An --output that is a file is said so in one line, not in Foundation's words.
            let intoFile = try await folio.run(["backup", "--output", path + "/manifest.json"], environment: environment)
            #expect(intoFile.status == 1 && intoFile.stderr == "error: \(path)/manifest.json is a file; backups are written into a directory\n", "\(intoFile.stderr)")

            let verified = try await folio.run(["backup", "verify", path], environment: environment)
            #expect(verified.status == 0, "\(verified.stdout) \(verified.stderr)")
            #expect(verified.stdout.contains("every manifest figure matches"))

            let refused = try await folio.run(["restore", path, "--into", location.databaseURL], environment: environment)
            #expect(refused.status == 1)
            #expect(refused.stderr.contains("not empty"))
            try await withTestDatabase(kind, migrated: false) { target, empty in
                await target.shutdown()
                let restored = try await folio.run(["restore", path, "--into", empty.databaseURL], environment: environment)
                #expect(restored.status == 0, "\(restored.stdout) \(restored.stderr)")
                #expect(restored.stdout.contains("its ledger and audit trail verify"))
            }
        }
    }

    @Test("users create-admin reads the password from standard input; ledger verify exits 1 on a difference", arguments: TestDatabaseKind.all)
    func usersAndLedgerCommands(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind) { database, location in
            let folio = try FolioProcess()
            defer { folio.cleanUp() }
            let url = location.databaseURL
            let environment = ["DATABASE_URL": url, "BCRYPT_COST": "10"]
            let process = try folio.start(["users", "create-admin", "Root@Example.com"], environment: environment, input: true)
            process.standardInput!.write(Data("correct horse battery staple\n".utf8))
            try process.standardInput!.close()
            let created = await folio.finish(process)
            #expect(created.status == 0)
            #expect(created.stdout.hasPrefix("created administrator root@example.com"))
            #expect(try await folio.run(["users", "list"], environment: environment).stdout.contains("admin  verified,active"))
            // With SendGrid, an empty outbox says where the mail goes instead.
            let viaSendGrid = try await folio.run(["outbox"], environment: environment.merging(["SENDGRID_API_KEY": "SG.test", "MAIL_FROM": "folio@example.com"]) { a, _ in a })
            #expect(viaSendGrid.status == 0 && viaSendGrid.stdout.contains("mail goes through SendGrid here"), "\(viaSendGrid.stdout)")

            let balanced = try await folio.run(["ledger", "verify"], environment: environment)
            #expect(balanced.status == 0)
            #expect(balanced.stdout == "checked 1 account(s): the ledger balances\n")
            // Dividends and fees posted by an operator keep the books balanced.
            let store = TradingStore(database: database)
            let accountID = try #require(try await store.allAccounts(on: database.sql).first?.id.description)
            // A dividend names a symbol the account holds or held (its holding row stays when sold out).
            let unnamed = try await folio.run(["ledger", "post", accountID, "--type", "dividend", "--amount", "12.34"], environment: environment)
            #expect(unnamed.status == 1)
            #expect(unnamed.stderr.contains("a dividend needs the symbol"))
            let neverHeld = try await folio.run(["ledger", "post", accountID, "--type", "dividend", "--amount", "12.34", "--symbol", "aapl"], environment: environment)
            #expect(neverHeld.status == 1)
            #expect(neverHeld.stderr.contains("the account never held AAPL"))
            try await database.sql.raw("""
                INSERT INTO holdings (id, account_id, user_id, symbol, quantity, reserved_quantity, cost_basis, created_at, updated_at)
                SELECT \(bind: UUID()), id, user_id, 'AAPL', 0, 0, 0, created_at, created_at FROM accounts
                """).run()
            let dividend = try await folio.run(["ledger", "post", accountID, "--type", "dividend", "--amount", "12.34", "--symbol", "aapl"], environment: environment)
            #expect(dividend.status == 0)
            #expect(dividend.stdout.contains("posted dividend 12.34"))
            let fee = try await folio.run(["ledger", "post", accountID, "--type", "fee", "--amount", "2.30"], environment: environment)
            #expect(fee.stdout.hasSuffix("cash now \(try #require(try await store.allAccounts(on: database.sql).first).cash)\n"))
            let tooMuch = try await folio.run(["ledger", "post", accountID, "--type", "fee", "--amount", "999999999"], environment: environment)
            #expect(tooMuch.status == 1)
            #expect(tooMuch.stderr.contains("exceeds the account's available cash"))
            // A slip in exponent form is refused, not read as a thousand.
            let exponent = try await folio.run(["ledger", "post", accountID, "--type", "fee", "--amount", "1e3"], environment: environment)
            #expect(exponent.status != 0 && exponent.stderr.contains("plain digits"), "\(exponent.stderr)")
            // Nothing, less than nothing, or a fraction of a cent: usage errors, told before the database is opened.
            for bad in ["0", "-1.50", "1.555"] {
                let refused = try await folio.run(["ledger", "post", accountID, "--type", "fee", "--amount", bad], environment: environment)
                #expect(refused.status == 64 && refused.stderr.contains("--amount must be"), "\(bad): \(refused.status) \(refused.stderr)")
            }
            // record-fills' arguments too: usage errors, before the database is opened.
            for arguments in [["not-a-uuid", "--quantity", "1", "--price", "10"], [UUID().uuidString, "--quantity", "-1", "--price", "10"], [UUID().uuidString, "--quantity", "1", "--price", "0"]] {
                let refused = try await folio.run(["broker", "record-fills"] + arguments, environment: environment)
                #expect(refused.status == 64, "\(arguments): \(refused.status) \(refused.stderr)")
            }
            // An address that is none is told as a typo, not "no mail was stopped for it".
            let notAnAddress = try await folio.run(["mail", "unsuppress", "not an email"], environment: environment)
            #expect(notAnAddress.status == 64 && notAnAddress.stderr.contains("is not an email address"), "\(notAnAddress.stderr)")
            // A refusal found as a command runs names that command's usage, not the root's `folio <subcommand>`.
            let unconfirmed = try await folio.run(["audit", "open-person-chain", "root@example.com"], environment: environment)
            #expect(unconfirmed.status == 64 && unconfirmed.stderr.contains("confirm with --yes"), "\(unconfirmed.stderr)")
            #expect(!unconfirmed.stderr.contains("folio <subcommand>"), "\(unconfirmed.stderr)")
            let rows = try await store.entries(of: try #require(AccountID(accountID)), on: database.sql).map(\.line).filter { $0.kind == .dividend || $0.kind == .fee }
            #expect(rows.map(\.amount.description).sorted() == ["-2.30", "12.34"])
            #expect(rows.first { $0.kind == .dividend }?.symbol == "AAPL")
            #expect(try await folio.run(["ledger", "verify"], environment: environment).status == 0)
            #expect(try await folio.run(["audit", "verify"], environment: environment).status == 0)
            // Run twice (shell history, a retry after a lost answer): refused, not posted twice; --again posts it.
            let twice = try await folio.run(["ledger", "post", accountID, "--type", "fee", "--amount", "2.30"], environment: environment)
            #expect(twice.status == 1 && twice.stderr.contains("an identical posting was made to this account"), "\(twice.stderr)")
            #expect(try await folio.run(["ledger", "post", accountID, "--type", "fee", "--amount", "2.30", "--again"], environment: environment).status == 0)
            // A blank description leaves the statement its own words; a long one is a usage error.
            #expect(try await folio.run(["ledger", "post", accountID, "--type", "fee", "--amount", "0.50", "--description", " "], environment: environment).status == 0)
            let fees = try await store.entries(of: try #require(AccountID(accountID)), on: database.sql).map(\.line).filter { $0.kind == .fee }
            #expect(fees.map(\.description) == ["Fee", "Fee", "Fee"], "\(fees)")
            let long = try await folio.run(["ledger", "post", accountID, "--type", "fee", "--amount", "0.50", "--description", String(repeating: "x", count: 201)], environment: environment)
            #expect(long.status == 64 && long.stderr.contains("--description may have at most 200"), "\(long.stderr)")

            try await database.sql.raw("UPDATE accounts SET cash = '5'").run()
            let broken = try await folio.run(["ledger", "verify"], environment: environment)
            #expect(broken.status == 1)
            #expect(broken.stdout.contains("DIFFERENCE account"))

            // A second administrator, so the first may be demoted.
            let second = try folio.start(["users", "create-admin", "second@example.com"], environment: environment, input: true)
            second.standardInput!.write(Data("correct horse battery staple\n".utf8))
            try second.standardInput!.close()
            #expect(await folio.finish(second).status == 0)

            // set-role: the new role shows, and the user's sessions end so it applies at once.
            #expect(try await folio.run(["users", "set-role", "root@example.com", "superuser"], environment: environment).status != 0)
            // A role that does not exist is a usage error, as a wrong option is.
            let noSuchRole = try await folio.run(["users", "set-role", "root@example.com", "superuser"], environment: environment)
            #expect(noSuchRole.status == 64 && noSuchRole.stderr.contains("user, admin"), "\(noSuchRole.status) \(noSuchRole.stderr)")
            let demoted = try await folio.run(["users", "set-role", "Root@Example.com", "user"], environment: environment)
            #expect(demoted.status == 0, "\(demoted.stderr)")
            #expect(try await folio.run(["users", "list"], environment: environment).stdout.contains("user   verified,active"))
            // The role they have already: nothing changes, and no role change is audited.
            let roleChanges = { try await database.sql.raw("SELECT COUNT(*) AS n FROM audit_events WHERE action = 'admin.role_changed'").first()?.decode(column: "n", as: Int.self) }
            let changesBefore = try await roleChanges()
            let again = try await folio.run(["users", "set-role", "root@example.com", "user"], environment: environment)
            #expect(again.status == 0 && again.stdout == "root@example.com was user already\n", "\(again.stdout) \(again.stderr)")
            #expect(try await roleChanges() == changesBefore)
            #expect(try await folio.run(["users", "set-role", "nobody@example.com", "admin"], environment: environment).stderr.contains("no user with email"))

            // The last enabled administrator can be neither demoted nor disabled; `users enable` is the way back from a disable.
            let lastDemoted = try await folio.run(["users", "set-role", "second@example.com", "user"], environment: environment)
            #expect(lastDemoted.status == 1)
            #expect(lastDemoted.stderr.contains("the only enabled administrator"))
            #expect(try await folio.run(["users", "disable", "second@example.com"], environment: environment).stderr.contains("the only enabled administrator"))
            #expect(try await folio.run(["users", "set-role", "root@example.com", "admin"], environment: environment).status == 0)
            #expect(try await folio.run(["users", "disable", "root@example.com"], environment: environment).stdout == "disabled root@example.com\n")
            #expect(try await folio.run(["users", "disable", "root@example.com"], environment: environment).stdout == "root@example.com was disabled already\n")
            #expect(try await folio.run(["users", "enable", "root@example.com"], environment: environment).stdout == "enabled root@example.com\n")
            #expect(try await folio.run(["users", "list"], environment: environment).stdout.contains("admin  verified,active"))
            let disables = try await database.sql.raw("SELECT COUNT(*) AS n FROM audit_events WHERE action = 'admin.user_disabled'").first()
            #expect(try disables?.decode(column: "n", as: Int.self) == 1, "a disable that changed nothing is not audited")
            // The access review as JSON writes its keys as the API does (snake_case).
            let review = try await folio.run(["access-review", "--format", "json"], environment: environment)
            let reviewed = try JSONSerialization.jsonObject(with: Data(review.stdout.utf8)) as? [String: Any]
            #expect(reviewed?["period_days"] as? Int == 30 && (reviewed?["role_changes"] as? [Any])?.isEmpty == false, "\(review.stdout)")
            // An event's details are an object, as the API gives them, not JSON text inside a string.
            let change = (reviewed?["role_changes"] as? [[String: Any]])?.first
            #expect((change?["details"] as? [String: Any])?["role"] is String, "\(String(describing: change))")

            // An erased person's row changes no more. Erased by id, as the `user.erased` audit events name people
            // to erase again after a restore.
            let secondID = try #require(try await database.sql.raw("SELECT id FROM users WHERE email = 'second@example.com'").first()?.decode(column: "id", as: UUID.self))
            let erasedByID = try await folio.run(["users", "erase", secondID.lowercasedString, "--yes"], environment: environment)
            #expect(erasedByID.status == 0 && erasedByID.stdout.hasPrefix("erased \(secondID.lowercasedString): "), "\(erasedByID.stdout) \(erasedByID.stderr)")
            #expect(try await folio.run(["users", "erase", secondID.lowercasedString, "--yes"], environment: environment).stderr.contains("was already erased"))
            #expect(try await folio.run(["users", "erase", UUID().lowercasedString, "--yes"], environment: environment).stderr.contains("no user with id"))
            let erased = try #require(try await database.sql.raw("SELECT email FROM users WHERE erased_at IS NOT NULL").first()?.decode(column: "email", as: String.self))
            let erasedRole = try await database.sql.raw("SELECT role FROM users WHERE erased_at IS NOT NULL").first()?.decode(column: "role", as: String.self)
            #expect(erasedRole == "user", "an erased administrator is no administrator, for any check that forgets erased_at")
            #expect(try await folio.run(["users", "list"], environment: environment).stdout.split(separator: "\n").contains { $0.contains("erased.invalid") && !$0.contains("admin") })
            // …and says so, rather than passing for a disabled account.
            #expect(try await folio.run(["users", "list"], environment: environment).stdout.split(separator: "\n").contains { $0.contains("erased.invalid") && $0.contains(",erased ") })
            for command in [["set-role", erased, "admin"], ["disable", erased], ["enable", erased]] {
                let refused = try await folio.run(["users"] + command, environment: environment)
                #expect(refused.status == 1 && refused.stderr.contains("was erased"), "\(command): \(refused.stderr)")
            }
            // A fee posted to an erased person's (closed) account is booked (the books follow the money), but tells no
            // one: no notification, no mail to the pseudonymous address.
            let closedAccount = try #require(try await database.sql.raw("SELECT id FROM accounts WHERE user_id = \(bind: secondID)").first()?.decode(column: "id", as: UUID.self))
            let notices = { try await database.sql.raw("SELECT COUNT(*) AS n FROM notifications WHERE user_id = \(bind: secondID)").first()?.decode(column: "n", as: Int.self) }
            let mails = { try await database.sql.raw("SELECT COUNT(*) AS n FROM mail_messages WHERE user_id = \(bind: secondID)").first()?.decode(column: "n", as: Int.self) }
            let (noticesBefore, mailsBefore) = (try await notices(), try await mails())
            let posted = try await folio.run(["ledger", "post", closedAccount.lowercasedString, "--type", "fee", "--amount", "1.00"], environment: environment)
            #expect(posted.status == 0 && posted.stdout.contains("posted fee 1.00"), "\(posted.stdout) \(posted.stderr)")
            let (noticesAfter, mailsAfter) = (try await notices(), try await mails())
            #expect(noticesAfter == noticesBefore && mailsAfter == mailsBefore, "\(String(describing: noticesAfter)) \(String(describing: mailsAfter))")

            // A settings file named on the command line must exist: a typo does not start another configuration.
            let typo = try await folio.run(["users", "list", "--env-file", "/nonexistent/folio.env"], environment: environment)
            #expect(typo.status == 78)
            #expect(typo.stderr.contains("/nonexistent/folio.env: no such file"), "\(typo.stderr)")

            // An audit row changed behind the append-only guard: audit verify names the link and exits 1.
            if kind == .postgres {
                try await database.sql.raw("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only").run()
            } else {
                try await database.sql.raw("DROP TRIGGER audit_events_no_update").run()
            }
            try await database.sql.raw("UPDATE audit_events SET details = '{\"amount\":\"1000000.00\"}' WHERE action = 'ledger.dividend'").run()
            let tampered = try await folio.run(["audit", "verify"], environment: environment)
            #expect(tampered.status == 1)
            #expect(tampered.stdout.hasPrefix("BROKEN "), "\(tampered.stdout)")
            #expect(tampered.stdout.contains("the chain is broken"))
        }
    }

    @Test("serve with no configuration at all answers GET /health, then stops on SIGTERM with status 0")
    func serveOutOfTheBox() async throws {
        let folio = try FolioProcess()
        defer { folio.cleanUp() }
        let server = try await RunningFolio.serve(folio, environment: [:])
        defer { server.kill() }
        #expect(try await curl(["-s", "\(server.baseURL)/health"]).output == #"{"status":"ok"}"#)
        #expect(FileManager.default.fileExists(atPath: folio.directory.appendingPathComponent("var/folio.sqlite").path))
        #expect(FileManager.default.fileExists(atPath: folio.directory.appendingPathComponent("var/secret_key").path))
        let stopped = await server.terminate()
        #expect(stopped.reason == .exit, "a graceful stop, not a signal death")
        #expect(stopped.status == 0)
        let logged = server.stdout.lines.joined(separator: "\n")
        #expect(logged.contains("applied pending migrations"))
        #expect(logged.contains("SECRET_KEY is not set"))
    }

    @Test("log lines are written off the request path, yet a SIGTERM right after a burst of requests loses none of their access lines")
    func gracefulStopKeepsEveryLogLine() async throws {
        let folio = try FolioProcess()
        defer { folio.cleanUp() }
        let server = try await RunningFolio.serve(folio, environment: [:])
        defer { server.kill() }
        let requests = 300
        let urls = Array(repeating: "\(server.baseURL)/health", count: requests)
        let burst = try await curl(["-s", "-o", "/dev/null", "--parallel", "--parallel-max", "8"] + urls)
        #expect(burst.status == 0)
        let stopped = await server.terminate()
        #expect(stopped.status == 0)
        let accessLines = { server.stdout.objects.filter { $0["message"] as? String == "request" && $0["route"] as? String == "/health" }.count }
        // The pipe may still be draining into this process after the exit.
        try await eventually("\(requests) access lines") { accessLines() >= requests }
        #expect(accessLines() == requests)
        #expect(server.stdout.objects.contains { $0["message"] as? String == "job worker stopped" }, "lines logged during the shutdown itself are written too")
    }

    @Test("with TLS_CERT_PATH and TLS_KEY_PATH, serve speaks TLS (self-signed certificate made here) and plain HTTP gets no answer")
    func serveTLS() async throws {
        let folio = try FolioProcess()
        defer { folio.cleanUp() }
        let certificate = folio.directory.appendingPathComponent("cert.pem").path
        let key = folio.directory.appendingPathComponent("key.pem").path
        let openssl = try await runTool("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", certificate, "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        #expect(openssl.status == 0, "\(openssl.output)")

        let server = try await RunningFolio.serve(folio, environment: ["TLS_CERT_PATH": certificate, "TLS_KEY_PATH": key])
        defer { server.kill() }
        let secure = try await curl(["-s", "--cacert", certificate, "https://127.0.0.1:\(server.port)/health"])
        #expect(secure.output == #"{"status":"ok"}"#)
        #expect(secure.status == 0)
        // Plain HTTP to the TLS port: the handshake fails and no HTTP answer comes back.
        let plain = try await curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(server.port)/health"])
        #expect(plain.output == "000", "no HTTP status at all")
        #expect([52, 56].contains(plain.status), "curl: empty reply or connection reset, not \(plain.status)")
        #expect(await server.terminate().status == 0)
    }

    func curl(_ arguments: [String]) async throws -> (output: String, status: Int32) {
        let check = try ChildProcess("/usr/bin/curl", ["--max-time", "10"] + arguments, output: .pipe)
        let output = OutputLines()
        output.attach(check.standardOutput!)
        let status = await check.exited(within: .seconds(60)).status
        return (await output.text(), status)
    }
}
