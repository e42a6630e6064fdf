import Foundation
import NIOConcurrencyHelpers

/// Token buckets kept in memory, one per key (client address, user, …).
///
/// Per instance: N instances allow N times the rate. That is acceptable for
/// request throttling (docs/ARCHITECTURE.md); the `/api/auth/*` bucket and
/// failed-login counting, which must hold across instances, live in the
/// database instead (`SharedRateLimiter`, `LoginThrottle`).
final class RateLimiter: Sendable {
    struct Decision: Sendable {
        var allowed: Bool
        var limit: Int
        var remaining: Int
        /// Seconds until a request would be allowed again (0 when allowed).
        var retryAfter: Int
        /// Seconds until the bucket is full again.
        var reset: Int
    }

    private struct Bucket {
        var tokens: Double
        var updated: Date
    }

    let clock: AppClock
    private let buckets = NIOLockedValueBox<[String: Bucket]>([:])
    private let calls = NIOLockedValueBox<Int>(0)

    init(clock: AppClock) {
        self.clock = clock
    }

    /// Takes one token from `key`'s bucket, which holds `perMinute` tokens and refills continuously.
    func take(_ key: String, perMinute: Int) -> Decision {
        let now = clock.now()
        let capacity = Double(perMinute)
        let refillPerSecond = capacity / 60
        let decision = buckets.withLockedValue { buckets -> Decision in
            var bucket = buckets[key] ?? Bucket(tokens: capacity, updated: now)
            bucket.tokens = min(capacity, bucket.tokens + max(0, now.timeIntervalSince(bucket.updated)) * refillPerSecond)
            bucket.updated = now
            let allowed = bucket.tokens >= 1
            if allowed { bucket.tokens -= 1 }
            buckets[key] = bucket
            return Decision(
                allowed: allowed, limit: perMinute, remaining: Int(bucket.tokens.rounded(.down)),
                retryAfter: allowed ? 0 : Int(((1 - bucket.tokens) / refillPerSecond).rounded(.up)),
                reset: Int(((capacity - bucket.tokens) / refillPerSecond).rounded(.up)))
        }
        pruneNowAndThen(now: now)
        return decision
    }

    /// Drops buckets that have been full for a while, so memory stays bounded.
    private func pruneNowAndThen(now: Date) {
        let due = calls.withLockedValue { calls -> Bool in
            calls += 1
            return calls % 10_000 == 0
        }
        guard due else { return }
        buckets.withLockedValue { buckets in
            buckets = buckets.filter { now.timeIntervalSince($0.value.updated) < 120 }
        }
    }
}
