import Synchronization

/// A hard cap on orders waiting for a worker, across every process.
///
/// `SubmissionPace` slows placements down to the fills of this process's own
/// worker; beside a separate `folio worker` (production's layout) no process
/// that takes orders sees the queue at all. So past `limit` submit jobs
/// waiting in the database, a placement is refused before it is priced (503
/// `orders_backlogged`, nothing written) rather than accepted to reach the
/// market long after its customer pressed the button. The count is read at
/// most once per `refresh`, by one placement while the others use the last
/// count; if it cannot be read, the last count stands.
final class OrderBacklog: Sendable {
    struct Full: Error, CustomStringConvertible {
        let waiting: Int
        let limit: Int
        var description: String { "\(waiting) orders wait for a worker (the limit is \(limit))" }
    }

    let limit: Int
    let refresh: Duration
    /// Counts each refusal (`folio_orders_refused_total{reason="backlog"}`).
    let metrics: FolioMetrics?
    private let count: @Sendable () async throws -> Int

    private struct State {
        var waiting = 0
        var readAt: ContinuousClock.Instant?
        var reading = false
    }

    private let state = Mutex(State())

    init(limit: Int, refresh: Duration = .milliseconds(250), metrics: FolioMetrics? = nil, count: @escaping @Sendable () async throws -> Int) {
        self.limit = limit
        self.refresh = refresh
        self.metrics = metrics
        self.count = count
    }

    /// Throws `Full` when as many orders as the limit wait already.
    func check() async throws {
        let now = ContinuousClock.now, refresh = self.refresh
        let (known, due) = state.withLock { state -> (Int, Bool) in
            let stale = state.readAt.map { now - $0 >= refresh } ?? true
            let due = stale && !state.reading
            if due { state.reading = true }
            return (state.waiting, due)
        }
        var waiting = known
        if due {
            let read = try? await count()
            waiting = read ?? known
            state.withLock { state in
                state.waiting = waiting
                state.readAt = ContinuousClock.now
                state.reading = false
            }
        }
        if waiting >= limit {
            metrics?.orderRefused(reason: "backlog")
            throw Full(waiting: waiting, limit: limit)
        }
    }
}
