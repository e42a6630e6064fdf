import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

@testable import FolioServer

/// A remote broker as Folio must expect one: it keeps each order under the
/// client order id it was given, so a second submit of the same id is answered
/// with the order it already has instead of a new one.
actor FakeRemoteBroker: Broker {
    let price: Price
    private(set) var orders: [OrderID: BrokerReport] = [:]
    private(set) var submissions: [OrderID: Int] = [:]

    init(price: Price) {
        self.price = price
    }

    nonisolated var holdsOrders: Bool { true }

    func submit(_ order: BrokerOrder) async throws -> BrokerReport {
        submissions[order.id, default: 0] += 1
        if let known = orders[order.id] { return known }
        let report = BrokerReport.filled([BrokerFill(id: "remote-\(order.id)", quantity: order.quantity ?? 1, price: price)])
        orders[order.id] = report
        return report
    }

    func recheck(_ order: BrokerOrder) async throws -> BrokerReport? { nil }

    func cancel(_ order: BrokerOrder) async throws -> BrokerReport { .canceled(reason: "canceled") }
}

@Suite("Crash safety of the order flow, in process")
struct CrashSafetyTests {
    /// Where the worker dies. Each step of a submission, then the restart.
    enum CrashPoint: String, CaseIterable, Sendable {
        case afterClaim, afterBrokerSubmit, afterApply, none
    }

    static let cases: [(TestDatabaseKind, CrashPoint)] = TestDatabaseKind.all.flatMap { kind in CrashPoint.allCases.map { (kind, $0) } }

    /// A worker like the one `serve` runs, but with its own name and a fast poll.
    func worker(_ env: TestEnvironment, name: String) -> JobWorker {
        JobWorker(
            queue: env.services.jobs, handlers: [.submitOrder: { batch in await env.orders.submit(batch) }],
            name: name, pollInterval: .milliseconds(10), logger: Logger(label: "test-worker", factory: { _ in SwiftLogNoOpLogHandler() }), onIdle: nil)
    }

    @Test("a worker that stops between any two steps of a submission: once its lease runs out the order fills once, is at the broker once, and the books reconcile", arguments: cases)
    func killedWorker(kind: TestDatabaseKind, crash: CrashPoint) async throws {
        let broker = FakeRemoteBroker(price: try #require(SimulatedMarket().price(of: "AAPL", at: TestClock.tuesdayMorning)))
        try await withTestApp(kind, dependencies: { $0.broker = { _ in broker } }) { client, env in
            let tokens = try await signUp(client, env, email: "crash@example.com")
            let placed = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "3", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
            #expect(placed.status == .created)
            let idText = try #require(try json(placed)["id"] as? String)
            let orderID = try #require(OrderID(idText))

            // The first worker gets as far as `crash` and stops: no complete, no fail; its lease stays.
            let job = try #require(try await env.services.jobs.claim(as: "doomed").first)
            switch crash {
            case .afterClaim:
                break
            case .afterBrokerSubmit:
                _ = try await broker.submit(BrokerOrder(try await env.order(orderID)))
            case .afterApply:
                _ = await env.orders.submit([job])
            case .none:
                _ = await env.orders.submit([job])
                try await env.services.jobs.complete([job])
            }

            // Another worker starts; the stopped one's lease runs out.
            env.clock.advance(by: JobQueue.lease + 1)
            await worker(env, name: "restarted").drain()

            let order = try await env.order(orderID)
            #expect(order.status == .filled)
            #expect(await broker.orders.count == 1, "one order at the broker, whatever the retries")
            #expect(try await env.fills().count == 1)
            #expect(try await env.entries(.buy).count == 1)
            #expect(try await env.jobs().map(\.status) == ["done"])
            let account = try await env.firstAccount()
            #expect(account.cash == (try Cash(100_000) - Money.cost(quantity: 3, price: broker.price)))
            #expect(account.reservedCash == 0)
            try await env.expectConsistent()
        }
    }

    @Test("a placement that dies before its transaction commits leaves neither the order nor its job", arguments: TestDatabaseKind.all)
    func diesBeforeCommit(kind: TestDatabaseKind) async throws {
        struct Killed: Error {}
        try await withTestApp(kind) { client, env in
            try await signUp(client, env, email: "precommit@example.com")
            let account = try await env.firstAccount()
            let draft = OrderDraft(symbol: "AAPL", side: .buy, type: .market, timeInForce: .day, quantity: 2)
            let priced = try await env.orders.price(.init(draft: draft, accountID: nil, clientOrderID: nil))
            let orders = env.orders
            await #expect(throws: Killed.self) {
                try await env.database.transaction { db in
                    _ = try await orders.place(priced, userID: account.userID, context: .none, on: db)
                    throw Killed()
                }
            }
            #expect(try await env.orders().isEmpty)
            #expect(try await env.jobs().isEmpty)
            #expect(try await env.firstAccount().reservedCash == 0)
        }
    }

    @Test("two workers draining one queue at once never run a job twice", arguments: TestDatabaseKind.all)
    func twoWorkers(kind: TestDatabaseKind) async throws {
        let broker = FakeRemoteBroker(price: try #require(SimulatedMarket().price(of: "KO", at: TestClock.tuesdayMorning)))
        try await withTestApp(kind, dependencies: { $0.broker = { _ in broker } }) { client, env in
            let tokens = try await signUp(client, env, email: "twoworkers@example.com")
            for _ in 0..<40 {
                let placed = try await post(client, "/api/orders", ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
                #expect(placed.status == .created)
            }
            let first = worker(env, name: "worker-a"), second = worker(env, name: "worker-b")
            async let a: Void = first.drain()
            async let b: Void = second.drain()
            _ = await (a, b)

            let submissions = await broker.submissions
            #expect(submissions.count == 40)
            #expect(submissions.values.allSatisfy { $0 == 1 }, "no job ran twice")
            let jobs = try await env.jobs()
            #expect(jobs.count == 40 && jobs.allSatisfy { $0.status == "done" && $0.attempts == 1 })
            #expect(Set(jobs.compactMap(\.lockedBy)).isEmpty)
            #expect(try await env.orders().filter { $0.status == .filled }.count == 40)
            try await env.expectConsistent()
        }
    }
}
