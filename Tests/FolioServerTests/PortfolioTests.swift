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
}
