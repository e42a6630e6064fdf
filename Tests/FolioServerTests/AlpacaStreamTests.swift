import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import FolioServer

/// Alpaca's `trade_updates` stream against the fake Alpaca's stream on
/// loopback (binary frames, as the paper stream sends them): fills applied as
/// they happen, once each; events lost while the stream was down recovered by
/// the poll that follows the reconnection.
@Suite("Alpaca trade stream")
struct AlpacaStreamTests {
    func withStreaming(
        _ kind: TestDatabaseKind,
        _ body: @escaping @Sendable (any TestClientProtocol, TestEnvironment, FakeAlpaca, [String: Any], AccountID) async throws -> Void
    ) async throws {
        try await withFakeAlpaca { fake in
            fake.mode = .rest
            try await withTestApp(kind, configure: { $0.alpacaURLs = fake.urls }) { client, env in
                let tokens = try await signUp(client, env, email: "stream@example.com")
                let linked = try await post(client, "/api/brokerage/alpaca", FakeAlpaca.linkBody, headers: bearer(tokens))
                let text = try #require((try json(linked)["account"] as? [String: Any])?["id"] as? String)
                let account = try #require(AccountID(text))
                let streams = env.services.tradeStreams
                await streams.refreshStreams()
                defer { streams.stopAll() }
                try await eventually("the stream listening", within: .seconds(20)) {
                    fake.listeners == 1 && env.services.brokers.isStreaming(account)
                }
                try await body(client, env, fake, tokens, account)
            }
        }
    }

    func status(_ client: some TestClientProtocol, _ tokens: [String: Any], _ id: String) async throws -> [String: Any] {
        try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))
    }

    func restingOrder(_ client: some TestClientProtocol, _ env: TestEnvironment, _ tokens: [String: Any], _ account: AccountID, quantity: String = "3") async throws -> String {
        let body = ["symbol": "KO", "quantity": quantity, "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account.description]
        let id = try #require(try json(try await post(client, "/api/orders", body, headers: bearer(tokens)))["id"] as? String)
        await env.worker.drain()
        return id
    }

    @Test("fills arrive by the stream and are applied without a poll; an event delivered twice is applied once", arguments: TestDatabaseKind.all)
    func fillsByStream(kind: TestDatabaseKind) async throws {
        try await withStreaming(kind) { client, env, fake, tokens, account in
            let id = try await restingOrder(client, env, tokens, account)
            let listsBefore = fake.listCalls
            fake.duplicateEvents = true
            fake.fill(clientOrderID: id, quantity: 1, at: 59)
            try await eventually("the partial fill applied") { try await status(client, tokens, id)["filled_quantity"] as? String == "1" }
            fake.fill(clientOrderID: id, at: 58)
            try await eventually("the order filled") { try await status(client, tokens, id)["status"] as? String == "filled" }
            #expect(fake.listCalls == listsBefore, "no poll was needed")
            let orderID = try #require(OrderID(id))
            let fills = try await env.store.fills(of: orderID)
            #expect(fills.map(\.quantity).sorted() == [1, 2], "each fill once, though each event came twice")
            #expect(try await env.accounts().first { $0.id == account }?.cash == (try Cash(parsing: "24825.00")))
            // The poller, looking afterwards, finds the same fills under the same keys and adds nothing.
            try await OrderService.recheckFor(env)
            #expect(try await env.store.fills(of: orderID).count == 2)
            try await env.expectConsistent()
        }
    }

    @Test("a fill is dated when Alpaca executed it, by the stream and by the poll alike: one made a second before the close and applied after it belongs to that day", arguments: TestDatabaseKind.all)
    func fillsDatedWhenExecuted(kind: TestDatabaseKind) async throws {
        try await withStreaming(kind) { client, env, fake, tokens, account in
            let id = try await restingOrder(client, env, tokens, account)
            let orderID = try #require(OrderID(id))
            // Applied after the close (16:00 in New York, 21:00 UTC), executed just before it.
            env.clock.advance(by: 5.5 * 3600 + 30)
            // Microseconds, as Alpaca stamps them: the books keep whole milliseconds, as every time they record.
            fake.executionTime = "2026-11-24T20:59:59.123456Z"
            fake.fill(clientOrderID: id, quantity: 1, at: 59)
            try await eventually("the stream's fill applied") { try await env.store.fills(of: orderID).count == 1 }
            // The rest by the poll (Alpaca's FILL activities and their transaction_time).
            fake.dropStream()
            fake.executionTime = "2026-11-24T21:00:10-00:00"
            fake.fill(clientOrderID: id, at: 58)
            try await OrderService.recheckFor(env)
            // Alpaca's microseconds come in as whole milliseconds, as the books record every time.
            let stamped = try #require(AlpacaBroker.date(.string("2026-11-24T20:59:59.123456Z")))
            #expect(stamped == AuditChain.recordedTime(stamped))
            // In milliseconds since 1970, as the books and the audit digests read them.
            let executed: [Int64] = [1_795_553_999_123, 1_795_554_010_000]
            #expect(try await env.store.fills(of: orderID).map { AuditChain.milliseconds($0.occurredAt) } == executed)
            let buys = try await env.store.entries(of: account).filter { $0.line.kind == .buy }
            #expect(buys.map { AuditChain.milliseconds($0.line.occurredAt) } == executed)
            #expect(try await env.store.order(orderID)?.status == .filled)
            try await env.expectConsistent()
        }
    }

    @Test("events lost while the stream was down are recovered by the poll that follows the reconnection", arguments: TestDatabaseKind.all)
    func streamLoss(kind: TestDatabaseKind) async throws {
        try await withStreaming(kind) { client, env, fake, tokens, account in
            let id = try await restingOrder(client, env, tokens, account)
            fake.dropStream()
            // Filled while no stream listens: the event is lost.
            fake.fill(clientOrderID: id, quantity: 2, at: 59)
            try await eventually("the stream back", within: .seconds(20)) { fake.streamConnections == 2 && fake.listeners == 1 }
            #expect(try await status(client, tokens, id)["filled_quantity"] as? String == "0", "the stream did not bring it")
            // The reconnection made the account due a poll at once: the worker's next look catches up.
            #expect(env.services.brokers.pollDue(account))
            try await OrderService.recheckFor(env)
            #expect(try await status(client, tokens, id)["filled_quantity"] as? String == "2")
            // And the stream carries on.
            fake.fill(clientOrderID: id, at: 58)
            try await eventually("the last fill by the stream") { try await status(client, tokens, id)["status"] as? String == "filled" }
            try await env.expectConsistent()
        }
    }

    @Test("an order partly filled whose rest Alpaca then expires ends by the stream's event alone, what filled standing", arguments: TestDatabaseKind.all)
    func restEndedByStream(kind: TestDatabaseKind) async throws {
        try await withStreaming(kind) { client, env, fake, tokens, account in
            let id = try await restingOrder(client, env, tokens, account)
            fake.fill(clientOrderID: id, quantity: 1, at: 59)
            try await eventually("the partial fill applied") { try await status(client, tokens, id)["filled_quantity"] as? String == "1" }
            let listsBefore = fake.listCalls
            fake.setStatus(clientOrderID: id, "expired")
            try await eventually("the rest ended") { try await status(client, tokens, id)["status"] as? String == "canceled" }
            #expect(fake.listCalls == listsBefore, "no poll was needed")
            let shown = try await status(client, tokens, id)
            #expect(shown["filled_quantity"] as? String == "1")
            #expect(try await env.store.fills(of: try #require(OrderID(id))).count == 1)
            #expect(try await env.accounts().first { $0.id == account }?.reservedCash == 0)
            try await env.expectConsistent()
        }
    }

    @Test("a part Alpaca filled that the books cannot take ends the order here, and the rest is canceled at Alpaca, so it buys no more with cash shown as free", arguments: TestDatabaseKind.all)
    func restCanceledAtBroker(kind: TestDatabaseKind) async throws {
        try await withStreaming(kind) { client, env, fake, tokens, account in
            // As above: 3 KO at the 60.00 limit, and 400 more holding most of the cash.
            let id = try await restingOrder(client, env, tokens, account)
            _ = try await restingOrder(client, env, tokens, account, quantity: "400")
            // One share fills at 59.00; the next at 1,000.00, more than the books can pay. One is left at Alpaca.
            fake.fill(clientOrderID: id, quantity: 1, at: 59)
            try await eventually("the first part applied") { try await status(client, tokens, id)["filled_quantity"] as? String == "1" }
            fake.fill(clientOrderID: id, quantity: 1, at: 1_000)
            try await eventually("the order ended") { try await status(client, tokens, id)["status"] as? String == "canceled" }
            await env.worker.drain()  // the cancel at Alpaca is a job, committed with the order's end
            try await eventually("the rest canceled at Alpaca") { fake.status(clientOrderID: id) == "canceled" }
            let shown = try await status(client, tokens, id)
            #expect((shown["reject_reason"] as? String)?.hasPrefix("filled at the broker, beyond what the books can take") == true, "\(shown)")
            // The person is told it filled at the broker (they hold what it bought), not that it was canceled or rejected.
            let notices = try json(try await client.execute(uri: "/api/notifications", method: .get, headers: bearer(tokens)))["data"] as? [[String: Any]] ?? []
            let told = notices.filter { ($0["data"] as? [String: Any])?["order_id"] as? String == id }.compactMap { $0["kind"] as? String }
            #expect(told.contains("order_filled_at_broker") && !told.contains("order_canceled") && !told.contains("order_rejected"), "\(told)")
            try await env.expectConsistent()
        }
    }

    /// As above: 3 KO at the 60.00 limit beside 400 more that hold most of the cash. One share fills at 59.00;
    /// then `meanwhile` runs (Alpaca goes down, say); then one fills at 1,000.00, more than the books can pay.
    /// The order ends here, canceled, with one share still open at Alpaca.
    func orderEndedBeyondTheBooks(
        _ client: some TestClientProtocol, _ env: TestEnvironment, _ fake: FakeAlpaca, _ tokens: [String: Any], _ account: AccountID,
        meanwhile: () -> Void
    ) async throws -> String {
        let id = try await restingOrder(client, env, tokens, account)
        _ = try await restingOrder(client, env, tokens, account, quantity: "400")
        fake.fill(clientOrderID: id, quantity: 1, at: 59)
        try await eventually("the first part applied") { try await status(client, tokens, id)["filled_quantity"] as? String == "1" }
        meanwhile()
        fake.fill(clientOrderID: id, quantity: 1, at: 1_000)
        try await eventually("the order ended") { try await status(client, tokens, id)["status"] as? String == "canceled" }
        return id
    }

    @Test("the cancel at Alpaca of what is left of an order the books ended outlasts an Alpaca that is down: its job is tried again until Alpaca says the order ended", arguments: TestDatabaseKind.all)
    func restCanceledAtBrokerLater(kind: TestDatabaseKind) async throws {
        try await withStreaming(kind) { client, env, fake, tokens, account in
            let id = try await orderEndedBeyondTheBooks(client, env, fake, tokens, account) { fake.refuseCancels = true }
            func job() async throws -> (status: String, attempts: Int)? {
                try await env.database.sql.raw("SELECT status, attempts FROM jobs WHERE kind = 'cancel_at_broker' AND order_id = \(bind: try #require(OrderID(id)))")
                    .all().map { (try $0.decode(column: "status", as: String.self), try $0.decode(column: "attempts", as: Int.self)) }.first
            }
            // Alpaca is down: the job fails, stays queued for a later try, and the rest is still open there.
            await env.worker.drain()
            let failed = try await job()
            #expect(failed?.status == "queued" && failed?.attempts == 1, "\(String(describing: failed))")
            #expect(fake.status(clientOrderID: id) == "partially_filled")
            // Back up: once the back-off has passed, the next try cancels it, and the job is done.
            fake.refuseCancels = false
            env.clock.advance(by: 60)
            await env.worker.drain()
            #expect(fake.status(clientOrderID: id) == "canceled")
            #expect(try await job()?.status == "done")
            #expect(env.logs.lines.contains { $0.contains("the rest of an order ended here is canceled at its broker") && $0.contains(id) })
            try await env.expectConsistent()
        }
    }

    @Test("the cancel at Alpaca of an order the books ended is done only once Alpaca confirms it: pending_cancel is asked about again, not sent another DELETE", arguments: [TestDatabaseKind.sqlite])
    func restCancelConfirmed(kind: TestDatabaseKind) async throws {
        try await withStreaming(kind) { client, env, fake, tokens, account in
            let id = try await orderEndedBeyondTheBooks(client, env, fake, tokens, account) { fake.slowCancels = true }
            func job() async throws -> String? {
                try await env.database.sql.raw("SELECT status FROM jobs WHERE kind = 'cancel_at_broker'").first()?.decode(column: "status", as: String.self)
            }
            await env.worker.drain()
            #expect(fake.status(clientOrderID: id) == "pending_cancel")
            #expect(try await job() == "queued", "asked, not yet confirmed")
            env.clock.advance(by: 60)
            await env.worker.drain()
            #expect(try await job() == "queued", "still pending at Alpaca")
            fake.confirmCancels()
            env.clock.advance(by: 60)
            await env.worker.drain()
            #expect(fake.status(clientOrderID: id) == "canceled")
            #expect(try await job() == "done")
        }
    }

    @Test("the cancel at Alpaca of an order the books ended does not count as done once the account's link is gone: it fails, for an operator to see, and never claims a cancel it did not make", arguments: [TestDatabaseKind.sqlite])
    func restCancelAfterUnlink(kind: TestDatabaseKind) async throws {
        try await withStreaming(kind) { client, env, fake, tokens, account in
            let id = try await orderEndedBeyondTheBooks(client, env, fake, tokens, account) { fake.refuseCancels = true }
            // The link removed meanwhile (as the settings page does once no order is open here).
            try await env.database.sql.raw("UPDATE brokerage_links SET status = 'removed' WHERE account_id = \(bind: account)").run()
            fake.refuseCancels = false
            await env.worker.drain()
            let row = try #require(try await env.database.sql.raw("SELECT status, last_error FROM jobs WHERE kind = 'cancel_at_broker'").first())
            #expect(try row.decode(column: "status", as: String.self) == "queued")
            #expect(try row.decode(column: "last_error", as: String?.self)?.contains("cancel the order at Alpaca by hand") == true)
            #expect(fake.status(clientOrderID: id) == "partially_filled", "nothing was asked of Alpaca")
            #expect(!env.logs.lines.contains { $0.contains("the rest of an order ended here is canceled at its broker") })
        }
    }

    @Test("a fill Alpaca made that the books cannot take ends the order with a reason naming it, says so at error level once, and reconciliation then brings the account to Alpaca's", arguments: TestDatabaseKind.all)
    func fillBeyondTheBooks(kind: TestDatabaseKind) async throws {
        try await withStreaming(kind) { client, env, fake, tokens, account in
            // 3 KO reserved at the 60.00 limit (180.00), and 400 more reserving 24,000.00 of the 25,000.00.
            let id = try await restingOrder(client, env, tokens, account)
            let large = try await restingOrder(client, env, tokens, account, quantity: "400")
            // Alpaca fills the first at 400.00 each: 1,200.00, which the cash the other order leaves cannot take.
            fake.fill(clientOrderID: id, at: 400)
            try await eventually("the order ended") { try await status(client, tokens, id)["status"] as? String == "rejected" }
            let shown = try await status(client, tokens, id)
            #expect((shown["reject_reason"] as? String)?.hasPrefix("filled at the broker, beyond what the books can take") == true, "\(shown)")
            #expect(try await env.store.fills(of: try #require(OrderID(id))).isEmpty)
            let alarms = env.logs.lines.filter { $0.contains("the broker filled an order beyond what the books can take") }
            #expect(alarms.count == 1 && alarms[0].contains(#""level":"error""#) && alarms[0].contains(id), "\(alarms)")
            try await OrderService.recheckFor(env)
            #expect(env.logs.lines.filter { $0.contains("the broker filled an order beyond what the books can take") }.count == 1, "said once, not at every poll")
            try await env.expectConsistent()

            // Once no order is open, reconciliation brings the cash and the shares to Alpaca's.
            #expect(try await client.execute(uri: "/api/orders/\(large)", method: .delete, headers: bearer(tokens)).status == .ok)
            let run = try await BrokerReconciliation.run(services: env.services, dryRun: false)
            #expect(run.first?.applied == true, "\(run)")
            let books = try #require(try await env.accounts().first { $0.id == account })
            #expect(books.cash == (try Cash(parsing: "23800.00")))
            #expect(try await env.store.holdings(of: account).first { $0.symbol == "KO" }?.quantity == 3)
            try await env.expectConsistent()
        }
    }

    @Test("a cancel confirmed by the stream ends a pending_cancel order", arguments: TestDatabaseKind.all)
    func cancelByStream(kind: TestDatabaseKind) async throws {
        try await withStreaming(kind) { client, env, fake, tokens, account in
            fake.slowCancels = true
            let id = try await restingOrder(client, env, tokens, account)
            #expect(try await client.execute(uri: "/api/orders/\(id)", method: .delete, headers: bearer(tokens)).status == .accepted)
            #expect(try await status(client, tokens, id)["status"] as? String == "pending_cancel")
            fake.confirmCancels()
            try await eventually("the cancel applied") { try await status(client, tokens, id)["status"] as? String == "canceled" }
            #expect(try await env.accounts().first { $0.id == account }?.reservedCash == 0)
            try await env.expectConsistent()
        }
    }

    @Test("a user's own cancel is no news to them, even when the stream's report of it lands first; a cancel made at Alpaca is", arguments: TestDatabaseKind.all)
    func cancelNotices(kind: TestDatabaseKind) async throws {
        try await withStreaming(kind) { client, env, fake, tokens, account in
            func canceledNotices() async throws -> Int {
                let list = try json(try await client.execute(uri: "/api/notifications", method: .get, headers: bearer(tokens)))
                return (list["data"] as? [[String: Any]] ?? []).filter { $0["kind"] as? String == "order_canceled" }.count
            }
            // The fake publishes the cancel on the stream as it answers the DELETE.
            for _ in 0..<3 {
                let id = try await restingOrder(client, env, tokens, account, quantity: "1")
                let canceled = try await client.execute(uri: "/api/orders/\(id)", method: .delete, headers: bearer(tokens))
                #expect(canceled.status == .ok, "\(String(buffer: canceled.body))")
                try await eventually("the cancel applied") { try await status(client, tokens, id)["status"] as? String == "canceled" }
            }
            #expect(try await canceledNotices() == 0)
            // Canceled at Alpaca (its own dashboard), not through Folio: the stream's report is news.
            let elsewhere = try await restingOrder(client, env, tokens, account, quantity: "1")
            fake.setStatus(clientOrderID: elsewhere, "canceled")
            try await eventually("the broker's cancel applied") { try await status(client, tokens, elsewhere)["status"] as? String == "canceled" }
            #expect(try await canceledNotices() == 1)
            try await env.expectConsistent()
        }
    }
}
