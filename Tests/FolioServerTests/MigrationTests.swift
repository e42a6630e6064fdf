import FluentKit
import Foundation
import SQLKit
import Testing

@testable import FolioServer

@Suite("Migrations and the users table")
struct MigrationTests {
    func insertUser(_ sql: any SQLDatabase, email: String, role: String = "user", passwordHash: String = "$2b$12$hash") async throws {
        try await sql.raw("""
            INSERT INTO users (id, email, password_hash, role, password_changed_at, created_at, updated_at)
            VALUES (\(bind: UUID()), \(bind: email), \(bind: passwordHash), \(bind: role), \(bind: Date()), \(bind: Date()), \(bind: Date()))
            """).run()
    }

    @Test("migrate applies every migration, list shows them, revert undoes the batch", arguments: TestDatabaseKind.all)
    func migrateListRevert(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind, migrated: false) { database, _ in
            let all = MigrationRegistry.all.map(\.name)
            #expect(all.first == "001_create_users")
            #expect(try await database.pendingMigrations() == all)
            #expect(try await database.migrate() == all)
            #expect(try await database.pendingMigrations().isEmpty)
            #expect(try await database.appliedMigrations().map(\.name) == all)
            #expect(try await database.migrate().isEmpty)

            #expect(try await database.revertLastBatch() == all.reversed())
            #expect(try await database.pendingMigrations() == all)
            // The table is gone: the insert fails for want of a table, not on a constraint.
            do {
                try await insertUser(database.sql, email: "a@example.com")
                Issue.record("users should be gone after the revert")
            } catch {
                #expect(DatabaseConstraint(error) == nil)
                #expect(String(reflecting: error).contains("users"))
            }
            try await database.migrate()
            try await insertUser(database.sql, email: "a@example.com")
        }
    }

    /// A migration that makes a table, then fails or not as told.
    struct HalfwayMigration: AsyncMigration {
        let name: String
        let fails: Bool
        func prepare(on database: any Database) async throws {
            try await (database as! any SQLDatabase).raw("CREATE TABLE halfway_probe (id INTEGER PRIMARY KEY)").run()
            try await (database as! any SQLDatabase).raw("INSERT INTO halfway_probe (id) VALUES (1)").run()
            struct Stopped: Error {}
            if fails { throw Stopped() }
        }
        func revert(on database: any Database) async throws {
            try await (database as! any SQLDatabase).raw("DROP TABLE halfway_probe").run()
        }
    }

    @Test("a migration stopped halfway leaves nothing of itself, and the next run applies it; two runs at once apply the batch once, whole, in one batch", arguments: TestDatabaseKind.all)
    func migrationStoppedHalfway(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind, migrated: true) { database, _ in
            await #expect(throws: (any Error).self) {
                try await database.apply(MigrationRegistry.all + [HalfwayMigration(name: "900_halfway", fails: true)])
            }
            #expect(try await database.appliedMigrations().map(\.name).contains("900_halfway") == false)
            // Its table is gone with it: the run after does not fail on "already exists".
            #expect(try await database.apply(MigrationRegistry.all + [HalfwayMigration(name: "900_halfway", fails: false)]) == ["900_halfway"])
            #expect(try await database.sql.raw("SELECT COUNT(*) AS n FROM halfway_probe").first()?.decode(column: "n", as: Int.self) == 1)

            let both: [any Migration] = [HalfwayMigration(name: "900_halfway", fails: false), ProbeMigration(name: "901_probe_a"), ProbeMigration(name: "902_probe_b")]
            async let one = database.apply(both)
            async let other = database.apply(both)
            let (first, second) = try await (one, other)
            #expect((first + second).sorted() == ["901_probe_a", "902_probe_b"], "each applied once, by one of the runs")
            #expect(first.isEmpty || second.isEmpty, "one run applied the whole batch")
            let batches = Set(try await database.appliedMigrations().filter { $0.name.hasPrefix("90") && $0.name != "900_halfway" }.map(\.batch))
            #expect(batches.count == 1, "one batch, never split between the runs: --revert undoes it whole")
            #expect(try await database.sql.raw("SELECT COUNT(*) AS n FROM halfway_probe").first()?.decode(column: "n", as: Int.self) == 3)
        }
    }

    /// A migration that adds a row: applied twice, it would add two.
    struct ProbeMigration: AsyncMigration {
        let name: String
        func prepare(on database: any Database) async throws {
            try await (database as! any SQLDatabase).raw("INSERT INTO halfway_probe (id) SELECT MAX(id) + 1 FROM halfway_probe").run()
        }
        func revert(on database: any Database) async throws {}
    }

    @Test("listing the migrations of an empty database, or reverting nothing, leaves it empty: a restore or a copy may still write into it", arguments: TestDatabaseKind.all)
    func listLeavesEmptyDatabaseEmpty(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind, migrated: false) { database, _ in
            let emptyAtFirst = try await database.isEmpty()
            #expect(emptyAtFirst)
            #expect(try await database.appliedMigrations().isEmpty)
            #expect(try await database.pendingMigrations() == MigrationRegistry.all.map(\.name))
            #expect(try await database.revertLastBatch().isEmpty)
            #expect(try await database.isEmpty())
            // Applying them still works from there, and then the log shows them.
            #expect(try await database.migrate() == MigrationRegistry.all.map(\.name))
            #expect(try await database.appliedMigrations().count == MigrationRegistry.all.count)
        }
    }

    @Test("a database with another application's tables and no migration log is not migrated: nothing of Folio's is written into it", arguments: TestDatabaseKind.all)
    func foreignDatabaseRefused(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind, migrated: false) { database, _ in
            try await database.sql.raw("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)").run()
            await #expect(throws: FolioDatabase.NotFolios.self) { try await database.migrate() }
            let tables = try await database.sql.raw(kind == .sqlite
                ? "SELECT name FROM sqlite_master WHERE type = 'table'"
                : "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema()").all()
                .map { try $0.decode(column: "name", as: String.self) }
            #expect(tables == ["customers"], "\(tables)")
        }
    }

    @Test("a revert that would lose data is refused before anything is reverted: the whole schema once someone signed up, 015 once events hash a commitment", arguments: TestDatabaseKind.all)
    func revertRefusedWhole(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind, migrated: false) { database, _ in
            let all = MigrationRegistry.all.map(\.name)
            let at015 = try #require(all.firstIndex(of: "015_add_privacy_columns"))
            try await database.migrate(first: at015)
            try await insertUser(database.sql, email: "someone@example.com")
            // The first batch is the whole schema: refused, nothing reverted.
            await #expect(throws: RevertRefused.self) { try await database.revertLastBatch() }
            #expect(try await database.appliedMigrations().map(\.name) == Array(all.prefix(at015)))

            // A second batch from 015 on, with an event that hashes a commitment: 018, 017 and 016 stay too.
            let later = try await database.migrate()
            #expect(later == Array(all[at015...]))
            try await database.sql.raw("""
                INSERT INTO audit_events (id, occurred_at, action, subject_type, details, ip_commitment)
                VALUES (\(bind: UUID()), \(bind: Date()), 'user.signed_in', 'user', '{}', 'commitment:00')
                """).run()
            do {
                _ = try await database.revertLastBatch()
                Issue.record("the revert went through")
            } catch let refused as RevertRefused {
                #expect(refused.description.hasPrefix("migration 015 cannot be reverted: 1 audit event(s)"))
            }
            #expect(try await database.appliedMigrations().map(\.name) == all, "nothing was reverted")
            #expect(try await database.pendingMigrations().isEmpty)
        }
    }

    @Test("016 closes the accounts of people erased before it, and only theirs; its revert drops the column", arguments: TestDatabaseKind.all)
    func accountClosedAt(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind, migrated: false) { database, _ in
            let before = MigrationRegistry.all.firstIndex { $0.name == "016_add_account_closed_at" }
            let index = try #require(before)
            try await database.migrate(first: index)
            let sql = database.sql, now = Date()
            func person(_ email: String, erasedAt: Date?) async throws -> UUID {
                let user = UUID(), account = UUID()
                try await sql.raw("""
                    INSERT INTO users (id, email, password_hash, role, password_changed_at, created_at, updated_at, erased_at)
                    VALUES (\(bind: user), \(bind: email), '$2b$12$hash', 'user', \(bind: now), \(bind: now), \(bind: now), \(bind: erasedAt))
                    """).run()
                try await sql.raw("""
                    INSERT INTO accounts (id, user_id, name, kind, currency, cash, reserved_cash, created_at, updated_at)
                    VALUES (\(bind: account), \(bind: user), 'Paper', 'paper', 'USD', 0, 0, \(bind: now), \(bind: now))
                    """).run()
                return account
            }
            let gone = try await person("erased-1@erased.invalid", erasedAt: now)
            let here = try await person("here@example.com", erasedAt: nil)
            // 016 and whatever came after it.
            let applied = try await database.migrate()
            #expect(applied == MigrationRegistry.all[index...].map(\.name))
            let closed = try await sql.raw("SELECT id FROM accounts WHERE closed_at IS NOT NULL").all().map { try $0.decode(column: "id", as: UUID.self) }
            #expect(closed == [gone])
            #expect(!closed.contains(here))
            let reverted = try await database.revertLastBatch()
            #expect(reverted == applied.reversed())
            await #expect(throws: (any Error).self) { try await sql.raw("SELECT closed_at FROM accounts").run() }
        }
    }

    @Test("021 marks as maybe sent the orders still waiting whose submission was tried, and only those; its revert drops the column", arguments: TestDatabaseKind.all)
    func orderSentAt(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind, migrated: false) { database, _ in
            let index = try #require(MigrationRegistry.all.firstIndex { $0.name == "021_add_order_sent_at" })
            try await database.migrate(first: index)
            let sql = database.sql, now = Date(), account = UUID()
            try await insertUser(sql, email: "sent@example.com")
            let owner = try #require(try await sql.raw("SELECT id FROM users").first()?.decode(column: "id", as: UUID.self))
            try await sql.raw("""
                INSERT INTO accounts (id, user_id, name, kind, currency, cash, reserved_cash, created_at, updated_at)
                VALUES (\(bind: account), \(bind: owner), 'Paper', 'paper', 'USD', 100, 30, \(bind: now), \(bind: now))
                """).run()
            func order(status: String, attempts: Int?) async throws -> UUID {
                let id = UUID()
                try await sql.raw("""
                    INSERT INTO orders (id, user_id, account_id, symbol, side, type, time_in_force, quantity, limit_price, status, filled_quantity,
                        reserved_cash, reserved_quantity, created_at, updated_at)
                    VALUES (\(bind: id), \(bind: owner), \(bind: account), 'KO', 'BUY', 'LIMIT', 'GTC', 1, 10, \(bind: status), 0, 10, 0, \(bind: now), \(bind: now))
                    """).run()
                if let attempts {
                    try await sql.raw("""
                        INSERT INTO jobs (id, kind, payload, order_id, status, attempts, max_attempts, run_at, created_at, updated_at)
                        VALUES (\(bind: UUID()), 'submit_order', '{}', \(bind: id), 'queued', \(bind: attempts), 8, \(bind: now), \(bind: now), \(bind: now))
                        """).run()
                }
                return id
            }
            let tried = try await order(status: "new", attempts: 2)
            _ = try await order(status: "new", attempts: 0)
            _ = try await order(status: "new", attempts: nil)
            _ = try await order(status: "accepted", attempts: 1)
            let applied = try await database.migrate()
            #expect(applied == MigrationRegistry.all[index...].map(\.name))
            let marked = try await sql.raw("SELECT id FROM orders WHERE sent_at IS NOT NULL").all().map { try $0.decode(column: "id", as: UUID.self) }
            #expect(marked == [tried])
            #expect(try await database.revertLastBatch() == applied.reversed())
            await #expect(throws: (any Error).self) { try await sql.raw("SELECT sent_at FROM orders").run() }
        }
    }

    @Test("022 writes addresses in composed form, unless another account holds that form; a suppression already held composed is dropped", arguments: TestDatabaseKind.all)
    func composedAddresses(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind, migrated: false) { database, _ in
            let index = try #require(MigrationRegistry.all.firstIndex { $0.name == "022_compose_email_addresses" })
            try await database.migrate(first: index)
            let sql = database.sql
            try await insertUser(sql, email: "rene\u{301}@example.com")
            try await insertUser(sql, email: "zoe\u{308}@example.com")
            try await insertUser(sql, email: "zo\u{EB}@example.com")
            for email in ["ana\u{303}@example.com", "ine\u{300}s@example.com", "in\u{E8}s@example.com"] {
                try await sql.raw("INSERT INTO mail_suppressions (email, reason, created_at) VALUES (\(bind: email), 'bounce', \(bind: Date()))").run()
            }
            _ = try await database.migrate()
            func bytes(_ table: String) async throws -> Set<[UInt8]> {
                Set(try await sql.raw("SELECT email FROM \(unsafeRaw: table)").all().map { Array(try $0.decode(column: "email", as: String.self).utf8) })
            }
            let users = try await bytes("users")
            #expect(users == Set(["ren\u{E9}@example.com", "zoe\u{308}@example.com", "zo\u{EB}@example.com"].map { Array($0.utf8) }))
            let suppressions = try await bytes("mail_suppressions")
            #expect(suppressions == Set(["an\u{E3}@example.com", "in\u{E8}s@example.com"].map { Array($0.utf8) }))
        }
    }

    @Test("020 indexes the audit trail by who acted (an export, an erasure and retention read it so); its revert drops the index", arguments: TestDatabaseKind.all)
    func auditActorIndex(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind) { database, _ in
            func indexed() async throws -> Bool {
                let query: SQLQueryString = kind == .sqlite
                    ? "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'index' AND name = 'audit_events_actor_id_idx' AND tbl_name = 'audit_events'"
                    : "SELECT COUNT(*) AS n FROM pg_indexes WHERE indexname = 'audit_events_actor_id_idx' AND tablename = 'audit_events' AND indexdef LIKE '%(actor_id)%'"
                return try await database.sql.raw(query).first()?.decode(column: "n", as: Int.self) == 1
            }
            #expect(try await indexed())
            try await IndexAuditEventsByActor().revert(on: database.db)
            #expect(try await !indexed())
        }
    }

    @Test("the database itself refuses an email that differs only in case", arguments: TestDatabaseKind.all)
    func emailUniqueIgnoringCase(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind) { database, _ in
            try await insertUser(database.sql, email: "Jane.Doe@Example.com")
            await expectConstraintViolation(.unique) { try await insertUser(database.sql, email: "jane.doe@example.COM") }
            try await insertUser(database.sql, email: "john@example.com")
            let count = try await database.sql.raw("SELECT COUNT(*) AS n FROM users").first(decodingColumn: "n", as: Int.self)
            #expect(count == 2)
        }
    }

    @Test("CHECK and NOT NULL constraints hold on users", arguments: TestDatabaseKind.all)
    func userConstraints(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind) { database, _ in
            await expectConstraintViolation(.check) { try await insertUser(database.sql, email: "x@example.com", role: "superuser") }
            await expectConstraintViolation(.check) { try await insertUser(database.sql, email: "not-an-email") }
            await expectConstraintViolation(.check) { try await insertUser(database.sql, email: "y@example.com", passwordHash: "") }
            await expectConstraintViolation(.notNull) {
                try await database.sql.raw("INSERT INTO users (id, email, role, password_changed_at, created_at, updated_at) VALUES (\(bind: UUID()), 'z@example.com', 'user', \(bind: Date()), \(bind: Date()), \(bind: Date()))").run()
            }
            try await insertUser(database.sql, email: "admin@example.com", role: "admin")
            let role = try await database.sql.raw("SELECT role FROM users").first(decodingColumn: "role", as: String.self)
            #expect(role == "admin")
        }
    }
}
