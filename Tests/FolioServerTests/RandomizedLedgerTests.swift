import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOConcurrencyHelpers
import Testing

@testable import FolioServer

/// Random sequences of deposits, withdrawals, market and limit orders, cancels,
/// time passing (expiries, scheduled snapshots) and worker runs, with whole or
/// partial fills. After every step: the ledger
/// balances, reservations match open orders, no balance is negative, and the
/// audit chain is intact. SQLite and PostgreSQL, fed the same seed, must end in
/// the same state.
@Suite("Randomized ledger", .serialized)
struct RandomizedLedgerTests {
    static let steps = Int(ProcessInfo.processInfo.environment["FOLIO_RANDOMIZED_STEPS"] ?? "") ?? 120
    static let symbols = ["AAPL", "MSFT", "KO", "T", "SPY"]

    struct Outcome: Equatable, Sendable {
        var cash: String
        var reservedCash: String
        var holdings: [String: String]
        var statuses: [String: Int]
    }

    func run(kind: TestDatabaseKind, seed: UInt64) async throws -> Outcome {
        let clock = TestClock(start: Date(timeIntervalSince1970: 1_795_000_000))
        let long: TimeInterval = 30 * 86_400
        let outcome = NIOLockedValueBox<Outcome?>(nil)
        try await withTestApp(kind, clock: clock, configure: {
            $0.sessionIdleTimeout = long; $0.sessionMaxAge = long; $0.accessTokenLifetime = long
            $0.startingCash = 5_000
            // Every other seed fills orders in parts.
            $0.paperPartialFills = seed % 2 == 0
        }) { client, env in
            var random = SeededRandom(seed: seed)
            let tokens = try await signUp(client, env, email: "random@example.com")
            let headers = bearer(tokens)
            let account = try #require(try await accounts(client, tokens).first?["id"] as? String)
            var placed: [String] = []
            for step in 0..<Self.steps {
                let symbol = Self.symbols[Int(random.next() % UInt64(Self.symbols.count))]
                let quantity = "\(Int(random.next() % 5) + 1).\(Int(random.next() % 1000))"
                switch random.next() % 9 {
                case 0:
                    _ = try await post(client, "/api/accounts/\(account)/deposits", ["amount": "\(random.next() % 2000).\(random.next() % 100)"], headers: headers)
                case 1:
                    _ = try await post(client, "/api/accounts/\(account)/withdrawals", ["amount": "\(random.next() % 1500).\(random.next() % 100)"], headers: headers)
                case 2, 3:
                    let side = random.next() % 3 == 0 ? "SELL" : "BUY"
                    let response = try await post(client, "/api/orders", ["symbol": symbol, "quantity": quantity, "side": side, "order_type": "MARKET"], headers: headers)
                    if response.status == .created, let id = try json(response)["id"] as? String { placed.append(id) }
                case 4:
                    let price = try #require(SimulatedMarket().price(of: symbol, at: clock.now))
                    let limit = ExactDecimal.rounded(price * Decimal(Int(random.next() % 40) + 80) / 100, scale: 2)
                    let side = random.next() % 2 == 0 ? "SELL" : "BUY"
                    let tif = ["DAY", "GTC", "IOC"][Int(random.next() % 3)]
                    let response = try await post(client, "/api/orders", ["symbol": symbol, "quantity": quantity, "side": side, "order_type": "LIMIT", "limit_price": ExactDecimal.format(limit), "time_in_force": tif], headers: headers)
                    if response.status == .created, let id = try json(response)["id"] as? String { placed.append(id) }
                case 5:
                    if !placed.isEmpty {
                        let id = placed[Int(random.next() % UInt64(placed.count))]
                        _ = try await client.execute(uri: "/api/orders/\(id)", method: .delete, headers: headers)
                    }
                case 6:
                    clock.advance(by: Double(random.next() % 7200))
                    await env.worker.onIdle?()
                default:
                    await env.worker.drain()
                }
                let books = try await LedgerVerifier(database: env.database).verify()
                #expect(books.differences.isEmpty, "step \(step): \(books.differences)")
                let balances = try await Account.query(on: env.database.db).all()
                #expect(balances.allSatisfy { $0.cash.value >= 0 && $0.reservedCash.value >= 0 && $0.reservedCash.value <= $0.cash.value }, "step \(step)")
                let holdings = try await Holding.query(on: env.database.db).all()
                #expect(holdings.allSatisfy { $0.quantity.value >= 0 && $0.reservedQuantity.value <= $0.quantity.value }, "step \(step)")
                if !books.differences.isEmpty { return }
            }
            await env.worker.drain()
            #expect(try await AuditVerifier(database: env.database).verify().firstBreak == nil)
            let final = try #require(try await Account.query(on: env.database.db).first())
            let held = try await Holding.query(on: env.database.db).all()
            let orders = try await Order.query(on: env.database.db).all()
            if seed % 2 == 0 {
                let fills = try await Fill.query(on: env.database.db).count()
                #expect(fills > orders.filter { $0.filledQuantity.value > 0 }.count, "some orders filled in several parts")
            }
            outcome.withLockedValue { $0 = Outcome(
                cash: ExactDecimal.format(final.cash.value), reservedCash: ExactDecimal.format(final.reservedCash.value),
                holdings: Dictionary(uniqueKeysWithValues: held.map { ($0.symbol, ExactDecimal.format($0.quantity.value)) }),
                statuses: orders.reduce(into: [:]) { $0[$1.status, default: 0] += 1 }) }
        }
        return try #require(outcome.withLockedValue { $0 })
    }

    @Test("random sequences keep the books exact, and both databases agree", arguments: [UInt64(11), 2026])
    func randomSequences(seed: UInt64) async throws {
        var outcomes: [Outcome] = []
        for kind in TestDatabaseKind.all {
            outcomes.append(try await run(kind: kind, seed: seed))
        }
        #expect(outcomes.first?.statuses.values.reduce(0, +) ?? 0 > 0)
        if outcomes.count == 2 { #expect(outcomes[0] == outcomes[1]) }
    }
}
