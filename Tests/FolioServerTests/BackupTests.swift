import FolioDomain
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import SQLKit
import Testing

@testable import FolioServer

/// Backups: taken under load, verified by restoring, refused when tampered
/// with, restored only into an empty database; sealed with AES-GCM when a key is set.
@Suite("Backups and restore drills")
struct BackupTests {
    static let key = "backup-key-0123456789-0123456789-0123456789"

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("folio-backup-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Places market orders while `during` runs, and returns how many were placed.
    static func underLoad(_ client: some TestClientProtocol, _ env: TestEnvironment, _ tokens: [String: Any], during: () async throws -> Void) async throws -> Int {
        let headers = bearer(tokens)
        let load = Task {
            var placed = 0
            for index in 0..<12 {
                let body = try JSONSerialization.data(withJSONObject: ["symbol": index % 2 == 0 ? "AAPL" : "MSFT", "quantity": 1, "side": "BUY", "order_type": "MARKET"])
                var all = headers
                all[.contentType] = "application/json"
                let response = try await client.execute(uri: "/api/orders", method: .post, headers: all, body: ByteBuffer(bytes: body))
                if response.status == .created { placed += 1 }
                if index % 3 == 0 { await env.worker.drain() }
            }
            return placed
        }
        try await during()
        let placed = try await load.value
        await env.worker.drain()
        return placed
    }

    /// A fresh, empty database of the same kind to restore into; dropped after `body`.
    static func withEmptyTarget(_ kind: TestDatabaseKind, _ body: (AppConfiguration.DatabaseLocation) async throws -> Void) async throws {
        try await withTestDatabase(kind, migrated: false) { database, location in
            await database.shutdown()
            try await body(location)
        }
    }

    @Test("a backup taken under order load restores into an empty database, and verify passes on it", arguments: TestDatabaseKind.all)
    func backupUnderLoad(kind: TestDatabaseKind) async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withTestApp(kind, configure: { $0.backup.directory = directory.path }) { client, env in
            let tokens = try await signUp(client, env, email: "backup@example.com")
            let backups = env.services.backups
            let backup = UncheckedBox<URL?>(nil)
            let placed = try await Self.underLoad(client, env, tokens) {
                backup.value = try await backups.create()
            }
            #expect(placed == 12)
            let taken = try #require(backup.value)
            let manifest = try BackupManifest.read(from: taken)
            #expect(manifest.database == (kind == .sqlite ? "sqlite" : "postgres"))
            #expect(manifest.files.map(\.name) == [kind == .sqlite ? "database.sqlite" : "database.dump"])
            let figures = try #require(manifest.figures)
            #expect(figures.schemaVersion == MigrationRegistry.all.last?.name)
            #expect(figures.rowCounts["accounts"] == 1)
            #expect(figures.auditHeads.count >= 2)

            let problems = try await backups.verify(taken)
            #expect(problems.isEmpty, "\(problems)")

            // Restore: into the live database (not empty) is refused; into an empty one works, and the copy balances.
            await #expect(throws: Backups.Failure.self) {
                try await Backups.restore(taken, into: env.configuration.database, configuration: env.configuration, logger: Logger(label: "test"))
            }
            try await Self.withEmptyTarget(kind) { target in
                let problems = try await Backups.restore(taken, into: target, configuration: env.configuration, logger: Logger(label: "test"))
                #expect(problems.isEmpty, "\(problems)")
                let restored = try await Backups.withDatabase(target, logger: Logger(label: "test")) { copy in
                    let figures = try await copy.transaction { db in try await BackupFigures.read(on: db, kind: copy.kind) }
                    let differences = try await LedgerVerifier(store: TradingStore(database: copy)).verify().differences
                    #expect(differences.isEmpty, "\(differences)")
                    if kind == .postgres {
                        let unanalyzed = try await copy.sql.raw("""
                            SELECT COUNT(*) AS n FROM pg_stat_user_tables WHERE last_analyze IS NULL AND relname IN ('accounts', 'holdings', 'orders', 'transactions', 'audit_events')
                            """).first()?.decode(column: "n", as: Int.self)
                        #expect(unanalyzed == 0, "the restore leaves the planner its statistics")
                    }
                    return figures
                }
                #expect(restored == manifest.figures)
                // A second restore into the now-full copy is refused.
                await #expect(throws: Backups.Failure.self) {
                    try await Backups.restore(taken, into: target, configuration: env.configuration, logger: Logger(label: "test"))
                }
            }
        }
    }

    @Test("a restore into a SQLite file that holds anything (a table whose name merely starts with sqlite, a view) is refused and the file is kept")
    func restoreKeepsAnotherSQLiteFile() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withTestApp(.sqlite, configure: { $0.backup.directory = directory.path }) { _, env in
            let taken = try await env.services.backups.create()
            for (index, schema) in ["CREATE TABLE sqlitedata (note TEXT); INSERT INTO sqlitedata VALUES ('irreplaceable')", "CREATE VIEW answer AS SELECT 42 AS n"].enumerated() {
                let target = AppConfiguration.DatabaseLocation.sqlite(path: directory.appendingPathComponent("precious-\(index).sqlite").path)
                try await Backups.withDatabase(target, logger: Logger(label: "test")) { database in
                    for statement in schema.split(separator: ";") { try await database.sql.raw("\(unsafeRaw: String(statement))").run() }
                }
                await #expect(throws: Backups.Failure.self, "\(schema)") {
                    try await Backups.restore(taken, into: target, configuration: env.configuration, logger: Logger(label: "test"))
                }
                let kept = try await Backups.withDatabase(target, logger: Logger(label: "test")) { database in
                    try await database.sql.raw("SELECT COUNT(*) AS n FROM sqlite_master WHERE name IN ('sqlitedata', 'answer')").first()?.decode(column: "n", as: Int.self)
                }
                #expect(kept == 1, "\(schema)")
            }
        }
    }

    @Test("a backup of a newer Folio's schema is refused before anything is loaded, not restored for every serve and migrate to refuse after")
    func newerSchemaRefused() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withTestApp(.sqlite, configure: { $0.backup.directory = directory.path }) { _, env in
            // A migration this build does not know, as a later version would have applied.
            try await env.database.sql.raw("""
                INSERT INTO _fluent_migrations (id, name, batch, created_at, updated_at) VALUES (\(bind: UUID()), '999_from_the_future', 99, \(bind: env.clock.now), \(bind: env.clock.now))
                """).run()
            let taken = try await env.services.backups.create()
            #expect(try BackupManifest.read(from: taken).figures?.schemaVersion == "999_from_the_future")
            let target = AppConfiguration.DatabaseLocation.sqlite(path: directory.appendingPathComponent("restored.sqlite").path)
            do {
                try await Backups.restore(taken, into: target, configuration: env.configuration, logger: Logger(label: "test"))
                Issue.record("a newer schema was restored")
            } catch let failure as Backups.Failure {
                #expect(failure.description.contains("made by a newer Folio") && failure.description.contains("999_from_the_future"), "\(failure)")
            }
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("restored.sqlite").path), "nothing was loaded")
        }
    }

    @Test("working copies a killed backup or drill left in the temporary directory go once a day old; younger ones stay")
    func strayWorkingCopies() throws {
        let temporary = FileManager.default.temporaryDirectory
        let old = temporary.appendingPathComponent("folio-backup-\(UUID().uuidString)")
        let young = temporary.appendingPathComponent("folio-backup-\(UUID().uuidString)")
        let oldVerify = temporary.appendingPathComponent("folio-verify-\(UUID().uuidString).sqlite")
        for url in [old, young] { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: false) }
        try Data("plaintext".utf8).write(to: old.appendingPathComponent("database.sqlite"))
        try Data("plaintext".utf8).write(to: oldVerify)
        defer { for url in [old, young, oldVerify] { try? FileManager.default.removeItem(at: url) } }
        let twoDaysAgo = Date().addingTimeInterval(-2 * 86_400)
        for url in [old, oldVerify] { try FileManager.default.setAttributes([.modificationDate: twoDaysAgo], ofItemAtPath: url.path) }
        let removed = Backups.sweepTemporaryCopies(olderThan: Date().addingTimeInterval(-86_400)).map(\.lastPathComponent)
        #expect(removed.contains(old.lastPathComponent) && removed.contains(oldVerify.lastPathComponent))
        #expect(!removed.contains(young.lastPathComponent))
        #expect(FileManager.default.fileExists(atPath: young.path))
        #expect(!FileManager.default.fileExists(atPath: old.path))
    }

    @Test("one restore into a SQLite file at a time: while another holds it, a second is refused and changes nothing")
    func oneRestoreAtATime() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withTestApp(.sqlite, configure: { $0.backup.directory = directory.path }) { _, env in
            let taken = try await env.services.backups.create()
            let path = directory.appendingPathComponent("restored.sqlite").path
            let target = AppConfiguration.DatabaseLocation.sqlite(path: path)
            // Another restore holds the file.
            let other = open(path + ".restore-lock", O_CREAT | O_RDWR, 0o600)
            #expect(other >= 0 && flock(other, LOCK_EX | LOCK_NB) == 0)
            do {
                try await Backups.restore(taken, into: target, configuration: env.configuration, logger: Logger(label: "test"))
                Issue.record("restored while another restore held the file")
            } catch let failure as Backups.Failure {
                #expect(failure.description.contains("another restore into"), "\(failure)")
            }
            #expect(!FileManager.default.fileExists(atPath: path), "nothing was changed")
            flock(other, LOCK_UN)
            close(other)
            let problems = try await Backups.restore(taken, into: target, configuration: env.configuration, logger: Logger(label: "test"))
            #expect(problems.isEmpty)
            #expect(!FileManager.default.fileExists(atPath: path + ".restore-lock"), "its lock goes with it")
        }
    }

    @Test("two backups of the same second: the one that finishes second is dropped with a sentence, and the first stands")
    func sameSecond() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withTestApp(.sqlite, configure: { $0.backup.directory = directory.path }) { _, env in
            var backups = env.services.backups
            // While this one hashes its copy, another of the same name lands.
            backups.progress = { step in
                guard step.hasPrefix("hashing"), let partial = try? FileManager.default.contentsOfDirectory(atPath: directory.path).first(where: { $0.contains(".partial-") })
                else { return }
                let name = String(partial[..<partial.range(of: ".partial-")!.lowerBound])
                try? FileManager.default.createDirectory(at: directory.appendingPathComponent(name), withIntermediateDirectories: false)
            }
            do {
                _ = try await backups.create()
                Issue.record("a backup was moved over another")
            } catch {
                #expect("\(error)".contains("was written meanwhile by another backup taken in the same second"), "\(error)")
            }
            let left = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            #expect(left.count == 1 && !left[0].contains(".partial-"), "the other stands, and this one's partial copy is gone: \(left)")
        }
    }

    @Test("a backup that fails part-way is told in a few words, and leaves neither its partial copy nor the directory it made")
    func failedPartWay() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let made = directory.appendingPathComponent("made-by").appendingPathComponent("the-backup")
        try await withTestApp(.sqlite) { _, env in
            var backups = env.services.backups
            // The copy vanishes before it is hashed, as a file on a failing disk might.
            backups.progress = { step in
                guard step.hasPrefix("hashing"), let partial = try? FileManager.default.contentsOfDirectory(atPath: made.path).first else { return }
                try? FileManager.default.removeItem(at: made.appendingPathComponent(partial).appendingPathComponent("database.sqlite"))
            }
            do {
                _ = try await backups.create(into: made)
                Issue.record("a backup without its copy was written")
            } catch let failure as Backups.Failure {
                #expect(failure.description.hasPrefix("the backup could not be written into \(made.path) (") && !failure.description.contains("Domain="), "\(failure)")
            }
            #expect(!FileManager.default.fileExists(atPath: made.path), "the directory it made is gone")
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty, "and the one above it it made too")
            // Under a file: said in words (Foundation on Linux says only "error 512").
            let file = directory.appendingPathComponent("a-file")
            try Data("x".utf8).write(to: file)
            backups.progress = { _ in }
            do {
                _ = try await backups.create(into: file.appendingPathComponent("backups"))
                Issue.record("a backup under a file")
            } catch let failure as Backups.Failure {
                #expect(failure.description == "the backup directory \(file.path)/backups cannot be made (\(file.path) is a file)", "\(failure)")
            }
        }
    }

    @Test("verify catches one changed byte and a manifest that does not match the data", arguments: TestDatabaseKind.all)
    func tampering(kind: TestDatabaseKind) async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withTestApp(kind, configure: { $0.backup.directory = directory.path }) { client, env in
            let tokens = try await signUp(client, env, email: "tamper@example.com")
            _ = try await Self.underLoad(client, env, tokens) {}
            let backups = env.services.backups

            // One byte of the dump changed.
            let changed = try await backups.create()
            let manifest = try BackupManifest.read(from: changed)
            let file = changed.appendingPathComponent(manifest.files[0].name)
            var bytes = try Data(contentsOf: file)
            bytes[bytes.count / 2] ^= 0x01
            try bytes.write(to: file)
            let problems = try await backups.verify(changed)
            #expect(problems.count == 1 && problems[0].contains("SHA-256") && problems[0].contains("it was changed"), "\(problems)")
            await #expect(throws: Backups.Failure.self) {
                try await Self.withEmptyTarget(kind) { target in
                    try await Backups.restore(changed, into: target, configuration: env.configuration, logger: Logger(label: "test"))
                }
            }

            // A copy that matches its manifest but is corrupt (as taken, or crafted with a plaintext manifest):
            // the restore test fails with a finding, not an error.
            if kind == .sqlite {
                env.clock.advance(by: 1)
                let corrupt = try await backups.create()
                var manifest = try BackupManifest.read(from: corrupt)
                let file = corrupt.appendingPathComponent(manifest.files[0].name)
                var bytes = try Data(contentsOf: file)
                for index in stride(from: 4096, to: bytes.count, by: 97) { bytes[index] ^= 0x5a }
                try bytes.write(to: file)
                let (hash, size) = try BackupFiles.sha256(of: file)
                manifest.files[0].sha256 = hash
                manifest.files[0].bytes = size
                try FileManager.default.removeItem(at: corrupt.appendingPathComponent(BackupManifest.fileName))
                try manifest.write(to: corrupt)
                let found = try await backups.verify(corrupt)
                #expect(found.contains { $0.hasPrefix("the backup does not restore: ") }, "\(found)")
            }

            // The manifest's figures edited: the data restores but no longer matches.
            env.clock.advance(by: 1)
            let edited = try await backups.create()
            var lying = try BackupManifest.read(from: edited)
            lying.figures!.rowCounts["orders"] = (lying.figures!.rowCounts["orders"] ?? 0) + 1
            let account = try #require(lying.figures!.accounts.keys.first)
            lying.figures!.accounts[account]?.cash = "1000000.00"
            try FileManager.default.removeItem(at: edited.appendingPathComponent(BackupManifest.fileName))
            try lying.write(to: edited)
            let mismatches = try await backups.verify(edited)
            #expect(mismatches.contains { $0.hasPrefix("table orders:") }, "\(mismatches)")
            #expect(mismatches.contains { $0.hasPrefix("account \(account):") }, "\(mismatches)")
        }
    }

    @Test("restore runs the drill's checks on what it restored: figures the manifest says differently are reported", arguments: TestDatabaseKind.all)
    func restoreComparesFigures(kind: TestDatabaseKind) async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withTestApp(kind, configure: { $0.backup.directory = directory.path }) { client, env in
            let tokens = try await signUp(client, env, email: "figures@example.com")
            _ = try await Self.underLoad(client, env, tokens) {}
            let edited = try await env.services.backups.create()
            // A plaintext manifest has no MAC: its figures can be edited while its files still match.
            var lying = try BackupManifest.read(from: edited)
            lying.figures!.rowCounts["orders"] = (lying.figures!.rowCounts["orders"] ?? 0) + 1
            try FileManager.default.removeItem(at: edited.appendingPathComponent(BackupManifest.fileName))
            try lying.write(to: edited)
            try await Self.withEmptyTarget(kind) { target in
                let problems = try await Backups.restore(edited, into: target, configuration: env.configuration, logger: Logger(label: "test"))
                #expect(problems.count == 1 && problems[0].hasPrefix("table orders:"), "\(problems)")
            }
        }
    }

    @Test("an account whose figures differ is told as an operator reads it: each symbol and its quantity, not Swift's tuples")
    func accountDifferenceText() {
        let said = BackupFigures(
            schemaVersion: "023_add_order_triggered_at", migrations: 23, rowCounts: [:],
            accounts: ["a1": .init(cash: "100.0000", reservedCash: "0.0000", holdings: ["MSFT": "2.5", "AAPL": "10"])], auditHeads: [:])
        var restored = said
        restored.accounts["a1"]?.holdings = [:]
        #expect(said.differences(from: restored) == [
            "account a1: the manifest says cash 100.0000, reserved 0.0000, holdings AAPL 10, MSFT 2.5; the copy has cash 100.0000, reserved 0.0000, no holdings",
        ])
    }

    @Test("a SQLite copy with a damaged page that every query still reads is found by the integrity check, in the drill and on restore")
    func damagedPages() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withTestApp(.sqlite, configure: { $0.backup.directory = directory.path }) { client, env in
            let tokens = try await signUp(client, env, email: "pages@example.com")
            _ = try await Self.underLoad(client, env, tokens) {}
            let damaged = try await env.services.backups.create()
            var manifest = try BackupManifest.read(from: damaged)
            let file = damaged.appendingPathComponent(manifest.files[0].name)
            // An index forgotten by the schema: its pages stay in the file, used by nothing. Rows, balances and the
            // audit chain all read as before, so only a check of the pages themselves can see it.
            try await Backups.withDatabase(.sqlite(path: file.path), logger: Logger(label: "test")) { copy in
                try await copy.transaction { db in
                    let index = try #require(try await db.raw("""
                        SELECT name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL AND tbl_name = 'orders' ORDER BY name LIMIT 1
                        """).first()?.decode(column: "name", as: String.self))
                    try await db.raw("PRAGMA writable_schema = ON").run()
                    try await db.raw("DELETE FROM sqlite_schema WHERE name = \(bind: index)").run()
                    try await db.raw("PRAGMA writable_schema = OFF").run()
                }
            }
            // The plaintext manifest made to match the damaged file (only a sealed manifest has a MAC).
            (manifest.files[0].sha256, manifest.files[0].bytes) = try BackupFiles.sha256(of: file)
            try FileManager.default.removeItem(at: damaged.appendingPathComponent(BackupManifest.fileName))
            try manifest.write(to: damaged)

            let drill = try await env.services.backups.verify(damaged)
            #expect(!drill.isEmpty && drill.allSatisfy { $0.hasPrefix("integrity check:") }, "\(drill)")
            let target = directory.appendingPathComponent("restored/folio.sqlite").path
            let problems = try await Backups.restore(damaged, into: .sqlite(path: target), configuration: env.configuration, logger: Logger(label: "test"))
            #expect(!problems.isEmpty && problems.allSatisfy { $0.hasPrefix("integrity check:") }, "\(problems)")
        }
    }

    @Test("a SQLite copy that cannot be read, though its manifest was made to match it, is refused and leaves no file behind; a good one then restores there")
    func unreadableCopy() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withTestApp(.sqlite, configure: { $0.backup.directory = directory.path }) { client, env in
            _ = try await signUp(client, env, email: "cut@example.com")
            let good = try await env.services.backups.create()
            env.clock.advance(by: 1)
            let cut = try await env.services.backups.create()
            // Cut short, and the plaintext manifest's size and hash changed to match (only a sealed manifest has a MAC).
            var manifest = try BackupManifest.read(from: cut)
            let file = cut.appendingPathComponent(manifest.files[0].name)
            try Data(try Data(contentsOf: file).prefix(8192)).write(to: file)
            let (hash, bytes) = try BackupFiles.sha256(of: file)
            manifest.files[0].sha256 = hash
            manifest.files[0].bytes = bytes
            try FileManager.default.removeItem(at: cut.appendingPathComponent(BackupManifest.fileName))
            try manifest.write(to: cut)
            let target = directory.appendingPathComponent("restored/folio.sqlite").path
            await #expect(throws: (any Error).self) {
                try await Backups.restore(cut, into: .sqlite(path: target), configuration: env.configuration, logger: Logger(label: "test"))
            }
            #expect(!FileManager.default.fileExists(atPath: target), "the unreadable copy is not left in the target")
            // An empty file the operator made for it stays, empty again.
            let made = directory.appendingPathComponent("made.sqlite").path
            #expect(FileManager.default.createFile(atPath: made, contents: nil, attributes: [.posixPermissions: 0o640]))
            await #expect(throws: (any Error).self) {
                try await Backups.restore(cut, into: .sqlite(path: made), configuration: env.configuration, logger: Logger(label: "test"))
            }
            let attributes = try FileManager.default.attributesOfItem(atPath: made)
            #expect((attributes[.size] as? NSNumber)?.intValue == 0)
            let problems = try await Backups.restore(good, into: .sqlite(path: target), configuration: env.configuration, logger: Logger(label: "test"))
            #expect(problems.isEmpty, "\(problems)")
        }
    }

    @Test("with BACKUP_ENCRYPTION_KEY the dump is sealed with AES-GCM, opens under the key (or a previous one), and a forged chunk is refused", arguments: TestDatabaseKind.all)
    func encrypted(kind: TestDatabaseKind) async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withTestApp(kind, configure: { $0.backup.directory = directory.path; $0.backup.encryptionKey = Self.key }) { client, env in
            let tokens = try await signUp(client, env, email: "sealed@example.com")
            _ = try await Self.underLoad(client, env, tokens) {}
            let backups = env.services.backups
            let taken = try await backups.create()
            let manifest = try BackupManifest.read(from: taken)
            #expect(manifest.encrypted)
            #expect(manifest.figures == nil && manifest.sealedFigures != nil, "balances are sealed, not beside the dump")
            let manifestText = try String(contentsOf: taken.appendingPathComponent(BackupManifest.fileName), encoding: .utf8)
            #expect(!manifestText.contains("reservedCash") && !manifestText.contains("auditHeads"))
            let file = taken.appendingPathComponent(manifest.files[0].name)
            #expect(file.pathExtension == "enc")
            #expect(BackupCipher.isSealed(file))
            let sealed = try Data(contentsOf: file)
            #expect(sealed.range(of: Data("sealed@example.com".utf8)) == nil, "the address is readable in the sealed file")
            #expect(try await backups.verify(taken).isEmpty)

            // After a rotation the old key still opens it; with no matching key it does not.
            var rotated = env.configuration
            rotated.backup.encryptionKey = "a-new-backup-key-0123456789-0123456789-0123"
            rotated.backup.previousEncryptionKeys = [Self.key]
            try await Self.withEmptyTarget(kind) { target in
                let problems = try await Backups.restore(taken, into: target, configuration: rotated, logger: Logger(label: "test"))
                #expect(problems.isEmpty, "\(problems)")
            }
            rotated.backup.previousEncryptionKeys = []
            await #expect(throws: BackupCipher.Failure.self) {
                try await Self.withEmptyTarget(kind) { target in
                    try await Backups.restore(taken, into: target, configuration: rotated, logger: Logger(label: "test"))
                }
            }

            // A changed byte with the manifest's hash forged to match: the manifest's MAC refuses it.
            var forged = sealed
            forged[forged.count - 20] ^= 0x01
            try forged.write(to: file)
            var lying = manifest
            let (hash, bytes) = try BackupFiles.sha256(of: file)
            lying.files[0].sha256 = hash
            lying.files[0].bytes = bytes
            try FileManager.default.removeItem(at: taken.appendingPathComponent(BackupManifest.fileName))
            try lying.write(to: taken)
            let forgedProblems = try await backups.verify(taken)
            #expect(forgedProblems.contains { $0.contains("MAC does not match") }, "\(forgedProblems)")

            // A plaintext dump swapped in, the manifest rewritten to say "not encrypted": refused while a key is configured.
            env.clock.advance(by: 1)
            let plain = try await Self.withBackup(kind, directory: directory) { try await $0.create() }
            var swapped = try BackupManifest.read(from: plain)
            try FileManager.default.removeItem(at: taken.appendingPathComponent(BackupManifest.fileName))
            try FileManager.default.removeItem(at: file)
            try FileManager.default.copyItem(at: plain.appendingPathComponent(swapped.files[0].name), to: taken.appendingPathComponent(swapped.files[0].name))
            swapped.createdAt = manifest.createdAt
            try swapped.write(to: taken)
            // The restore drill says so too, rather than pass what restore would refuse.
            let swappedProblems = try await backups.verify(taken)
            #expect(swappedProblems.contains { $0.contains("not encrypted although BACKUP_ENCRYPTION_KEY is set") }, "\(swappedProblems)")
            let accepted = try await backups.verify(taken, allowUnencrypted: true)
            #expect(!accepted.contains { $0.contains("not encrypted") }, "\(accepted)")
            await #expect(throws: Backups.Failure.self) {
                try await Self.withEmptyTarget(kind) { target in
                    try await Backups.restore(taken, into: target, configuration: env.configuration, logger: Logger(label: "test"))
                }
            }
        }
    }

    /// A backup of a fresh, unencrypted deployment, for swapping into an encrypted one.
    static func withBackup<T: Sendable>(_ kind: TestDatabaseKind, directory: URL, _ body: @escaping @Sendable (Backups) async throws -> T) async throws -> T {
        let box = UncheckedBox<T?>(nil)
        try await withTestApp(kind, configure: { $0.backup.directory = directory.appendingPathComponent("plain").path }) { client, env in
            try await signUp(client, env, email: "plain@example.com")
            box.value = try await body(env.services.backups)
        }
        return try #require(box.value)
    }

    @Test("the cipher round-trips files of every size around its chunk, and refuses a file cut short")
    func cipherRoundTrip() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let cipher = BackupCipher(key: Self.key)
        for size in [0, 1, BackupCipher.chunkSize - 1, BackupCipher.chunkSize, BackupCipher.chunkSize + 1, 2 * BackupCipher.chunkSize + 7] {
            let plain = directory.appendingPathComponent("plain-\(size)")
            let data = Data((0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) })
            try data.write(to: plain)
            let sealed = directory.appendingPathComponent("sealed-\(size)")
            try cipher.seal(plain, into: sealed)
            let opened = directory.appendingPathComponent("opened-\(size)")
            try cipher.open(sealed, into: opened)
            #expect(try Data(contentsOf: opened) == data, "size \(size)")
            if size > BackupCipher.chunkSize {
                // Drop the last chunk: what remains must not pass for a whole file.
                let whole = try Data(contentsOf: sealed)
                let headerLength = BackupCipher.headerLength
                let firstChunk = 4 + Int(whole[headerLength..<headerLength + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
                try whole.prefix(headerLength + firstChunk).write(to: sealed)
                #expect(throws: BackupCipher.Failure.self) { try cipher.open(sealed, into: opened) }
            }
        }
    }

    @Test("a backup named as if taken in the future (a clock set wrong) is kept, and takes none of the days kept: the real days' backups stay")
    func futureStampedBackup() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        for name in ["folio-20261122T010000Z", "folio-20261123T010000Z", "folio-20261124T010000Z", "folio-20270101T000000Z"] {
            let url = directory.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            try Data("{}".utf8).write(to: url.appendingPathComponent(BackupManifest.fileName))
        }
        try await withTestApp(.sqlite, configure: { $0.backup.directory = directory.path; $0.backup.keepDaily = 2; $0.backup.keepMonthly = 1 }) { _, env in
            let removed = try env.services.backups.prune().map(\.lastPathComponent)
            #expect(removed == ["folio-20261122T010000Z"])
            #expect(env.services.backups.futureStamped() == ["folio-20270101T000000Z"])
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() == [
            "folio-20261123T010000Z", "folio-20261124T010000Z", "folio-20270101T000000Z",
        ])
    }

    @Test("pruning keeps every backup of the newest days that have one and the newest of each of the last calendar months, removes stale partials, and leaves anything else alone")
    func pruning() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        // The clock says 24 November 2026: the last three months are September to November, and September has no backup.
        // The backups of January and of 2024 are older than that, however few months since have one.
        let backups = [
            "folio-20240615T010000Z", "folio-20260115T010000Z", "folio-20260120T010000Z", "folio-20261010T010000Z", "folio-20261028T010000Z",
            "folio-20261101T010000Z", "folio-20261102T010000Z", "folio-20261123T010000Z", "folio-20261124T010000Z",
            // Taken by hand on the newest day: they push out no older day's backup.
            "folio-20261124T150000Z", "folio-20261124T160000Z",
        ]
        for name in backups {
            let url = directory.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            try Data("{}".utf8).write(to: url.appendingPathComponent(BackupManifest.fileName))
        }
        // Not Folio's, or not whole: never counted as backups.
        for name in ["folio-manual-before-upgrade", "folio-20260101T010000Z.bak", "folio-20260102T010000Z", "folio-20260305T010000Z.partial-0123abcd"] {
            try FileManager.default.createDirectory(at: directory.appendingPathComponent(name), withIntermediateDirectories: true)
        }
        let stale = directory.appendingPathComponent("folio-20260301T010000Z.partial-deadbeef")
        try FileManager.default.createDirectory(at: stale, withIntermediateDirectories: true)
        try FileManager.default.setAttributes([.modificationDate: TestClock.tuesdayMorning.addingTimeInterval(-2 * 86_400)], ofItemAtPath: stale.path)
        try FileManager.default.setAttributes(
            [.modificationDate: TestClock.tuesdayMorning], ofItemAtPath: directory.appendingPathComponent("folio-20260305T010000Z.partial-0123abcd").path)
        try await withTestApp(.sqlite, configure: { $0.backup.directory = directory.path; $0.backup.keepDaily = 2; $0.backup.keepMonthly = 3 }) { _, env in
            let removed = try env.services.backups.prune().map(\.lastPathComponent).sorted()
            #expect(removed == [
                "folio-20240615T010000Z", "folio-20260115T010000Z", "folio-20260120T010000Z", "folio-20260301T010000Z.partial-deadbeef",
                "folio-20261010T010000Z", "folio-20261101T010000Z", "folio-20261102T010000Z",
            ])
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(left == [
            "folio-20260101T010000Z.bak", "folio-20260102T010000Z", "folio-20260305T010000Z.partial-0123abcd", "folio-20261028T010000Z",
            "folio-20261123T010000Z", "folio-20261124T010000Z", "folio-20261124T150000Z", "folio-20261124T160000Z", "folio-manual-before-upgrade",
        ])
        #expect(Backups.lastMonths(3, before: TestClock.tuesdayMorning) == ["202611", "202610", "202609"])
        #expect(Backups.lastMonths(2, before: Date(timeIntervalSince1970: 1_767_225_600)) == ["202601", "202512"], "across a new year")
    }
}

final class UncheckedBox<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}
