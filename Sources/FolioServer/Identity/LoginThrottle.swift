import FluentKit
import Foundation
import NIOConcurrencyHelpers
import SQLKit

/// Failed-login accounting: from the fifth failure in a row, an account waits
/// 30 s, then 60 s, 120 s … up to 15 minutes; a success resets it.
///
/// An attempt is claimed in the database before the password is checked, in
/// one conditional statement, so a burst of parallel guesses cannot all slip
/// past the count while bcrypt is busy. Counts live in `users`, so they hold
/// across instances. Unknown emails are throttled the same way (in memory), so
/// a lockout answer does not reveal whether an account exists. A password reset
/// always clears the lock: nobody can lock an owner out for good.
struct LoginThrottle: Sendable {
    static let threshold = 5
    static let baseDelay: TimeInterval = 30
    static let maximumDelay: TimeInterval = 900

    let clock: AppClock
    private let unknown = NIOLockedValueBox<[String: (failures: Int, lockedUntil: Date?)]>([:])

    init(clock: AppClock) {
        self.clock = clock
    }

    enum Claim {
        case allowed(attempt: Int)
        case locked(retryAfter: Int)
    }

    static func delay(afterFailures failures: Int) -> TimeInterval {
        min(baseDelay * pow(2, Double(max(0, failures - threshold))), maximumDelay)
    }

    /// Counts this attempt as a failure until it proves otherwise; refuses while the account waits.
    func claim(userID: UUID, on db: any Database) async throws -> Claim {
        let now = clock.now()
        let provisional = now.addingTimeInterval(Self.baseDelay)
        let rows = try await (db as! any SQLDatabase).raw("""
            UPDATE users SET failed_login_count = failed_login_count + 1,
                locked_until = CASE WHEN failed_login_count + 1 >= \(bind: Self.threshold) THEN \(bind: provisional) ELSE locked_until END,
                updated_at = \(bind: now)
            WHERE id = \(bind: userID) AND (locked_until IS NULL OR locked_until <= \(bind: now))
            RETURNING failed_login_count
            """).all()
        if let row = rows.first {
            return .allowed(attempt: try row.decode(column: "failed_login_count", as: Int.self))
        }
        let lockedUntil = try await User.find(userID, on: db)?.lockedUntil ?? now
        return .locked(retryAfter: max(1, Int(lockedUntil.timeIntervalSince(now).rounded(.up))))
    }

    /// The attempt failed: from the threshold on, the account waits.
    /// Returns the delay imposed, if any.
    func failed(userID: UUID, attempt: Int, on db: any Database) async throws -> TimeInterval? {
        guard attempt >= Self.threshold else { return nil }
        let delay = Self.delay(afterFailures: attempt)
        try await User.query(on: db).filter(\.$id == userID).set(\.$lockedUntil, to: clock.now().addingTimeInterval(delay)).update()
        return delay
    }

    func succeeded(userID: UUID, on db: any Database) async throws {
        try await User.query(on: db).filter(\.$id == userID).set(\.$failedLoginCount, to: 0).set(\.$lockedUntil, to: nil).update()
    }

    // MARK: Unknown emails, in memory

    func claimUnknown(email: String) -> Claim {
        let now = clock.now()
        return unknown.withLockedValue { entries in
            if entries.count > 100_000 { entries = entries.filter { ($0.value.lockedUntil ?? .distantPast) > now } }
            var entry = entries[email] ?? (0, nil)
            if let lockedUntil = entry.lockedUntil, lockedUntil > now {
                return .locked(retryAfter: max(1, Int(lockedUntil.timeIntervalSince(now).rounded(.up))))
            }
            entry.failures += 1
            if entry.failures >= Self.threshold { entry.lockedUntil = now.addingTimeInterval(Self.delay(afterFailures: entry.failures)) }
            entries[email] = entry
            return .allowed(attempt: entry.failures)
        }
    }
}
