import Foundation
import Synchronization

/// The database checks behind `/health/ready` and `/health/detailed`, run for
/// every prober at once: the probes are public, and each check would
/// otherwise hold a pooled connection for as long as the database takes, so a
/// slow database and a few probes would leave the pool to them.
///
/// - Probes that arrive while a check runs wait on that check and share its
///   result: one check at a time, whoever asks.
/// - A check that has not ended within `deadline` answers "timed out" (the
///   database `down`, the migrations `unknown`); it runs on, and no other
///   starts until it ends.
actor HealthProbe {
    struct Result: Sendable {
        var database: HealthController.Component
        var migrations: HealthController.Component
    }

    static let deadline: Duration = .seconds(2)

    private var running: Task<Result, Never>?

    func result(_ check: @escaping @Sendable () async -> Result) async -> Result {
        let task: Task<Result, Never>
        if let running {
            task = running
        } else {
            task = Task { await check() }
            running = task
            Task {
                _ = await task.value
                self.ended(task)
            }
        }
        return await Self.value(of: task, within: Self.deadline) ?? Self.timedOut
    }

    private func ended(_ task: Task<Result, Never>) {
        if running == task { running = nil }
    }

    static let timedOut = Result(
        database: .init(status: "down", error: "no answer within \(deadline.components.seconds) s"),
        migrations: .init(status: "unknown", error: "could not read migrations"))

    /// `task`'s value, or nil once `limit` has passed (the task runs on).
    static func value<T: Sendable>(of task: Task<T, Never>, within limit: Duration) async -> T? {
        await withCheckedContinuation { continuation in
            let waiting = Waiting(continuation)
            Task { waiting.resume(returning: await task.value) }
            Task {
                try? await Task.sleep(for: limit)
                waiting.resume(returning: nil)
            }
        }
    }

    /// A continuation resumed once, by whichever comes first.
    private final class Waiting<T: Sendable>: Sendable {
        private let continuation: Mutex<CheckedContinuation<T?, Never>?>

        init(_ continuation: CheckedContinuation<T?, Never>) {
            self.continuation = Mutex(continuation)
        }

        func resume(returning value: T?) {
            continuation.withLock { $0.take() }?.resume(returning: value)
        }
    }
}
