import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SQLKit
import Testing

@testable import FolioServer

@Suite("Orders and the paper broker")
struct OrdersTests {
    func order(_ client: some TestClientProtocol, _ tokens: [String: Any], _ body: [String: Any]) async throws -> TestResponse {
        try await post(client, "/api/orders", body, headers: bearer(tokens))
    }

    func show(_ client: some TestClientProtocol, _ tokens: [String: Any], _ id: String) async throws -> [String: Any] {
        try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))
    }

    @Test("the seed's market order fills, and the portfolio shows 1 AAPL with cash reduced by exactly the fill", arguments: TestDatabaseKind.all)
    func seedOrder(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "trader@example.com")
            let placed = try await order(client, tokens, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET"])
            #expect(placed.status == .created)
            let id = try #require(try json(placed)["id"] as? String)
            #expect(try json(placed)["status"] as? String == "new")
            await env.worker.drain()

            let filled = try await show(client, tokens, id)
            #expect(filled["status"] as? String == "filled")
            #expect(filled["filled_quantity"] as? String == "1")
            let price = try Price(parsing: try #require(filled["average_fill_price"] as? String))
            #expect(price == SimulatedMarket().price(of: "AAPL", at: env.clock.now))

            let portfolio = try json(try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(tokens)))
            let position = try #require((portfolio["positions"] as? [[String: Any]])?.first)
            #expect(position["symbol"] as? String == "AAPL")
            #expect(position["quantity"] as? String == "1")
            let cost = try Money.cost(quantity: 1, price: price)
            #expect(position["market_value"] as? String == cost.description)
            #expect(portfolio["cash"] as? String == (try Cash(100_000) - cost).description)
            #expect(portfolio["available_cash"] as? String == (try Cash(100_000) - cost).description)
            try await env.expectConsistent()
        }
    }

    @Test("orders written together in one statement keep each one's values, nulls and whole columns of nulls among them", arguments: TestDatabaseKind.all)
    func ordersWrittenTogether(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "together@example.com")
            for symbol in ["AAPL", "MSFT", "KO"] {
                let placed = try await order(client, tokens, ["symbol": symbol, "quantity": 3, "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC"])
                #expect(placed.status == .created)
            }
            let placed = try await env.orders()
            #expect(placed.count == 3)
            guard placed.count == 3 else { return }
            let later = Date(timeIntervalSince1970: 1_800_000_000)
            // The first row has nulls where the others have values, and no row has a cancel time.
            var changed = placed
            changed[0].status = .accepted
            changed[0].updatedAt = later
            changed[1].status = .rejected
            changed[1].rejectReason = "a reason"
            changed[1].reservedCash = .zero
            changed[1].updatedAt = later
            changed[2].status = .partiallyFilled
            changed[2].filledQuantity = try Quantity(parsing: "1.000000001")
            changed[2].averageFillPrice = try Price(parsing: "0.99999999")
            changed[2].reservedCash = try Cash(parsing: "1.9999")
            changed[2].updatedAt = later.addingTimeInterval(1)
            var writes = WriteBatch(for: env.database.kind)
            env.store.updateOrders(changed, into: &writes)
            try await writes.run(on: env.database.sql)
            let written = try await env.orders()
            #expect(written == changed)
            // One order alone, its cancel time the only one in its column.
            var single = written[0]
            single.cancelRequestedAt = later
            writes = WriteBatch(for: env.database.kind)
            env.store.updateOrders([single], into: &writes)
            try await writes.run(on: env.database.sql)
            #expect(try await env.order(single.id) == single)
        }
    }

    @Test("a batch of writes commits whole or not at all, and its rows may refer to one another", arguments: TestDatabaseKind.all)
    func writeBatch(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            _ = try await signUp(client, env, email: "batch@example.com")
            let user = try await env.firstAccount().userID
            func notification(_ id: UUID) -> SQLQueryString {
                """
                INSERT INTO notifications (id, user_id, kind, category, title, body, data, created_at)
                VALUES (\(bind: id), \(bind: user), 'order_filled', 'orders', 'title', 'body', '{}', \(bind: env.clock.now))
                """
            }
            func message(_ id: UUID, about notification: UUID) -> SQLQueryString {
                """
                INSERT INTO mail_messages (id, user_id, notification_id, recipient, template, variables, status, attempts, created_at, updated_at)
                VALUES (\(bind: id), \(bind: user), \(bind: notification), 'batch@example.com', 'order_filled', '{}', 'queued', 0,
                        \(bind: env.clock.now), \(bind: env.clock.now))
                """
            }
            func count(_ table: String) async throws -> Int {
                try await env.database.sql.raw("SELECT COUNT(*) AS n FROM \(ident: table)").first()?.decode(column: "n", as: Int.self) ?? -1
            }
            let before = (try await count("notifications"), try await count("mail_messages"))

            // A message naming a notification written earlier in the same batch.
            let first = UUID()
            var writes = WriteBatch(for: env.database.kind)
            writes.add(notification(first))
            writes.add(message(UUID(), about: first))
            try await writes.run(in: env.database)
            let written = (try await count("notifications"), try await count("mail_messages"))
            #expect(written == (before.0 + 1, before.1 + 1))

            // The second notification repeats an id: nothing of the batch is kept, alone or in a transaction.
            let second = UUID()
            var failing = WriteBatch(for: env.database.kind)
            failing.add(notification(second))
            failing.add(message(UUID(), about: second))
            failing.add(notification(first))
            let batch = failing
            let alone = await #expect(throws: (any Error).self) { try await batch.run(in: env.database) }
            #expect(alone.flatMap(DatabaseConstraint.init)?.kind == .unique)
            await #expect(throws: (any Error).self) {
                try await env.database.transaction { db in try await batch.run(on: db) }
            }
            let after = (try await count("notifications"), try await count("mail_messages"))
            #expect(after == written)
        }
    }

    @Test("18 significant digits round-trip exactly through JSON, the database and JSON again, sent as a JSON number or a string", arguments: TestDatabaseKind.all)
    func eighteenDigits(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "digits@example.com")
            // A raw JSON number, so no Double can sit between the text and the order.
            var request = HTTPFields()
            request[.contentType] = "application/json"
            request[.authorization] = bearer(tokens)[.authorization]
            let body = #"{"symbol":"AAPL","quantity":999999999.123456789,"side":"BUY","order_type":"LIMIT","limit_price":"0.00000001","time_in_force":"GTC"}"#
            let placed = try await client.execute(uri: "/api/orders", method: .post, headers: request, body: ByteBuffer(string: body))
            #expect(placed.status == .created)
            let id = try #require(try json(placed)["id"] as? String)
            #expect(try json(placed)["quantity"] as? String == "999999999.123456789")
            await env.worker.drain()
            let shown = try await show(client, tokens, id)
            #expect(shown["quantity"] as? String == "999999999.123456789")
            #expect(shown["limit_price"] as? String == "0.00000001")
            #expect(shown["reserved_cash"] as? String == "10.00", "999999999.123456789 × 0.00000001 = 9.99999999…, reserved rounded up to the cent")
        }
    }

    @Test("past ORDER_BACKLOG_LIMIT orders waiting for a worker, a placement is refused with 503 and Retry-After, nothing written and its key free for the retry", arguments: TestDatabaseKind.all)
    func backlogLimit(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.orderBacklogLimit = 3 }) { client, env in
            let tokens = try await signUp(client, env, email: "backlog@example.com")
            let order: [String: Any] = ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET"]
            // No worker runs until the test drains it: three submit jobs wait.
            for _ in 0..<3 {
                let placed = try await post(client, "/api/orders", order, headers: bearer(tokens))
                #expect(placed.status == .created, "\(String(buffer: placed.body))")
            }
            // The count is read again a moment later (placed meanwhile, if any, are more waiting orders).
            try await eventually("the count of waiting orders read again") {
                try await post(client, "/api/orders", order, headers: bearer(tokens)).status == .serviceUnavailable
            }
            let placed = try await env.orders().count
            #expect(placed >= 3)
            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "backlog-1"
            let refused = try await post(client, "/api/orders", order, headers: keyed)
            #expect(refused.status == .serviceUnavailable && refused.headers[.retryAfter] == "2")
            #expect(try problem(refused).code == "orders_backlogged")
            #expect(try await env.orders().count == placed, "a refused placement writes nothing")
            // Each refusal is counted for operators (the FolioOrdersBacklogged alert).
            let exposition = env.services.metrics.exposition()
            let refusals = exposition.split(separator: "\n").first { $0.hasPrefix("folio_orders_refused_total{reason=\"backlog\"}") }
            let counted = try #require(refusals.flatMap { $0.split(separator: " ").last }.flatMap { Int($0) })
            #expect(counted >= 2)
            // The worker catches up: the same key is taken again, once.
            await env.worker.drain()
            try await eventually("placements taken again") {
                try await post(client, "/api/orders", order, headers: keyed).status == .created
            }
            #expect(try await post(client, "/api/orders", order, headers: keyed).status == .created)
            #expect(try await env.orders().count == placed + 1)
        }
    }

    @Test("a sale refused for shares an open sell holds says how many it holds", arguments: TestDatabaseKind.all)
    func sharesHeldForOpenSells(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "held-shares@example.com")
            _ = try await order(client, tokens, ["symbol": "AAPL", "quantity": "10", "side": "BUY", "order_type": "MARKET"])
            await env.worker.drain()
            let resting = try await order(client, tokens, ["symbol": "AAPL", "quantity": "6", "side": "SELL", "order_type": "LIMIT", "limit_price": "100000", "time_in_force": "GTC"])
            #expect(resting.status == .created)
            await env.worker.drain()
            let refused = try await order(client, tokens, ["symbol": "AAPL", "quantity": "5", "side": "SELL", "order_type": "MARKET"])
            #expect(refused.status == .unprocessableContent)
            let issue = try problem(refused)
            #expect(issue.code == "insufficient_shares")
            #expect(issue.detail == "You can sell at most 4 AAPL (6 more are held for your open sell orders).")
            // Nothing held: the plain sentence.
            let none = try problem(try await order(client, tokens, ["symbol": "MSFT", "quantity": "1", "side": "SELL", "order_type": "MARKET"]))
            #expect(none.detail == "You can sell at most 0 MSFT.")
        }
    }

    @Test("a position shows the shares open sells hold apart from those free to sell, in the API and on the dashboard; a cancel frees them", arguments: TestDatabaseKind.all)
    func availableQuantityOfPositions(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "available-shares@example.com")
            let login = try await post(client, "/api/auth/login", ["email": "available-shares@example.com", "password": strongPassword, "session": "cookie"])
            let cookie: HTTPFields = [.cookie: String(try #require(login.headers[.setCookie]).split(separator: ";")[0])]
            func position() async throws -> [String: Any]? {
                (try json(try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(tokens)))["positions"] as? [[String: Any]])?.first
            }
            func dashboard() async throws -> String { String(buffer: try await client.execute(uri: "/", method: .get, headers: cookie).body) }
            _ = try await order(client, tokens, ["symbol": "AAPL", "quantity": "10", "side": "BUY", "order_type": "MARKET"])
            await env.worker.drain()
            #expect(try await position()?["available_quantity"] as? String == "10")
            #expect(try await !dashboard().contains("held for open sells"))
            #expect(try await !dashboard().contains("sold out today"), "no sale today, no line for one")
            // The day's change is green only when it shows a gain.
            let change = try #require(try await dashboard().firstMatch(of: /<h2>Day change<\/h2><p class="big ?(\w*)">([^<]+)<\/p>/))
            #expect((change.output.1 == "up") == change.output.2.hasPrefix("+"), "\(change.output.0)")
            let resting = try await order(client, tokens, ["symbol": "AAPL", "quantity": "6.5", "side": "SELL", "order_type": "LIMIT", "limit_price": "100000", "time_in_force": "GTC"])
            await env.worker.drain()
            let held = try await position()
            #expect(held?["quantity"] as? String == "10" && held?["available_quantity"] as? String == "3.5", "\(held ?? [:])")
            #expect(try await dashboard().contains(#"data-label="Quantity">10<br><span class="muted">(6.5 held for open sells)</span></td>"#))
            let id = try #require(try json(resting)["id"] as? String)
            #expect(try await client.execute(uri: "/api/orders/\(id)", method: .delete, headers: bearer(tokens)).status.code < 300)
            await env.worker.drain()
            #expect(try await position()?["available_quantity"] as? String == "10")
        }
    }

    @Test("buy then sell: holdings, cash and the ledger agree", arguments: TestDatabaseKind.all)
    func buyThenSell(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock) { client, env in
            let tokens = try await signUp(client, env, email: "roundtrip@example.com")
            _ = try await order(client, tokens, ["symbol": "MSFT", "quantity": "2.5", "side": "BUY", "order_type": "MARKET"])
            await env.worker.drain()
            let tooMany = try await order(client, tokens, ["symbol": "MSFT", "quantity": "3", "side": "SELL", "order_type": "MARKET"])
            #expect(tooMany.status == .unprocessableContent)
            #expect(try problem(tooMany).code == "insufficient_shares")
            clock.advance(by: 1)
            let sell = try await order(client, tokens, ["symbol": "MSFT", "quantity": "1.5", "side": "SELL", "order_type": "MARKET"])
            #expect(sell.status == .created)
            await env.worker.drain()
            let portfolio = try json(try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(tokens)))
            #expect((portfolio["positions"] as? [[String: Any]])?.first?["quantity"] as? String == "1")
            try await env.expectConsistent()
            let ledger = try json(try await client.execute(uri: "/api/transactions?symbol=MSFT", method: .get, headers: bearer(tokens)))
            #expect((ledger["data"] as? [[String: Any]])?.map { $0["type"] as? String } == ["sell", "buy"])
        }
    }

    @Test("validation names each field", arguments: [
        (#"{"symbol":"AAPL","quantity":1,"side":"BUY","order_type":"LIMIT"}"#, "limit_price"),
        (#"{"symbol":"AAPL","quantity":1,"side":"HOLD","order_type":"MARKET"}"#, "side"),
        (#"{"symbol":"AAPL","quantity":0,"side":"BUY","order_type":"MARKET"}"#, "quantity"),
        (#"{"symbol":"AAPL","side":"BUY","order_type":"MARKET"}"#, "quantity"),
        (#"{"symbol":"AAPL","quantity":1,"side":"BUY","order_type":"MARKET","time_in_force":"NEVER"}"#, "time_in_force"),
        (#"{"symbol":"NOPE","quantity":1,"side":"BUY","order_type":"MARKET"}"#, "symbol"),
        (#"{"symbol":"AAPL","quantity":1,"side":"BUY","order_type":"STOP"}"#, "stop_price"),
    ])
    func validation(body: String, field: String) async throws {
        try await withTestAppOnEachDatabase { client, env in
            let tokens = try await signUp(client, env, email: "validate@example.com")
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"
            let response = try await client.execute(uri: "/api/orders", method: .post, headers: headers, body: ByteBuffer(string: body))
            #expect(response.status == .unprocessableContent)
            #expect(try problem(response).errors?.contains { $0.field == field } == true, "\(String(buffer: response.body))")
            #expect(try await env.orders().isEmpty)
        }
    }

    @Test("a misspelt field is refused, naming the field meant, not dropped for its default; a field of no meaning here is still ignored", arguments: TestDatabaseKind.all)
    func misspeltFields(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "typo@example.com")
            // time_in_forse would have placed a DAY order that expires at the close.
            let typo = try await order(client, tokens, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_forse": "GTC"])
            #expect(typo.status == .unprocessableContent)
            let issue = try #require(try problem(typo).errors?.first)
            #expect(issue.field == "time_in_forse" && issue.code == "unknown_field")
            #expect(issue.message == "time_in_forse is not a field of this request; did you mean time_in_force?")
            for (key, meant) in [("acount_id", "account_id"), ("timeInForce", "time_in_force"), ("limit-price", "limit_price")] {
                let sent = try await order(client, tokens, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET", key: "x"])
                #expect(try problem(sent).errors?.map(\.message) == ["\(key) is not a field of this request; did you mean \(meant)?"])
            }
            let deposit = try await post(client, "/api/accounts/\(try await accounts(client, tokens)[0]["id"] as! String)/deposits", ["amount": "5.00", "descripton": "rent"], headers: bearer(tokens))
            #expect(try problem(deposit).errors?.map(\.field) == ["descripton"])
            #expect(try await client.execute(uri: "/api/orders", method: .get, headers: bearer(tokens)).status == .ok)
            #expect(try await env.entries(.deposit).count == 1, "only the sign-up's opening deposit: nothing was written")
            // Many near misses are named up to twenty: the answer never outgrows the request.
            var many: [String: Any] = ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET"]
            for letter in "abcdefghijklmnopqrstuvwxz" { many["s\(letter)mbol"] = "x" }
            #expect(try problem(try await order(client, tokens, many)).errors?.count == 20)
            // A key that names nothing this route reads is no misspelling: ignored, as before.
            #expect(try await order(client, tokens, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET", "note": "for the kids"]).status == .created)
        }
    }

    @Test("another API's short form of a field is refused, naming the field meant, rather than dropped for its default: tif, type, qty, account", arguments: TestDatabaseKind.all)
    func shortFormsOfFields(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "short-forms@example.com")
            // Alpaca's own names: a GTC limit order must not become a DAY order, or a limit a market one.
            let alpaca = try await order(client, tokens, ["symbol": "AAPL", "qty": "1", "side": "BUY", "type": "limit", "limit_price": "1.00", "tif": "gtc"])
            #expect(alpaca.status == .unprocessableContent)
            // The required order_type is missing for want of `type`: the refusal says which key was meant.
            let named = try problem(alpaca).errors?.map { "\($0.field) \($0.code) \($0.message)" } ?? []
            #expect(named.contains("type unknown_field type is not a field of this request; did you mean order_type?"), "\(named)")
            let shortened = try await order(client, tokens, ["symbol": "AAPL", "qty": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "tif": "gtc"])
            #expect(try problem(shortened).errors?.map { "\($0.field) \($0.message)" } == [
                "qty qty is not a field of this request; did you mean quantity?", "tif tif is not a field of this request; did you mean time_in_force?",
            ])
            let otherAccount = try await order(client, tokens, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET", "account": UUID().uuidString])
            #expect(try problem(otherAccount).errors?.map(\.message) == ["account is not a field of this request; did you mean account_id?"])
            #expect(try await env.store.orders(of: try await env.firstAccount().userID, filter: .init(), after: nil, limit: 10).isEmpty, "nothing was placed")
            // Keys of no such likeness are still ignored.
            for key in ["note", "id", "tag", "source"] {
                #expect(try await order(client, tokens, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET", key: "x"]).status == .created, "\(key)")
            }
        }
    }

    @Test("short forms: initials of several words, a whole word of four letters or more, an abbreviation in order that begins the name")
    func shortFormRules() {
        func short(_ key: String, _ known: String) -> Bool { JSONValueDecoder.isShortForm(Array(key), of: known) }
        #expect(short("tif", "time_in_force") && short("lp", "limit_price") && short("type", "order_type") && short("qty", "quantity") && short("pwd", "password"))
        #expect(!short("id", "account_id"), "too short to be sure")
        #expect(!short("in", "time_in_force") && !short("t", "time_in_force"))
        #expect(!short("note", "notional") && !short("side", "symbol") && !short("qu", "quantity") && !short("quantit", "quantity"), "an abbreviation leaves two letters out")
        #expect(!short("ytq", "quantity"), "in order, from its first letter")
    }

    @Test("a buy beyond the buying power is 422 and reserves nothing", arguments: TestDatabaseKind.all)
    func buyingPower(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "poor@example.com")
            let response = try await order(client, tokens, ["symbol": "AAPL", "quantity": 10_000, "side": "BUY", "order_type": "MARKET"])
            #expect(response.status == .unprocessableContent)
            #expect(try problem(response).code == "insufficient_buying_power")
            #expect(try await accounts(client, tokens).first?["reserved_cash"] as? String == "0.00")
        }
    }

    @Test("a resting limit order reserves cash until canceled; a filled order cannot be canceled", arguments: TestDatabaseKind.all)
    func restingAndCancel(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "patient@example.com")
            let placed = try await order(client, tokens, ["symbol": "AAPL", "quantity": 2, "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC"])
            let id = try #require(try json(placed)["id"] as? String)
            await env.worker.drain()
            #expect(try await show(client, tokens, id)["status"] as? String == "accepted")
            #expect(try await accounts(client, tokens).first?["reserved_cash"] as? String == "2.00")
            #expect(try await accounts(client, tokens).first?["available_cash"] as? String == "99998.00")

            let canceled = try await client.execute(uri: "/api/orders/\(id)", method: .delete, headers: bearer(tokens))
            #expect(canceled.status == .ok)
            #expect(try json(canceled)["status"] as? String == "canceled")
            #expect(try await accounts(client, tokens).first?["reserved_cash"] as? String == "0.00")

            let market = try json(try await order(client, tokens, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET"]))["id"] as! String
            await env.worker.drain()
            let refused = try await client.execute(uri: "/api/orders/\(market)", method: .delete, headers: bearer(tokens))
            #expect(refused.status == .conflict)
            #expect(try problem(refused).code == "order_not_cancelable")
        }
    }

    @Test("cancel every open order: of one symbol, then all; reservations come back, filled orders and another user's stay", arguments: TestDatabaseKind.all)
    func cancelEveryOpenOrder(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let alice = try await signUp(client, env, email: "alice@example.com")
            let bob = try await signUp(client, env, email: "bob@example.com")
            _ = try await order(client, alice, ["symbol": "AAPL", "quantity": 2, "side": "BUY", "order_type": "MARKET"])
            await env.worker.drain()
            let restingBuy = try json(try await order(client, alice, ["symbol": "AAPL", "quantity": 3, "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC"]))["id"] as! String
            let restingSell = try json(try await order(client, alice, ["symbol": "AAPL", "quantity": 2, "side": "SELL", "order_type": "LIMIT", "limit_price": "100000.00", "time_in_force": "GTC"]))["id"] as! String
            let otherSymbol = try json(try await order(client, alice, ["symbol": "MSFT", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "2.50", "time_in_force": "GTC"]))["id"] as! String
            let bobs = try json(try await order(client, bob, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC"]))["id"] as! String
            await env.worker.drain()
            #expect(try await accounts(client, alice).first?["reserved_cash"] as? String == "5.50")

            // Only MSFT.
            let one = try await client.execute(uri: "/api/orders?symbol=msft", method: .delete, headers: bearer(alice))
            #expect(one.status == .ok)
            let oneData = try #require(try json(one)["data"] as? [[String: Any]])
            #expect(oneData.map { $0["id"] as? String } == [otherSymbol])
            #expect(oneData.first?["status"] as? String == "canceled")
            #expect(try await accounts(client, alice).first?["reserved_cash"] as? String == "3.00")

            // Another user cannot name this account; nothing of alice's changes.
            let aliceAccount = try #require(try await accounts(client, alice).first?["id"] as? String)
            #expect(try await client.execute(uri: "/api/orders?account_id=\(aliceAccount)", method: .delete, headers: bearer(bob)).status == .notFound)
            #expect(try await show(client, alice, restingBuy)["status"] as? String == "accepted")

            // Everything else of alice's (the test clock is frozen, so placed at one instant).
            let all = try await client.execute(uri: "/api/orders?account_id=\(aliceAccount)", method: .delete, headers: bearer(alice))
            #expect(all.status == .ok)
            let allData = try #require(try json(all)["data"] as? [[String: Any]])
            #expect(Set(allData.compactMap { $0["id"] as? String }) == [restingBuy, restingSell])
            #expect(allData.allSatisfy { $0["status"] as? String == "canceled" })
            let account = try #require(try await accounts(client, alice).first)
            #expect(account["reserved_cash"] as? String == "0.00")
            let positions = try json(try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(alice)))["positions"] as? [[String: Any]]
            #expect(positions?.first?["quantity"] as? String == "2")
            #expect(try await show(client, bob, bobs)["status"] as? String == "accepted")

            // Nothing left: an empty list, not an error.
            let none = try await client.execute(uri: "/api/orders", method: .delete, headers: bearer(alice))
            #expect(none.status == .ok)
            #expect((try json(none)["data"] as? [Any])?.isEmpty == true)
            #expect(try await client.execute(uri: "/api/orders?symbol=not%20a%20ticker", method: .delete, headers: bearer(alice)).status == .unprocessableContent)
            #expect(try await client.execute(uri: "/api/orders", method: .delete).status == .unauthorized)
        }
    }

    @Test("an IOC order that cannot fill at once is canceled and gives its reservation back", arguments: TestDatabaseKind.all)
    func immediateOrCancel(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "ioc@example.com")
            let id = try json(try await order(client, tokens, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "1", "time_in_force": "IOC"]))["id"] as! String
            await env.worker.drain()
            #expect(try await show(client, tokens, id)["status"] as? String == "canceled")
            #expect(try await accounts(client, tokens).first?["reserved_cash"] as? String == "0.00")
        }
    }

    /// Starting instants for the DAY-order tests: a weekday session, and the
    /// weekends on which daylight saving time ends and begins in New York.
    static let dayOrderStarts: [Date] = [
        TestClock.tuesdayMorning,
        try! Date("2026-10-31T20:30:00Z", strategy: .iso8601),  // Saturday 16:30 EDT; clocks go back on Sunday
        try! Date("2026-10-31T19:30:00Z", strategy: .iso8601),  // Saturday 15:30 EDT
        try! Date("2026-03-06T21:30:00Z", strategy: .iso8601),  // Friday 16:30 EST; clocks go forward on Sunday
        try! Date("2026-03-07T21:30:00Z", strategy: .iso8601),  // Saturday 16:30 EST
    ]

    /// Moves the clock just past the end of the DAY that `date` belongs to (not simply a day on: across a change of
    /// daylight saving time 24 hours is not a calendar day).
    func passDayEnd(of date: Date, clock: TestClock) {
        clock.advance(by: MarketCalendar.nyse.dayEnd(for: date).timeIntervalSince(clock.now) + 1)
    }

    @Test("a resting limit order fills when the market reaches it; a DAY order expires at the close", arguments: TestDatabaseKind.all, dayOrderStarts)
    func matchingAndExpiry(kind: TestDatabaseKind, start: Date) async throws {
        let clock = TestClock(start: start)
        let week: TimeInterval = 7 * 86_400
        try await withTestApp(kind, clock: clock, configure: { $0.sessionIdleTimeout = week; $0.sessionMaxAge = week; $0.accessTokenLifetime = week }) { client, env in
            let tokens = try await signUp(client, env, email: "matcher@example.com")
            let price = try #require(SimulatedMarket().price(of: "KO", at: clock.now))
            // A limit far above the market is marketable at once; one far below never fills and expires.
            let expiring = try json(try await order(client, tokens, ["symbol": "KO", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "0.01"]))["id"] as! String
            let generous = try json(try await order(client, tokens, ["symbol": "KO", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": (try Price.product(price, Quantity(2), rounding: .down)).description]))["id"] as! String
            await env.worker.drain()
            #expect(try await show(client, tokens, generous)["status"] as? String == "filled")
            #expect(try await show(client, tokens, expiring)["status"] as? String == "accepted")
            // A moment before its day ends it still rests; just after, it has expired.
            clock.advance(by: MarketCalendar.nyse.dayEnd(for: start).timeIntervalSince(clock.now) - 1)
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, expiring)["status"] as? String == "accepted")
            passDayEnd(of: start, clock: clock)
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, expiring)["status"] as? String == "expired")
            #expect(try await accounts(client, tokens).first?["reserved_cash"] as? String == "0.00")
        }
    }

    @Test("a tiny buy is never free: its cost rounds up to the cent", arguments: TestDatabaseKind.all)
    func tinyBuy(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "dust@example.com")
            _ = try await order(client, tokens, ["symbol": "AAPL", "quantity": "0.000001", "side": "BUY", "order_type": "MARKET"])
            await env.worker.drain()
            #expect(try await accounts(client, tokens).first?["cash"] as? String == "99999.99")
            try await env.expectConsistent()
        }
    }

    @Test("a DAY order whose submission was delayed past the close expires instead of filling the next day", arguments: TestDatabaseKind.all, dayOrderStarts)
    func delayedDayOrder(kind: TestDatabaseKind, start: Date) async throws {
        let clock = TestClock(start: start)
        let week: TimeInterval = 7 * 86_400
        try await withTestApp(kind, clock: clock, configure: { $0.sessionIdleTimeout = week; $0.sessionMaxAge = week; $0.accessTokenLifetime = week }) { client, env in
            let tokens = try await signUp(client, env, email: "late@example.com")
            let id = try json(try await order(client, tokens, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET"]))["id"] as! String
            passDayEnd(of: start, clock: clock)
            await env.worker.drain()
            #expect(try await show(client, tokens, id)["status"] as? String == "expired")
            #expect(try await accounts(client, tokens).first?["reserved_cash"] as? String == "0.00")
            try await env.expectConsistent()
        }
    }

    @Test("the same fill reported twice, on a partly filled order, is applied once; a retried submit changes nothing", arguments: TestDatabaseKind.all)
    func idempotentExecution(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "twice@example.com")
            // A limit far below the market rests at the broker, so only the fills below move it.
            let placed = try json(try await order(client, tokens, ["symbol": "AAPL", "quantity": 4, "side": "BUY", "order_type": "LIMIT", "limit_price": "10", "time_in_force": "GTC"]))
            let idText = try #require(placed["id"] as? String)
            let id = try #require(OrderID(idText))
            await env.worker.drain()
            #expect(try await show(client, tokens, id.description)["status"] as? String == "accepted")

            let first = BrokerFill(id: "broker-fill-1", quantity: 1, price: 10)
            try await env.orders.apply(.filled([first]), to: id)
            let afterFirst = try await show(client, tokens, id.description)
            #expect(afterFirst["status"] as? String == "partially_filled")
            #expect(afterFirst["filled_quantity"] as? String == "1")
            let cash = try await accounts(client, tokens).first?["cash"] as? String
            #expect(cash == "99990.00")

            // The broker reports the same fill again, alone and then twice within one report.
            try await env.orders.apply(.filled([first]), to: id)
            try await env.orders.apply(.filled([first, first]), to: id)
            let again = try await show(client, tokens, id.description)
            #expect(again["filled_quantity"] as? String == "1")
            #expect(again["reserved_cash"] as? String == "30.00")
            #expect(try await accounts(client, tokens).first?["cash"] as? String == cash)
            #expect(try await env.fills().map(\.brokerFillID) == ["broker-fill-1"])

            // A new fill in the same report as a repeated one is applied, the repeat is not.
            try await env.orders.apply(.filled([first, BrokerFill(id: "broker-fill-2", quantity: 1, price: 10)]), to: id)
            #expect(try await show(client, tokens, id.description)["filled_quantity"] as? String == "2")
            #expect(try await env.fills().count == 2)

            // A submit job retried after a crash finds the order past `new` and leaves it alone.
            let retried = ClaimedJob(id: JobID(), payload: .submitOrder(id), attempts: 2, maxAttempts: 8, holder: "retry")
            let outcomes = await env.orders.submit([retried])
            guard case .done = outcomes[retried.id] else { Issue.record("the retried submit should be done: \(String(describing: outcomes[retried.id]))"); return }
            #expect(try await show(client, tokens, id.description)["filled_quantity"] as? String == "2")
            #expect(try await env.fills().count == 2)
            try await env.expectConsistent()
        }
    }

    @Test("an order filled in parts, in separate batches, costs what one fill would: the earlier parts' exact value is read back from the fills", arguments: TestDatabaseKind.all)
    func partsCostTheWhole(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "thirds@example.com")
            // 3 at 0.3333 reserves 0.9999 up to the cent: 1.00. It rests, far below the market.
            let placed = try json(try await order(client, tokens, ["symbol": "AAPL", "quantity": 3, "side": "BUY", "order_type": "LIMIT", "limit_price": "0.3333", "time_in_force": "GTC"]))
            let idText = try #require(placed["id"] as? String)
            let id = try #require(OrderID(idText))
            #expect(placed["reserved_cash"] as? String == "1.00")
            await env.worker.drain()
            try await env.orders.apply(.partiallyFilled([BrokerFill(id: "third-1", quantity: 1, price: try Price(parsing: "0.3333"))]), to: id)
            try await env.orders.apply(.partiallyFilled([BrokerFill(id: "third-2", quantity: 1, price: try Price(parsing: "0.3333"))]), to: id)
            try await env.orders.apply(.filled([BrokerFill(id: "third-3", quantity: 1, price: try Price(parsing: "0.3333"))]), to: id)
            let filled = try await show(client, tokens, id.description)
            #expect(filled["status"] as? String == "filled" && filled["filled_quantity"] as? String == "3", "\(filled)")
            // 0.3333 → 0.34; 0.6666 → 0.67, less 0.34; 0.9999 → 1.00, less 0.67. Rounded one by one it was 1.02.
            #expect(try await accounts(client, tokens).first?["cash"] as? String == "99999.00")
            let rows = try json(try await client.execute(uri: "/api/transactions?type=buy", method: .get, headers: bearer(tokens)))["data"] as? [[String: Any]]
            #expect(Set(rows?.compactMap { $0["amount"] as? String } ?? []) == ["-0.34", "-0.33"], "\(rows ?? [])")
            try await env.expectConsistent()
        }
    }

    @Test("an account has at most MAX_OPEN_ORDERS open orders: one more is 409 too_many_open_orders, and a cancel makes room", arguments: TestDatabaseKind.all)
    func openOrderLimit(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.maximumOpenOrders = 3 }) { client, env in
            let tokens = try await signUp(client, env, email: "many-open@example.com")
            let resting: [String: Any] = ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "10", "time_in_force": "GTC"]
            var ids: [String] = []
            for _ in 0..<3 {
                let placed = try await order(client, tokens, resting)
                #expect(placed.status == .created, "\(String(buffer: placed.body))")
                ids.append(try #require(try json(placed)["id"] as? String))
            }
            await env.worker.drain()
            let refused = try await order(client, tokens, resting)
            #expect(try refused.status == .conflict && problem(refused).code == "too_many_open_orders", "\(String(buffer: refused.body))")
            // Nothing was reserved for it.
            #expect(try await accounts(client, tokens).first?["reserved_cash"] as? String == "30.00")
            let canceled = try await client.execute(uri: "/api/orders/\(ids[0])", method: .delete, headers: bearer(tokens))
            #expect(canceled.status == .ok, "\(String(buffer: canceled.body))")
            #expect(try await order(client, tokens, resting).status == .created)
            // Another user's open orders are theirs: they count only against their own account.
            let other = try await signUp(client, env, email: "few-open@example.com")
            #expect(try await order(client, other, resting).status == .created)
            try await env.expectConsistent()
        }
    }

    @Test(
        "PostgreSQL: a placement that waited for the account's lock counts the orders placed while it waited: MAX_OPEN_ORDERS holds across processes",
        .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func openOrderLimitAfterLockWait() async throws {
        try await withTestApp(.postgres, configure: { $0.maximumOpenOrders = 1 }) { client, env in
            let tokens = try await signUp(client, env, email: "two-processes@example.com")
            let account = try await env.firstAccount()
            let draft = OrderDraft(symbol: "AAPL", side: .buy, type: .limit, timeInForce: .goodTillCanceled, quantity: 1, limitPrice: 10)
            let priced = try await env.orders.price(.init(draft: draft, accountID: nil, clientOrderID: nil))
            let orders = env.orders, headers = bearer(tokens)
            // Another process's placement, as it runs: the account locked and its order written, not yet committed.
            let waiting = try await env.database.transaction { db -> Task<TestResponse, any Error> in
                _ = try await orders.place(priced, userID: account.userID, context: .none, on: db)
                let waiting = Task {
                    try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "10", "time_in_force": "GTC"], headers: headers)
                }
                try await env.eventuallyWaitingForLock("the second placement waits for the account's lock", statementHolding: "FROM accounts")
                return waiting
            }
            let answer = try await waiting.value
            #expect(try answer.status == .conflict && problem(answer).code == "too_many_open_orders", "\(String(buffer: answer.body))")
            #expect(try await env.orders().count == 1)
            try await env.expectConsistent()
        }
    }

    @Test("every resting order is read for the worker's look, page after page, oldest first: none skipped past the first page (it stopped at 1,000), none read twice", arguments: TestDatabaseKind.all)
    func restingOrdersPaged(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            var placed: [String] = []
            for user in 0..<3 {
                let tokens = try await signUp(client, env, email: "resting-\(user)@example.com")
                for _ in 0..<2 {
                    let response = try await order(client, tokens, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "10", "time_in_force": "GTC"])
                    placed.append(try #require(try json(response)["id"] as? String))
                    env.clock.advance(by: 1)
                }
            }
            await env.worker.drain()
            // Pages of two read all six, oldest first, none twice.
            let read = try await env.orders.store.restingOrders(pageSize: 2).map(\.id.description)
            #expect(read == placed, "\(read) against \(placed)")
            #expect(try await env.orders.store.restingOrders(pageSize: 4).map(\.id.description) == placed)
            #expect(try await env.orders.store.restingOrders(pageSize: 6).map(\.id.description) == placed)
        }
    }

    @Test("fifty concurrent buys from one user never overspend", arguments: TestDatabaseKind.all)
    func concurrentBuys(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.startingCash = 10_000 }) { client, env in
            let tokens = try await signUp(client, env, email: "burst@example.com")
            let headers = bearer(tokens)
            let price = try #require(SimulatedMarket().price(of: "MSFT", at: env.clock.now))
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for _ in 0..<50 {
                    group.addTask { try await post(client, "/api/orders", ["symbol": "MSFT", "quantity": 1, "side": "BUY", "order_type": "MARKET"], headers: headers).status }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            // Each market buy reserves the quote plus 5 %, up to the cent.
            let perOrder = try Cash.product(Quantity(1), Fixed<WideScale>.product(price, try Ratio(parsing: "1.05"), rounding: .up), places: 2, rounding: .up)
            let affordable = Int(try Quantity.quotient(Cash(10_000), perOrder, places: 0, rounding: .down).units / Int128(Quantity.one))
            #expect(statuses.filter { $0 == .created }.count == affordable, "\(statuses.map(\.code))")
            await env.worker.drain()
            let account = try #require(try await accounts(client, tokens).first)
            #expect(!(try Cash(parsing: account["cash"] as! String)).isNegative)
            #expect(account["reserved_cash"] as? String == "0.00")
            try await env.expectConsistent()
        }
    }

    @Test("another user's order is 404; a duplicate client_order_id is 409", arguments: TestDatabaseKind.all)
    func isolationAndClientIDs(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let alice = try await signUp(client, env, email: "alice@example.com")
            let bob = try await signUp(client, env, email: "bob@example.com")
            let placed = try await order(client, alice, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET", "client_order_id": "mine-1"])
            let id = try json(placed)["id"] as! String
            #expect(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(bob)).status == .notFound)
            #expect(try await client.execute(uri: "/api/orders/\(id)", method: .delete, headers: bearer(bob)).status == .notFound)
            let duplicate = try await order(client, alice, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET", "client_order_id": "mine-1"])
            #expect(duplicate.status == .conflict)
            #expect(try await order(client, bob, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET", "client_order_id": "mine-1"]).status == .created)
            let list = try json(try await client.execute(uri: "/api/orders", method: .get, headers: bearer(alice)))
            #expect((list["data"] as? [[String: Any]])?.count == 1)
            // A control character in a client's id is refused, as in a description.
            let control = try await order(client, alice, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET", "client_order_id": "bad id\u{1}"])
            let codes = try problem(control).errors?.map(\.code)
            #expect(control.status == .unprocessableContent && codes == ["invalid_characters"])
            let reversed = try await order(client, alice, ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET", "client_order_id": "mine-\u{202E}2"])
            #expect(reversed.status == .unprocessableContent)
            #expect(try problem(reversed).errors?.map(\.code) == ["invalid_characters"])
        }
    }
}

extension OrderService {
    /// Test hooks reaching the service behind the worker.
    static func recheckFor(_ env: TestEnvironment) async throws {
        try await env.worker.onIdle?()
    }

    static func applyFor(_ env: TestEnvironment, _ report: BrokerReport, _ id: OrderID) async throws {
        try await env.orders.apply(report, to: id)
    }
}

@Suite("Idempotency keys")
struct IdempotencyTests {
    @Test("fifty concurrent identical POSTs with one key make exactly one order; a replay returns the same body", arguments: TestDatabaseKind.all)
    func concurrentReplays(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "retry@example.com")
            var headers = bearer(tokens)
            headers[Idempotency.header] = "order-7f3a"
            let sent = headers
            let responses = try await withThrowingTaskGroup(of: (HTTPResponse.Status, String, Bool).self) { group in
                for _ in 0..<50 {
                    group.addTask {
                        let response = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET"], headers: sent)
                        return (response.status, String(buffer: response.body), response.headers[Idempotency.replayedHeader] == "true")
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(try await env.orders().count == 1)
            let created = responses.filter { $0.0 == .created }
            #expect(!created.isEmpty)
            #expect(Set(created.map(\.1)).count == 1)
            #expect(responses.allSatisfy { $0.0 == .created || $0.0 == .conflict })
            #expect(created.filter { !$0.2 }.count == 1, "one answer made the order; every other 201 is marked Idempotent-Replayed")

            let replay = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET"], headers: sent)
            #expect(replay.status == .created)
            #expect(String(buffer: replay.body) == created[0].1)
            #expect(replay.headers[.location]?.hasPrefix("/api/orders/") == true)
            #expect(replay.headers[Idempotency.replayedHeader] == "true")

            let different = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": 2, "side": "BUY", "order_type": "MARKET"], headers: sent)
            #expect(different.status == .unprocessableContent)
            #expect(try problem(different).code == "idempotency_key_reused")
            #expect(try await env.orders().count == 1)
        }
    }

    @Test("a failed request is forgotten, so the same key can be retried; keys expire after a day", arguments: TestDatabaseKind.all)
    func failuresAndExpiry(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        let week: TimeInterval = 7 * 86_400
        try await withTestApp(kind, clock: clock, configure: { $0.sessionIdleTimeout = week; $0.sessionMaxAge = week; $0.accessTokenLifetime = week }) { client, env in
            let tokens = try await signUp(client, env, email: "deposit@example.com")
            let id = try #require(try await accounts(client, tokens).first?["id"] as? String)
            var headers = bearer(tokens)
            headers[Idempotency.header] = "withdraw-1"
            let tooMuch = try await post(client, "/api/accounts/\(id)/withdrawals", ["amount": "200000"], headers: headers)
            #expect(tooMuch.status == .unprocessableContent)
            #expect(try problem(tooMuch).code == "insufficient_funds")
            // The same request with the same key, once it can succeed: the failure was not stored.
            #expect(try await post(client, "/api/accounts/\(id)/deposits", ["amount": "150000"], headers: bearer(tokens)).status == .created)
            let retried = try await post(client, "/api/accounts/\(id)/withdrawals", ["amount": "200000"], headers: headers)
            #expect(retried.status == .created)
            #expect(try await accounts(client, tokens).first?["cash"] as? String == "50000.00")
            let replayed = try await post(client, "/api/accounts/\(id)/withdrawals", ["amount": "200000"], headers: headers)
            #expect(String(buffer: replayed.body) == String(buffer: retried.body), "now it is stored and replayed")

            headers[Idempotency.header] = "deposit-1"
            let first = try await post(client, "/api/accounts/\(id)/deposits", ["amount": "10"], headers: headers)
            let second = try await post(client, "/api/accounts/\(id)/deposits", ["amount": "10"], headers: headers)
            #expect(String(buffer: first.body) == String(buffer: second.body))
            #expect(try await accounts(client, tokens).first?["cash"] as? String == "50010.00")
            clock.advance(by: 86_401)
            #expect(try await post(client, "/api/accounts/\(id)/deposits", ["amount": "10"], headers: headers).status == .created)
            #expect(try await accounts(client, tokens).first?["cash"] as? String == "50020.00")
        }
    }
}
