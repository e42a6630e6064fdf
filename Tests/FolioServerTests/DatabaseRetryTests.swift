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
}
