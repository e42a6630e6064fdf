import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import FolioServer

/// Market hours with an Alpaca account: Alpaca's calendar and clock read and
/// kept, orders placed while the market is closed wait for the open, and DAY
/// orders end at the real close, early closes included.
@Suite("Alpaca market hours")
struct AlpacaMarketHoursTests {
    func withAlpaca(
        _ kind: TestDatabaseKind, clock: TestClock, prepare: @escaping @Sendable (FakeAlpaca) -> Void = { _ in },
        _ body: @escaping @Sendable (any TestClientProtocol, TestEnvironment, FakeAlpaca, [String: Any], String) async throws -> Void
    ) async throws {
        try await withFakeAlpaca { fake in
            prepare(fake)
            try await withTestApp(kind, clock: clock, configure: { $0.alpacaURLs = fake.urls }) { client, env in
                let tokens = try await signUp(client, env, email: "hours@example.com")
                let linked = try await post(client, "/api/brokerage/alpaca", FakeAlpaca.linkBody, headers: bearer(tokens))
                let account = try #require((try json(linked)["account"] as? [String: Any])?["id"] as? String)
                try await body(client, env, fake, tokens, account)
            }
        }
    }

    /// Signs in again after the test clock moved past the access token's 15 minutes.
    func signIn(_ client: some TestClientProtocol) async throws -> [String: Any] {
        try json(try await post(client, "/api/auth/login", ["email": "hours@example.com", "password": strongPassword]))
    }

    func show(_ client: some TestClientProtocol, _ tokens: [String: Any], _ id: String) async throws -> [String: Any] {
        try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))
    }

    @Test("a DAY market order placed while the market is closed is accepted at Alpaca and waits for the open", arguments: TestDatabaseKind.all)
    func closedMarket(kind: TestDatabaseKind) async throws {
        // Saturday noon in New York.
        let clock = TestClock(start: TradingDay(year: 2026, month: 11, day: 28).at(hour: 12, minute: 0))
        try await withAlpaca(kind, clock: clock, prepare: { $0.closeMarket() }) { client, env, fake, tokens, account in
            let clockAnswer = try json(try await client.execute(uri: "/api/market/clock", method: .get, headers: bearer(tokens)))
            #expect(clockAnswer["is_open"] as? Bool == false && clockAnswer["source"] as? String == "alpaca", "\(clockAnswer)")
            let id = try #require(try json(try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "2", "side": "BUY", "order_type": "MARKET", "account_id": account], headers: bearer(tokens)))["id"] as? String)
            await env.worker.drain()
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, id)["status"] as? String == "accepted", "it waits at Alpaca")
            fake.openMarket()
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, id)["status"] as? String == "filled")
            try await env.expectConsistent()
        }
    }

    @Test("on the day after Thanksgiving a DAY order ends at the 13:00 close: Alpaca expires a resting one, and one whose submission comes after the close never reaches Alpaca", arguments: TestDatabaseKind.all)
    func earlyClose(kind: TestDatabaseKind) async throws {
        let friday = TradingDay(year: 2026, month: 11, day: 27)
        let clock = TestClock(start: friday.at(hour: 12, minute: 30))
        try await withAlpaca(kind, clock: clock, prepare: { $0.mode = .rest }) { client, env, fake, tokens, account in
            let order = ["symbol": "KO", "quantity": "2", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "DAY", "account_id": account]
            let resting = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            await env.worker.drain()
            #expect(try await show(client, tokens, resting)["status"] as? String == "accepted")
            let late = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            // 13:01: the worker gets to the second order only after the close; Alpaca expires the first.
            clock.advance(by: friday.at(hour: 13, minute: 1).timeIntervalSince(clock.now))
            let tokens = try await signIn(client)
            await env.worker.drain()
            let lateShown = try await show(client, tokens, late)
            #expect(lateShown["status"] as? String == "expired", "\(lateShown)")
            #expect(fake.posts[late] == nil, "never sent")
            fake.setStatus(clientOrderID: resting, "expired")
            try await OrderService.recheckFor(env)
            #expect(try await show(client, tokens, resting)["status"] as? String == "expired")
            #expect(try await env.accounts().first { $0.kind == "brokerage" }?.reservedCash == 0)
            try await env.expectConsistent()
        }
    }

    @Test("Alpaca's published calendar is kept: an early close the rules do not know ends DAY orders and shows in the market clock", arguments: TestDatabaseKind.all)
    func publishedCalendar(kind: TestDatabaseKind) async throws {
        let tuesday = TradingDay(year: 2026, month: 12, day: 1)
        let clock = TestClock(start: tuesday.at(hour: 12, minute: 0))
        try await withAlpaca(kind, clock: clock, prepare: { $0.publishClose(tuesday, at: "13:00"); $0.mode = .rest }) { client, env, fake, tokens, account in
            let answer = try json(try await client.execute(uri: "/api/market/clock", method: .get, headers: bearer(tokens)))
            #expect(answer["early_close"] as? Bool == true, "\(answer)")
            #expect(answer["source"] as? String == "alpaca")
            #expect(env.services.calendar.current.session(on: tuesday)?.close == tuesday.at(hour: 13, minute: 0))
            let order = ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "DAY", "account_id": account]
            let id = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            clock.advance(by: tuesday.at(hour: 13, minute: 5).timeIntervalSince(clock.now))
            let tokens = try await signIn(client)
            await env.worker.drain()
            #expect(try await show(client, tokens, id)["status"] as? String == "expired", "ended at Alpaca's 13:00 close, not the rules' 16:00")
            #expect(fake.posts[id] == nil)
            try await env.expectConsistent()
        }
    }
}
