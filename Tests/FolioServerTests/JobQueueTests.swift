import FolioDomain
import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import Testing

@testable import FolioServer

/// A broker that cannot be reached: every submit fails.
struct UnreachableBroker: Broker {
    struct Unreachable: Error, CustomStringConvertible {
        var description: String { "the broker is unreachable" }
    }

    var holdsOrders: Bool { false }
    func submit(_ order: BrokerOrder) async throws -> BrokerReport { throw Unreachable() }
    func recheck(_ order: BrokerOrder) async throws -> BrokerReport? { nil }
    func cancel(_ order: BrokerOrder) async throws -> BrokerReport { throw Unreachable() }
}

@Suite("The job queue and its worker")
struct JobQueueTests {
    @Test("a failing job is retried with exponential back-off and jitter, never early, then dead with its error; its order is then rejected and its reservation released", arguments: TestDatabaseKind.all)
    func retriesThenDead(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, dependencies: { $0.broker = { _ in UnreachableBroker() } }) { client, env in
            let tokens = try await signUp(client, env, email: "retries@example.com")
            let placed = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
            let placedID = try #require(try json(placed)["id"] as? String)
            let orderID = try #require(OrderID(placedID))
            #expect(try await env.firstAccount().reservedCash.isPositive)

            for attempt in 1...8 {
                await env.worker.drain()
                let job = try #require(try await env.jobs().first { $0.kind == "submit_order" })
                #expect(job.attempts == attempt)
                #expect(job.lastError == "the broker is unreachable")
                guard attempt < 8 else {
                    #expect(job.status == "dead", "eight attempts, then dead")
                    break
                }
                #expect(job.status == "queued")
                // 2^attempt seconds, times a jitter between 0.5 and 1.5.
                let wait = job.runAt.timeIntervalSince(env.clock.now)
                let base = Double(1 << attempt)
                #expect(wait >= base * 0.5 - 0.01 && wait <= base * 1.5 + 0.01, "attempt \(attempt): \(wait) s for a base of \(base) s")
                // Half a second before its time nothing runs; after it, the next attempt does.
                env.clock.advance(by: max(0, wait - 0.5))
                await env.worker.drain()
                #expect(try await env.jobs().first { $0.kind == "submit_order" }?.attempts == attempt)
                env.clock.advance(by: 1)
            }
            #expect(JobQueue.backoff(attempt: 12) == 600, "back-off stops growing at ten minutes")
            #expect(try await env.order(orderID).status == .new, "a dead job alone changes no money")

            try await OrderService.recheckFor(env)
            let order = try await env.order(orderID)
            #expect(order.status == .rejected)
            #expect(order.rejectReason?.isEmpty == false)
            #expect(try await env.firstAccount().reservedCash == .zero)
            #expect(try await env.firstAccount().cash == env.configuration.startingCash)
            try await env.expectConsistent()
        }
    }

    @Test("a job's last error is kept redacted: a vendor's message quoting its key does not put the key in the database")
    func errorRedacted() async throws {
        try await withTestApp(.sqlite) { _, env in
            let queue = env.services.jobs
            try await queue.enqueue(.logAuditHeads, on: env.database.sql)
            let job = try #require(try await queue.claim(as: "worker").first)
            let key = "Q7PL2MN9VB4CR8TY"
            let message = "Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day (apikey=\(key)). secret_key=hunter2hunter2"
            #expect(try await queue.fail(job, error: message))
            let stored = try #require(try await env.database.sql.raw("SELECT last_error FROM jobs WHERE id = \(bind: job.id)").first()?.decode(column: "last_error", as: String.self))
            #expect(stored.hasPrefix("Thank you for using Alpha Vantage!"))
            #expect(!stored.contains(key) && !stored.contains("hunter2"), "\(stored)")
        }
    }

    @Test("a job that dies of a payload this build cannot read says so in the log, with its id and kind; a PostgreSQL error is kept as what PostgreSQL said, not PostgresNIO's generic text", arguments: TestDatabaseKind.all)
    func deadJobsSaySo(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { _, env in
            let now = env.clock.now, id = UUID()
            try await env.database.sql.raw("""
                INSERT INTO jobs (id, kind, payload, status, attempts, max_attempts, run_at, created_at, updated_at)
                VALUES (\(bind: id), 'submit_order', '{"v":1}', 'queued', 0, 1, \(bind: now), \(bind: now), \(bind: now))
                """).run()
            await env.worker.drain()
            #expect(try await env.jobs().first { $0.id.uuid == id }?.status == "dead")
            let line = env.logs.lines.first { $0.contains("job dead") && $0.contains(id.lowercasedString) }
            #expect(line?.contains("submit_order") == true, "\(env.logs.lines.filter { $0.contains("job") })")

            guard kind == .postgres else { return }
            do {
                try await env.database.sql.raw("SELECT * FROM no_such_table_here").run()
                Issue.record("the query should have failed")
            } catch {
                guard case .failed(let text, _) = JobOutcome.failed(error) else { Issue.record("not a failure"); return }
                #expect(text.contains("no_such_table_here") && text.contains("42P01"), "\(text)")
            }
        }
    }

    @Test("a job of a kind this build does not know (a newer build queued it) is left queued for that build, untouched; known jobs around it run", arguments: TestDatabaseKind.all)
    func unknownKindWaits(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { _, env in
            let queue = env.services.jobs, now = env.clock.now
            try await queue.enqueue(.logAuditHeads, on: env.database.sql)
            try await env.database.sql.raw("""
                INSERT INTO jobs (id, kind, payload, status, attempts, max_attempts, run_at, created_at, updated_at)
                VALUES (\(bind: UUID()), 'from_a_newer_build', '{"v":"1"}', 'queued', 0, 8, \(bind: now.addingTimeInterval(-60)), \(bind: now), \(bind: now))
                """).run()
            let claimed = try await queue.claim(as: "this-build", limit: 10)
            #expect(claimed.map(\.payload.kind) == [.logAuditHeads])
            #expect(try await queue.claim(as: "mail-only", limit: 10, filter: .only([.sendMail])).isEmpty)
            #expect(try await queue.claim(as: "all-but-mail", limit: 10, filter: .except([.sendMail])).isEmpty)
            let newer = try #require(try await env.jobs().first { $0.kind == "from_a_newer_build" })
            #expect(newer.status == "queued" && newer.attempts == 0 && newer.lastError == nil && newer.lockedBy == nil)
        }
    }

    @Test("a worker whose lease ran out can neither complete nor fail the job it held; the worker that took it over can", arguments: TestDatabaseKind.all)
    func expiredLease(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { _, env in
            let queue = env.services.jobs
            try await queue.enqueue(.logAuditHeads, on: env.database.sql)
            let old = try #require(try await queue.claim(as: "old-worker").first)
            #expect(try await queue.claim(as: "new-worker").isEmpty, "a live lease is not taken")
            env.clock.advance(by: JobQueue.lease + 1)
            let taken = try #require(try await queue.claim(as: "new-worker").first)
            #expect(taken.id == old.id)
            #expect(taken.attempts == 2)

            #expect(try await queue.complete([old]).isEmpty, "the old holder cannot complete it")
            #expect(try await queue.fail(old, error: "late") == false, "nor fail it")
            let row = try #require(try await env.jobs().first { $0.id == old.id })
            #expect(row.status == "running")
            #expect(row.lockedBy == "new-worker")
            #expect(row.lastError == nil)

            #expect(try await queue.complete([taken]) == [taken.id])
            #expect(try await env.jobs().first { $0.id == old.id }?.status == "done")
        }
    }

    @Test("JobWorker.run works its lanes side by side, and a graceful shutdown lets the job in flight finish, then claims nothing more", arguments: TestDatabaseKind.all)
    func lanesAndShutdown(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { _, env in
            let queue = env.services.jobs
            struct Progress { var running = 0, most = 0, finished = 0, started = 0 }
            let progress = NIOLockedValueBox(Progress())
            let slow: JobWorker.Handler = { jobs in
                progress.withLockedValue { $0.running += 1; $0.started += 1; $0.most = max($0.most, $0.running) }
                try? await Task.sleep(for: .milliseconds(150))
                progress.withLockedValue { $0.running -= 1; $0.finished += jobs.count }
                return Dictionary(uniqueKeysWithValues: jobs.map { ($0.id, .done) })
            }
            let worker = JobWorker(
                queue: queue, handlers: [.logAuditHeads: slow], name: "lanes", pollInterval: .milliseconds(10),
                logger: Logger(label: "test-worker", factory: { _ in SwiftLogNoOpLogHandler() }), onIdle: nil, concurrency: 4, batchSize: 1)
            let group = ServiceGroup(configuration: .init(services: [worker], logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })))
            // All eight waiting before the worker starts: enqueued one by one beside it, a loaded machine could
            // take longer between two enqueues than a job takes, and no two would ever overlap.
            try await queue.enqueue(Array(repeating: .logAuditHeads, count: 8), on: env.database.sql)
            let running = Task { try await group.run() }

            try await eventually("eight jobs done") { progress.withLockedValue { $0.finished } == 8 }
            #expect(progress.withLockedValue { $0.most } >= 2, "lanes ran jobs at the same time")

            // One more, and the stop asked for while it runs: it finishes and is marked done.
            try await queue.enqueue(.logAuditHeads, on: env.database.sql)
            try await eventually("the ninth job started") { progress.withLockedValue { $0.started } == 9 }
            await group.triggerGracefulShutdown()
            try await running.value
            #expect(progress.withLockedValue { $0.finished } == 9)
            #expect(try await env.jobs().allSatisfy { $0.status == "done" }, "the job in flight was completed, not left running")

            try await queue.enqueue(.logAuditHeads, on: env.database.sql)
            try await Task.sleep(for: .milliseconds(100))
            #expect(try await env.jobs().filter { $0.status == "queued" }.count == 1, "a stopped worker claims nothing")
        }
    }

    @Test("claims that fail (the job table gone) are said once per lane, not at every poll, and tried less often; claims that work again are said so")
    func claimFailuresNotFlooded() async throws {
        try await withTestApp(.sqlite) { _, env in
            let logs = LogCapture()
            let done: JobWorker.Handler = { jobs in Dictionary(uniqueKeysWithValues: jobs.map { ($0.id, .done) }) }
            let worker = JobWorker(
                queue: env.services.jobs, handlers: [.logAuditHeads: done], name: "flood", pollInterval: .milliseconds(10),
                logger: logs.logger(), onIdle: nil, concurrency: 2, batchSize: 1)
            try await env.database.sql.raw("ALTER TABLE jobs RENAME TO jobs_away").run()
            let group = ServiceGroup(configuration: .init(services: [worker], logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })))
            let running = Task { try await group.run() }
            // A second of failing claims: at every 10 ms poll that was a hundred lines per lane.
            try await eventually("both lanes said their claims failed") { logs.lines.filter { $0.contains("job claim failed") }.count >= 2 }
            try await Task.sleep(for: .seconds(1))
            let said = logs.lines.filter { $0.contains("job claim failed") }
            #expect(said.count == 2, "\(said.count) lines")
            #expect(JobWorker.backoff(after: 1, poll: .milliseconds(10)) == .milliseconds(10))
            #expect(JobWorker.backoff(after: 4, poll: .milliseconds(10)) == .milliseconds(80))
            #expect(JobWorker.backoff(after: 40, poll: .milliseconds(10)) == .seconds(5))
            // The table back: the lanes say their claims work again, and a job runs.
            try await env.database.sql.raw("ALTER TABLE jobs_away RENAME TO jobs").run()
            try await env.services.jobs.enqueue(.logAuditHeads, on: env.database.sql)
            try await eventually("claims work again") { logs.lines.contains { $0.contains("job claims work again") } }
            try await eventually("the job ran") { try await env.jobs().allSatisfy { $0.status == "done" } }
            await group.triggerGracefulShutdown()
            try await running.value
        }
    }

    @Test("a job a database constraint refuses is counted as a refused request is (the constraint-violation alert), and retried", arguments: TestDatabaseKind.all)
    func constraintViolationInAJob(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { _, env in
            let sql = env.database.sql
            try await sql.raw("CREATE TABLE probe_unique (id INT PRIMARY KEY)").run()
            let insertSameUser: JobWorker.Handler = JobWorker.each { _ in
                for _ in 0..<2 { try await sql.raw("INSERT INTO probe_unique (id) VALUES (\(bind: 1))").run() }
            }
            let worker = JobWorker(
                queue: env.services.jobs, handlers: [.logAuditHeads: insertSameUser], name: "constraint", pollInterval: .milliseconds(10),
                logger: Logger(label: "test-worker", factory: { _ in SwiftLogNoOpLogHandler() }), onIdle: nil, violations: env.services.constraintViolations)
            try await env.services.jobs.enqueue(.logAuditHeads, on: sql)
            #expect(await worker.runOnce())
            #expect(env.services.constraintViolations.count == 1)
            let exposition = env.services.metrics.exposition()
            let series = kind == .postgres ? #"folio_constraint_violations_total{table="probe_unique",kind="unique"} 1"# : #"kind="unique"} 1"#
            #expect(exposition.split(separator: "\n").contains { $0.hasPrefix("folio_constraint_violations_total") && $0.hasSuffix(series) }, "\(exposition.split(separator: "\n").filter { $0.contains("constraint") })")
            let job = try #require(try await env.jobs().first)
            #expect(job.status == "queued", "retried like any failure")
            #expect(job.lastError?.isEmpty == false)
        }
    }

    @Test("when the worker falls behind, a placement waits for it and is written only once the worker has caught up", arguments: TestDatabaseKind.all)
    func placementsKeepPace(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "pace@example.com")
            let order: [String: Any] = ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "MARKET"]
            for _ in 0..<(env.worker.batchSize + 1) {
                #expect(try await post(client, "/api/orders", order, headers: bearer(tokens)).status == .created)
            }
            // The worker's claim comes back full: one more job is waiting behind it.
            #expect(await env.worker.runOnce())
            let pace = try #require(env.services.orders.pace)
            let late = Task { try await post(client, "/api/orders", order, headers: bearer(tokens)) }
            try await eventually("the placement waits for the worker") { pace.waiting == 1 }
            #expect(try await env.orders().count == env.worker.batchSize + 1, "the waiting placement has written nothing yet")

            await env.worker.drain()
            #expect(try await late.value.status == .created)
            await env.worker.drain()
            let orders = try await env.orders()
            #expect(orders.count == env.worker.batchSize + 2)
            #expect(orders.allSatisfy { $0.status == .filled })
            try await env.expectConsistent()
        }
    }
}

@Suite("Placements keep to the worker's pace")
struct SubmissionPaceTests {
    @Test("while the worker is behind, each finished job lets one waiting placement in, oldest first; a short claim or a stopped worker lets all in")
    func turns() async throws {
        let pace = SubmissionPace(longestWait: .seconds(600))
        await pace.turn()  // the worker keeps up: no wait
        pace.claimed(16, of: 16)
        let admitted = NIOLockedValueBox<[Int]>([])
        let first = Task { await pace.turn(); admitted.withLockedValue { $0.append(1) } }
        try await eventually("the first placement waits") { pace.waiting == 1 }
        let second = Task { await pace.turn(); admitted.withLockedValue { $0.append(2) } }
        try await eventually("the second placement waits") { pace.waiting == 2 }

        pace.finished(1)
        await first.value
        #expect(admitted.withLockedValue { $0 } == [1])
        #expect(pace.waiting == 1)
        pace.claimed(3, of: 16)
        await second.value
        #expect(admitted.withLockedValue { $0 } == [1, 2])
        await pace.turn()  // caught up again: no wait

        pace.claimed(16, of: 16)
        let third = Task { await pace.turn() }
        try await eventually("the third placement waits") { pace.waiting == 1 }
        pace.workerStopped()
        await third.value
        #expect(pace.waiting == 0)
    }

    @Test("a placement never waits past the longest wait, even when the worker never reports again")
    func longestWait() async throws {
        let pace = SubmissionPace(longestWait: .milliseconds(20))
        pace.claimed(16, of: 16)
        await pace.turn()
        await pace.turn()
        #expect(pace.waiting == 0)
    }
}
