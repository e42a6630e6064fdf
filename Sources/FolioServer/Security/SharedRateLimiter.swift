import Foundation
import SQLKit

/// Token buckets kept in the database (`rate_limit_buckets`), so every
/// instance takes from the same bucket: the `/api/auth/*` limit holds for a
/// client however many instances a balancer spreads it over.
///
/// A bucket is one number, the time at which it is full again (the generic
/// cell rate algorithm): each request moves it one interval (a minute over the
/// limit) later, starting from now when it lies in the past, and a request
/// that would move it more than a minute ahead is refused without moving it.
/// One statement decides and takes, atomically on both databases, with no
/// lock held between requests. The time is each instance's own clock, so the
/// machines' clocks must agree (NTP), as the heartbeats need too.
struct SharedRateLimiter: Sendable {
    let database: FolioDatabase
    let clock: AppClock

    static let window: Int64 = 60_000_000

    /// Takes one token from `key`'s bucket of `perMinute` tokens.
    func take(_ key: String, perMinute: Int) async throws -> RateLimiter.Decision {
        let now = Self.microseconds(clock.now())
        // At most one token a microsecond; the bucket holds exactly `rate` of them.
        let rate = Int64(min(max(1, perMinute), Int(Self.window)))
        let interval = Self.window / rate
        let capacity = rate * interval
        // The later of the stored time and now, as both databases write it.
        let start: SQLQueryString = "CASE WHEN rate_limit_buckets.full_at > \(bind: now) THEN rate_limit_buckets.full_at ELSE \(bind: now) END"
        let taken = try await database.sql.raw("""
            INSERT INTO rate_limit_buckets (key, full_at) VALUES (\(bind: key), \(bind: now + interval))
            ON CONFLICT (key) DO UPDATE SET full_at = \(start) + \(bind: interval)
            WHERE \(start) + \(bind: interval) <= \(bind: now + capacity)
            RETURNING full_at
            """).first()?.decode(column: "full_at", as: Int64.self)
        if let fullAt = taken {
            return RateLimiter.Decision(
                allowed: true, limit: perMinute, remaining: Int((now + capacity - fullAt) / interval),
                retryAfter: 0, reset: Self.seconds(fullAt - now))
        }
        // Refused: the row exists and was left as it was.
        let stored = try await database.sql.raw("SELECT full_at FROM rate_limit_buckets WHERE key = \(bind: key)")
            .first()?.decode(column: "full_at", as: Int64.self) ?? now
        let fullAt = max(stored, now)
        return RateLimiter.Decision(
            allowed: false, limit: perMinute, remaining: 0,
            retryAfter: max(1, Self.seconds(fullAt + interval - capacity - now)), reset: Self.seconds(fullAt - now))
    }

    static func microseconds(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 * 1_000_000).rounded(.down))
    }

    /// Whole seconds, rounded up.
    private static func seconds(_ microseconds: Int64) -> Int {
        Int((max(0, microseconds) + 999_999) / 1_000_000)
    }
}
