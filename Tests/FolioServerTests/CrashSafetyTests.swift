import FluentKit
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
    let price: Decimal
    private(set) var orders: [UUID: BrokerReport] = [:]
    private(set) var submissions: [UUID: Int] = [:]

    init(price: Decimal) {
        self.price = price
    }

    func submit(_ order: BrokerOrder) async throws -> BrokerReport {
        submissions[order.id, default: 0] += 1
        if let known = orders[order.id] { return known }
        let report = BrokerReport.filled([BrokerFill(id: "remote-\(order.id.uuidString)", quantity: order.quantity ?? 1, price: price)])
        orders[order.id] = report
        return report
    }

    func recheck(_ order: BrokerOrder) async throws -> BrokerReport? { nil }

    func cancel(_ order: BrokerOrder) async throws -> BrokerReport { .canceled(reason: "canceled") }
}

@Suite("Crash safety of the order flow")
struct CrashSafetyTests {
    /// Where the worker dies. Each step of a submission, then the restart.
    enum CrashPoint: String, CaseIterable, Sendable {
        case afterClaim, afterBrokerSubmit, afterApply, none
    }

    static let cases: [(TestDatabaseKind, CrashPoint)] = TestDatabaseKind.all.flatMap { kind in CrashPoint.allCases.map { (kind, $0) } }

    func remoteService(_ env: TestEnvironment, broker: FakeRemoteBroker) -> OrderService {
        let orders = env.orders
        return OrderService(database: orders.database, clock: orders.clock, audit: orders.audit, jobs: orders.jobs, broker: broker, quotes: orders.quotes, marketBuyMargin: orders.marketBuyMargin)
    }

    func worker(_ service: OrderService, name: String) -> JobWorker {
        JobWorker(
            queue: service.jobs,
            handlers: [OrderService.submitJob: { job in
                try await service.submit(orderID: UUID(uuidString: job.payloadValue("order_id")!)!)
            }],
            name: name, pollInterval: .milliseconds(10), logger: Logger(label: "test-worker", factory: { _ in SwiftLogNoOpLogHandler() }), onIdle: nil)
    }

    @Test("a worker killed between any two steps of a submission: after a restart the order fills once, is at the broker once, and the books reconcile", arguments: cases)
    func killedWorker(kind: TestDatabaseKind, crash: CrashPoint) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "crash@example.com")
            let price = try #require(SimulatedMarket().price(of: "AAPL", at: env.clock.now))
            let broker = FakeRemoteBroker(price: price)
            let service = remoteService(env, broker: broker)
            let placed = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "3", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
            #expect(placed.status == .created)
            let idText = try #require(try json(placed)["id"] as? String)
            let orderID = try #require(UUID(uuidString: idText))

            // The first worker gets as far as `crash` and dies: no complete, no fail; its lease stays.
            let job = try #require(try await service.jobs.claim(worker: "doomed"))
            switch crash {
            case .afterClaim:
                break
            case .afterBrokerSubmit:
                _ = try await broker.submit(OrderService.brokerOrder(try #require(try await Order.find(orderID, on: env.database.db))))
            case .afterApply:
                try await service.submit(orderID: orderID)
            case .none:
                try await service.submit(orderID: orderID)
                try await service.jobs.complete(job)
            }

            // Another worker starts; the dead one's lease runs out.
            env.clock.advance(by: JobQueue.lease + 1)
            await worker(service, name: "restarted").drain()

            let order = try #require(try await Order.find(orderID, on: env.database.db))
            #expect(order.status == "filled")
            #expect(await broker.orders.count == 1, "one order at the broker, whatever the retries")
            #expect(try await Fill.query(on: env.database.db).count() == 1)
            #expect(try await LedgerEntry.query(on: env.database.db).filter(\.$type == "buy").count() == 1)
            let jobs = try await Job.query(on: env.database.db).all()
            #expect(jobs.map(\.status) == ["done"])
            let account = try #require(try await Account.query(on: env.database.db).first())
            #expect(account.cash.value == 100_000 - Money.cost(quantity: 3, price: price))
            #expect(account.reservedCash.value == 0)
            #expect(try await LedgerVerifier(database: env.database).verify().differences.isEmpty)
            #expect(try await AuditVerifier(database: env.database).verify().firstBreak == nil)
        }
    }

    @Test("a placement that dies before its transaction commits leaves neither the order nor its job", arguments: TestDatabaseKind.all)
    func diesBeforeCommit(kind: TestDatabaseKind) async throws {
        struct Killed: Error {}
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "precommit@example.com")
            let user = try #require(try await User.query(on: env.database.db).first())
            let draft = OrderDraft(symbol: "AAPL", side: .buy, type: .market, timeInForce: .day, quantity: 2, notional: nil, limitPrice: nil, stopPrice: nil)
            let priced = try await env.orders.price(.init(draft: draft, accountID: nil, clientOrderID: nil))
            await #expect(throws: Killed.self) {
                try await env.database.db.transaction { db in
                    _ = try await env.orders.place(priced, userID: user.id!, ip: nil, requestID: nil, on: db)
                    throw Killed()
                }
            }
            #expect(try await Order.query(on: env.database.db).count() == 0)
            #expect(try await Job.query(on: env.database.db).count() == 0)
            let account = try #require(try await Account.query(on: env.database.db).first())
            #expect(account.reservedCash.value == 0)
            _ = tokens
        }
    }

    @Test("two workers draining one queue at once never run a job twice", arguments: TestDatabaseKind.all)
    func twoWorkers(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "twoworkers@example.com")
            let broker = FakeRemoteBroker(price: try #require(SimulatedMarket().price(of: "KO", at: env.clock.now)))
            let service = remoteService(env, broker: broker)
            for _ in 0..<40 {
                let placed = try await post(client, "/api/orders", ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
                #expect(placed.status == .created)
            }
            let first = worker(service, name: "worker-a"), second = worker(service, name: "worker-b")
            async let a: Void = first.drain()
            async let b: Void = second.drain()
            _ = await (a, b)

            let submissions = await broker.submissions
            #expect(submissions.count == 40)
            #expect(submissions.values.allSatisfy { $0 == 1 }, "no job ran twice")
            let jobs = try await Job.query(on: env.database.db).all()
            #expect(jobs.count == 40 && jobs.allSatisfy { $0.status == "done" && $0.attempts == 1 })
            #expect(Set(jobs.compactMap(\.lockedBy)).isEmpty)
            #expect(try await Order.query(on: env.database.db).filter(\.$status == "filled").count() == 40)
            #expect(try await LedgerVerifier(database: env.database).verify().differences.isEmpty)
        }
    }
}
