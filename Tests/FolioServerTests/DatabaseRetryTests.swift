import FolioDomain
import Foundation
import NIOConcurrencyHelpers
import SQLKit
import Testing

@testable import FolioServer

/// A transaction PostgreSQL rolls back as a deadlock's victim is run again
/// whole, as SQLite's busy ones are: two requests that took the same rows in
/// opposite orders both go through, and neither answers 500.
@Suite("Transactions run again")
struct DatabaseRetryTests {
    @Test(
        "PostgreSQL: two transactions that lock two rows in opposite orders deadlock; the victim is run again and both commit",
        .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func deadlockVictimRunsAgain() async throws {
        try await withTestApp(.postgres) { _, env in
            let database = env.database
            try await database.sql.raw("CREATE TABLE crossing (id INT PRIMARY KEY, touched INT NOT NULL DEFAULT 0)").run()
            try await database.sql.raw("INSERT INTO crossing (id) VALUES (1), (2)").run()
            let holding = NIOLockedValueBox<Set<Int>>([])
            let attempts = NIOLockedValueBox(0)
            @Sendable func cross(first: Int, then second: Int) async throws {
                try await database.transaction { db in
                    let attempt = attempts.withLockedValue { $0 += 1; return $0 }
                    try await db.raw("UPDATE crossing SET touched = touched + 1 WHERE id = \(bind: first)").run()
                    if attempt <= 2 {
                        // The first try of each waits until the other holds its row: the two then wait on each other.
                        holding.withLockedValue { _ = $0.insert(first) }
                        for _ in 0..<500 where !holding.withLockedValue({ $0.contains(second) }) { try await Task.sleep(for: .milliseconds(10)) }
                    }
                    try await db.raw("UPDATE crossing SET touched = touched + 1 WHERE id = \(bind: second)").run()
                }
            }
            async let one: Void = cross(first: 1, then: 2)
            async let two: Void = cross(first: 2, then: 1)
            _ = try await (one, two)
            #expect(attempts.withLockedValue { $0 } == 3, "one of the two was run again")
            let touched = try await database.sql.raw("SELECT SUM(touched) AS n FROM crossing").first()?.decode(column: "n", as: Int.self)
            #expect(touched == 4, "both committed once")
        }
    }

    @Test(
        "PostgreSQL: a request for an account another process holds and does not let go ends as 503 database_busy with nothing written, not a wait without end; the locking transaction carries the server's limit on sitting idle",
        .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func stalledHolderOfAnAccount() async throws {
        try await withTestApp(.postgres) { client, env in
            let tokens = try await signUp(client, env, email: "stalled@example.com")
            let account = try await env.firstAccount()
            let cashBefore = account.cash
            // Another process takes the account and stalls (frozen, paused, cut off) while it holds it.
            let holding = NIOLockedValueBox(false), release = NIOLockedValueBox(false)
            let holder = Task {
                try await env.database.transaction { db in
                    _ = try await TradingStore(database: env.database).lockAccount(account.id, owner: nil, on: db)
                    // The limits hold for the rest of the locking transaction.
                    let limits = try await db.raw("SELECT current_setting('lock_timeout') AS lock, current_setting('idle_in_transaction_session_timeout') AS idle").first()
                    #expect(try limits?.decode(column: "lock", as: String.self) == "10s")
                    #expect(try limits?.decode(column: "idle", as: String.self) == "1min")
                    holding.withLockedValue { $0 = true }
                    for _ in 0..<3_000 where !release.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(10)) }
                }
            }
            while !holding.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(10)) }
            let refused = try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "5.00"], headers: bearer(tokens))
            #expect(refused.status == .serviceUnavailable, "\(String(buffer: refused.body))")
            #expect(try problem(refused).code == "database_busy")
            #expect(refused.headers[.retryAfter] != nil)
            release.withLockedValue { $0 = true }
            _ = try await holder.value
            // Nothing of the refused deposit was written; the account works again once it is let go.
            #expect(try await env.firstAccount().cash == cashBefore)
            #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "5.00"], headers: bearer(tokens)).status == .created)
            // The limits were the locking transaction's only: a statement outside one waits as PostgreSQL is set to.
            #expect(try await env.database.sql.raw("SELECT current_setting('lock_timeout') AS lock").first()?.decode(column: "lock", as: String.self) == "0")
        }
    }

    @Test("SQLite: a transaction that reads, then writes after another process wrote meanwhile, runs once: it holds the write lock from its start, and the other process waits for it (busy_timeout)")
    func sqliteTransactionHoldsTheWriteLock() async throws {
        try await withTestApp(.sqlite) { _, env in
            let database = env.database
            try await database.sql.raw("CREATE TABLE tally (n INTEGER NOT NULL)").run()
            // Another process's connection to the same file: a `folio worker` beside the server.
            let other = try FolioDatabase(location: env.configuration.database, poolSize: 1, preparedStatements: false, logger: env.services.logger)
            try await other.prepareConnectionSettings()
            let attempts = NIOLockedValueBox(0)
            try await database.transaction { db in
                let attempt = attempts.withLockedValue { $0 += 1; return $0 }
                _ = try await db.raw("SELECT COUNT(*) AS n FROM tally").first()
                if attempt == 1 {
                    // The other process writes while this transaction is under way, and waits for it to end.
                    let theirs = Task { try await other.sql.raw("INSERT INTO tally (n) VALUES (2)").run() }
                    try await Task.sleep(for: .milliseconds(300))
                    #expect(try await db.raw("SELECT COUNT(*) AS n FROM tally").first()?.decode(column: "n", as: Int.self) == 0)
                    _ = theirs
                }
                try await db.raw("INSERT INTO tally (n) VALUES (1)").run()
            }
            // Its write went through once the transaction committed.
            var rows = 0
            for _ in 0..<200 where rows != 2 {
                rows = try await database.sql.raw("SELECT COUNT(*) AS n FROM tally").first()?.decode(column: "n", as: Int.self) ?? 0
                if rows != 2 { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(attempts.withLockedValue { $0 } == 1, "never rolled back for a snapshot another process wrote past")
            #expect(try await database.sql.raw("SELECT SUM(n) AS n FROM tally").first()?.decode(column: "n", as: Int.self) == 3)
            // A transaction that only reads (a verification) holds no write back: the other process writes at once.
            try await database.readTransaction { db in
                _ = try await db.raw("SELECT COUNT(*) AS n FROM tally").first()
                try await other.sql.raw("INSERT INTO tally (n) VALUES (4)").run()
                #expect(try await db.raw("SELECT COUNT(*) AS n FROM tally").first()?.decode(column: "n", as: Int.self) == 2, "its own snapshot")
            }
            await other.shutdown()
        }
    }
}
