import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
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
            #expect(try await env.fills().map { $0.brokerFillID.hasPrefix("alpaca-") } == [true])
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

    @Test("a resting order fills in parts as Alpaca reports them; a cancel keeps what filled and frees the rest", arguments: TestDatabaseKind.all)
    func restingParts(kind: TestDatabaseKind) async throws {
        try await withAlpacaApp(kind) { client, env, fake in
            fake.mode = .rest
            let (tokens, account) = try await linkedUser(client, env, email: "parts@example.com")
            let placed = try await post(client, "/api/orders", ["symbol": "MSFT", "quantity": "3", "side": "BUY", "order_type": "LIMIT", "limit_price": "50", "time_in_force": "GTC", "account_id": account], headers: bearer(tokens))
            let id = try #require(try json(placed)["id"] as? String)
            await env.worker.drain()
            #expect(try await show(client, tokens, id)["status"] as? String == "accepted")
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
            #expect(try json(requested)["status"] as? String == "new")
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
}
