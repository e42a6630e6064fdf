import FolioDomain
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import SQLKit

/// A job as a worker holds it.
struct ClaimedJob: Sendable {
    var id: JobID
    var payload: JobPayload
    var attempts: Int
    var maxAttempts: Int
    /// The lease holder: only it may complete or fail the job.
    var holder: String
    /// When it was due: jobs run in this order, then by id.
    var runAt: Date = .distantPast
    /// Why its last attempt failed, when one did.
    var lastError: String? = nil
}

/// A durable job queue in the database. Jobs are enqueued inside the caller's
/// transaction (so an order and the job that submits it commit together),
/// claimed by one worker at a time (`FOR UPDATE SKIP LOCKED` on PostgreSQL;
/// SQLite's single writer runs the claim as one statement), retried with
/// exponential back-off and jitter, and kept as `dead` with their last error
/// after the last attempt. A claim is a lease held by a worker of a running
/// instance: a job is claimed again when its lease runs out, or within
/// seconds when its instance stopped heartbeating (it was killed).
struct JobQueue: Sendable {
    let database: FolioDatabase
    let clock: AppClock
    let ids: IDSource
    /// The instance whose workers claim here (its heartbeat is in `instances`).
    let instance: String
    /// Told of each job that went dead (its kind, id and last error): error reports.
    var onDead: (@Sendable (String, JobID, String) -> Void)? = nil

    static let lease: TimeInterval = 60
    /// Claims looking for jobs abandoned on their last attempt. Every lane of
    /// both workers claims here, many times a second under load; once a second
    /// is soon enough for a job that has no attempt left.
    let deadSweep = Throttle(every: 1)

    /// Jobs of `kind` waiting to be claimed (retries whose time has not come included).
    func waiting(_ kind: JobPayload.Kind) async throws -> Int {
        try await database.sql.raw("SELECT COUNT(*) AS n FROM jobs WHERE status = 'queued' AND kind = \(bind: kind.rawValue)").first()?
            .decode(column: "n", as: Int.self) ?? 0
    }

    func enqueue(_ payload: JobPayload, runAt: Date? = nil, maxAttempts: Int = 8, on db: any SQLDatabase) async throws {
        try await enqueue([payload], runAt: runAt, maxAttempts: maxAttempts, on: db)
    }

    /// Enqueues several jobs in one statement.
    func enqueue(_ payloads: [JobPayload], runAt: Date? = nil, maxAttempts: Int = 8, on db: any SQLDatabase) async throws {
        var writes = WriteBatch(for: database.kind)
        enqueue(payloads, runAt: runAt, maxAttempts: maxAttempts, into: &writes)
        try await writes.run(on: db)
    }

    /// Adds the statement that enqueues several jobs to `writes`; with
    /// `onlyIf`, the jobs are written only when that query finds a row.
    func enqueue(_ payloads: [JobPayload], runAt: Date? = nil, maxAttempts: Int = 8, onlyIf condition: SQLQueryString? = nil, into writes: inout WriteBatch) {
        guard !payloads.isEmpty else { return }
        let now = clock.now()
        let rows: [SQLQueryString] = payloads.enumerated().map { [writes] index, payload in
            func typed(_ type: String) -> SQLQueryString { writes.cast(type, row: index) }
            return """
                (\(bind: ids.next(JobID.self))\(typed("uuid")), \(bind: payload.kind.rawValue)\(typed("text")), \(bind: payload.json)\(typed("text")), \
                \(bind: payload.orderID)\(typed("uuid")))
                """
        }
        let guarded: SQLQueryString = condition.map { " WHERE EXISTS (\($0))" } ?? ""
        // VALUES names its columns column1, column2… on both databases.
        writes.add("""
            INSERT INTO jobs (id, kind, payload, order_id, status, attempts, max_attempts, run_at, created_at, updated_at)
            SELECT v.column1, v.column2, v.column3, v.column4, 'queued', 0, \(bind: maxAttempts), \(bind: runAt ?? now), \(bind: now), \(bind: now)
            FROM (VALUES \(rows.joined(separator: ", "))) AS v\(guarded)
            """)
    }

    /// Enqueues the job unless the same job is already waiting to run: ten
    /// webhooks about one item in a minute make one sync, not ten. (One that
    /// is running does not count: news that came in during it needs another.)
    func enqueueUnlessWaiting(_ payload: JobPayload, maxAttempts: Int = 8, on db: any SQLDatabase) async throws {
        let now = clock.now()
        try await db.raw("""
            INSERT INTO jobs (id, kind, payload, order_id, status, attempts, max_attempts, run_at, created_at, updated_at)
            SELECT \(bind: ids.next(JobID.self)), \(bind: payload.kind.rawValue), \(bind: payload.json), \(bind: payload.orderID), 'queued', 0,
                   \(bind: maxAttempts), \(bind: now), \(bind: now), \(bind: now)
            WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE kind = \(bind: payload.kind.rawValue) AND payload = \(bind: payload.json) AND status = 'queued')
            """).run()
    }

    /// Whether a job with this payload is waiting or running, and the last
    /// error of one that gave up: for a sweep of work whose job died.
    func state(of payload: JobPayload) async throws -> (live: Bool, deadError: String?, deadSince: Date?) {
        let rows = try await database.sql.raw("""
            SELECT status, last_error, updated_at FROM jobs WHERE kind = \(bind: payload.kind.rawValue) AND payload = \(bind: payload.json)
            ORDER BY updated_at DESC
            """).all()
        var live = false, deadError: String?, deadSince: Date?
        for row in rows {
            switch try row.decode(column: "status", as: String.self) {
            case "queued", "running": live = true
            case "dead" where deadError == nil:
                deadError = try row.decode(column: "last_error", as: String?.self) ?? "no error was recorded"
                deadSince = try row.decode(column: "updated_at", as: Date.self)
            default: break
            }
        }
        return (live, deadError, deadSince)
    }

    /// Which kinds a worker claims.
    enum Filter: Sendable {
        case all
        case only([JobPayload.Kind])
        case except([JobPayload.Kind])
    }

    /// Up to `limit` due jobs (of the kinds `filter` lets through), now leased to `holder`. A job that cannot be read is failed at once.
    func claim(as holder: String, limit: Int = 1, filter: Filter = .all) async throws -> [ClaimedJob] {
        let now = clock.now()
        let deadline = now.addingTimeInterval(-Instances.deadAfter)
        let abandoned: SQLQueryString = """
            status = 'running' AND (locked_until < \(bind: now) OR instance_id IN (SELECT id FROM instances WHERE heartbeat_at < \(bind: deadline)))
            """
        // A job whose worker died during its last attempt crashed its worker every time: give up on it.
        let abandonedDead = !deadSweep.isDue(at: now) ? [] : try await database.sql.raw("""
            UPDATE jobs SET status = 'dead', last_error = 'the worker stopped during the last attempt', locked_by = NULL, instance_id = NULL,
                locked_until = NULL, updated_at = \(bind: now)
            WHERE \(abandoned) AND attempts >= max_attempts
            RETURNING id, kind
            """).all()
        for row in abandonedDead {
            onDead?(try row.decode(column: "kind", as: String.self), try row.decode(column: "id", as: JobID.self), "the worker stopped during the last attempt")
        }
        let skipLocked = database.kind == .postgres ? " FOR UPDATE SKIP LOCKED" : ""
        // Only kinds this build knows: during a rolling upgrade, or after a rollback, a job a newer
        // build queued waits for a worker of that build instead of dying here as unreadable.
        let kinds: [JobPayload.Kind] = switch filter {
        case .all: JobPayload.Kind.allCases
        case .only(let kinds): kinds
        case .except(let kinds): JobPayload.Kind.allCases.filter { !kinds.contains($0) }
        }
        let only: SQLQueryString = " AND kind IN (\(binds: kinds.map(\.rawValue)))"
        let rows = try await database.sql.raw("""
            UPDATE jobs SET status = 'running', locked_by = \(bind: holder), instance_id = \(bind: instance),
                locked_until = \(bind: now.addingTimeInterval(Self.lease)), attempts = attempts + 1, updated_at = \(bind: now)
            WHERE id IN (SELECT id FROM jobs
                         WHERE ((status = 'queued' AND run_at <= \(bind: now)) OR (\(abandoned) AND attempts < max_attempts))\(only)
                         ORDER BY run_at, id LIMIT \(literal: limit)\(unsafeRaw: skipLocked))
            RETURNING id, kind, payload, order_id, attempts, max_attempts, run_at, last_error
            """).all()
        var claimed: [ClaimedJob] = []
        for row in rows {
            let id = try row.decode(column: "id", as: JobID.self)
            let attempts = try row.decode(column: "attempts", as: Int.self), maxAttempts = try row.decode(column: "max_attempts", as: Int.self)
            do {
                let payload = try JobPayload(
                    kind: try row.decode(column: "kind", as: String.self), json: try row.decode(column: "payload", as: String.self),
                    orderID: try row.decode(column: "order_id", as: OrderID?.self))
                claimed.append(ClaimedJob(
                    id: id, payload: payload, attempts: attempts, maxAttempts: maxAttempts, holder: holder,
                    runAt: try row.decode(column: "run_at", as: Date.self), lastError: try row.decode(column: "last_error", as: String?.self)))
            } catch {
                try await markDead(id, kind: (try? row.decode(column: "kind", as: String.self)) ?? "unknown", holder: holder, error: String(describing: error))
            }
        }
        // RETURNING gives no order; run them as they were due, ties by id (the same order on both databases).
        return claimed.sorted { ($0.runAt, $0.id.uuid.uuidString) < ($1.runAt, $1.id.uuid.uuidString) }
    }

    /// Marks jobs done; only their lease holder may. Returns the ids it could
    /// finish (a job whose lease was lost to another worker is not among them).
    @discardableResult
    func complete(_ jobs: [ClaimedJob]) async throws -> Set<JobID> {
        guard let holder = jobs.first?.holder else { return [] }
        let rows = try await database.sql.raw("""
            UPDATE jobs SET status = 'done', locked_by = NULL, instance_id = NULL, locked_until = NULL, updated_at = \(bind: clock.now())
            WHERE id IN (\(binds: jobs.map(\.id))) AND locked_by = \(bind: holder) AND status = 'running'
            RETURNING id
            """).all()
        return Set(try rows.map { try $0.decode(column: "id", as: JobID.self) })
    }

    /// Extends the lease of jobs still running under their holder: a backup or
    /// a retention run outlasts one lease, and must not be claimed again meanwhile.
    func renew(_ jobs: [ClaimedJob]) async throws {
        guard let holder = jobs.first?.holder else { return }
        try await database.sql.raw("""
            UPDATE jobs SET locked_until = \(bind: clock.now().addingTimeInterval(Self.lease))
            WHERE id IN (\(binds: jobs.map(\.id))) AND locked_by = \(bind: holder) AND status = 'running'
            """).run()
    }

    /// Whether `job` is still this holder's, renewing its lease if so. Asked just before an action outside the
    /// database (an order sent to a broker that holds it): a job whose lease ran out while the batch's earlier
    /// jobs ran may have been taken over, and its new holder acts on it instead (the attempt count tells a
    /// takeover even under the same holder name).
    func stillHeld(_ job: ClaimedJob) async throws -> Bool {
        let rows = try await database.sql.raw("""
            UPDATE jobs SET locked_until = \(bind: clock.now().addingTimeInterval(Self.lease))
            WHERE id = \(bind: job.id) AND locked_by = \(bind: job.holder) AND attempts = \(bind: job.attempts) AND status = 'running'
            RETURNING id
            """).all()
        return !rows.isEmpty
    }

    /// Schedules another attempt, or marks the job dead after its last. False
    /// when the lease was lost meanwhile (another worker owns the job now).
    @discardableResult
    func fail(_ job: ClaimedJob, error: String) async throws -> Bool {
        let now = clock.now()
        let dead = job.attempts >= job.maxAttempts
        let delay = Self.backoff(attempt: job.attempts) * Double.random(in: 0.5...1.5)
        let rows = try await database.sql.raw("""
            UPDATE jobs SET status = \(bind: dead ? "dead" : "queued"), run_at = \(bind: now.addingTimeInterval(dead ? 0 : delay)),
                locked_by = NULL, instance_id = NULL, locked_until = NULL, last_error = \(bind: Self.storable(error)), updated_at = \(bind: now)
            WHERE id = \(bind: job.id) AND locked_by = \(bind: job.holder) AND status = 'running'
            RETURNING id
            """).all()
        if dead, !rows.isEmpty { onDead?(job.payload.kind.rawValue, job.id, error) }
        return !rows.isEmpty
    }

    /// Puts the job back to run again at `runAt`, without counting the attempt:
    /// a job that waits on something else (a run waiting for its fills) is not failing.
    @discardableResult
    func postpone(_ job: ClaimedJob, until runAt: Date) async throws -> Bool {
        let rows = try await database.sql.raw("""
            UPDATE jobs SET status = 'queued', run_at = \(bind: runAt), attempts = attempts - 1, locked_by = NULL, instance_id = NULL,
                locked_until = NULL, updated_at = \(bind: clock.now())
            WHERE id = \(bind: job.id) AND locked_by = \(bind: job.holder) AND status = 'running'
            RETURNING id
            """).all()
        return !rows.isEmpty
    }

    /// An error as a job keeps it: a vendor's message may quote its key (Alpha Vantage's does), and the
    /// database and its backups are not where a secret goes, so it is redacted as a log line is.
    static func storable(_ error: String) -> String {
        String(LogRedactor.standard.redact(ConfiguredSecrets.mask(in: String(error.prefix(8000)))).prefix(2000))
    }

    /// Seconds before attempt `attempt + 1`: 2^attempt, at most ten minutes (jitter is added on top).
    static func backoff(attempt: Int) -> TimeInterval {
        min(pow(2, Double(attempt)), 600)
    }

    private func markDead(_ id: JobID, kind: String, holder: String, error: String) async throws {
        let rows = try await database.sql.raw("""
            UPDATE jobs SET status = 'dead', locked_by = NULL, instance_id = NULL, locked_until = NULL, last_error = \(bind: Self.storable(error)),
                updated_at = \(bind: clock.now())
            WHERE id = \(bind: id) AND locked_by = \(bind: holder)
            RETURNING id
            """).all()
        if !rows.isEmpty { onDead?(kind, id, error) }
    }

    struct Row: Sendable, Equatable {
        var id: JobID
        var kind: String
        var status: String
        var attempts: Int
        var lockedBy: String?
        var orderID: OrderID?
        var lastError: String?
        var runAt: Date
    }

    /// Jobs waiting, running or dead, by kind and status, with the oldest `run_at` of each (the metrics read it).
    func statusCounts() async throws -> [(kind: String, status: String, count: Int, oldest: Date?)] {
        try await database.sql.raw("""
            SELECT kind, status, COUNT(*) AS n, MIN(run_at) AS oldest FROM jobs WHERE status IN ('queued', 'running', 'dead') GROUP BY kind, status
            """).all().map { row in
            (try row.decode(column: "kind", as: String.self), try row.decode(column: "status", as: String.self),
             try row.decode(column: "n", as: Int.self), try row.decode(column: "oldest", as: Date?.self))
        }
    }

    /// Every job, oldest first (tests and operators).
    func all() async throws -> [Row] {
        try await database.sql.raw("SELECT id, kind, status, attempts, locked_by, order_id, last_error, run_at FROM jobs ORDER BY created_at, id").all().map { row in
            Row(id: try row.decode(column: "id", as: JobID.self), kind: try row.decode(column: "kind", as: String.self),
                status: try row.decode(column: "status", as: String.self), attempts: try row.decode(column: "attempts", as: Int.self),
                lockedBy: try row.decode(column: "locked_by", as: String?.self), orderID: try row.decode(column: "order_id", as: OrderID?.self),
                lastError: try row.decode(column: "last_error", as: String?.self), runAt: try row.decode(column: "run_at", as: Date.self))
        }
    }
}

/// What a batch handler says of each job it was given.
enum JobOutcome: Sendable {
    case done
    /// Why, and the database constraint that refused it, if one did: counted
    /// like one refused on a request (`folio_constraint_violations_total`).
    case failed(String, constraint: DatabaseConstraint? = nil)
    /// Not done, and not failing: run it again at this time.
    case later(Date)

    /// The outcome of a job that threw `error`.
    static func failed(_ error: any Error) -> JobOutcome {
        // PostgresNIO's own description of its errors says nothing (it is meant for responses): an operator
        // reading `last_error` gets what PostgreSQL said and its SQLSTATE.
        .failed(error is PSQLError ? DatabaseErrorText.forLog(error) : String(describing: error), constraint: DatabaseConstraint(error))
    }
}

/// Runs jobs inside `folio serve` (or alone as `folio worker`) until shutdown;
/// the jobs in flight finish first.
struct JobWorker: Service {
    /// Runs a batch of jobs of one kind; says how each went (a job left out counts as failed).
    typealias Handler = @Sendable ([ClaimedJob]) async -> [JobID: JobOutcome]

    let queue: JobQueue
    let handlers: [JobPayload.Kind: Handler]
    let name: String
    let pollInterval: Duration
    let logger: Logger
    /// Work that runs about once a second whatever the load (matching resting orders, schedules).
    let onIdle: (@Sendable () async -> Void)?
    /// Lanes that each claim and run their own batch: while one waits on the
    /// broker or a lock, the others go on.
    var concurrency: Int = 4
    /// Jobs a lane claims at once; fills of one account in a batch are applied in one transaction.
    var batchSize: Int = 16
    /// Told how full each claim was and how many jobs finished, so placements keep to the worker's pace.
    var pace: SubmissionPace? = nil
    /// The kinds this worker claims: mail has a worker of its own, so a slow
    /// mail vendor never holds up orders.
    var filter: JobQueue.Filter = .all
    /// Where a job refused by a database constraint is counted, as a request's would be.
    var violations: ConstraintViolations? = nil

    func run() async throws {
        logger.info("job worker started", metadata: ["worker": .string(name), "concurrency": .stringConvertible(concurrency)])
        await withTaskGroup(of: Void.self) { group in
            for lane in 0..<max(1, concurrency) {
                group.addTask { await runLane(lane) }
            }
        }
        pace?.workerStopped()
        logger.info("job worker stopped", metadata: ["worker": .string(name)])
    }

    /// One loop of claims under its own lease holder name; the first lane also
    /// runs the once-a-second work.
    private func runLane(_ lane: Int) async {
        var lastTick = ContinuousClock.now
        let holder = lane == 0 ? name : "\(name)-\(lane)"
        // Claims failing in a row (the database gone): said once, then once a minute, and tried less often, not every poll.
        var failures = 0, lastSaid = ContinuousClock.now
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let outcome = await runBatch(as: holder)
            if lane == 0, ContinuousClock.now - lastTick >= .seconds(1) {
                await onIdle?()
                lastTick = ContinuousClock.now
            }
            switch outcome {
            case .worked, .idle:
                if failures > 0 { logger.notice("job claims work again", metadata: ["worker": .string(holder), "failed": .stringConvertible(failures)]) }
                failures = 0
                if case .idle = outcome { try? await Task.sleep(for: pollInterval) }
            case .claimFailed(let error):
                failures += 1
                if failures == 1 || ContinuousClock.now - lastSaid >= .seconds(60) {
                    logger.error("job claim failed", metadata: [
                        "worker": .string(holder), "error": .string(DatabaseErrorText.forLog(error)), "failed_in_a_row": .stringConvertible(failures)])
                    lastSaid = ContinuousClock.now
                }
                try? await Task.sleep(for: Self.backoff(after: failures, poll: pollInterval))
            }
        }
    }

    /// The wait after `failures` failed claims in a row: the poll interval, doubling, at most five seconds.
    static func backoff(after failures: Int, poll: Duration) -> Duration {
        min(poll * (1 << min(max(failures - 1, 0), 10)), .seconds(5))
    }

    enum BatchOutcome {
        case worked, idle
        case claimFailed(any Error)
    }

    /// Claims and runs one batch; false when nothing was due.
    @discardableResult
    func runOnce(as holder: String? = nil) async -> Bool {
        switch await runBatch(as: holder) {
        case .worked: return true
        case .idle: return false
        case .claimFailed(let error):
            logger.error("job claim failed", metadata: ["error": .string(DatabaseErrorText.forLog(error))])
            return false
        }
    }

    private func runBatch(as holder: String? = nil) async -> BatchOutcome {
        let jobs: [ClaimedJob]
        do {
            jobs = try await queue.claim(as: holder ?? name, limit: batchSize, filter: filter)
        } catch {
            return .claimFailed(error)
        }
        pace?.claimed(jobs.count, of: batchSize)
        guard !jobs.isEmpty else { return .idle }
        defer { pace?.finished(jobs.count) }
        // Each run of consecutive jobs of one kind is a batch, so jobs run in the order they were due.
        var batches: [(kind: JobPayload.Kind, jobs: [ClaimedJob])] = []
        for job in jobs {
            if batches.last?.kind == job.payload.kind { batches[batches.count - 1].jobs.append(job) } else { batches.append((job.payload.kind, [job])) }
        }
        // A claim of several batches keeps every job's lease while it runs: a job waiting behind a long batch
        // (a Plaid sync, a backup) is not taken over by another worker meanwhile.
        if batches.count > 1 {
            let all = batches
            await keepingLeases(of: jobs, kind: "claim") { await runBatches(all) }
        } else {
            await runBatches(batches)
        }
        return .worked
    }

    private func runBatches(_ batches: [(kind: JobPayload.Kind, jobs: [ClaimedJob])]) async {
        for (kind, batch) in batches {
            let outcomes = await runKeepingLeases(kind, batch)
            var done: [ClaimedJob] = []
            for job in batch {
                switch outcomes[job.id] ?? .failed(handlers[kind] == nil ? "no handler for \(kind.rawValue)" : "the handler gave no outcome") {
                case .done:
                    done.append(job)
                case .later(let runAt):
                    do {
                        if try await !queue.postpone(job, until: runAt) { logger.warning("job lease lost before it was postponed", metadata: ["job_id": .string(job.id.description)]) }
                    } catch {
                        logger.error("could not postpone a job", metadata: ["job_id": .string(job.id.description), "error": .string(DatabaseErrorText.forLog(error))])
                    }
                case .failed(let error, let constraint):
                    if let constraint { violations?.record(constraint) }
                    logger.warning("job failed", metadata: [
                        "job_id": .string(job.id.description), "kind": .string(kind.rawValue), "attempt": .stringConvertible(job.attempts),
                        "error": .string(error)])
                    do {
                        if try await !queue.fail(job, error: error) { logger.warning("job lease lost before it failed", metadata: ["job_id": .string(job.id.description)]) }
                    } catch {
                        logger.error("could not record a job failure", metadata: ["job_id": .string(job.id.description), "error": .string(DatabaseErrorText.forLog(error))])
                    }
                }
            }
            guard !done.isEmpty else { continue }
            do {
                let finished = try await queue.complete(done)
                for job in done where !finished.contains(job.id) {
                    logger.warning("job lease lost before it completed", metadata: ["job_id": .string(job.id.description)])
                }
            } catch {
                logger.error("could not complete jobs", metadata: ["error": .string(DatabaseErrorText.forLog(error))])
            }
        }
    }

    /// Kinds bounded well inside one lease (a broker call, one message), run without a lease keeper.
    static let shortKinds: Set<JobPayload.Kind> = [.submitOrder, .sendMail]

    /// Runs a batch's handler while a side task renews the batch's leases every
    /// third of a lease, so a long job (a backup, a retention run) is not
    /// claimed by another worker halfway and run twice.
    private func runKeepingLeases(_ kind: JobPayload.Kind, _ batch: [ClaimedJob]) async -> [JobID: JobOutcome] {
        guard let handler = handlers[kind] else { return [:] }
        if Self.shortKinds.contains(kind) { return await handler(batch) }
        return await keepingLeases(of: batch, kind: kind.rawValue) { await handler(batch) }
    }

    /// Runs `body` while a side task renews the leases of `jobs` every third of a lease.
    private func keepingLeases<T: Sendable>(of jobs: [ClaimedJob], kind: String, _ body: @escaping @Sendable () async -> T) async -> T {
        let queue = self.queue, logger = self.logger
        return await withTaskGroup(of: T?.self) { group in
            group.addTask { await body() }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(JobQueue.lease / 3))
                    if Task.isCancelled { break }
                    do { try await queue.renew(jobs) } catch {
                        logger.warning("could not renew a job's lease", metadata: ["kind": .string(kind), "error": .string(DatabaseErrorText.forLog(error))])
                    }
                }
                return nil
            }
            var result: T?
            while let next = await group.next() {
                if let next {
                    result = next
                    group.cancelAll()
                }
            }
            return result!
        }
    }

    /// Runs jobs until none is due (tests, and `folio worker --drain`).
    func drain() async {
        while await runOnce() {}
    }

    /// Runs each job of the batch on its own with `body`; a thrown error fails that job only.
    static func each(_ body: @escaping @Sendable (ClaimedJob) async throws -> Void) -> Handler {
        { jobs in
            var outcomes: [JobID: JobOutcome] = [:]
            for job in jobs {
                do {
                    try await body(job)
                    outcomes[job.id] = .done
                } catch {
                    outcomes[job.id] = .failed(error)
                }
            }
            return outcomes
        }
    }
}
