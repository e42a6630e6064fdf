import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import FolioServer

@Suite("Market data and the portfolio")
struct PortfolioTests {
    @Test("quotes come from the simulated market; unknown symbols are 422 unknown_symbol", arguments: TestDatabaseKind.all)
    func quotes(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "quotes@example.com")
            let response = try await client.execute(uri: "/api/market/quotes?symbols=aapl,MSFT", method: .get, headers: bearer(tokens))
            #expect(response.status == .ok)
            let data = try #require(try json(response)["data"] as? [[String: Any]])
            #expect(data.map { $0["symbol"] as? String } == ["AAPL", "MSFT"])
            let price = try #require(data[0]["price"] as? String)
            #expect(try Price(parsing: price) == SimulatedMarket().price(of: "AAPL", at: env.clock.now))
            #expect(data[0]["stale"] as? Bool == false)

            let unknown = try await client.execute(uri: "/api/market/quotes?symbols=AAPL,NOPE", method: .get, headers: bearer(tokens))
            #expect(unknown.status == .unprocessableContent)
            #expect(try problem(unknown).code == "unknown_symbol")
            #expect(try await client.execute(uri: "/api/market/quotes?symbols=AAPL", method: .get).status == .unauthorized)
        }
    }

    @Test("the net worth view checks an account_id as every route does: one that is not a UUID is 422, one not the user's 404, never ignored", arguments: [TestDatabaseKind.sqlite])
    func netWorthAccountID(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "networth-id@example.com")
            let garbled = try await client.execute(uri: "/api/portfolio?view=net_worth&account_id=%C3%87%C2%83", method: .get, headers: bearer(tokens))
            #expect(garbled.status == .unprocessableContent)
            #expect(try problem(garbled).errors?.first?.field == "account_id")
            let plain = try await client.execute(uri: "/api/portfolio?view=net_worth", method: .get, headers: bearer(tokens))
            #expect(plain.status == .ok)
            let unknown = try await client.execute(uri: "/api/portfolio?view=net_worth&account_id=\(UUID())", method: .get, headers: bearer(tokens))
            #expect(unknown.status == .notFound, "an account not the user's is 404, as on the account view")
        }
    }

    @Test("symbol search and daily history", arguments: TestDatabaseKind.all)
    func searchAndHistory(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "search@example.com")
            let found = try json(try await client.execute(uri: "/api/market/symbols?query=micro", method: .get, headers: bearer(tokens)))
            #expect((found["data"] as? [[String: Any]])?.contains { $0["symbol"] as? String == "MSFT" } == true)
            let history = try json(try await client.execute(uri: "/api/market/history/AAPL?days=5", method: .get, headers: bearer(tokens)))
            #expect((history["data"] as? [[String: Any]])?.count == 5)
            #expect(try await client.execute(uri: "/api/market/history/NOPE", method: .get, headers: bearer(tokens)).status == .unprocessableContent)
        }
    }

    @Test("the portfolio shows cash and each position valued at its quote", arguments: TestDatabaseKind.all)
    func portfolio(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "owner@example.com")
            let empty = try json(try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(tokens)))
            #expect(empty["cash"] as? String == "100000.00")
            #expect(empty["total_value"] as? String == "100000.00")
            #expect((empty["positions"] as? [Any])?.isEmpty == true)

            // A holding as a fill would leave it (orders arrive with the trading work).
            let account = try await env.firstAccount()
            var writes = WriteBatch(for: env.database.kind)
            env.store.upsertHoldings(
                [HoldingState(symbol: "AAPL", quantity: try Quantity(parsing: "1.5"), reservedQuantity: 0, costBasis: try Cash(parsing: "280.00"))],
                account: account.state, ids: .random, now: env.clock.now, into: &writes)
            try await writes.run(on: env.database.sql)

            let portfolio = try json(try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(tokens)))
            let position = try #require((portfolio["positions"] as? [[String: Any]])?.first)
            let price = try #require(SimulatedMarket().price(of: "AAPL", at: env.clock.now))
            let value = try Money.value(quantity: try Quantity(parsing: "1.5"), price: price)
            #expect(position["quantity"] as? String == "1.5")
            #expect(position["average_cost"] as? String == "186.66666667")
            #expect(position["market_value"] as? String == value.description)
            #expect(position["unrealized_pnl"] as? String == (try value - 280).description)
            #expect(portfolio["total_value"] as? String == (try Cash(100_000) + value).description)
            #expect(position["stale"] as? Bool == false)
        }
    }

    @Test("the day's change counts shares bought today from their cost, and a round trip sold out today, until the next close", arguments: TestDatabaseKind.all)
    func dayChangeOfTodaysTrades(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock) { client, env in
            var tokens = try await signUp(client, env, email: "daytrader@example.com")
            func place(_ symbol: String, _ side: String) async throws {
                let placed = try await post(client, "/api/orders", ["symbol": symbol, "quantity": "2", "side": side, "order_type": "MARKET"], headers: bearer(tokens))
                #expect(placed.status == .created)
                await env.worker.drain()
                clock.advance(by: 120)  // the next price
            }
            func portfolio() async throws -> (total: String?, positions: [String: String]) {
                // Quotes of this moment (the clock stands still between reads), not ones a background refresh is still fetching.
                await env.services.quotes.settle()
                for symbol in ["MSFT", "KO"] { _ = try await env.services.quotes.quote(for: symbol) }
                let body = try json(try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(tokens)))
                let positions = (body["positions"] as? [[String: Any]] ?? []).map { ($0["symbol"] as? String ?? "", $0["day_change"] as? String ?? "none") }
                return (body["day_change"] as? String, Dictionary(positions) { first, _ in first })
            }
            let market = SimulatedMarket()
            try await place("MSFT", "BUY")
            try await place("KO", "BUY")
            try await place("KO", "SELL")
            let msftCost = try #require(try await env.entries(.buy).first { $0.symbol == "MSFT" }).amount
            var koRoundTrip = Cash.zero
            for line in try await env.entries() where line.symbol == "KO" { koRoundTrip = try koRoundTrip + line.amount }
            #expect(!koRoundTrip.isZero, "KO was sold at another price than it was bought")
            let price = try #require(market.price(of: "MSFT", at: clock.now))
            let previous = try #require(market.previousClose(of: "MSFT", at: clock.now))
            let msft = try Money.value(quantity: 2, price: price) + msftCost
            #expect(msft != (try Money.value(quantity: 2, price: price - previous)), "the quote moved since the close: the old figure differs")
            var seen = try await portfolio()
            #expect(seen.positions == ["MSFT": msft.description], "2 × (price − fill), not 2 × (price − previous close)")
            #expect(seen.total == (try msft + koRoundTrip).description, "KO sold out today: its round trip is in the day")
            let dated = try #require(try await env.services.quotes.quote(for: "MSFT"))
            #expect(dated.previousCloseAt == market.dayStart(of: clock.now), "a quote knows when its day began")

            // Shares corrected without a trade (as reconciliation writes them): MSFT's figure is withheld, not made up.
            let account = try await env.firstAccount()
            try await env.database.sql.raw("""
                INSERT INTO transactions (id, account_id, user_id, type, symbol, quantity, amount, description, occurred_at, created_at)
                VALUES (\(bind: UUID()), \(bind: account.id), \(bind: account.userID), 'correction', 'MSFT', \(bind: Quantity(1)), \(bind: Cash.zero),
                        'reconciliation', \(bind: clock.now), \(bind: clock.now))
                """).run()
            let corrected = try await portfolio()
            #expect(corrected.positions == ["MSFT": "none"])
            #expect(corrected.total == koRoundTrip.description)
            try await env.database.sql.raw("DELETE FROM transactions WHERE type = 'correction'").run()

            // The next day, the shares count from the close like any others, and KO's sale is yesterday's.
            clock.advance(by: 86_400)
            tokens = try json(try await post(client, "/api/auth/login", ["email": "daytrader@example.com", "password": strongPassword]))
            let tomorrow = try Money.value(
                quantity: 2, price: try #require(market.price(of: "MSFT", at: clock.now)) - #require(market.previousClose(of: "MSFT", at: clock.now)))
            seen = try await portfolio()
            #expect(seen.positions == ["MSFT": tomorrow.description])
            #expect(seen.total == tomorrow.description)
        }
    }
}
