import Foundation
import Synchronization

/// Work that should run at most once per interval (housekeeping on a busy
/// path). A class, so every copy of the value that holds it shares one clock.
final class Throttle: Sendable {
    let interval: TimeInterval
    private let last = Mutex<Date>(.distantPast)

    init(every interval: TimeInterval) {
        self.interval = interval
    }

    /// True at most once per interval; true at once when the clock moved back.
    func isDue(at now: Date) -> Bool {
        last.withLock { last in
            guard abs(now.timeIntervalSince(last)) >= interval else { return false }
            last = now
            return true
        }
    }
}
