import FolioDomain
import Foundation
import SQLKit
import NIOConcurrencyHelpers
import Testing

@testable import FolioServer

/// Crashes for real: `folio serve` and `folio worker` run as child processes
/// and are SIGKILLed at named points (`FOLIO_TEST_PAUSE_AT`: the process
/// announces the point and waits there, so the kill lands exactly on it).
/// Then another process starts, and the books, the broker and the audit
/// trail must show each order once.
@Suite("Crashes of real processes", .serialized)
struct ProcessCrashTests {
    static let secretKey = "9c41e0b7d2f85a36c1e9047bd38f2a65e0c7b914d6a2f3853e1b0c7d9a4f6e21"

    /// The environment every child process shares: one database, one signing key (so audit heads verify).
    func environment(_ location: AppConfiguration.DatabaseLocation, _ extra: [String: String] = [:]) -> [String: String] {
        let url = location.databaseURL
        return [
            "ENVIRONMENT": "testing", "DATABASE_URL": url, "SECRET_KEY": Self.secretKey, "BCRYPT_COST": "10",
            "REQUIRE_EMAIL_VERIFICATION": "false", "RATE_LIMIT_ENABLED": "false",
        ].merging(extra) { _, new in new }
    }

    /// `folio ledger verify` and `folio audit verify`, as an operator would run them.
    func verifyBooks(_ folio: FolioProcess, _ environment: [String: String], sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let ledger = try await folio.run(["ledger", "verify"], environment: environment)
        #expect(ledger.status == 0, "\(ledger.stdout)\(ledger.stderr)", sourceLocation: sourceLocation)
        let audit = try await folio.run(["audit", "verify"], environment: environment)
        #expect(audit.status == 0, "\(audit.stdout)\(audit.stderr)", sourceLocation: sourceLocation)
    }

    /// Links the fake Alpaca's account through the API; returns the new Folio account's id.
    func linkAlpaca(_ http: HTTPCalls, _ headers: [String: String], sourceLocation: SourceLocation = #_sourceLocation) async throws -> String {
        let linked = try await http.post("/api/brokerage/alpaca", FakeAlpaca.linkBody, headers: headers)
        #expect(linked.status == 201, sourceLocation: sourceLocation)
        return try #require((linked.json["account"] as? [String: Any])?["id"] as? String, sourceLocation: sourceLocation)
    }

    static let workerPoints: [PausePoints.Point] = [.afterClaim, .afterBrokerSubmit, .afterApply]

    @Test("a worker killed after the claim, after the broker accepted, or after the fill was applied: the next worker fills the order once, and it is at the broker once (PostgreSQL only: several processes)", .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"), arguments: workerPoints)
    func killedWorker(point: PausePoints.Point) async throws {
        try await withFakeAlpaca { fake in
            try await withTestDatabase(.postgres) { database, location in
                let folio = try FolioProcess()
                defer { folio.cleanUp() }
                let base = environment(location, fake.environment.merging(["SERVE_WORKER": "false"]) { _, new in new })
                let server = try await RunningFolio.serve(folio, environment: base)
                defer { server.kill() }
                let http = HTTPCalls(baseURL: server.baseURL)
                let headers = try await http.signIn("crash-\(point.rawValue)@example.com")
                let account = try await linkAlpaca(http, headers)
                let placed = try await http.post("/api/orders", ["symbol": "AAPL", "quantity": "3", "side": "BUY", "order_type": "MARKET", "account_id": account], headers: headers)
                #expect(placed.status == 201)
                let id = try #require(placed.json["id"] as? String)

                let doomed = try RunningFolio(folio, ["worker"], environment: base.merging(["FOLIO_TEST_PAUSE_AT": point.rawValue]) { _, new in new })
                try await doomed.waitForLine(containing: "paused at \(point.rawValue)")
                doomed.kill()

                let restarted = try RunningFolio(folio, ["worker"], environment: base)
                defer { restarted.kill() }
                // The dead worker's lease is taken over once its heartbeat has been silent for a few seconds.
                try await eventually("the job finished by the restarted worker") {
                    try await database.sql.raw("SELECT status FROM jobs WHERE kind <> 'send_mail'").all().map { try $0.decode(column: "status", as: String.self) } == ["done"]
                }
                #expect(try await http.get("/api/orders/\(id)", headers: headers).json["status"] as? String == "filled")
                #expect(fake.orders.count == 1, "one order at the broker, whatever the retries")
                #expect(fake.orders[id]?.status == "filled")
                let store = TradingStore(database: database)
                #expect(try await store.fills(of: try #require(OrderID(id))).count == 1)
                #expect(await restarted.terminate().status == 0)
                try await verifyBooks(folio, base)
            }
        }
    }

    @Test("a worker killed after a fill event arrived by the trade stream but before it was applied: the next worker's poll applies it once (PostgreSQL only: several processes)", .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func killedAfterStreamEvent() async throws {
        try await withFakeAlpaca { fake in
            fake.mode = .rest
            try await withTestDatabase(.postgres) { database, location in
                let folio = try FolioProcess()
                defer { folio.cleanUp() }
                let base = environment(location, fake.environment.merging(["SERVE_WORKER": "false"]) { _, new in new })
                let server = try await RunningFolio.serve(folio, environment: base)
                defer { server.kill() }
                let http = HTTPCalls(baseURL: server.baseURL)
                let headers = try await http.signIn("streamed@example.com")
                let account = try await linkAlpaca(http, headers)
                let placed = try await http.post("/api/orders", ["symbol": "KO", "quantity": "4", "side": "BUY", "order_type": "LIMIT", "limit_price": "70", "time_in_force": "GTC", "account_id": account], headers: headers)
                let id = try #require(placed.json["id"] as? String)

                // This worker hears fills only by the stream (its polls are an hour apart), and dies on the first event.
                let doomed = try RunningFolio(folio, ["worker"], environment: base.merging(["FOLIO_TEST_PAUSE_AT": "after_stream_event", "ALPACA_POLL_SECONDS": "3600"]) { _, new in new })
                try await eventually("the order resting at the broker, and the stream listening") {
                    try await http.get("/api/orders/\(id)", headers: headers).json["status"] as? String == "accepted" && fake.listeners == 1
                }
                fake.fill(clientOrderID: id, quantity: 3, at: 69)
                try await doomed.waitForLine(containing: "paused at after_stream_event")
                doomed.kill()
                #expect(try await http.get("/api/orders/\(id)", headers: headers).json["filled_quantity"] as? String == "0")

                let restarted = try RunningFolio(folio, ["worker"], environment: base)
                defer { restarted.kill() }
                try await eventually("the fill applied by the restarted worker") {
                    try await http.get("/api/orders/\(id)", headers: headers).json["filled_quantity"] as? String == "3"
                }
                try await eventually("the restarted worker's stream listening") { fake.streamConnections == 2 }
                fake.fill(clientOrderID: id, at: 68)
                try await eventually("the last part applied") {
                    try await http.get("/api/orders/\(id)", headers: headers).json["status"] as? String == "filled"
                }
                let fills = try await TradingStore(database: database).fills(of: try #require(OrderID(id)))
                #expect(fills.map(\.quantity).sorted() == [1, 3])
                #expect(fake.posts[id] == 1)
                #expect(await restarted.terminate().status == 0)
                try await verifyBooks(folio, base)
            }
        }
    }

    @Test("a worker killed while an order rests at the broker and has just filled there: the next worker applies the fill once (PostgreSQL only: several processes)", .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func killedWhileResting() async throws {
        try await withFakeAlpaca { fake in
            fake.mode = .rest
            try await withTestDatabase(.postgres) { database, location in
                let folio = try FolioProcess()
                defer { folio.cleanUp() }
                let base = environment(location, fake.environment.merging(["SERVE_WORKER": "false", "ALPACA_STREAM": "false"]) { _, new in new })
                let server = try await RunningFolio.serve(folio, environment: base)
                defer { server.kill() }
                let http = HTTPCalls(baseURL: server.baseURL)
                let headers = try await http.signIn("resting@example.com")
                // Fills by polling alone here: this crash lands in the poller's look (the stream's is the test below).
                let account = try await linkAlpaca(http, headers)
                let placed = try await http.post("/api/orders", ["symbol": "KO", "quantity": "4", "side": "BUY", "order_type": "LIMIT", "limit_price": "70", "time_in_force": "GTC", "account_id": account], headers: headers)
                let id = try #require(placed.json["id"] as? String)

                // The first worker submits it (it rests), then dies on its next look, just after the broker reports a fill.
                let doomed = try RunningFolio(folio, ["worker"], environment: base.merging(["FOLIO_TEST_PAUSE_AT": "after_recheck"]) { _, new in new })
                try await eventually("the order resting at the broker") {
                    try await http.get("/api/orders/\(id)", headers: headers).json["status"] as? String == "accepted"
                }
                fake.fill(clientOrderID: id, quantity: 3, at: 69)
                try await doomed.waitForLine(containing: "paused at after_recheck")
                doomed.kill()
                #expect(try await http.get("/api/orders/\(id)", headers: headers).json["filled_quantity"] as? String == "0")

                let restarted = try RunningFolio(folio, ["worker"], environment: base)
                defer { restarted.kill() }
                try await eventually("the fill applied by the restarted worker") {
                    try await http.get("/api/orders/\(id)", headers: headers).json["status"] as? String == "partially_filled"
                }
                fake.fill(clientOrderID: id, at: 68)
                try await eventually("the last part applied") {
                    try await http.get("/api/orders/\(id)", headers: headers).json["status"] as? String == "filled"
                }
                let fills = try await TradingStore(database: database).fills(of: try #require(OrderID(id)))
                #expect(fills.map(\.quantity) == [3, 1])
                #expect(fake.posts[id] == 1)
                #expect(await restarted.terminate().status == 0)
                try await verifyBooks(folio, base)
            }
        }
    }

    @Test("a server killed during a batch of keyed orders: after a restart every retry gets its final answer within 10 seconds, and each key is one order (PostgreSQL only: several processes)", .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func killedServer() async throws {
        try await withTestDatabase(.postgres) { database, location in
            let folio = try FolioProcess()
            defer { folio.cleanUp() }
            let base = environment(location)
            // The first five keyed requests go through; the next ones stop after claiming their keys.
            let server = try await RunningFolio.serve(folio, environment: base.merging(["FOLIO_TEST_PAUSE_AT": "after_idempotency_claim", "FOLIO_TEST_PAUSE_SKIP": "5"]) { _, new in new })
            let http = HTTPCalls(baseURL: server.baseURL)
            let headers = try await http.signIn("keys@example.com")
            let keys = (0..<10).map { "order-key-\($0)" }
            // Answers as the client receives them, so the kill waits for the client, not for the server's access lines.
            let received = NIOLockedValueBox(0)
            let firstAnswers = Task {
                await withTaskGroup(of: (String, HTTPCalls.Answer?).self) { group in
                    for key in keys {
                        group.addTask {
                            let order: [String: Any] = ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "MARKET"]
                            let answer = try? await http.post("/api/orders", order, headers: headers.merging(["Idempotency-Key": key]) { _, new in new })
                            if answer != nil { received.withLockedValue { $0 += 1 } }
                            return (key, answer)
                        }
                    }
                    return await group.reduce(into: [String: HTTPCalls.Answer]()) { answers, pair in if let answer = pair.1 { answers[pair.0] = answer } }
                }
            }
            try await eventually("five requests done and five paused in flight") {
                let placed = try await database.sql.raw("SELECT COUNT(*) AS n FROM orders").first()?.decode(column: "n", as: Int.self)
                return placed == 5 && server.stdout.lines.filter { $0 == "paused at after_idempotency_claim" }.count == 5
            }
            // Let the five answers reach the client before the kill (the server logs an answer before its last byte leaves).
            try await eventually("five answers received") {
                server.stdout.objects.filter { $0["route"] as? String == "/api/orders" && $0["status"] as? String == "201" }.count == 5
                    && received.withLockedValue { $0 } == 5
            }
            server.kill()
            let answered = await firstAnswers.value
            #expect(answered.values.filter { $0.status == 201 }.count == 5, "the five that ran were created before the kill")

            let restarted = try await RunningFolio.serve(folio, environment: base)
            defer { restarted.kill() }
            let again = HTTPCalls(baseURL: restarted.baseURL)
            let start = ContinuousClock.now
            // Every key retried at once, as ten clients would: each must have its final answer within 10 s of the restart.
            let final = try await withThrowingTaskGroup(of: (String, HTTPCalls.Answer?).self) { group in
                for key in keys {
                    group.addTask {
                        let order: [String: Any] = ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "MARKET"]
                        while true {
                            let answer = try await again.post("/api/orders", order, headers: headers.merging(["Idempotency-Key": key]) { _, new in new })
                            if answer.status != 409 { return (key, answer) }
                            #expect(ContinuousClock.now - start < .seconds(10), "\(key) still in progress 10 seconds after the restart")
                            if ContinuousClock.now - start >= .seconds(10) { return (key, nil) }
                            try await Task.sleep(for: .milliseconds(250))
                        }
                    }
                }
                return try await group.reduce(into: [String: HTTPCalls.Answer]()) { answers, pair in if let answer = pair.1 { answers[pair.0] = answer } }
            }
            #expect(ContinuousClock.now - start < .seconds(10))
            #expect(final.values.allSatisfy { $0.status == 201 }, "\(final.mapValues(\.status))")
            for (key, answer) in answered where answer.status == 201 {
                #expect(final[key]?.text == answer.text, "\(key) replays its first answer")
            }
            let orders = try await database.sql.raw("SELECT COUNT(*) AS n FROM orders").first()?.decode(column: "n", as: Int.self)
            #expect(orders == 10, "one order per key")
            let ids = Set(final.values.compactMap { $0.json["id"] as? String })
            #expect(ids.count == 10)
            try await eventually("every order filled") {
                try await database.sql.raw("SELECT COUNT(*) AS n FROM orders WHERE status = 'filled'").first()?.decode(column: "n", as: Int.self) == 10
            }
            #expect(await restarted.terminate().status == 0)
            try await verifyBooks(folio, base)
        }
    }

    @Test("SQLite with a separate folio worker beside the server: concurrent orders get no 500, and every one fills (SQLite only: its single writer)")
    func sqliteWithWorker() async throws {
        try await withTestDatabase(.sqlite) { _, location in
            let folio = try FolioProcess()
            defer { folio.cleanUp() }
            let base = environment(location)
            let server = try await RunningFolio.serve(folio, environment: base)
            defer { server.kill() }
            let worker = try RunningFolio(folio, ["worker"], environment: base)
            defer { worker.kill() }
            let http = HTTPCalls(baseURL: server.baseURL)
            let headers = try await http.signIn("sqlite@example.com")
            let accounts = try await http.get("/api/accounts", headers: headers).json["data"] as? [[String: Any]]
            let account = try #require(accounts?.first?["id"] as? String)
            let statuses = await withTaskGroup(of: Int.self) { group in
                for index in 0..<60 {
                    group.addTask {
                        // Deposits and orders mixed: both take the account's lock, from two processes.
                        let (path, body): (String, [String: Any]) = index % 3 == 0
                            ? ("/api/accounts/\(account)/deposits", ["amount": "1.00"])
                            : ("/api/orders", ["symbol": ["AAPL", "KO", "MSFT"][index % 3], "quantity": "1", "side": "BUY", "order_type": "MARKET"])
                        return (try? await http.post(path, body, headers: headers).status) ?? 0
                    }
                }
                return await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.allSatisfy { $0 == 201 }, "\(statuses.sorted())")
            try await eventually("every order filled") {
                let listed = try await http.get("/api/orders?limit=200", headers: headers).json["data"] as? [[String: Any]] ?? []
                return listed.count == 40 && listed.allSatisfy { $0["status"] as? String == "filled" }
            }
            #expect(await worker.terminate().status == 0)
            #expect(await server.terminate().status == 0)
            try await verifyBooks(folio, base)
            let errors = (server.stdout.lines + worker.stdout.lines).filter { $0.contains("\"level\":\"error\"") }
            #expect(errors.isEmpty, "\(errors.prefix(3))")
        }
    }

    @Test("a rebalance whose worker is killed between its sells and its buys finishes after a restart, with each buy placed once (PostgreSQL only: several processes)", .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func killedRebalance() async throws {
        try await withTestDatabase(.postgres) { database, location in
            let folio = try FolioProcess()
            defer { folio.cleanUp() }
            let base = environment(location, ["SERVE_WORKER": "false"])
            let server = try await RunningFolio.serve(folio, environment: base)
            defer { server.kill() }
            let http = HTTPCalls(baseURL: server.baseURL)
            var headers = try await http.signIn("crash-rebalance@example.com")
            #expect(try await http.post("/api/orders", ["symbol": "AAPL", "quantity": "300", "side": "BUY", "order_type": "MARKET"], headers: headers).status == 201)
            let first = try RunningFolio(folio, ["worker"], environment: base)
            try await eventually("the first order filled") {
                try await database.sql.raw("SELECT status FROM orders").all().map { try $0.decode(column: "status", as: String.self) } == ["filled"]
            }
            #expect(await first.terminate().status == 0)

            let account = try #require((try await http.get("/api/accounts", headers: headers).json["data"] as? [[String: Any]])?.first?["id"] as? String)
            let targets = try await http.send("PUT", "/api/accounts/\(account)/targets", json: [
                "targets": [["symbol": "AAPL", "percent": "40"], ["symbol": "MSFT", "percent": "30"], ["symbol": "VTI", "percent": "30"]],
            ], headers: headers)
            #expect(targets.status == 200, "\(targets.text)")
            headers["Idempotency-Key"] = "crash-rebalance"
            let started = try await http.post("/api/portfolio/rebalance", ["execute": true], headers: headers)
            #expect(started.status == 202, "\(started.text)")
            let id = try #require(started.json["id"] as? String)

            let doomed = try RunningFolio(folio, ["worker"], environment: base.merging(["FOLIO_TEST_PAUSE_AT": PausePoints.Point.rebalanceBeforeBuys.rawValue]) { _, new in new })
            do {
                try await doomed.waitForLine(containing: "paused at \(PausePoints.Point.rebalanceBeforeBuys.rawValue)")
            } catch {
                Issue.record("the worker said: \(doomed.stdout.lines.suffix(10))")
                throw error
            }
            doomed.kill()
            let killed = try await http.get("/api/portfolio/rebalances/\(id)", headers: headers).json
            #expect(killed["status"] as? String == "selling")
            #expect((killed["orders"] as? [[String: Any]])?.allSatisfy { $0["side"] as? String == "SELL" && $0["status"] as? String == "filled" } == true)

            let restarted = try RunningFolio(folio, ["worker"], environment: base)
            defer { restarted.kill() }
            try await eventually("the run finished by the restarted worker") {
                try await http.get("/api/portfolio/rebalances/\(id)", headers: headers).json["status"] as? String == "done"
            }
            let run = try await http.get("/api/portfolio/rebalances/\(id)", headers: headers).json
            let buys = (run["orders"] as? [[String: Any]] ?? []).filter { $0["phase"] as? String == "buy" && $0["round"] as? Int == 1 }
            #expect(Set(buys.compactMap { $0["symbol"] as? String }) == ["MSFT", "VTI"] && buys.count == 2, "each buy placed once: \(buys)")
            #expect(try await http.get("/api/portfolio/drift", headers: headers).json["outside_band"] as? Bool == false)
            #expect(await restarted.terminate().status == 0)
            try await verifyBooks(folio, base)
        }
    }
}

/// A Plaid sync killed between pages: the next worker resumes after the last saved page.
@Suite("A Plaid sync killed between pages", .serialized)
struct PlaidSyncCrashTests {
    @Test("a worker killed right after a sync page was saved: the next worker resumes at its cursor, with nothing missed and nothing twice (PostgreSQL only: several processes)", .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func killedBetweenPages() async throws {
        try await withFakePlaid { fake in
            fake.pageSize = 2
            try await withTestDatabase(.postgres) { database, location in
                let folio = try FolioProcess()
                defer { folio.cleanUp() }
                let base = ProcessCrashTests().environment(location, [
                    "SERVE_WORKER": "false", "PLAID_CLIENT_ID": FakePlaid.clientID, "PLAID_SECRET": FakePlaid.secret, "PLAID_BASE_URL": fake.baseURL,
                ])
                let server = try await RunningFolio.serve(folio, environment: base)
                defer { server.kill() }
                let http = HTTPCalls(baseURL: server.baseURL)
                let headers = try await http.signIn("plaid-crash@example.com")
                let issued = fake.issuePublicToken(accounts: PlaidTests.accounts, changes: PlaidTests.changes)
                #expect(try await http.post("/api/links/plaid/exchange", ["public_token": issued.publicToken], headers: headers).status == 201)

                let doomed = try RunningFolio(folio, ["worker"], environment: base.merging(["FOLIO_TEST_PAUSE_AT": "after_plaid_page"]) { _, new in new })
                try await doomed.waitForLine(containing: "paused at after_plaid_page")
                doomed.kill()
                let saved = try await database.sql.raw("SELECT sync_cursor FROM plaid_items").first()?.decode(column: "sync_cursor", as: String?.self)
                #expect(saved == "cursor-2")
                #expect(fake.syncCursors == [nil])

                let restarted = try RunningFolio(folio, ["worker"], environment: base)
                defer { restarted.kill() }
                try await eventually("the sync finished by the restarted worker") {
                    try await database.sql.raw("SELECT sync_cursor FROM plaid_items").first()?.decode(column: "sync_cursor", as: String?.self) == "cursor-6"
                }
                #expect(fake.syncCursors == [nil, "cursor-2", "cursor-4"], "resumed at the saved page, not from the start")
                let ids = try await database.sql.raw("SELECT plaid_transaction_id FROM linked_transactions ORDER BY plaid_transaction_id").all()
                    .map { try $0.decode(column: "plaid_transaction_id", as: String.self) }
                #expect(ids == ["tx-1", "tx-2", "tx-3"])
                let listed = try await http.get("/api/links/transactions", headers: headers)
                #expect((listed.json["data"] as? [[String: Any]])?.first { $0["transaction_id"] as? String == "tx-1" }?["amount"] as? String == "-12.35")
                #expect(await restarted.terminate().status == 0)
                #expect(!([server, doomed, restarted].flatMap { $0.stdout.lines + $0.stderr.lines }).contains { $0.contains("access-sandbox-") }, "no access token in any process's log")
            }
        }
    }
}
