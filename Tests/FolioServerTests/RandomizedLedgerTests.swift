import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOConcurrencyHelpers
import SQLKit
import Testing

@testable import FolioServer

/// Random sequences of deposits, withdrawals, market and limit orders, cancels,
/// time passing (expiries, scheduled snapshots) and worker runs, with whole or
/// partial fills. Every answer is checked against what the account's state
/// before the request says it must be (created, or refused with its code).
/// After every step: the ledger balances, reservations match open orders, no
/// balance is negative, the audit chains verify, and every scheduled
/// snapshot that ran left its day's row. SQLite and PostgreSQL, fed the same
/// seed (and the same ids), must end with the same rows.
@Suite("Randomized ledger", .serialized)
struct RandomizedLedgerTests {
    static let steps = Int(ProcessInfo.processInfo.environment["FOLIO_RANDOMIZED_STEPS"] ?? "") ?? 120
    static let symbols = ["AAPL", "MSFT", "KO", "T", "SPY"]

    /// Every row that matters, in a stable order, as text.
    struct Outcome: Equatable, Sendable {
        var accounts: [String]
        var holdings: [String]
        var orders: [String]
        var fills: [String]
        var ledger: [String]
        var snapshots: [String]
    }

    enum Expected: Equatable, CustomStringConvertible {
        case created
        case refused(String)

        var description: String {
            switch self {
            case .created: "201"
            case .refused(let code): "422 \(code)"
            }
        }
    }

    func check(_ response: TestResponse, _ expected: Expected, step: Int, _ what: String) throws {
        switch expected {
        case .created:
            #expect(response.status == .created, "step \(step) \(what): \(String(buffer: response.body))")
        case .refused(let code):
            #expect(response.status == .unprocessableContent, "step \(step) \(what): expected \(code), got \(response.status)")
            if response.status == .unprocessableContent { #expect(try problem(response).code == code, "step \(step) \(what)") }
        }
    }

    func run(kind: TestDatabaseKind, seed: UInt64) async throws -> Outcome {
        let clock = TestClock(start: Date(timeIntervalSince1970: 1_795_000_000))
        let long: TimeInterval = 30 * 86_400
        let outcome = NIOLockedValueBox<Outcome?>(nil)
        let ids = CountingIDs(seed: seed)
        try await withTestApp(kind, clock: clock, configure: {
            $0.sessionIdleTimeout = long; $0.sessionMaxAge = long; $0.accessTokenLifetime = long
            $0.startingCash = 5_000
            // Every other seed fills orders in parts.
            $0.paperPartialFills = seed % 2 == 0
        }, dependencies: { $0.ids = ids.source }) { client, env in
            var random = SeededRandom(seed: seed)
            let tokens = try await signUp(client, env, email: "random@example.com")
            let headers = bearer(tokens)
            let accountID = try #require(try await env.accounts().first?.id)
            var placed: [String] = []
            var counts: [String: Int] = [:]
            for step in 0..<Self.steps {
                let symbol = Self.symbols[Int(random.next() % UInt64(Self.symbols.count))]
                let quantity = try Quantity(parsing: "\(Int(random.next() % 5) + 1).\(Int(random.next() % 1000))")
                let account = try await env.firstAccount()
                let held = try await env.holding(symbol)
                let action = random.next() % 9
                counts[String(action), default: 0] += 1
                switch action {
                case 0:
                    let amount = try Cash(parsing: "\(random.next() % 2000).\(random.next() % 100)")
                    let response = try await post(client, "/api/accounts/\(accountID)/deposits", ["amount": amount.description], headers: headers)
                    try check(response, amount.isPositive ? .created : .refused("validation_failed"), step: step, "deposit \(amount)")
                    if response.status == .created { #expect(try json(response)["amount"] as? String == amount.description) }
                case 1:
                    let amount = try Cash(parsing: "\(random.next() % 1500).\(random.next() % 100)")
                    let expected: Expected = !amount.isPositive ? .refused("validation_failed")
                        : amount <= account.state.availableCash ? .created : .refused("insufficient_funds")
                    let response = try await post(client, "/api/accounts/\(accountID)/withdrawals", ["amount": amount.description], headers: headers)
                    try check(response, expected, step: step, "withdraw \(amount) of \(account.state.availableCash)")
                case 2, 3:
                    let side = random.next() % 3 == 0 ? "SELL" : "BUY"
                    // The price the order will be reserved at: the same cached quote the API shows.
                    let quote = try json(try await client.execute(uri: "/api/market/quotes?symbols=\(symbol)", method: .get, headers: headers))
                    let price = try Price(parsing: try #require((quote["data"] as? [[String: Any]])?.first?["price"] as? String))
                    let expected: Expected
                    if side == "BUY" {
                        let basis = try Fixed<WideScale>.product(price, try Ratio(parsing: "1.05"), rounding: .up)
                        let reserve = try Cash.product(quantity, basis, places: 2, rounding: .up)
                        expected = reserve <= account.state.availableCash ? .created : .refused("insufficient_buying_power")
                    } else {
                        expected = quantity <= (held?.availableQuantity ?? 0) ? .created : .refused("insufficient_shares")
                    }
                    let response = try await post(client, "/api/orders", ["symbol": symbol, "quantity": quantity.description, "side": side, "order_type": "MARKET"], headers: headers)
                    try check(response, expected, step: step, "market \(side) \(quantity) \(symbol) at \(price)")
                    if response.status == .created, let id = try json(response)["id"] as? String { placed.append(id) }
                case 4:
                    let price = try #require(SimulatedMarket().price(of: symbol, at: clock.now))
                    let limit = try Price.product(price, Ratio(uncheckedUnits: Int128(random.next() % 40 + 80) * 10_000), places: 2, rounding: .halfEven)
                    let side = random.next() % 2 == 0 ? "SELL" : "BUY"
                    let tif = ["DAY", "GTC", "IOC"][Int(random.next() % 3)]
                    let expected: Expected = side == "BUY"
                        ? (try Cash.product(quantity, limit, places: 2, rounding: .up) <= account.state.availableCash ? .created : .refused("insufficient_buying_power"))
                        : (quantity <= (held?.availableQuantity ?? 0) ? .created : .refused("insufficient_shares"))
                    let response = try await post(client, "/api/orders", ["symbol": symbol, "quantity": quantity.description, "side": side, "order_type": "LIMIT", "limit_price": limit.description, "time_in_force": tif], headers: headers)
                    try check(response, expected, step: step, "limit \(side) \(quantity) \(symbol) at \(limit)")
                    if response.status == .created, let id = try json(response)["id"] as? String { placed.append(id) }
                case 5:
                    if !placed.isEmpty {
                        let id = placed[Int(random.next() % UInt64(placed.count))]
                        let before = try await env.order(try #require(OrderID(id)))
                        let response = try await client.execute(uri: "/api/orders/\(id)", method: .delete, headers: headers)
                        if before.status.isCancelable {
                            #expect(response.status == .ok, "step \(step): cancel a \(before.status) order")
                            #expect(try json(response)["status"] as? String == "canceled")
                        } else {
                            #expect(response.status == .conflict, "step \(step): cancel a \(before.status) order")
                            #expect(try problem(response).code == "order_not_cancelable")
                        }
                    }
                case 6:
                    clock.advance(by: Double(random.next() % 7200))
                    await env.worker.onIdle?()
                default:
                    await env.worker.drain()
                    try await checkSnapshots(env, step: step)
                }
                try await checkBooks(env, step: step)
            }
            await env.worker.drain()
            try await checkSnapshots(env, step: Self.steps)
            try await checkBooks(env, step: Self.steps)
            if seed % 2 == 0 {
                let fills = try await env.fills().count
                #expect(fills > (try await env.orders()).filter { $0.filledQuantity.isPositive }.count, "some orders filled in several parts")
            }
            #expect(counts.count == 9, "every kind of step ran: \(counts)")
            outcome.withLockedValue { $0 = nil }
            let final = try await Self.outcome(env)
            outcome.withLockedValue { $0 = final }
        }
        return try #require(outcome.withLockedValue { $0 })
    }

    /// The books balance, nothing is negative, and the audit chains verify.
    func checkBooks(_ env: TestEnvironment, step: Int) async throws {
        let differences = try await env.ledgerDifferences()
        #expect(differences.isEmpty, "step \(step): \(differences)")
        let broken = try await env.auditBreak()
        #expect(broken == nil, "step \(step): \(broken ?? "")")
        let accounts = try await env.accounts()
        #expect(accounts.allSatisfy { !$0.cash.isNegative && !$0.reservedCash.isNegative && $0.reservedCash <= $0.cash }, "step \(step)")
        let holdings = try await env.holdings()
        #expect(holdings.allSatisfy { !$0.quantity.isNegative && !$0.reservedQuantity.isNegative && $0.reservedQuantity <= $0.quantity }, "step \(step)")
    }

    /// Every scheduled snapshot job that ran left a row for its day, whose total is its parts.
    func checkSnapshots(_ env: TestEnvironment, step: Int) async throws {
        let jobs = try await env.database.sql.raw("SELECT payload, status FROM jobs WHERE kind = 'snapshot_portfolios'").all()
        let rows = try await env.database.sql.raw("SELECT day, cash, market_value, total_value FROM portfolio_snapshots").all()
        var days = Set<String>()
        for row in rows {
            days.insert(try row.decode(column: "day", as: String.self))
            let total = try row.decode(column: "total_value", as: Cash.self)
            #expect(total == (try row.decode(column: "cash", as: Cash.self) + row.decode(column: "market_value", as: Cash.self)), "step \(step)")
        }
        for job in jobs {
            #expect(try job.decode(column: "status", as: String.self) == "done", "step \(step): a snapshot job did not finish")
            let payload = try JobPayload(kind: "snapshot_portfolios", json: try job.decode(column: "payload", as: String.self), orderID: nil)
            guard case .snapshotPortfolios(let due) = payload else { continue }
            let day = TradingDay(Date(timeIntervalSince1970: TimeInterval(due)))
            #expect(days.contains(day.description), "step \(step): the snapshot of \(day) is missing")
        }
    }

    static func outcome(_ env: TestEnvironment) async throws -> Outcome {
        func text(_ values: [Any?]) -> String {
            values.map { value in value.map { "\($0)" } ?? "nil" }.joined(separator: " ")
        }
        let accounts = try await env.accounts().map { text([$0.id, $0.name, $0.cash, $0.reservedCash, $0.createdAt.timeIntervalSince1970]) }
        let holdings = try await env.holdings().map { text([$0.symbol, $0.quantity, $0.reservedQuantity, $0.costBasis]) }
        let orders = try await env.orders().map {
            text([$0.id, $0.symbol, $0.side, $0.type, $0.timeInForce, $0.quantity, $0.limitPrice, $0.status, $0.filledQuantity, $0.averageFillPrice,
                  $0.reservedCash, $0.reservedQuantity, $0.rejectReason, $0.createdAt.timeIntervalSince1970, $0.updatedAt.timeIntervalSince1970])
        }
        let fills = try await env.fills().map { text([$0.id, $0.orderID, $0.brokerFillID, $0.quantity, $0.price, $0.occurredAt.timeIntervalSince1970]) }
        let ledger = try await env.entries().map {
            text([$0.id, $0.kind, $0.amount, $0.symbol, $0.quantity, $0.price, $0.orderID, $0.description, $0.occurredAt.timeIntervalSince1970])
        }
        let snapshots = try await env.database.sql.raw("SELECT day, cash, market_value, total_value, source FROM portfolio_snapshots ORDER BY day").all().map { row in
            text([try row.decode(column: "day", as: String.self), try row.decode(column: "cash", as: Cash.self),
                  try row.decode(column: "market_value", as: Cash.self), try row.decode(column: "total_value", as: Cash.self),
                  try row.decode(column: "source", as: String.self)])
        }
        return Outcome(accounts: accounts, holdings: holdings, orders: orders, fills: fills, ledger: ledger, snapshots: snapshots)
    }

    @Test("random sequences keep the books exact, every answer is the one the state calls for, and both databases end with the same rows", arguments: [UInt64(11), 2026])
    func randomSequences(seed: UInt64) async throws {
        var outcomes: [Outcome] = []
        for kind in TestDatabaseKind.all {
            outcomes.append(try await run(kind: kind, seed: seed))
        }
        #expect(outcomes.first?.orders.isEmpty == false)
        #expect(outcomes.first?.ledger.count ?? 0 > 1)
        if outcomes.count == 2 {
            let (sqlite, postgres) = (outcomes[0], outcomes[1])
            #expect(sqlite.accounts == postgres.accounts)
            #expect(sqlite.holdings == postgres.holdings)
            #expect(sqlite.orders == postgres.orders)
            #expect(sqlite.fills == postgres.fills)
            #expect(sqlite.ledger == postgres.ledger)
            #expect(sqlite.snapshots == postgres.snapshots)
        }
    }
}
