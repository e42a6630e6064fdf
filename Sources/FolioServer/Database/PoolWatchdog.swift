import AsyncKit
import NIOConcurrencyHelpers
import Foundation
import Logging
import ServiceLifecycle

/// Ends the process when a connection pool has stopped giving out
/// connections for good. After PostgreSQL ends connections that are in use
/// (a restart, a failover, `pg_terminate_backend`), the pool of an event loop
/// can be left with every connection counted as lent out and none coming
/// back: each request on that loop then waits 60 s and fails, and nothing in
/// the process recovers. A new process does, so this one stops: systemd's
/// `Restart=on-failure` (or any supervisor) starts it again.
///
/// Every `interval`, each event loop's pool is asked for one trivial
/// statement. A pool whose request for a connection times out (the pool's
/// own 60 s) `wedgedAfter` times in a row, some six minutes without one
/// connection to spare, is taken as stuck: the service fails, and the group
/// shuts down gracefully (requests in flight end) and the process exits with
/// an error.
struct PoolWatchdog: Service {
    /// One trivial statement on each event loop's pool; each result in loop order.
    let pingEachPool: @Sendable () async -> [Result<Void, any Error>]
    let logger: Logger
    var interval: Duration = .seconds(30)
    var wedgedAfter = 4
    /// What ends the process (tests see it called instead).
    var onWedged: @Sendable (String) throws -> Void = { throw Wedged(reason: $0) }

    struct Wedged: Error, CustomStringConvertible {
        let reason: String
        var description: String { reason }
    }

    func run() async throws {
        var timeouts: [Int: Int] = [:]
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            guard !Task.isShuttingDownGracefully, !Task.isCancelled else { return }
            for (loop, result) in await pingEachPool().enumerated() {
                if case .failure(let error) = result, error is ConnectionPoolTimeoutError {
                    timeouts[loop, default: 0] += 1
                } else {
                    timeouts[loop] = 0
                }
            }
            if let (loop, count) = timeouts.first(where: { $0.value >= wedgedAfter }) {
                let reason = "the database connection pool of event loop \(loop) gave out no connection in \(count) checks in a row"
                logger.critical("stopping: \(reason); a new process starts with fresh connections", metadata: ["loop": .stringConvertible(loop)])
                try onWedged(reason)
                return
            }
        }
    }
}

/// `work`'s result, or nil once `limit` has passed. The work goes on in a task of its own (a request for a pooled
/// connection cannot be cancelled): the caller is not held for it, which is the point.
func resultWithin<T: Sendable>(_ limit: Duration, _ work: @escaping @Sendable () async -> T) async -> T? {
    let answered = NIOLockedValueBox(false)
    return await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
        func answer(_ value: T?) {
            if answered.withLockedValue({ let first = !$0; $0 = true; return first }) { continuation.resume(returning: value) }
        }
        let timer = Task {
            guard (try? await Task.sleep(for: limit)) != nil else { return }  // canceled: the work answered
            answer(nil)
        }
        Task {
            answer(await work())
            timer.cancel()  // no sleeping task left behind for each answer in time
        }
    }
}
