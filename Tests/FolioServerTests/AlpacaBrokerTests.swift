import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOConcurrencyHelpers
import Testing

@testable import FolioServer

/// The Alpaca order client against a fake Alpaca on loopback speaking the
/// documented wire format: the same code talks to Alpaca when configured.
@Suite("Alpaca orders")
struct AlpacaBrokerTests {
    func withAlpacaApp(_ kind: TestDatabaseKind, _ body: @escaping @Sendable (any TestClientProtocol, TestEnvironment, FakeAlpaca) async throws -> Void) async throws {
        try await withFakeAlpaca { fake in
            try await withTestApp(kind, configure: { $0.alpacaURLs = fake.urls }) { client, env in
                try await body(client, env, fake)
            }
        }
    }

    /// Signs up and links the fake's account; the orders of these tests name it.
    func linkedUser(_ client: some TestClientProtocol, _ env: TestEnvironment, email: String) async throws -> (tokens: [String: Any], account: String) {
        let tokens = try await signUp(client, env, email: email)
        let linked = try await post(client, "/api/brokerage/alpaca", FakeAlpaca.linkBody, headers: bearer(tokens))
        #expect(linked.status == .created)
        let account = try #require((try json(linked)["account"] as? [String: Any])?["id"] as? String)
        return (tokens, account)
    }

    func alpacaAccount(_ env: TestEnvironment) async throws -> AccountRecord {
        try #require(try await env.accounts().first { $0.kind == "brokerage" })
    }

    func show(_ client: some TestClientProtocol, _ tokens: [String: Any], _ id: String) async throws -> [String: Any] {
        try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))
    }

    @Test("an Alpaca order without a readable filled_qty is an answer to ask again about, never read as nothing filled")
    func unreadableFilledQuantity() throws {
        func order(_ filled: String?) throws -> AlpacaBroker.RemoteOrder {
            let field = filled.map { #","filled_qty":\#($0)"# } ?? ""
            return try AlpacaBroker.RemoteOrder(try JSONValue.parse(Array(#"{"id":"a1","client_order_id":"c1","status":"canceled"\#(field)}"#.utf8)))
        }
        #expect(try order(#""0""#).filledQuantity == 0)
        #expect(try order(#""2.5""#).filledQuantity == Quantity(parsing: "2.5"))
        for unreadable in [nil, "null", #""""#, #""1.0000000001""#, #""two""#] {
            #expect(throws: BrokerError.self, "\(unreadable ?? "missing")") { try order(unreadable) }
        }
    }

    @Test("a market order goes to Alpaca under Folio's id and fills there once, at Alpaca's price", arguments: TestDatabaseKind.all)
    func marketOrder(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.price = try Price(parsing: "123.45")
            let (tokens, account) = try await linkedUser(client, env, email: "alpaca@example.com")
            let placed = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "2", "side": "BUY", "order_type": "MARKET", "account_id": account], headers: bearer(tokens))
            let id = try #require(try json(placed)["id"] as? String)
            await env.worker.drain()
            let shown = try await show(client, tokens, id)
            #expect(shown["status"] as? String == "filled")
            #expect(shown["average_fill_price"] as? String == "123.45")
            #expect(fake.orders[id]?.status == "filled")
            #expect(fake.posts[id] == 1)
            #expect(try await env.fills().map { $0.brokerFillID.hasPrefix("alpaca:") } == [true])
            #expect(try await alpacaAccount(env).cash == (try Cash(parsing: "24753.10")))
            #expect(fake.cash == (try Cash(parsing: "24753.10")), "Folio's books and Alpaca's agree")
            // A second submission (a retry after a lost answer) finds the order instead of placing another.
            let order = try await env.order(try #require(OrderID(id)))
            let again = try await AlpacaBroker(settings: fake.settings, httpClient: .shared, logger: env.services.logger).submit(BrokerOrder(order))
            guard case .filled(let fills) = again else { Issue.record("expected the filled order, got \(again)"); return }
            #expect(fills.count == 1)
            #expect(fake.orders.count == 1)
            try await env.expectConsistent()
        }
    }

    @Test("a market or stop buy at Alpaca is refused (503, the symbol named) while the only quote is from before the last close: the cash it sets aside comes from it; a limit buy, a notional buy and a paper order go on", arguments: TestDatabaseKind.all)
    func staleQuoteAtAlpaca(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        let market = SwitchableMarket(clock: clock.clock)
        market.monthOld.withLockedValue { $0 = ["KO"] }
        try await withFakeAlpaca { fake in
            try await withTestApp(kind, clock: clock, configure: { $0.alpacaURLs = fake.urls }, dependencies: { $0.marketData = market }) { client, env in
                let (tokens, account) = try await linkedUser(client, env, email: "stale-alpaca@example.com")
                for body: [String: Any] in [
                    ["symbol": "KO", "quantity": "100", "side": "BUY", "order_type": "MARKET", "account_id": account],
                    ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "STOP", "stop_price": "1.00", "time_in_force": "GTC", "account_id": account],
                ] {
                    let refused = try await post(client, "/api/orders", body, headers: bearer(tokens))
                    #expect(refused.status == .serviceUnavailable, "\(String(buffer: refused.body))")
                    let answer = try problem(refused)
                    #expect(answer.code == "market_data_unavailable" && answer.errors?.first?.field == "symbol" && answer.detail.contains("KO"), "\(answer.detail)")
                    #expect(refused.headers[.retryAfter] == "60")
                }
                #expect(try await env.orders().isEmpty)
                let limit = try await post(client, "/api/orders", ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "10", "time_in_force": "GTC", "account_id": account], headers: bearer(tokens))
                #expect(limit.status == .created, "\(String(buffer: limit.body))")
                let notional = try await post(client, "/api/orders", ["symbol": "KO", "notional": "10", "side": "BUY", "order_type": "MARKET", "account_id": account], headers: bearer(tokens))
                #expect(notional.status == .created, "\(String(buffer: notional.body))")
                let fresh = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "MARKET", "account_id": account], headers: bearer(tokens))
                #expect(fresh.status == .created)
                let paperAccount = try #require(try await env.accounts().first { $0.kind == "paper" }).id.description
                let paper = try await post(client, "/api/orders", ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "MARKET", "account_id": paperAccount], headers: bearer(tokens))
                #expect(paper.status == .created, "the paper broker fills only at a fresh price: \(String(buffer: paper.body))")
            }
        }
    }

    /// A GTC limit buy of MSFT at 50 that rests at Alpaca (the fake in `.rest`): its id, once the worker took it there.
    func restingBuy(_ client: some TestClientProtocol, _ env: TestEnvironment, _ tokens: [String: Any], account: String, quantity: String) async throws -> String {
        let body = ["symbol": "MSFT", "quantity": quantity, "side": "BUY", "order_type": "LIMIT", "limit_price": "50", "time_in_force": "GTC", "account_id": account]
        let id = try #require(try json(try await post(client, "/api/orders", body, headers: bearer(tokens)))["id"] as? String)
        await env.worker.drain()
        #expect(try await show(client, tokens, id)["status"] as? String == "accepted")
        return id
    }

    @Test("a resting order fills in parts as Alpaca reports them; a cancel keeps what filled and frees the rest", arguments: TestDatabaseKind.all)
    func restingParts(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "parts@example.com")
            let id = try await restingBuy(client, env, tokens, account: account, quantity: "3")
            fake.fill(clientOrderID: id, quantity: 1, at: 49)
            try await OrderService.recheckFor(env)
            let part = try await show(client, tokens, id)
            #expect(part["status"] as? String == "partially_filled")
            #expect(part["filled_quantity"] as? String == "1")
            #expect(part["reserved_cash"] as? String == "100.00")
            try await OrderService.recheckFor(env)
            #expect(try await env.fills().count == 1, "the same fill looked at again is applied once")
            let canceled = try await client.execute(uri: "/api/orders/\(id)", method: .delete, headers: bearer(tokens))
            #expect(canceled.status == .ok)
            #expect(try json(canceled)["status"] as? String == "canceled")
            #expect(try json(canceled)["filled_quantity"] as? String == "1")
            #expect(fake.orders[id]?.status == "canceled")
            #expect(try await alpacaAccount(env).reservedCash == 0)
            try await env.expectConsistent()
        }
    }

    @Test("a cancel Alpaca cannot be asked about just now is recorded and answered 202 pending_cancel; the next look cancels it there, with no notice", arguments: TestDatabaseKind.all)
    func cancelWhileAlpacaIsDown(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "down@example.com")
            let id = try await restingBuy(client, env, tokens, account: account, quantity: "2")
            fake.failNext([500, 500, 500])
            let asked = try await client.execute(uri: "/api/orders/\(id)", method: .delete, headers: bearer(tokens))
            #expect(asked.status == .accepted, "\(String(buffer: asked.body))")
            #expect(try json(asked)["status"] as? String == "pending_cancel")
            #expect(fake.orders[id]?.status == "accepted", "Alpaca was not reached")
            try await OrderService.recheckFor(env)
            #expect(fake.orders[id]?.status == "canceled")
            let ended = try await show(client, tokens, id)
            #expect(ended["status"] as? String == "canceled" && ended["reject_reason"] as? String == "canceled by user", "\(ended)")
            #expect(try await alpacaAccount(env).reservedCash == 0)
            let notices = try json(try await client.execute(uri: "/api/notifications", method: .get, headers: bearer(tokens)))
            #expect((notices["data"] as? [[String: Any]] ?? []).allSatisfy { $0["kind"] as? String != "order_canceled" })
            try await env.expectConsistent()
        }
    }

    @Test("an order Alpaca took that it then lists nowhere (its account reset) is ended after a quarter of an hour and three looks, its cash freed; a look-up that lags a few looks ends nothing", arguments: TestDatabaseKind.all)
    func goneAtAlpaca(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "reset@example.com")
            let lagging = try await restingBuy(client, env, tokens, account: account, quantity: "1")
            let canceled = try await restingBuy(client, env, tokens, account: account, quantity: "2")
            let resting = try await restingBuy(client, env, tokens, account: account, quantity: "3")
            #expect(try await alpacaAccount(env).reservedCash == (try Cash(parsing: "300")))

            // The first order is listed nowhere for two looks, long apart, then again (a look-up that lagged): it is not gone.
            fake.forget(clientOrderID: canceled)
            fake.forget(clientOrderID: resting)
            let asked = try await client.execute(uri: "/api/orders/\(canceled)", method: .delete, headers: bearer(tokens))
            #expect(asked.status == .accepted, "not listed, so not known to be canceled at Alpaca: \(String(buffer: asked.body))")
            let hidden = try #require(fake.orders[lagging])
            fake.forget(clientOrderID: lagging)
            try await OrderService.recheckFor(env)
            env.clock.advance(by: 1_000)
            try await OrderService.recheckFor(env)
            // The access token outlived its quarter of an hour meanwhile.
            let signedIn = try json(try await post(client, "/api/auth/login", ["email": "reset@example.com", "password": strongPassword]))
            #expect(try await show(client, signedIn, canceled)["status"] as? String == "pending_cancel", "two looks are not enough")
            #expect(try await show(client, signedIn, resting)["status"] as? String == "accepted")
            #expect(try await alpacaAccount(env).reservedCash == (try Cash(parsing: "300")))

            fake.restore(hidden)
            try await OrderService.recheckFor(env)
            for (id, reason) in [(canceled, "canceled by user"), (resting, OrderService.goneAtBroker)] {
                let ended = try await show(client, signedIn, id)
                #expect(ended["status"] as? String == "canceled", "\(ended)")
                #expect(ended["reject_reason"] as? String == reason)
                #expect(ended["reserved_cash"] as? String == "0.00")
            }
            #expect(try await show(client, signedIn, lagging)["status"] as? String == "accepted", "listed again: still open")
            #expect(try await alpacaAccount(env).reservedCash == (try Cash(parsing: "50")))
            try await env.expectConsistent()
        }
    }

    @Test("a fill price with more places than Folio keeps is rounded against the account: a buy's up, a sale's down (never more than the broker paid)")
    func fillPriceRounding() throws {
        let price = JSONValue.string("49.123456785")
        #expect(AlpacaBroker.fillPrice(price, side: .string("buy")) == (try Price(parsing: "49.12345679")))
        #expect(AlpacaBroker.fillPrice(price, side: .string("sell")) == (try Price(parsing: "49.12345678")))
        #expect(AlpacaBroker.fillPrice(.string("49.123456781"), side: .string("sell_short")) == (try Price(parsing: "49.12345678")))
        #expect(AlpacaBroker.fillPrice(.string("49.123456781"), side: .string("buy")) == (try Price(parsing: "49.12345679")))
        #expect(AlpacaBroker.fillPrice(.string("49.5"), side: .string("buy")) == (try Price(parsing: "49.5")))
        #expect(AlpacaBroker.fillPrice(.string("not a price"), side: .string("buy")) == nil)
    }

    @Test("a cancel that a fill beat at Alpaca: the fill is applied and the cancel is refused", arguments: TestDatabaseKind.all)
    func cancelRacingAFill(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "race@example.com")
            let placed = try await post(client, "/api/orders", ["symbol": "KO", "quantity": "2", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account], headers: bearer(tokens))
            let id = try #require(try json(placed)["id"] as? String)
            await env.worker.drain()
            // Alpaca fills it before Folio has looked again; then the user cancels.
            fake.fill(clientOrderID: id, at: 59)
            let refused = try await client.execute(uri: "/api/orders/\(id)", method: .delete, headers: bearer(tokens))
            #expect(refused.status == .conflict)
            #expect(try problem(refused).code == "order_not_cancelable")
            let shown = try await show(client, tokens, id)
            #expect(shown["status"] as? String == "filled")
            #expect(shown["filled_quantity"] as? String == "2")
            try await env.expectConsistent()
        }
    }

    @Test("a cancel of an order still on its way is a request the submit job carries out, at Alpaca or before it gets there", arguments: TestDatabaseKind.all)
    func cancelOnItsWay(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "onitsway@example.com")
            let order = ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account]

            // Canceled before the job ran: it never reaches Alpaca.
            let first = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            let requested = try await client.execute(uri: "/api/orders/\(first)", method: .delete, headers: bearer(tokens))
            #expect(requested.status == .accepted)
            #expect(try json(requested)["status"] as? String == "pending_cancel")
            #expect(try json(requested)["cancel_requested_at"] != nil)
            await env.worker.drain()
            #expect(try await show(client, tokens, first)["status"] as? String == "canceled")
            #expect(fake.posts[first] == nil)

            // Canceled while the job was at Alpaca: the order reached it, and the job cancels it there.
            let second = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            let state = try await env.order(try #require(OrderID(second)))
            _ = try await AlpacaBroker(settings: fake.settings, httpClient: .shared, logger: env.services.logger).submit(BrokerOrder(state))
            #expect(try await client.execute(uri: "/api/orders/\(second)", method: .delete, headers: bearer(tokens)).status == .accepted)
            await env.worker.drain()
            #expect(try await show(client, tokens, second)["status"] as? String == "canceled")
            #expect(fake.orders[second]?.status == "canceled")
            #expect(try await alpacaAccount(env).reservedCash == 0)
            try await env.expectConsistent()
        }
    }

    @Test("a submit job taken over while its batch waited on Alpaca is not sent by the worker that lost it: the cancel its new holder carried out stands", arguments: TestDatabaseKind.all)
    func takenOverSubmitIsNotSent(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "takenover@example.com")
            let order = ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account]
            let first = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            env.clock.advance(by: 1)
            let second = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            // One worker claims both submit jobs; the first order's post to Alpaca is slow.
            let stalled = try await env.services.orders.jobs.claim(as: "stalled-worker", limit: 16, filter: .only([.submitOrder]))
            #expect(stalled.count == 2)
            let acted = NIOLockedValueBox(false), headers = bearer(tokens)
            fake.beforeOrderPost.withLockedValue { hook in
                hook = { clientOrderID in
                    guard clientOrderID == first, !acted.withLockedValue({ let was = $0; $0 = true; return was }) else { return }
                    // Meanwhile the user cancels the second (still on its way: only the request is recorded), the
                    // stalled worker's leases run out, and another worker takes both jobs over.
                    let requested = try? await client.execute(uri: "/api/orders/\(second)", method: .delete, headers: headers)
                    #expect(requested?.status == .accepted)
                    env.clock.advance(by: JobQueue.lease + 1)
                    await env.worker.drain()
                }
            }
            _ = await env.services.orders.submit(stalled)
            #expect(acted.withLockedValue { $0 })
            #expect(try await show(client, tokens, second)["status"] as? String == "canceled", "canceled by the worker that took the job over")
            #expect(fake.posts[second] == nil, "the worker that lost the job sent nothing: no live order at Alpaca for a canceled one")
            #expect(fake.orders.values.filter { $0.clientOrderID == first }.count == 1)
            await env.worker.drain()
            #expect(try await show(client, tokens, first)["status"] as? String == "accepted")
            try await env.expectConsistent()
        }
    }

    @Test("Alpaca refusing an order rejects it with the reason; a server error is retried, not taken for an answer", arguments: TestDatabaseKind.all)
    func refusals(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            let (tokens, account) = try await linkedUser(client, env, email: "refused@example.com")
            // The keys stop working at Alpaca after the link (revoked there).
            fake.revokeKeys = true
            let id = try #require(try json(try await post(client, "/api/orders", ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "MARKET", "account_id": account], headers: bearer(tokens)))["id"] as? String)
            await env.worker.drain()
            // 401 is not a verdict on the order: it stays new and its job will try again.
            #expect(try await show(client, tokens, id)["status"] as? String == "new")
            let jobs = try await env.jobs()
            #expect(jobs.map(\.status) == ["queued"])
            #expect(jobs.first?.lastError?.contains("HTTP 401") == true)
            let lastError = jobs.first?.lastError ?? ""
            for secret in [FakeAlpaca.secretKey, FakeAlpaca.keyID] {
                #expect(lastError.contains(secret) == false, "the keys stay out of errors")
                #expect(env.logs.lines.joined().contains(secret) == false, "and out of the log")
            }
        }
    }

    @Test("429 and 500 answers are retried with back-off within the job; a refusal for buying power rejects the order with Alpaca's reason", arguments: TestDatabaseKind.all)
    func retriesAndRefusals(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            let (tokens, account) = try await linkedUser(client, env, email: "retry@example.com")
            let order = ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "MARKET", "account_id": account]
            fake.failNext([429, 500])
            let id = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            await env.worker.drain()
            #expect(try await show(client, tokens, id)["status"] as? String == "filled", "filled in the job's first run")
            #expect(try await env.jobs().map(\.attempts) == [1])
            #expect(fake.posts[id] == 1)

            fake.refuseBuyingPower = true
            let refused = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            await env.worker.drain()
            let shown = try await show(client, tokens, refused)
            #expect(shown["status"] as? String == "rejected")
            #expect(shown["reject_reason"] as? String == "Alpaca refused the order: insufficient buying power")
            #expect(shown["reserved_cash"] as? String == "0.00")
            try await env.expectConsistent()
        }
    }

    @Test("a stop order Alpaca fills has no triggered_at and no trigger event: Alpaca keeps the trigger, and the fill's time is not when it was reached", arguments: [TestDatabaseKind.sqlite])
    func stopAtAlpacaKeepsItsTrigger(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            let (tokens, account) = try await linkedUser(client, env, email: "stop-alpaca@example.com")
            let order = ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "STOP", "stop_price": "500", "time_in_force": "GTC", "account_id": account]
            let id = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            await env.worker.drain()
            #expect(try await show(client, tokens, id)["status"] as? String == "accepted", "resting at Alpaca, its stop not reached")
            fake.fill(clientOrderID: id, at: 501)
            try await OrderService.recheckFor(env)
            let shown = try await show(client, tokens, id)
            #expect(shown["status"] as? String == "filled" && shown["triggered_at"] == nil, "\(shown)")
            #expect(try await env.database.sql.raw("SELECT id FROM audit_events WHERE action = 'order.triggered'").all().isEmpty)
        }
    }

    @Test("Alpaca's refusal is kept and mailed without control or text-direction characters, and at most 300 characters: it cannot forge a paragraph or reverse a name", arguments: [TestDatabaseKind.sqlite])
    func refusalTextCleaned(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            let (tokens, account) = try await linkedUser(client, env, email: "forged@example.com")
            fake.refuseBuyingPower = true
            fake.refusalMessage = "insufficient buying power\r\n\r\nIMPORTANT: sign in again at https://evil.example \u{202E}gnp.exe\u{1B}[2J" + String(repeating: "A", count: 3000)
            let order = ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "MARKET", "account_id": account]
            let id = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            await env.worker.drain()
            let reason = try #require(try await show(client, tokens, id)["reject_reason"] as? String)
            #expect(reason.hasPrefix("Alpaca refused the order: insufficient buying power    IMPORTANT"), "\(reason.prefix(80))")
            #expect(!UserText.hasHiddenCharacters(reason) && reason.unicodeScalars.count <= 330 && reason.hasSuffix("A…"), "\(reason.unicodeScalars.count)")
            let mail = try #require(try await env.outbox(kind: "order_rejected").first)
            #expect(!mail.body.contains("\r") && !mail.body.contains("\u{202E}") && !mail.body.contains("\u{1B}"))
        }
    }

    @Test("a refusal of the order itself (422, not about its client_order_id) after a 429 rejects it at once with Alpaca's reason: the first POST was refused too", arguments: TestDatabaseKind.all)
    func refusalAfterRetry(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            let (tokens, account) = try await linkedUser(client, env, email: "wholeshares@example.com")
            fake.wholeSharesOnly = ["KO"]
            fake.failNext([429])
            let body = ["symbol": "KO", "quantity": "1.5", "side": "BUY", "order_type": "LIMIT", "limit_price": "10", "time_in_force": "GTC", "account_id": account]
            let id = try #require(try json(try await post(client, "/api/orders", body, headers: bearer(tokens)))["id"] as? String)
            await env.worker.drain()
            let shown = try await show(client, tokens, id)
            #expect(shown["status"] as? String == "rejected", "\(shown)")
            #expect(shown["reject_reason"] as? String == "Alpaca refused the order: qty must be integer: asset is not fractionable")
            #expect(shown["reserved_cash"] as? String == "0.00")
            try await env.expectConsistent()
        }
    }

    @Test("a cancel Alpaca has yet to confirm is pending_cancel: the reservation holds, a fill that beats it counts, and the confirmation ends the order", arguments: TestDatabaseKind.all)
    func pendingCancel(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            fake.slowCancels = true
            let (tokens, account) = try await linkedUser(client, env, email: "pending@example.com")
            let placed = try await post(client, "/api/orders", ["symbol": "KO", "quantity": "4", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account], headers: bearer(tokens))
            let id = try #require(try json(placed)["id"] as? String)
            await env.worker.drain()
            let asked = try await client.execute(uri: "/api/orders/\(id)", method: .delete, headers: bearer(tokens))
            #expect(asked.status == .accepted)
            #expect(try json(asked)["status"] as? String == "pending_cancel")
            #expect(try json(asked)["reserved_cash"] as? String == "240.00", "still reserved: it may yet fill")
            #expect(fake.orders[id]?.status == "pending_cancel")

            // A fill beats the cancel at Alpaca, then Alpaca confirms the cancel of the rest.
            fake.fill(clientOrderID: id, quantity: 1, at: 59)
            fake.setStatus(clientOrderID: id, "pending_cancel")
            try await OrderService.recheckFor(env)
            let partly = try await show(client, tokens, id)
            #expect(partly["status"] as? String == "pending_cancel")
            #expect(partly["filled_quantity"] as? String == "1")
            fake.confirmCancels()
            try await OrderService.recheckFor(env)
            let ended = try await show(client, tokens, id)
            #expect(ended["status"] as? String == "canceled")
            #expect(ended["filled_quantity"] as? String == "1")
            #expect(ended["reserved_cash"] as? String == "0.00")
            #expect(try await alpacaAccount(env).cash == (try Cash(parsing: "24941.00")))
            #expect(fake.cash == (try Cash(parsing: "24941.00")))
            try await env.expectConsistent()
        }
    }

    @Test("the order list's status filter matches the status shown: pending_cancel is its own, accepted leaves it out, open and closed group them", arguments: TestDatabaseKind.all)
    func statusFilter(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            fake.slowCancels = true
            let (tokens, account) = try await linkedUser(client, env, email: "filters@example.com")
            var ids: [String] = []
            for _ in 0..<3 {
                let body = ["symbol": "KO", "quantity": "4", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account]
                ids.append(try #require(try json(try await post(client, "/api/orders", body, headers: bearer(tokens)))["id"] as? String))
            }
            await env.worker.drain()
            let (resting, canceling, filling) = (ids[0], ids[1], ids[2])
            #expect(try await client.execute(uri: "/api/orders/\(canceling)", method: .delete, headers: bearer(tokens)).status == .accepted)
            fake.fill(clientOrderID: filling, quantity: 4, at: 59)
            try await OrderService.recheckFor(env)

            func listed(_ status: String) async throws -> [String: String] {
                let response = try await client.execute(uri: "/api/orders?status=\(status)", method: .get, headers: bearer(tokens))
                #expect(response.status == .ok, "\(status)")
                let data = try #require(try json(response)["data"] as? [[String: Any]])
                return Dictionary(uniqueKeysWithValues: data.map { ($0["id"] as! String, $0["status"] as! String) })
            }
            #expect(try await listed("pending_cancel") == [canceling: "pending_cancel"])
            #expect(try await listed("ACCEPTED") == [resting: "accepted"])
            #expect(try await listed("filled") == [filling: "filled"])
            #expect(try await listed("open") == [resting: "accepted", canceling: "pending_cancel"])
            #expect(try await listed("closed") == [filling: "filled"])
            #expect(try await listed("canceled").isEmpty)

            let refused = try await client.execute(uri: "/api/orders?status=working", method: .get, headers: bearer(tokens))
            #expect(refused.status == .unprocessableContent)
            let issue = try problem(refused)
            #expect(issue.errors?.first?.field == "status")
            #expect(issue.errors?.first?.message.contains("pending_cancel, open, closed") == true)
        }
    }

    @Test("every Alpaca status maps onto Folio's machine: done_for_day, stopped and suspended stay open; replaced, expired and rejected end the order with its fills", arguments: TestDatabaseKind.all)
    func statuses(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "statuses@example.com")
            let ending = ["replaced": "canceled", "expired": "canceled", "rejected": "canceled", "canceled": "canceled", "filled": "filled"]
            var placed: [String: String] = [:]
            for status in ["done_for_day", "stopped", "suspended", "held", "some_future_status"] + ending.keys.sorted() {
                let body = ["symbol": "KO", "quantity": "2", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account]
                placed[status] = try #require(try json(try await post(client, "/api/orders", body, headers: bearer(tokens)))["id"] as? String)
            }
            await env.worker.drain()
            for (status, id) in placed {
                fake.fill(clientOrderID: id, quantity: status == "filled" ? 2 : 1, at: 58)
                fake.setStatus(clientOrderID: id, status)
            }
            try await OrderService.recheckFor(env)
            for (status, id) in placed {
                let shown = try await show(client, tokens, id)
                let expected = ending[status] ?? "partially_filled"
                #expect(shown["status"] as? String == expected, "\(status)")
                #expect(shown["filled_quantity"] as? String == (status == "filled" ? "2" : "1"), "\(status)")
            }
            #expect(try await alpacaAccount(env).reservedCash == 300, "the five open orders keep their last share reserved")
            try await env.expectConsistent()
        }
    }

    @Test("a retried submission asks Alpaca first: an order that reached it before a crash is not posted again", arguments: TestDatabaseKind.all)
    func retriedSubmissionAsksFirst(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            let (tokens, account) = try await linkedUser(client, env, email: "asks@example.com")
            let id = try #require(try json(try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "MARKET", "account_id": account], headers: bearer(tokens)))["id"] as? String)
            // The first attempt reached Alpaca, and the process died before recording the answer.
            var order = BrokerOrder(try await env.order(try #require(OrderID(id))))
            let broker = AlpacaBroker(settings: fake.settings, httpClient: .shared, logger: env.services.logger)
            _ = try await broker.submit(order)
            order.retried = true
            guard case .filled(let fills) = try await broker.submit(order) else { Issue.record("expected the filled order"); return }
            #expect(fills.map(\.id) == ["alpaca:\(try #require(fake.orders[id]?.id)):1"])
            #expect(fake.posts[id] == 1, "asked, not posted again")
        }
    }

    @Test("resting orders at Alpaca are polled account by account in two calls, and an Alpaca that fails stops no paper order from filling", arguments: TestDatabaseKind.all)
    func pollingByAccount(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "poll@example.com")
            var ids: [String] = []
            for symbol in ["KO", "PEP", "MSFT"] {
                let body = ["symbol": symbol, "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account]
                ids.append(try #require(try json(try await post(client, "/api/orders", body, headers: bearer(tokens)))["id"] as? String))
            }
            await env.worker.drain()
            try await OrderService.recheckFor(env)  // the worker's first look also reads Alpaca's calendar
            for id in ids.prefix(2) { fake.fill(clientOrderID: id, at: 59) }
            let before = fake.calls
            try await OrderService.recheckFor(env)
            #expect(fake.calls - before == 2, "one list of orders and one walk of the fills, whatever the number of orders")
            #expect(try await show(client, tokens, ids[0])["status"] as? String == "filled")
            #expect(try await show(client, tokens, ids[1])["status"] as? String == "filled")
            #expect(try await show(client, tokens, ids[2])["status"] as? String == "accepted")

            // Alpaca now fails every call; a paper order resting beside it still fills when the market reaches it.
            fake.failNext(Array(repeating: 500, count: 50))
            let paper = try #require(try await env.accounts().first { $0.kind == "paper" })
            let price = try #require(SimulatedMarket().price(of: "AAPL", at: env.clock.now))
            let limit = try Price(parsing: "\(price)", rounding: .halfEven)
            let resting = try #require(try json(try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "\(limit)", "time_in_force": "GTC", "account_id": paper.id.description], headers: bearer(tokens)))["id"] as? String)
            await env.worker.drain()
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, resting)["status"] as? String == "filled")
            #expect(try await show(client, tokens, ids[2])["status"] as? String == "accepted")
            try await env.expectConsistent()
        }
    }

    @Test("an order Alpaca calls filled before its FILL activities appear stays open until they do: no share is lost", arguments: TestDatabaseKind.all)
    func activitiesLag(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            let (tokens, account) = try await linkedUser(client, env, email: "lag@example.com")
            fake.withholdActivities = true
            let id = try #require(try json(try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "2", "side": "BUY", "order_type": "MARKET", "account_id": account], headers: bearer(tokens)))["id"] as? String)
            await env.worker.drain()
            try await OrderService.recheckFor(env)
            let waiting = try await show(client, tokens, id)
            #expect(waiting["status"] as? String == "accepted", "not filled with no fills, and not lost either")
            #expect(waiting["reserved_cash"] as? String != "0.00")
            fake.withholdActivities = false
            try await OrderService.recheckFor(env)
            let filled = try await show(client, tokens, id)
            #expect(filled["status"] as? String == "filled")
            #expect(filled["filled_quantity"] as? String == "2")
            try await env.expectConsistent()
        }
    }

    @Test("an old resting order's fills are read back only to what Folio has: thousands of fills since it was placed stop neither the poll nor its cancel; a fill missed long ago is found by a second walk, in order", arguments: TestDatabaseKind.all)
    func oldRestingOrder(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "old@example.com")
            let old = try await restingBuy(client, env, tokens, account: account, quantity: "10")
            let missed = try await restingBuy(client, env, tokens, account: account, quantity: "4")
            fake.fill(clientOrderID: old, quantity: 2, at: 49)
            let firstLook = fake.activityCalls
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, old)["filled_quantity"] as? String == "2")
            #expect(fake.activityCalls - firstLook == 1, "one page, newest first, reaches back to what Folio has")
            try await OrderService.recheckFor(env)
            #expect(fake.activityCalls - firstLook == 1, "nothing new filled: no activity is read")
            // A fill of the other order that no look has seen yet, then 5,100 fills of an order placed outside Folio.
            fake.fill(clientOrderID: missed, quantity: 1, at: 48)
            fake.recordOutsideFills(5_100)
            fake.fill(clientOrderID: old, quantity: 3, at: 47)
            let pagesBefore = fake.activityCalls
            try await OrderService.recheckFor(env)
            let shown = try await show(client, tokens, old)
            #expect(shown["status"] as? String == "partially_filled")
            #expect(shown["filled_quantity"] as? String == "5")
            // The other order's fill lies past 5,000 activities newest first: the second walk, oldest first, finds it.
            let found = try await show(client, tokens, missed)
            #expect(found["status"] as? String == "partially_filled")
            #expect(found["filled_quantity"] as? String == "1")
            #expect(fake.activityCalls - pagesBefore == 51, "fifty pages newest first, then one oldest first")
            #expect(try await env.fills().map(\.brokerFillID).sorted() == [
                AlpacaBroker.fillID(order: try #require(fake.orders[old]?.id), cumulative: 2), AlpacaBroker.fillID(order: try #require(fake.orders[old]?.id), cumulative: 5),
                AlpacaBroker.fillID(order: try #require(fake.orders[missed]?.id), cumulative: 1),
            ].sorted())
            // Nothing new for either: their cancels read no activity at all.
            let beforeCancel = fake.activityCalls
            for (id, filled) in [(old, "5"), (missed, "1")] {
                let canceled = try await client.execute(uri: "/api/orders/\(id)", method: .delete, headers: bearer(tokens))
                #expect(canceled.status == .ok)
                #expect(try json(canceled)["status"] as? String == "canceled")
                #expect(try json(canceled)["filled_quantity"] as? String == filled)
            }
            #expect(fake.activityCalls == beforeCancel)
            #expect(try await alpacaAccount(env).reservedCash == 0)
            try await env.expectConsistent()
        }
    }

    @Test("fills missed on a busy account: the second walk hands back the run it found even when its cap cuts it short, in order", arguments: TestDatabaseKind.all)
    func cutShortSecondWalk(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "busy@example.com")
            let id = try await restingBuy(client, env, tokens, account: account, quantity: "10")
            fake.fill(clientOrderID: id, quantity: 2, at: 49)
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, id)["filled_quantity"] as? String == "2")
            // Two fills no look has seen, each followed by more fills of another app than one walk reads.
            fake.fill(clientOrderID: id, quantity: 1, at: 48)
            fake.recordOutsideFills(5_100)
            fake.fill(clientOrderID: id, quantity: 2, at: 47)
            fake.recordOutsideFills(5_100)
            try await OrderService.recheckFor(env)
            let shown = try await show(client, tokens, id)
            #expect(shown["filled_quantity"] as? String == "3", "the fill the second walk reached is booked; the one past its cap waits")
            #expect(shown["status"] as? String == "partially_filled")
            let remote = try #require(fake.orders[id]?.id)
            #expect(try await env.fills().map(\.brokerFillID).sorted() == [AlpacaBroker.fillID(order: remote, cumulative: 2), AlpacaBroker.fillID(order: remote, cumulative: 3)])
            try await env.expectConsistent()
        }
    }

    @Test("the second walk starts shortly before the order's last booked fill, not at its creation: thousands of older fills of another app are not read again", arguments: TestDatabaseKind.all)
    func secondWalkFromLastFill(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (placer, account) = try await linkedUser(client, env, email: "later@example.com")
            let id = try await restingBuy(client, env, placer, account: account, quantity: "3")
            // Placed at 15:30; another app's 5,100 fills at 15:40; this order's first fill at 16:30, booked at 17:30.
            env.clock.advance(by: 7_200)
            let tokens = try json(try await post(client, "/api/auth/login", ["email": "later@example.com", "password": strongPassword]))
            fake.executionTime = "2026-11-24T15:40:00Z"
            fake.recordOutsideFills(5_100)
            fake.executionTime = "2026-11-24T16:30:00Z"
            fake.fill(clientOrderID: id, quantity: 1, at: 49)
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, id)["filled_quantity"] as? String == "1")
            // Its next fill at 16:40 lies behind 5,100 newer fills: the first walk does not reach it.
            fake.executionTime = "2026-11-24T16:40:00Z"
            fake.fill(clientOrderID: id, quantity: 1, at: 48)
            fake.executionTime = "2026-11-24T16:45:00Z"
            fake.recordOutsideFills(5_100)
            let before = fake.activityCalls
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, id)["filled_quantity"] as? String == "2", "found by the second walk, from 16:15")
            #expect(fake.activityCalls - before == 51, "fifty pages newest first, then one oldest first from shortly before 16:30")
            let remote = try #require(fake.orders[id]?.id)
            #expect(try await env.fills().map(\.brokerFillID).sorted() == [AlpacaBroker.fillID(order: remote, cumulative: 1), AlpacaBroker.fillID(order: remote, cumulative: 2)])
            try await env.expectConsistent()
        }
    }

    @Test("only an unbroken run of fills is booked: one missing from Alpaca's record (lagging, or unreadable) stops the run, and a repeat is dropped")
    func unbrokenRun() throws {
        func activity(_ quantity: Quantity, upTo cumulative: Quantity) -> AlpacaBroker.Activity {
            AlpacaBroker.Activity(
                fill: BrokerFill(id: AlpacaBroker.fillID(order: "a1", cumulative: cumulative), quantity: quantity, price: 10), cumulative: cumulative)
        }
        let a = activity(2, upTo: 2), b = activity(3, upTo: 5), c = activity(1, upTo: 6)
        #expect(AlpacaBroker.unbroken([a, b, c], after: 0).map(\.cumulative) == [2, 5, 6])
        #expect(AlpacaBroker.unbroken([a, b, c], after: 2).map(\.cumulative) == [5, 6], "what is booked is skipped")
        #expect(AlpacaBroker.unbroken([b, c], after: 0).isEmpty, "the first fill is missing: nothing after it is booked across the gap")
        #expect(AlpacaBroker.unbroken([a, c], after: 0).map(\.cumulative) == [2], "a gap in the middle stops the run there")
        #expect(AlpacaBroker.unbroken([a, a, b], after: 0).map(\.cumulative) == [2, 5], "a repeat is dropped")
        #expect(AlpacaBroker.unbroken([activity(2, upTo: 4)], after: 3).isEmpty, "a fill that overlaps what is booked does not follow it")
    }

    @Test("a submission Alpaca took but answered 500, whose repeat is refused as a duplicate while the look-up lags: asked again later, not rejected", arguments: TestDatabaseKind.all)
    func duplicateWhileLookupLags(kind: TestDatabaseKind) async throws {
        try await withFakeAlpaca { fake in
            fake.mode = .rest
            try await withTestApp(kind, configure: { $0.alpacaURLs = fake.urls }) { client, env in
                let (tokens, account) = try await linkedUser(client, env, email: "lagging@example.com")
                let order = ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account]
                let id = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
                // The first POST makes the order but answers 500; the repeat gets 422, and the look-up 404 once.
                fake.loseAnswers = 1
                fake.laggingLookups = 1
                await env.worker.drain()
                #expect(fake.orders[id]?.status == "accepted", "it reached Alpaca")
                #expect(fake.posts[id] == 2)
                let waiting = try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))
                #expect(waiting["status"] as? String != "rejected", "\(waiting)")
                // The job's retry finds the order under its id and follows it.
                env.clock.advance(by: 120)
                await env.worker.drain()
                let shown = try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))
                #expect(shown["status"] as? String == "accepted", "\(shown)")
                #expect(fake.posts[id] == 2, "not sent a third time")
                try await env.expectConsistent()
            }
        }
    }

    @Test("a submission Alpaca took but answered 500, whose repeat is refused for the buying power the first copy holds: followed, not rejected while it lives at Alpaca", arguments: TestDatabaseKind.all)
    func repeatRefusedForBuyingPower(kind: TestDatabaseKind) async throws {
        try await withFakeAlpaca { fake in
            fake.mode = .rest
            try await withTestApp(kind, configure: { $0.alpacaURLs = fake.urls }) { client, env in
                let (tokens, account) = try await linkedUser(client, env, email: "repeat-403@example.com")
                // The first POST makes the order but answers 500; its repeat is refused with 403, as Alpaca refuses a
                // second order the buying power no longer covers.
                fake.beforeOrderPost.withLockedValue { hook in
                    hook = { client in if fake.posts[client] == 1 { fake.refuseBuyingPower = true } }
                }
                for (lagging, symbol) in [(0, "KO"), (1, "PEP")] {
                    fake.refuseBuyingPower = false
                    fake.loseAnswers = 1
                    fake.laggingLookups = lagging
                    let order = ["symbol": symbol, "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account]
                    let id = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
                    await env.worker.drain()
                    #expect(fake.orders[id]?.status == "accepted", "it reached Alpaca")
                    let shown = try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))
                    #expect(shown["status"] as? String != "rejected", "lagging \(lagging): \(shown)")
                    // While the look-up lags, the job's retry finds it under its id and follows it.
                    env.clock.advance(by: 120)
                    await env.worker.drain()
                    let followed = try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))
                    #expect(followed["status"] as? String == "accepted", "lagging \(lagging): \(followed)")
                    #expect(fake.posts[id] == 2, "not sent a third time")
                }
                // A first POST refused with 403 is still a rejection, with Alpaca's reason.
                fake.beforeOrderPost.withLockedValue { $0 = nil }
                fake.refuseBuyingPower = true
                let refused = ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account]
                let id = try #require(try json(try await post(client, "/api/orders", refused, headers: bearer(tokens)))["id"] as? String)
                await env.worker.drain()
                let shown = try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))
                #expect(shown["status"] as? String == "rejected" && (shown["reject_reason"] as? String ?? "").contains("insufficient buying power"), "\(shown)")
                // So is one refused after a 429: a call refused for its rate was not carried out, so its repeat's refusal is the order's.
                fake.failNext([429])
                let afterLimit = try #require(try json(try await post(client, "/api/orders", refused, headers: bearer(tokens)))["id"] as? String)
                await env.worker.drain()
                let limited = try json(try await client.execute(uri: "/api/orders/\(afterLimit)", method: .get, headers: bearer(tokens)))
                #expect(limited["status"] as? String == "rejected" && (limited["reject_reason"] as? String ?? "").contains("insufficient buying power"), "\(limited)")
                try await env.expectConsistent()
            }
        }
    }

    @Test("a submission whose answers were all lost, retried while the look-up lags and refused as a duplicate: asked again later, never rejected while it lives at Alpaca", arguments: TestDatabaseKind.all)
    func lostAttemptThenDuplicateWhileLookupLags(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "lost-attempt@example.com")
            let order = ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account]
            let id = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            // The first attempt's POST makes the order, but every answer to it is lost: the job fails.
            fake.loseAnswers = 3
            await env.worker.drain()
            #expect(fake.orders[id]?.status == "accepted", "it reached Alpaca")
            // The retry looks it up (not listed yet), sends it again (refused: its id is taken), looks again (still not listed).
            fake.laggingLookups = 2
            env.clock.advance(by: 120)
            await env.worker.drain()
            #expect(fake.laggingLookups == 0, "both look-ups were made")
            let waiting = try await show(client, tokens, id)
            #expect(waiting["status"] as? String == "new", "\(waiting)")
            #expect(waiting["reserved_cash"] as? String == "60.00")
            // Listed at last: followed as the order Alpaca holds.
            env.clock.advance(by: 120)
            await env.worker.drain()
            #expect(try await show(client, tokens, id)["status"] as? String == "accepted")
            fake.fill(clientOrderID: id, at: 60)
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, id)["status"] as? String == "filled")
            try await env.expectConsistent()
        }
    }

    @Test("an order of an account whose audit chain takes no more events is not sent to Alpaca: its fills could not be booked", arguments: TestDatabaseKind.all)
    func frozenChainSendsNothing(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "frozen-chain@example.com")
            let order = ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account]
            let id = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            // The head's signature changed behind Folio's back after the order was placed, before it was sent.
            let sql = env.database.sql
            let mac = try #require(try await sql.raw("SELECT audit_mac FROM accounts WHERE id = \(bind: UUID(uuidString: account))").first()?.decode(column: "audit_mac", as: String.self))
            try await sql.raw("UPDATE accounts SET audit_mac = 'forged' WHERE id = \(bind: UUID(uuidString: account))").run()
            await env.worker.drain()
            #expect(fake.orders[id] == nil, "not sent")
            #expect(try await show(client, tokens, id)["status"] as? String == "new")
            let lastError = try await sql.raw("SELECT last_error FROM jobs WHERE order_id = \(bind: UUID(uuidString: id))").first()?.decode(column: "last_error", as: String?.self)
            #expect(lastError?.hasPrefix(OrderService.frozenChainFailure) == true, "\(String(describing: lastError))")
            #expect(OrderService.deadSubmitReason(lastError, symbol: "KO").hasPrefix("not sent: the account's audit trail"))
            // Once the head is Folio's again (the key put back, say), it goes.
            try await sql.raw("UPDATE accounts SET audit_mac = \(bind: mac) WHERE id = \(bind: UUID(uuidString: account))").run()
            env.clock.advance(by: 120)
            await env.worker.drain()
            #expect(fake.orders[id]?.status == "accepted")
            #expect(try await show(client, tokens, id)["status"] as? String == "accepted")
            try await env.expectConsistent()
        }
    }

    @Test("a cancel asked for after a submission whose answer was lost, while Alpaca's look-up lags: the order is not taken as never sent; canceled at Alpaca once listed, its cash kept reserved until then", arguments: TestDatabaseKind.all)
    func cancelAfterLostAttemptWhileLookupLags(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "cancel-lost@example.com")
            let order = ["symbol": "KO", "quantity": "2", "side": "BUY", "order_type": "LIMIT", "limit_price": "50", "time_in_force": "GTC", "account_id": account]
            let id = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            fake.loseAnswers = 3
            await env.worker.drain()
            #expect(fake.orders[id]?.status == "accepted", "it reached Alpaca")
            let requested = try await client.execute(uri: "/api/orders/\(id)", method: .delete, headers: bearer(tokens))
            #expect(requested.status == .accepted)
            #expect(try json(requested)["status"] as? String == "pending_cancel")
            // The retry, asked to cancel, does not find it listed yet.
            fake.laggingLookups = 1
            env.clock.advance(by: 120)
            await env.worker.drain()
            let waiting = try await show(client, tokens, id)
            #expect(waiting["status"] as? String == "pending_cancel", "\(waiting)")
            #expect(waiting["reserved_cash"] as? String == "100.00")
            #expect(fake.orders[id]?.status == "accepted")
            env.clock.advance(by: 120)
            await env.worker.drain()
            #expect(try await show(client, tokens, id)["status"] as? String == "canceled")
            #expect(fake.orders[id]?.status == "canceled", "not left live at Alpaca")
            #expect(try await alpacaAccount(env).reservedCash == 0)
            try await env.expectConsistent()
        }
    }

    @Test("an earlier attempt that failed counts as a send that may have reached Alpaca though the order is not marked sent (a worker of an older build): a cancel then waits for the look-up", arguments: TestDatabaseKind.all)
    func failedAttemptOfAnOlderBuild(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "older-build@example.com")
            let order = ["symbol": "KO", "quantity": "2", "side": "BUY", "order_type": "LIMIT", "limit_price": "50", "time_in_force": "GTC", "account_id": account]
            let id = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            fake.loseAnswers = 3
            await env.worker.drain()
            #expect(fake.orders[id]?.status == "accepted", "it reached Alpaca")
            // As a worker of a build before `sent_at` left it.
            try await env.database.sql.raw("UPDATE orders SET sent_at = NULL").run()
            #expect(try await client.execute(uri: "/api/orders/\(id)", method: .delete, headers: bearer(tokens)).status == .accepted)
            fake.laggingLookups = 1
            env.clock.advance(by: 120)
            await env.worker.drain()
            #expect(try await show(client, tokens, id)["status"] as? String == "pending_cancel", "not taken as never sent")
            #expect(fake.orders[id]?.status == "accepted")
            env.clock.advance(by: 120)
            await env.worker.drain()
            #expect(try await show(client, tokens, id)["status"] as? String == "canceled")
            #expect(fake.orders[id]?.status == "canceled", "not left live at Alpaca")
            try await env.expectConsistent()
        }
    }

    @Test("an order whose submit job died after sends whose answers were lost is looked for at Alpaca only once its look-up has had time: not ended here while it may be there", arguments: TestDatabaseKind.all)
    func deadSubmitWaitsForTheLookup(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "dead-submit@example.com")
            let order = ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account]
            let id = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            // The first send lands at Alpaca with its answers lost; every look-up lags from then on, so each retry is
            // refused as a duplicate and not found: the job runs out of attempts.
            fake.loseAnswers = 3
            fake.laggingLookups = 10_000
            for _ in 0..<12 {
                await env.worker.drain()
                if try await env.jobs().first(where: { $0.kind == "submit_order" })?.status == "dead" { break }
                env.clock.advance(by: 1000)
            }
            #expect(try await env.jobs().first { $0.kind == "submit_order" }?.status == "dead")
            #expect(fake.orders[id]?.status == "accepted", "it is at Alpaca")
            // Hours passed: signed in again.
            let later = try json(try await post(client, "/api/auth/login", ["email": "dead-submit@example.com", "password": strongPassword]))
            let waiting = try await show(client, later, id)
            #expect(waiting["status"] as? String == "new", "not ended here while the look-up lags: \(waiting)")
            #expect(waiting["reserved_cash"] as? String == "60.00")
            // Five minutes on, Alpaca lists it: canceled there, rejected here.
            fake.laggingLookups = 0
            env.clock.advance(by: OrderService.deadSubmitGrace + 1)
            try await OrderService.recheckFor(env)
            let ended = try await show(client, later, id)
            #expect(ended["status"] as? String == "rejected", "\(ended)")
            #expect(fake.orders[id]?.status == "canceled", "not left live at Alpaca")
            #expect(try await alpacaAccount(env).reservedCash == 0)
            try await env.expectConsistent()
        }
    }

    @Test("two fills of one millisecond listed by Alpaca the other way round are both booked, and the order ends filled", arguments: TestDatabaseKind.all)
    func fillsOfOneMillisecondOutOfOrder(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "same-ms@example.com")
            let id = try await restingBuy(client, env, tokens, account: account, quantity: "10")
            fake.fill(clientOrderID: id, quantity: 3, at: 49)
            fake.fill(clientOrderID: id, quantity: 2, at: 48)
            fake.listLastTwoFillsSwapped()
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, id)["filled_quantity"] as? String == "5")
            fake.fill(clientOrderID: id, at: 47)
            try await OrderService.recheckFor(env)
            let filled = try await show(client, tokens, id)
            #expect(filled["status"] as? String == "filled", "\(filled)")
            #expect(filled["filled_quantity"] as? String == "10")
            #expect(try await env.fills().count == 3)
            #expect(try await alpacaAccount(env).reservedCash == 0)
            try await env.expectConsistent()
        }
    }

    @Test("a DAY order whose first submission reached Alpaca but whose answer was lost, retried after the close: canceled at Alpaca, expired here", arguments: TestDatabaseKind.all)
    func retriedAfterTheClose(kind: TestDatabaseKind) async throws {
        let friday = TradingDay(year: 2026, month: 11, day: 27)
        let clock = TestClock(start: friday.at(hour: 12, minute: 58))
        try await withFakeAlpaca { fake in
            fake.mode = .rest
            try await withTestApp(kind, clock: clock, configure: { $0.alpacaURLs = fake.urls }) { client, env in
                let (tokens, account) = try await linkedUser(client, env, email: "lost@example.com")
                let order = ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "DAY", "account_id": account]
                let id = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
                // Every answer of this attempt is lost, though Alpaca took the order.
                fake.loseAnswers = 3
                await env.worker.drain()
                #expect(fake.orders[id]?.status == "accepted", "it reached Alpaca")
                #expect(try await env.jobs().first?.lastError?.contains("HTTP 500") == true)
                clock.advance(by: friday.at(hour: 13, minute: 10).timeIntervalSince(clock.now))
                await env.worker.drain()
                let tokens2 = try json(try await post(client, "/api/auth/login", ["email": "lost@example.com", "password": strongPassword]))
                let shown = try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens2)))
                #expect(shown["status"] as? String == "expired", "\(shown)")
                #expect(fake.orders[id]?.status == "canceled", "not left live at Alpaca")
                try await env.expectConsistent()
            }
        }
    }

    @Test("an order Alpaca ended whose fills Folio cannot read is booked by an operator: only the rest, only once Alpaca says it ended, and never again when the fills become readable", arguments: TestDatabaseKind.all)
    func operatorRecordsFills(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "operator-fills@example.com")
            let id = try await restingBuy(client, env, tokens, account: account, quantity: "10")
            fake.fill(clientOrderID: id, quantity: 4, at: 49)
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, id)["filled_quantity"] as? String == "4")
            func record(_ quantity: String, _ price: String, dryRun: Bool = false, order: String? = nil) async throws -> OperatorFills.Outcome {
                try await OperatorFills.record(orderID: order ?? id, quantity: quantity, price: price, dryRun: dryRun, services: env.services)
            }
            func refusal(_ quantity: String, _ price: String, order: String? = nil) async -> String {
                do {
                    let outcome = try await record(quantity, price, order: order)
                    return "booked: \(outcome)"
                } catch {
                    return "\(error)"
                }
            }
            #expect(await refusal("6", "48").contains("still open there"), "Alpaca has it partially filled: its fills come as they are read")

            // The rest fills at Alpaca, and Alpaca's record of those fills cannot be read.
            fake.withholdActivities = true
            fake.fill(clientOrderID: id, quantity: 6, at: 48)
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, id)["status"] as? String == "partially_filled", "kept open rather than guessed")

            #expect(await refusal("5", "48").contains("--quantity must be the rest, 6"))
            #expect(await refusal("6", "48.000000001").contains("--price"), "a price past its scale is refused, not rounded")
            #expect(await refusal("6", "48", order: UUID().uuidString).contains("no order has that id"))
            let entriesBefore = try await env.entries().count
            let dry = try await record("6", "48", dryRun: true)
            #expect(!dry.applied && dry.status == "filled" && dry.alpacaStatus == "filled" && dry.alpacaFilled == "10" && dry.booked == "4")
            #expect(dry.alpacaAveragePrice == "48.40")
            #expect(try await env.entries().count == entriesBefore, "the dry run changes nothing")

            let done = try await record("6", "48")
            #expect(done.applied && done.status == "filled")
            let shown = try await show(client, tokens, id)
            #expect(shown["status"] as? String == "filled" && shown["filled_quantity"] as? String == "10", "\(shown)")
            #expect(shown["reserved_cash"] as? String == "0.00")
            let books = try #require(try await env.accounts().first { $0.id.description == account })
            #expect(books.cash == (try Cash(parsing: "24516")) && books.reservedCash == .zero, "25,000 less 4 at 49 and 6 at 48")
            #expect(env.logs.lines.contains { $0.contains("an operator recorded an order's fills") })
            let actions = try await env.database.sql.raw("SELECT action FROM audit_events").all().map { try $0.decode(column: "action", as: String.self) }
            #expect(actions.contains("order.fills_recorded_by_operator"), "audited with the fill, in its transaction")
            #expect(done.filledAfter == "10")

            // Alpaca's record becomes readable: the rest is not booked a second time.
            fake.withholdActivities = false
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, id)["filled_quantity"] as? String == "10")
            #expect(try await env.fills().count == 2)
            #expect(await refusal("6", "48").contains("ended already"))
            #expect(try await BrokerReconciliation.run(services: env.services, dryRun: false).first?.differences == [], "the books agree with Alpaca")
            try await env.expectConsistent()
        }
    }

    @Test("an operator's fills: nothing booked yet means Alpaca's average price or nothing, and the books must still be as Alpaca's figures were compared with them", arguments: TestDatabaseKind.all)
    func operatorFillsChecks(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "operator-checks@example.com")
            let id = try await restingBuy(client, env, tokens, account: account, quantity: "10")
            fake.withholdActivities = true
            fake.fill(clientOrderID: id, quantity: 10, at: 48)
            do {
                _ = try await OperatorFills.record(orderID: id, quantity: "10", price: "84", dryRun: false, services: env.services)
                Issue.record("a price other than Alpaca's average was booked")
            } catch {
                #expect("\(error)".contains("--price must be 48.00"), "\(error)")
            }
            #expect(try await env.order(try #require(OrderID(id))).filledQuantity == .zero)

            // The books move between the look at Alpaca and the lock: refused in the ledger's transaction, nothing applied.
            let order = try await env.order(try #require(OrderID(id)))
            try await env.orders.apply(.partiallyFilled([BrokerFill(id: "alpaca:elsewhere:4", quantity: 4, price: 48)]), to: order.id)
            let note = AuditNote(action: "order.fills_recorded_by_operator", subjectType: "order", subjectID: id)
            await #expect(throws: OrderService.BooksMoved.self) {
                try await env.orders.apply(.filled([BrokerFill(id: "alpaca:x:10", quantity: 10, price: 48)]), to: order, expecting: .zero, note: note)
            }
            #expect(try await env.order(order.id).filledQuantity == 4, "the stale report changed nothing")
            try await env.expectConsistent()

            // Part booked (4 at 48): the rest's price must make Alpaca's average of 48 with it. A typo is refused.
            do {
                _ = try await OperatorFills.record(orderID: id, quantity: "6", price: "84", dryRun: false, services: env.services)
                Issue.record("a rest price far from what makes Alpaca's average was booked")
            } catch {
                #expect("\(error)".contains("is about 48.00, not 84.00"), "\(error)")
            }
            #expect(try await env.order(order.id).filledQuantity == 4)
            let outcome = try await OperatorFills.record(orderID: id, quantity: "6", price: "48", dryRun: false, services: env.services)
            #expect(outcome.applied && outcome.status == "filled")
            #expect(try await env.order(order.id).filledQuantity == 10)
            try await env.expectConsistent()
        }
    }

    @Test("the rest's price an operator gives must make Alpaca's average with what was booked, to the rounding of the figures")
    func restPriceMismatch() throws {
        func check(_ price: String, rest: Quantity, booked: Quantity, at bookedAverage: String, filled: Quantity, alpaca: String) throws -> String? {
            try OperatorFills.restPriceMismatch(
                try Price(parsing: price), rest: rest, booked: booked, bookedAverage: try Price(parsing: bookedAverage), filled: filled,
                alpacaAverage: try Price(parsing: alpaca))?.description
        }
        // 1 at 48.01 booked, 2 more at 48.00: the average of 3 is 48.0033333…
        #expect(try check("48", rest: 2, booked: 1, at: "48.01", filled: 3, alpaca: "48.0033333") == nil, "Alpaca's average to 7 places")
        #expect(try check("48", rest: 2, booked: 1, at: "48.01", filled: 3, alpaca: "48.00") == nil, "Alpaca's average to cents")
        #expect(try check("48", rest: 2, booked: 1, at: "48.01", filled: 3, alpaca: "48") == nil, "an average shown without decimals is taken to cents")
        #expect(try check("48.01", rest: 2, booked: 1, at: "48.01", filled: 3, alpaca: "48.0033333") == "48.00", "a cent off, with Alpaca's 7 places")
        #expect(try check("84", rest: 2, booked: 1, at: "48.01", filled: 3, alpaca: "48.00") == "47.995", "a typo")
        // A small rest of a large order: Alpaca's rounding spreads over few shares, so more is let through.
        #expect(try check("48.40", rest: 1, booked: 99, at: "48", filled: 100, alpaca: "48.00") == nil)
        #expect(try check("48.60", rest: 1, booked: 99, at: "48", filled: 100, alpaca: "48.00") != nil)
    }
}
