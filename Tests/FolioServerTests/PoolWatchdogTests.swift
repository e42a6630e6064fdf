import AsyncKit
import FluentKit
import Foundation
import NIOCore
import PostgresKit
import Logging
import NIOConcurrencyHelpers
import Testing

@testable import FolioServer

@Suite("Database connections that stop answering")
struct PoolWatchdogTests {
    struct Stuck: Error {}

    @Test("a pool that times out on every request for a connection three checks in a row stops the process; one that answers again resets the count")
    func wedgedPoolStops() async throws {
        let round = NIOLockedValueBox(0)
        let stopped = NIOLockedValueBox<String?>(nil)
        // Loop 1 times out in rounds 1, 2, 4, 5, 6; it answers in round 3. Loop 0 always answers; loop 2 fails otherwise.
        // (Three in a row here; four by default.)
        let watchdog = PoolWatchdog(
            pingEachPool: {
                let now = round.withLockedValue { $0 += 1; return $0 }
                return [.success(()), now == 3 ? .success(()) : .failure(ConnectionPoolTimeoutError.connectionRequestTimeout), .failure(Stuck())]
            },
            logger: Logger(label: "watchdog"), interval: .milliseconds(5), wedgedAfter: 3,
            onWedged: { reason in stopped.withLockedValue { $0 = reason } })
        try await watchdog.run()
        #expect(round.withLockedValue { $0 } == 6, "stopped at the third timeout in a row, not the third in all")
        #expect(stopped.withLockedValue { $0 }?.contains("event loop 1") == true)
    }

    @Test("a result not there within the limit is nil at the limit, the work going on apart; one in time is itself")
    func resultWithinLimit() async throws {
        let late = await resultWithin(.milliseconds(20)) { () async -> Int in
            try? await Task.sleep(for: .seconds(30))
            return 1
        }
        #expect(late == nil)
        #expect(await resultWithin(.seconds(30)) { 2 } == 2)
    }

    @Test("a BEGIN, ROLLBACK or COMMIT PostgreSQL never answers ends at its limit: the connection is closed, the transaction fails, and the pool lends a working one after", arguments: [TestDatabaseKind.postgres])
    func unansweredTransactionControl(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { _, env in
            let db = env.database.db
            let never = db.eventLoop.makePromise(of: Void.self)
            let answered: @Sendable () -> Void = { never.succeed(()) }
            defer { answered() }  // a promise left unfulfilled is a crash in debug builds
            try await db.withConnection { connection in
                let postgres = try #require(connection as? any PostgresDatabase)
                await #expect(throws: FolioDatabase.Unanswered.self) {
                    try await FolioDatabase.answered(never.futureResult, on: postgres, within: .milliseconds(50), what: "COMMIT")
                }
                let closed = try await postgres.withConnection { $0.eventLoop.makeSucceededFuture($0.isClosed) }.get()
                #expect(closed)
            }
            try await env.database.sql.raw("SELECT 1").run()
            #expect(try await env.database.transaction { db in try await db.raw("SELECT 1 AS one").first()?.decode(column: "one", as: Int.self) } == 1)
        }
    }

    @Test("a connection the server ends, a pool that gives out none, a statement left unanswered: the database is unavailable (503 with Retry-After), not a fault of ours", arguments: [TestDatabaseKind.postgres])
    func endedConnectionIsUnavailable(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { _, env in
            do {
                try await env.database.sql.raw("SELECT pg_terminate_backend(pg_backend_pid())").run()
                Issue.record("the connection ended its own backend and went on")
            } catch {
                #expect(FolioDatabase.isUnavailable(error), "\(String(reflecting: error))")
            }
            #expect(FolioDatabase.isUnavailable(ConnectionPoolTimeoutError.connectionRequestTimeout))
            #expect(FolioDatabase.isUnavailable(FolioDatabase.Unanswered(statement: "COMMIT")))
            #expect(!FolioDatabase.isUnavailable(CancellationError()))
            // The pool may lend the ended connection once more before it has seen it close: that lease fails as
            // unavailable too. Within a few tries it lends a working one.
            var answered = false
            for _ in 0..<10 where !answered {
                do {
                    try await env.database.sql.raw("SELECT 1").run()
                    answered = true
                } catch {
                    #expect(FolioDatabase.isUnavailable(error), "\(String(reflecting: error))")
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            #expect(answered, "the pool lends a working connection after one the server ended")

            // A database that is not there (dropped under a running server) is unavailable too, not an error of ours.
            guard case .postgres(let url) = env.configuration.database, var parts = URLComponents(string: url) else { return }
            parts.path = "/folio_no_such_database_\(UInt32.random(in: 0...UInt32.max))"
            let gone = try FolioDatabase(location: .postgres(url: try #require(parts.string)), poolSize: 1, preparedStatements: false, logger: Logger(label: "gone"))
            do {
                try await gone.sql.raw("SELECT 1").run()
                Issue.record("a database that does not exist answered")
            } catch {
                #expect(FolioDatabase.isUnavailable(error), "\(String(reflecting: error))")
            }
            await gone.shutdown()
        }
    }
}
