import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import FolioServer

@Suite("Partial fills")
struct PartialFillTests {
    static func partialFills(_ configuration: inout AppConfiguration) {
        configuration.paperPartialFills = true
    }

    func order(_ client: some TestClientProtocol, _ tokens: [String: Any], _ body: [String: Any]) async throws -> String {
        let response = try await post(client, "/api/orders", body, headers: bearer(tokens))
        #expect(response.status == .created)
        return try #require(try json(response)["id"] as? String)
    }

    func show(_ client: some TestClientProtocol, _ tokens: [String: Any], _ id: String) async throws -> [String: Any] {
        try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))
    }

    func booksBalance(_ env: TestEnvironment) async throws {
        try await env.expectConsistent()
    }

    @Test("a market buy fills in parts; each part pays its own cost, releases its share of the reservation and keeps the books exact", arguments: TestDatabaseKind.all)
    func buyInParts(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: Self.partialFills) { client, env in
            let tokens = try await signUp(client, env, email: "parts@example.com")
            let price = try #require(SimulatedMarket().price(of: "AAPL", at: env.clock.now))
            let id = try await order(client, tokens, ["symbol": "AAPL", "quantity": "10", "side": "BUY", "order_type": "MARKET"])
            await env.worker.drain()

            var expectedCash: Cash = 100_000
            // The market buy reserved the quote plus 5 %, up to the cent.
            var expectedReserved = try Cash.product(Quantity(10), Fixed<WideScale>.product(price, try Ratio(parsing: "1.05"), rounding: .up), places: 2, rounding: .up)
            var remaining: Quantity = 10
            for (filled, part) in [("5", "5"), ("8", "3"), ("9", "1"), ("10", "1")] {
                let shown = try await show(client, tokens, id)
                #expect(shown["filled_quantity"] as? String == filled)
                #expect(shown["status"] as? String == (filled == "10" ? "filled" : "partially_filled"))
                #expect(shown["average_fill_price"] as? String == price.description)
                let quantity = try Quantity(parsing: part)
                expectedCash = try expectedCash - Money.cost(quantity: quantity, price: price)
                // Each part releases its share of what is still reserved, down to the cent; the last part all of it.
                let release = quantity == remaining ? expectedReserved
                    : try expectedReserved.scaled(by: quantity, over: remaining, places: 2, rounding: .down)
                expectedReserved = try expectedReserved - release
                remaining = try remaining - quantity
                let account = try await env.firstAccount()
                #expect(account.cash == expectedCash)
                #expect(account.reservedCash == expectedReserved, "after \(filled) of 10")
                #expect(shown["reserved_cash"] as? String == expectedReserved.description)
                // Reserved and available cash stay at the cash scale while an order fills in parts.
                let listed = try #require(try await accounts(client, tokens).first)
                for key in ["cash", "reserved_cash", "available_cash"] {
                    let text = try #require(listed[key] as? String)
                    #expect(text.split(separator: ".").last?.count == 2, "\(key) is \(text)")
                }
                if filled == "10" { #expect(expectedReserved == 0) } else { #expect(expectedReserved > 0) }
                try await booksBalance(env)
                try await OrderService.recheckFor(env)
            }
            let fills = try await env.fills()
            #expect(fills.count == 4)
            #expect(Set(fills.map(\.brokerFillID)).count == 4)
            let holding = try #require(try await env.holding("AAPL"))
            #expect(holding.quantity == 10)
            #expect(holding.costBasis == (try Cash(100_000) - expectedCash))
        }
    }

    @Test("a partly filled sell canceled keeps what sold and frees the rest; IOC cancels what it could not fill; FOK fills whole", arguments: TestDatabaseKind.all)
    func cancelAndTimeInForce(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: Self.partialFills) { client, env in
            let tokens = try await signUp(client, env, email: "sellparts@example.com")
            let buy = try await order(client, tokens, ["symbol": "MSFT", "quantity": "4", "side": "BUY", "order_type": "MARKET", "time_in_force": "FOK"])
            await env.worker.drain()
            #expect(try await show(client, tokens, buy)["status"] as? String == "filled", "FOK never fills in part")
            #expect(try await show(client, tokens, buy)["filled_quantity"] as? String == "4")

            let sell = try await order(client, tokens, ["symbol": "MSFT", "quantity": "4", "side": "SELL", "order_type": "MARKET"])
            await env.worker.drain()
            #expect(try await show(client, tokens, sell)["status"] as? String == "partially_filled")
            let canceled = try await client.execute(uri: "/api/orders/\(sell)", method: .delete, headers: bearer(tokens))
            #expect(canceled.status == .ok)
            let after = try await show(client, tokens, sell)
            #expect(after["status"] as? String == "canceled")
            #expect(after["filled_quantity"] as? String == "2")
            let holding = try #require(try await env.holding("MSFT"))
            #expect(holding.quantity == 2)
            #expect(holding.reservedQuantity == 0)
            try await booksBalance(env)

            let ioc = try await order(client, tokens, ["symbol": "NVDA", "quantity": "3", "side": "BUY", "order_type": "MARKET", "time_in_force": "IOC"])
            await env.worker.drain()
            let iocShown = try await show(client, tokens, ioc)
            #expect(iocShown["status"] as? String == "canceled")
            #expect(iocShown["filled_quantity"] as? String == "2")
            let account = try await env.firstAccount()
            #expect(account.reservedCash == 0)
            try await booksBalance(env)
        }
    }

    @Test("a fill beyond what remains is refused and changes nothing", arguments: TestDatabaseKind.all)
    func overfill(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: Self.partialFills) { client, env in
            let tokens = try await signUp(client, env, email: "overfill@example.com")
            let id = try await order(client, tokens, ["symbol": "AAPL", "quantity": "2", "side": "BUY", "order_type": "LIMIT", "limit_price": "0.01", "time_in_force": "GTC"])
            await env.worker.drain()
            let orderID = try #require(OrderID(id))
            await #expect(throws: TradingError.overfill(orderID: orderID, remaining: 2, fill: 3)) {
                try await env.orders.apply(.filled([BrokerFill(id: "too-much", quantity: 3, price: 1)]), to: orderID)
            }
            #expect(try await env.fills().isEmpty)
            #expect(try await show(client, tokens, id)["filled_quantity"] as? String == "0")
            try await booksBalance(env)
        }
    }

    @Test("reports about several accounts are applied in one transaction; when one of them is faulty, the others still apply and only it fails", arguments: TestDatabaseKind.all)
    func batchAcrossAccounts(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            var orders: [OrderState] = []
            for name in ["first", "second", "third"] {
                let tokens = try await signUp(client, env, email: "\(name)@example.com")
                let id = try await order(client, tokens, ["symbol": "AAPL", "quantity": "2", "side": "BUY", "order_type": "LIMIT", "limit_price": "0.01", "time_in_force": "GTC"])
                await env.worker.drain()
                orders.append(try await env.order(try #require(OrderID(id))))
            }
            let jobs = orders.map { _ in JobID(UUID()) }
            func report(_ index: Int, _ quantity: Quantity) -> OrderService.Report {
                OrderService.Report(job: jobs[index], order: orders[index], report: .filled([BrokerFill(id: "batch-\(index)", quantity: quantity, price: 1)]))
            }
            // All good: one transaction for the three accounts.
            let together = await env.orders.apply([report(0, 1), report(1, 1)])
            #expect(together.allSatisfy { if case .done = $0.1 { true } else { false } })
            #expect(try await env.fills().count == 2)

            // The third overfills: it alone fails, the first's second fill still applies.
            orders[0] = try await env.order(orders[0].id)
            let mixed = await env.orders.apply([report(2, 3), OrderService.Report(job: jobs[0], order: orders[0], report: .filled([BrokerFill(id: "batch-0b", quantity: 1, price: 1)]))])
            let outcomes = Dictionary(uniqueKeysWithValues: mixed.compactMap { outcome in outcome.0.map { ($0, outcome.1) } })
            if case .done = try #require(outcomes[jobs[0]]) {} else { Issue.record("the good report failed with the faulty one") }
            if case .failed = try #require(outcomes[jobs[2]]) {} else { Issue.record("the overfill was applied") }
            #expect(try await env.order(orders[0].id).status == .filled)
            #expect(try await env.order(orders[2].id).filledQuantity == .zero)
            #expect(try await env.fills().count == 3)
            try await booksBalance(env)
        }
    }
}
