import NIOConcurrencyHelpers

/// Keeps placements from outrunning the worker that fills them.
///
/// Under overload the API could accept orders faster than the worker submits
/// and fills them; the queue would grow without bound and a market order would
/// reach the market seconds or minutes after its customer pressed the button,
/// at a price long gone. So when the worker falls behind (its claims come back
/// full: more submit jobs wait than a batch holds), each new placement waits
/// for its turn, and every job the worker finishes gives one waiting placement
/// its turn. Accepted orders then come at the pace fills do.
///
/// It knows only the worker of its own process: with no worker here (a
/// separate `folio worker`) nobody reports and nobody waits. A placement never
/// waits longer than `longestWait`, so a stuck worker slows the API down but
/// does not stop it.
final class SubmissionPace: Sendable {
    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Void, Never>
        var timeout: Task<Void, Never>

        func resume() {
            timeout.cancel()
            continuation.resume()
        }
    }

    private struct State {
        var behind = false
        var waiters: [Waiter] = []
        var nextID: UInt64 = 0
    }

    private let state = NIOLockedValueBox(State())
    let longestWait: Duration

    init(longestWait: Duration = .seconds(2)) {
        self.longestWait = longestWait
    }

    /// Returns at once while the worker keeps up; otherwise when the worker
    /// has finished a job for this placement, or after `longestWait`.
    func turn() async {
        guard state.withLockedValue({ $0.behind }) else { return }
        let id = state.withLockedValue { state in
            state.nextID += 1
            return state.nextID
        }
        let longestWait = longestWait
        await withCheckedContinuation { continuation in
            state.withLockedValue { state in
                guard state.behind else { return continuation.resume() }
                // Started once the waiter is in the list, so that it cannot fire before it.
                let timeout = Task { [weak self] in
                    guard (try? await Task.sleep(for: longestWait)) != nil else { return }
                    self?.release(id)
                }
                state.waiters.append(Waiter(id: id, continuation: continuation, timeout: timeout))
            }
        }
    }

    /// The worker claimed `count` jobs with room for `batchSize`: a full claim
    /// means more are waiting; a short one that the worker has caught up.
    func claimed(_ count: Int, of batchSize: Int) {
        let released = state.withLockedValue { state -> [Waiter] in
            state.behind = count >= batchSize
            guard !state.behind else { return [] }
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in released { waiter.resume() }
    }

    /// The worker finished `count` jobs: as many waiting placements, oldest first, get their turn.
    func finished(_ count: Int) {
        let released = state.withLockedValue { state -> ArraySlice<Waiter> in
            let taken = state.waiters.prefix(count)
            state.waiters.removeFirst(taken.count)
            return taken
        }
        for waiter in released { waiter.resume() }
    }

    /// The worker stopped: nobody waits for it any more.
    func workerStopped() {
        claimed(0, of: 1)
    }

    /// Placements waiting now (tests).
    var waiting: Int { state.withLockedValue { $0.waiters.count } }

    private func release(_ id: UInt64) {
        let waiter = state.withLockedValue { state -> Waiter? in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return state.waiters.remove(at: index)
        }
        waiter?.resume()
    }
}
