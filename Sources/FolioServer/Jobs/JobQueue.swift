import FluentKit
import Foundation
import Logging
import ServiceLifecycle
import SQLKit

/// A durable job queue in the database. Jobs are enqueued inside the caller's
/// transaction (so an order and the job that submits it commit together),
/// claimed by one worker at a time (`FOR UPDATE SKIP LOCKED` on PostgreSQL;
/// SQLite's single connection runs the claim as one atomic statement), retried
/// with exponential back-off and jitter, and kept as `dead` with their last
/// error after the last attempt. A claim is a lease: a job whose worker died is
/// claimed again when the lease runs out.
struct JobQueue: Sendable {
    let database: FolioDatabase
    let clock: AppClock

    static let lease: TimeInterval = 60

    func enqueue(kind: String, payload: [String: String], runAt: Date? = nil, maxAttempts: Int = 8, on db: any Database) async throws {
        let now = clock.now()
        let job = Job()
        job.id = UUID()
        job.kind = kind
        job.payload = String(decoding: try FolioJSON.encode(payload), as: UTF8.self)
        job.status = "queued"
        job.attempts = 0
        job.maxAttempts = maxAttempts
        job.runAt = runAt ?? now
        job.createdAt = now
        job.updatedAt = now
        try await job.create(on: db)
    }

    /// The next due job, now leased to `worker`; nil when none is due.
    func claim(worker: String) async throws -> Job? {
        let now = clock.now()
        // A job whose lease ran out after its last attempt crashed its worker every time: give up on it.
        try await database.sql.raw("""
            UPDATE jobs SET status = 'dead', last_error = 'the worker stopped during the last attempt', locked_by = NULL, locked_until = NULL, updated_at = \(bind: now)
            WHERE status = 'running' AND locked_until < \(bind: now) AND attempts >= max_attempts
            """).run()
        let skipLocked = database.kind == .postgres ? " FOR UPDATE SKIP LOCKED" : ""
        let rows = try await database.sql.raw("""
            UPDATE jobs SET status = 'running', locked_by = \(bind: worker), locked_until = \(bind: now.addingTimeInterval(Self.lease)),
                attempts = attempts + 1, updated_at = \(bind: now)
            WHERE id = (SELECT id FROM jobs
                        WHERE (status = 'queued' AND run_at <= \(bind: now)) OR (status = 'running' AND locked_until < \(bind: now) AND attempts < max_attempts)
                        ORDER BY run_at LIMIT 1\(unsafeRaw: skipLocked))
            RETURNING id
            """).all()
        guard let row = rows.first else { return nil }
        return try await Job.find(try row.decode(column: "id", as: UUID.self), on: database.db)
    }

    /// Only the worker that holds the lease may finish the job.
    func complete(_ job: Job) async throws {
        try await Job.query(on: database.db).filter(\.$id == job.id!).filter(\.$lockedBy == job.lockedBy)
            .set(\.$status, to: "done").set(\.$lockedBy, to: nil).set(\.$lockedUntil, to: nil).set(\.$updatedAt, to: clock.now()).update()
    }

    /// Schedules another attempt, or marks the job dead after its last.
    func fail(_ job: Job, error: String) async throws {
        let now = clock.now()
        let dead = job.attempts >= job.maxAttempts
        let delay = min(pow(2, Double(job.attempts)), 600) * Double.random(in: 0.5...1.5)
        try await Job.query(on: database.db).filter(\.$id == job.id!).filter(\.$lockedBy == job.lockedBy)
            .set(\.$status, to: dead ? "dead" : "queued").set(\.$runAt, to: now.addingTimeInterval(dead ? 0 : delay))
            .set(\.$lockedBy, to: nil).set(\.$lockedUntil, to: nil).set(\.$lastError, to: String(error.prefix(2000)))
            .set(\.$updatedAt, to: now).update()
    }
}

/// Runs jobs inside `folio serve` (or alone as `folio worker`) until shutdown;
/// a job in flight finishes first.
struct JobWorker: Service {
    typealias Handler = @Sendable (Job) async throws -> Void

    let queue: JobQueue
    let handlers: [String: Handler]
    let name: String
    let pollInterval: Duration
    let logger: Logger
    /// Work that runs about once a second whatever the load (matching resting orders).
    let onIdle: (@Sendable () async -> Void)?
    /// Jobs run at once by this worker, each claimed on its own: while one waits
    /// on the broker or a lock, the others go on.
    var concurrency: Int = 4

    func run() async throws {
        logger.info("job worker started", metadata: ["worker": .string(name), "concurrency": .stringConvertible(concurrency)])
        await withTaskGroup(of: Void.self) { group in
            for lane in 0..<max(1, concurrency) {
                group.addTask { await runLane(lane) }
            }
        }
        logger.info("job worker stopped", metadata: ["worker": .string(name)])
    }

    /// One loop of claims under its own lease holder name; the first lane also
    /// runs the once-a-second work.
    private func runLane(_ lane: Int) async {
        var lastTick = ContinuousClock.now
        let holder = lane == 0 ? name : "\(name)-\(lane)"
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let worked = await runOnce(as: holder)
            if lane == 0, ContinuousClock.now - lastTick >= .seconds(1) {
                await onIdle?()
                lastTick = ContinuousClock.now
            }
            if !worked { try? await Task.sleep(for: pollInterval) }
        }
    }

    /// Claims and runs one job; false when none was due.
    @discardableResult
    func runOnce(as holder: String? = nil) async -> Bool {
        let job: Job
        do {
            guard let claimed = try await queue.claim(worker: holder ?? name) else { return false }
            job = claimed
        } catch {
            logger.error("job claim failed", metadata: ["error": .string(String(reflecting: error))])
            return false
        }
        do {
            guard let handler = handlers[job.kind] else { throw JobError.unknownKind(job.kind) }
            try await handler(job)
            try await queue.complete(job)
        } catch {
            logger.warning("job failed", metadata: ["job_id": .string(job.id!.uuidString), "kind": .string(job.kind), "attempt": .stringConvertible(job.attempts), "error": .string(String(reflecting: error))])
            try? await queue.fail(job, error: String(describing: error))
        }
        return true
    }

    /// Runs jobs until none is due (tests, and `folio worker --drain`).
    func drain() async {
        while await runOnce() {}
    }

    enum JobError: Error {
        case unknownKind(String)
        case badPayload
    }
}
