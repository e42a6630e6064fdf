import FluentKit
import SQLKit
import Foundation
import Crypto
#if canImport(Glibc)
import Glibc
#endif

/// Failed password and second-factor checks, counted two ways (docs/SECURITY.md):
///
/// - **Per account and client address.** From the fifth failure in a row from
///   one address, that address waits 30 s, then 60 s, 120 s … up to 15
///   minutes. Another address is not held up, so a stranger guessing at an
///   account cannot lock its owner out.
/// - **Per account, from every address.** From the fiftieth failure in a row,
///   wherever they came from, the account waits 15 minutes: the ceiling
///   against guessing spread over many addresses. The count starts again
///   after each wait, and addresses the owner signed in from within 30 days
///   are not held by it (their own limit still applies).
///
/// A success resets both for that address and the account. An attempt is
/// claimed in the database before the password is checked, in one
/// conditional statement per count, so a burst of parallel guesses cannot
/// slip past the counts while bcrypt is busy; the counts hold across
/// instances. Unknown emails are counted the same way, in the database under
/// an HMAC of the address, so a lockout answer does not reveal whether an
/// account exists. A password reset
/// clears every count: nobody can lock an owner out for good.
///
/// Sign-in, changing the password, turning two-factor on or off, making new
/// recovery codes and confirming an erasure all check credentials through this one throttle.
struct LoginThrottle: Sendable {
    static let threshold = 5
    static let baseDelay: TimeInterval = 30
    static let maximumDelay: TimeInterval = 900
    static let accountThreshold = 50
    static let accountDelay: TimeInterval = 900

    let clock: AppClock
    let store: IdentityStore
    /// Keys the HMAC under which unknown emails are counted (derived from SECRET_KEY).
    let emailKey: SymmetricKey

    init(clock: AppClock, store: IdentityStore, secretKey: String) {
        self.clock = clock
        self.store = store
        self.emailKey = SecureToken.derivedKey(from: secretKey, purpose: "unknown-sign-in")
    }

    enum Claim {
        case allowed(Attempt)
        case locked(retryAfter: Int)
    }

    /// The failures in a row this attempt makes if it fails: from its address, and on the account.
    struct Attempt {
        var fromClient: Int
        var onAccount: Int
        /// The waits the claim set provisionally (from the threshold on), for `release` to take back.
        var clientLock: Date
        var accountLock: Date?
    }

    static func delay(afterFailures failures: Int) -> TimeInterval {
        min(baseDelay * pow(2, Double(max(0, failures - threshold))), maximumDelay)
    }

    /// The wait from `now` for each count of failures from the threshold until the longest, which holds after.
    static func clientLocks(from now: Date) -> [Date] {
        var locks: [Date] = [], failures = threshold
        repeat {
            locks.append(now.addingTimeInterval(delay(afterFailures: failures)))
            failures += 1
        } while delay(afterFailures: failures - 1) < maximumDelay
        return locks
    }

    /// How long an address the owner signed in from stays known.
    static let knownClientLifetime: TimeInterval = 30 * 86_400

    /// Counts this attempt as a failure until it proves otherwise; refuses
    /// while the address or the account waits. An address the owner signed in
    /// from within 30 days is spared the account-wide ceiling (its own limit
    /// still holds), so guessing from elsewhere cannot lock the owner out.
    func claim(userID: UUID, client: String, on db: any Database) async throws -> Claim {
        // A sign-in that read the person just before an erasure: no count (with its address) after it.
        guard try await IdentityStore.holdUnerasedUser(userID, on: db as! any SQLDatabase) else { throw IdentityError.invalidCredentials }
        let now = clock.now()
        let clientLocks = Self.clientLocks(from: now), accountLock = now.addingTimeInterval(Self.accountDelay)
        let known = try await store.isKnownClient(userID: userID, client: client, since: now.addingTimeInterval(-Self.knownClientLifetime), on: db)
        // The account's wait first, so a refused attempt is not counted against the address.
        if !known, let until = try await store.lockedUntil(userID: userID, on: db), until > now {
            return .locked(retryAfter: Self.seconds(until: until, from: now))
        }
        guard let fromClient = try await store.claimSignInAttempt(
            userID: userID, client: client, now: now, threshold: Self.threshold, provisionalLocks: clientLocks, on: db)
        else {
            return .locked(retryAfter: Self.seconds(until: try await store.clientLockedUntil(userID: userID, client: client, on: db), from: now))
        }
        // The wait the claim set, if this count reached the threshold (the same value, bound the same way, for `release`).
        let clientLock = now.addingTimeInterval(Self.delay(afterFailures: fromClient))
        if known { return .allowed(Attempt(fromClient: fromClient, onAccount: 0, clientLock: clientLock, accountLock: nil)) }
        guard let onAccount = try await store.claimAccountSignInAttempt(
            userID: userID, now: now, threshold: Self.accountThreshold, provisionalLock: accountLock, on: db)
        else {
            // The account began to wait meanwhile: this attempt is not checked, so the address's count is taken back.
            try await store.releaseSignInAttempt(userID: userID, client: client, clientLock: clientLock, accountLock: nil, on: db)
            return .locked(retryAfter: Self.seconds(until: try await store.lockedUntil(userID: userID, on: db), from: now))
        }
        return .allowed(Attempt(fromClient: fromClient, onAccount: onAccount, clientLock: clientLock, accountLock: accountLock))
    }

    /// The attempt was none: the password was right and the second factor is yet to be asked for. Its count
    /// and the provisional wait it set are taken back (not cleared, as a success would: the code guesses before
    /// it still count), so being asked for the code never locks the owner out.
    func release(userID: UUID, client: String, attempt: Attempt, on db: any Database) async throws {
        try await store.releaseSignInAttempt(userID: userID, client: client, clientLock: attempt.clientLock, accountLock: attempt.accountLock, on: db)
    }

    /// The attempt failed: past a threshold, the address or the account waits.
    /// Returns the longest wait imposed, if any.
    func failed(userID: UUID, client: String, attempt: Attempt, on db: any Database) async throws -> TimeInterval? {
        var imposed: TimeInterval?
        if attempt.fromClient >= Self.threshold {
            // The wait the claim set, as it set it (counted from the claim, not from after bcrypt): an unknown
            // address's wait is counted from its claim too, so the two end together.
            try await store.lockClient(userID: userID, client: client, until: attempt.clientLock, on: db)
            imposed = Self.delay(afterFailures: attempt.fromClient)
        }
        if attempt.onAccount >= Self.accountThreshold {
            try await store.lock(userID: userID, until: clock.now().addingTimeInterval(Self.accountDelay), on: db)
            imposed = max(imposed ?? 0, Self.accountDelay)
        }
        return imposed
    }

    func succeeded(userID: UUID, client: String, on db: any Database) async throws {
        // Erased while the password was checked: nothing to remember (the sign-in itself is refused after).
        guard try await IdentityStore.holdUnerasedUser(userID, on: db as! any SQLDatabase) else { return }
        try await store.clearSignInFailures(userID: userID, client: client, now: clock.now(), on: db)
    }

    private static func seconds(until lockedUntil: Date?, from now: Date) -> Int {
        max(1, Int((lockedUntil ?? now).timeIntervalSince(now).rounded(.up)))
    }

    // MARK: Unknown emails

    /// Counts a sign-in attempt with an email that has no account exactly as a
    /// real account's failed attempt is counted, in the database (so every
    /// instance agrees), under an HMAC of the address: the answers, their
    /// timing and their `Retry-After` cannot tell the two apart.
    func claimUnknown(email: String, client: String, on db: any Database) async throws -> Claim {
        let now = clock.now()
        let account = SecureToken.base64URL(HMAC<SHA256>.authenticationCode(for: Data(email.utf8), using: emailKey))
        let accountKey = account + "|*", clientKey = account + "|" + client
        if let until = try await store.unknownLockedUntil(key: accountKey, on: db), until > now {
            return .locked(retryAfter: Self.seconds(until: until, from: now))
        }
        guard let fromClient = try await store.claimUnknownSignInAttempt(
            key: clientKey, now: now, threshold: Self.threshold, provisionalLocks: Self.clientLocks(from: now), restartAfterWait: false, on: db)
        else {
            return .locked(retryAfter: Self.seconds(until: try await store.unknownLockedUntil(key: clientKey, on: db), from: now))
        }
        guard let onAccount = try await store.claimUnknownSignInAttempt(
            key: accountKey, now: now, threshold: Self.accountThreshold, provisionalLocks: [now.addingTimeInterval(Self.accountDelay)], restartAfterWait: true, on: db)
        else {
            return .locked(retryAfter: Self.seconds(until: try await store.unknownLockedUntil(key: accountKey, on: db), from: now))
        }
        // The attempt fails (there is no account): the same waits as a real failure.
        if fromClient >= Self.threshold {
            try await store.lockUnknown(key: clientKey, until: now.addingTimeInterval(Self.delay(afterFailures: fromClient)), on: db)
        }
        if onAccount >= Self.accountThreshold {
            try await store.lockUnknown(key: accountKey, until: now.addingTimeInterval(Self.accountDelay), on: db)
        }
        return .allowed(Attempt(fromClient: fromClient, onAccount: onAccount, clientLock: now, accountLock: nil))
    }
}
