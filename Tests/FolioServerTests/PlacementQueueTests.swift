import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import SQLKit
import Testing

@testable import FolioServer

@Suite("Placements that share a transaction")
struct PlacementQueueTests {
    static let needsPostgres = ConditionTrait.enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)")

    /// Holds the account's row lock (PostgreSQL) until `release` is called, so
    /// the next placement waits at the lock inside its transaction and the
    /// ones after it wait in the queue: the batch they then make is certain.
    /// On a connection of its own, outside the server's small test pool.
    final class AccountLock: Sendable {
        private let released: AsyncStream<Void>.Continuation
        private let database: FolioDatabase
        let task: Task<Void, any Error>

        init(_ account: AccountID, env: TestEnvironment) async throws {
            let database = try FolioDatabase(location: env.configuration.database, poolSize: 1, preparedStatements: false, logger: Logger(label: "lock"))
            self.database = database
            let (locked, lockedNow) = AsyncStream<Void>.makeStream()
            let (release, released) = AsyncStream<Void>.makeStream()
            self.released = released
            task = Task {
                try await database.transaction { db in
                    try await db.raw("SELECT id FROM accounts WHERE id = \(bind: account) FOR UPDATE").run()
                    lockedNow.yield()
                    for await _ in release { break }
                }
            }
            for await _ in locked { break }
        }

        func release() async throws {
            released.finish()
            let result = await task.result
            await database.shutdown()
            try result.get()
        }
    }

    /// Waits until the account's line is `count` long: one placement being written, the others waiting.
    static func waitForLine(_ env: TestEnvironment, account: AccountRecord, count: Int) async throws {
        try await eventually("the line grew to \(count)") {
            env.services.placements.lineLength(account: account.id, owner: account.userID) >= count
        }
    }

    struct Answer: Sendable {
        var requestID: String
        var status: HTTPResponse.Status
        var code: String?
        var orderID: String?
    }

    static func limitBuy(_ symbol: String, limit: String, clientOrderID: String? = nil) -> [String: Any] {
        var body: [String: Any] = ["symbol": symbol, "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": limit, "time_in_force": "GTC"]
        if let clientOrderID { body["client_order_id"] = clientOrderID }
        return body
    }

    @Test("placements queued behind a locked account are written together: each is checked against the books the ones before it left, a refused one fails alone, and each audit row names its own request (PostgreSQL only: it holds the row lock)", needsPostgres)
    func queuedPlacementsShareACommit() async throws {
        try await withTestApp(.postgres, configure: { $0.startingCash = 1_000 }) { client, env in
            let tokens = try await signUp(client, env, email: "queue@example.com")
            let account = try await env.firstAccount()
            let lock = try await AccountLock(account.id, env: env)
            // Five buys reserving 300.00 each against 1,000.00: three fit.
            let requests = (0..<5).map { String(format: "%032x", 0xfeed_0000 + $0) }
            let answers = Task {
                try await withThrowingTaskGroup(of: Answer.self) { group in
                    for (index, requestID) in requests.enumerated() {
                        var headers = bearer(tokens)
                        headers[EdgeMiddleware.header] = requestID
                        let sent = headers
                        group.addTask {
                            let response = try await post(client, "/api/orders", Self.limitBuy("KO", limit: "300.00"), headers: sent)
                            let body = try json(response)
                            return Answer(requestID: requestID, status: response.status, code: body["code"] as? String, orderID: body["id"] as? String)
                        }
                        // The first is written first and waits at the lock inside its transaction; the others queue behind it,
                        // sent together: PostgreSQL's lock_timeout (10 s) runs from the first, and a loaded machine sending
                        // them one by one, each waited for, could pass it before the fifth joined.
                        if index == 0 { try await Self.waitForLine(env, account: account, count: 1) }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
            }
            try await Self.waitForLine(env, account: account, count: 5)
            try await lock.release()
            let results = try await answers.value

            let created = results.filter { $0.status == .created }
            #expect(created.count == 3, "\(results)")
            let refused = results.filter { $0.status != .created }
            #expect(refused.count == 2)
            #expect(refused.allSatisfy { $0.status == .unprocessableContent && $0.code == "insufficient_buying_power" })
            let after = try await env.firstAccount()
            #expect(after.reservedCash == (try Cash(parsing: "900.00")))
            #expect(after.state.availableCash == (try Cash(parsing: "100.00")))

            // Each order's audit row carries the request that placed it, though several shared a commit.
            for answer in created {
                let orderID = try #require(answer.orderID)
                let row = try await env.database.sql.raw("""
                    SELECT request_id FROM audit_events WHERE action = 'order.placed' AND subject_id = \(bind: orderID)
                    """).first()
                #expect(try row?.decode(column: "request_id", as: String?.self) == answer.requestID)
            }
            #expect(try await env.orders().count == 3)
            // Two transactions wrote them: the first alone, the other two (and the refusals) together.
            let writers = try await env.database.sql.raw("SELECT COUNT(DISTINCT xmin::text) AS n FROM orders").first()?.decode(column: "n", as: Int.self)
            #expect(writers == 2)
            try await env.expectConsistent()
        }
    }

    @Test("in one batch, a refused placement leaves its client_order_id to a later one; a placed one takes it (PostgreSQL only: it holds the row lock)", needsPostgres)
    func clientOrderIDsWithinABatch() async throws {
        try await withTestApp(.postgres, configure: { $0.startingCash = 1_000 }) { client, env in
            let tokens = try await signUp(client, env, email: "ids@example.com")
            let account = try await env.firstAccount()
            let lock = try await AccountLock(account.id, env: env)
            // The first is written alone; then, together: 800.00 refused (700.00 left), 300.00 placed, 100.00 a duplicate of it.
            let orders: [(limit: String, clientOrderID: String?)] = [("300.00", nil), ("800.00", "x"), ("300.00", "x"), ("100.00", "x")]
            let answers = Task {
                try await withThrowingTaskGroup(of: (Int, HTTPResponse.Status, String?).self) { group in
                    for (index, order) in orders.enumerated() {
                        let headers = bearer(tokens)
                        group.addTask {
                            let response = try await post(client, "/api/orders", Self.limitBuy("KO", limit: order.limit, clientOrderID: order.clientOrderID), headers: headers)
                            return (index, response.status, try json(response)["code"] as? String)
                        }
                        try await Self.waitForLine(env, account: account, count: index + 1)
                    }
                    return try await group.reduce(into: [Int: (HTTPResponse.Status, String?)]()) { $0[$1.0] = ($1.1, $1.2) }
                }
            }
            try await Self.waitForLine(env, account: account, count: 4)
            try await lock.release()
            let results = try await answers.value
            #expect(results[0]?.0 == .created)
            #expect(results[1]?.0 == .unprocessableContent && results[1]?.1 == "insufficient_buying_power")
            #expect(results[2]?.0 == .created)
            #expect(results[3]?.0 == .conflict && results[3]?.1 == "duplicate_client_order_id")
            #expect(try await env.orders().compactMap(\.clientOrderID) == ["x"])
            try await env.expectConsistent()
        }
    }

    struct RefusedResponse: Error, Equatable {}

    @Test("when the shared transaction fails through one placement, each is written alone and only that one fails (PostgreSQL only: it holds the row lock)", needsPostgres)
    func failedBatchFallsBackToOneByOne() async throws {
        try await withTestApp(.postgres) { client, env in
            _ = try await signUp(client, env, email: "fallback@example.com")
            let account = try await env.firstAccount()
            let orders = env.orders, queue = env.services.placements
            func member(_ symbol: String, failing: Bool = false) async throws -> PlacementQueue.Member {
                let draft = OrderDraft(
                    symbol: symbol, side: .buy, type: .limit, timeInForce: .goodTillCanceled, quantity: 1, notional: nil,
                    limitPrice: try Price(parsing: "10.00"), stopPrice: nil)
                let priced = try await orders.price(.init(draft: draft, accountID: nil, clientOrderID: nil))
                return PlacementQueue.Member(placing: .init(priced: priced, context: .none), claim: nil) { order in
                    if failing { throw RefusedResponse() }
                    return StoredResponse(body: Data(order.symbol.utf8), location: nil)
                }
            }
            // AAPL is written alone first; the other three together, which fails through KO's response.
            let members = [try await member("AAPL"), try await member("MSFT"), try await member("KO", failing: true), try await member("T")]
            let lock = try await AccountLock(account.id, env: env)
            let answers = Task {
                try await withThrowingTaskGroup(of: (Int, Result<String, RefusedResponse>).self) { group in
                    for (index, member) in members.enumerated() {
                        group.addTask {
                            do {
                                let stored = try await queue.place(member, account: account.id, owner: account.userID)
                                return (index, .success(String(decoding: stored.body, as: UTF8.self)))
                            } catch let error as RefusedResponse {
                                return (index, .failure(error))
                            }
                        }
                        try await Self.waitForLine(env, account: account, count: index + 1)
                    }
                    return try await group.reduce(into: [Int: Result<String, RefusedResponse>]()) { $0[$1.0] = $1.1 }
                }
            }
            try await Self.waitForLine(env, account: account, count: 4)
            try await lock.release()
            let results = try await answers.value
            #expect(results[0] == .success("AAPL"))
            #expect(results[1] == .success("MSFT"))
            #expect(results[2] == .failure(RefusedResponse()))
            #expect(results[3] == .success("T"))
            let placed = try await env.orders().map(\.symbol).sorted()
            #expect(placed == ["AAPL", "MSFT", "T"])
            #expect(try await env.firstAccount().reservedCash == (try Cash(parsing: "30.00")))
            try await env.expectConsistent()
        }
    }

    @Test("forty placements at once, each with its own Idempotency-Key and five sharing a client_order_id: one of the five is placed, every key replays its own answer", arguments: TestDatabaseKind.all)
    func concurrentKeyedPlacements(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "keys@example.com")
            let results = try await withThrowingTaskGroup(of: (Int, HTTPResponse.Status, String).self) { group in
                for index in 0..<40 {
                    var headers = bearer(tokens)
                    headers[Idempotency.header] = "key-\(index)"
                    let sent = headers
                    group.addTask {
                        let body = Self.limitBuy("MSFT", limit: "1.00", clientOrderID: index < 5 ? "shared" : "own-\(index)")
                        let response = try await post(client, "/api/orders", body, headers: sent)
                        return (index, response.status, String(buffer: response.body))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let shared = results.filter { $0.0 < 5 }
            #expect(shared.filter { $0.1 == .created }.count == 1, "\(shared.map(\.1.code))")
            #expect(shared.filter { $0.1 == .conflict }.count == 4)
            #expect(results.filter { $0.0 >= 5 }.allSatisfy { $0.1 == .created })
            #expect(try await env.orders().count == 36)
            // A created order's key replays its body.
            for (index, status, body) in results where status == .created {
                var headers = bearer(tokens)
                headers[Idempotency.header] = "key-\(index)"
                let again = try await post(client, "/api/orders", Self.limitBuy("MSFT", limit: "1.00", clientOrderID: index < 5 ? "shared" : "own-\(index)"), headers: headers)
                #expect(again.status == .created)
                #expect(String(buffer: again.body) == body)
            }
            #expect(try await env.orders().count == 36)
            // A refused one's key was forgotten: sent again, it is refused again and places nothing.
            for (index, status, _) in results where status != .created {
                var headers = bearer(tokens)
                headers[Idempotency.header] = "key-\(index)"
                let again = try await post(client, "/api/orders", Self.limitBuy("MSFT", limit: "1.00", clientOrderID: "shared"), headers: headers)
                #expect(again.status == .conflict)
                #expect(try problem(again).code == "duplicate_client_order_id")
            }
            #expect(try await env.orders().count == 36)
            let account = try await env.firstAccount()
            #expect(account.reservedCash == (try Cash(parsing: "36.00")))
            try await env.expectConsistent()
        }
    }
}
