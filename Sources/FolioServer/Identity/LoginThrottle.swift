import FluentKit
import Foundation
import NIOConcurrencyHelpers

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
    let store: IdentityStore
    private let unknown = NIOLockedValueBox<[String: (failures: Int, lockedUntil: Date?)]>([:])

    init(clock: AppClock, store: IdentityStore) {
        self.clock = clock
        self.store = store
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
        if let attempt = try await store.claimSignInAttempt(
            userID: userID, now: now, threshold: Self.threshold, provisionalLock: now.addingTimeInterval(Self.baseDelay), on: db) {
            return .allowed(attempt: attempt)
        }
        let lockedUntil = try await store.lockedUntil(userID: userID, on: db) ?? now
        return .locked(retryAfter: max(1, Int(lockedUntil.timeIntervalSince(now).rounded(.up))))
    }

    /// The attempt failed: from the threshold on, the account waits.
    /// Returns the delay imposed, if any.
    func failed(userID: UUID, attempt: Int, on db: any Database) async throws -> TimeInterval? {
        guard attempt >= Self.threshold else { return nil }
        let delay = Self.delay(afterFailures: attempt)
        try await store.lock(userID: userID, until: clock.now().addingTimeInterval(delay), on: db)
        return delay
    }

    func succeeded(userID: UUID, on db: any Database) async throws {
        try await store.clearSignInFailures(userID: userID, on: db)
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
