import FluentKit
import Foundation
import SQLKit

/// Signing in, refreshing, and the user's own sessions.
extension IdentityServices {
    /// A session just started or refreshed, with the refresh token to hand out.
    struct SignedIn: Sendable {
        var user: User
        var session: Session
        var refreshToken: String
    }

    /// Checks the password (and second factor) under the sign-in throttle and
    /// starts a session of the given kind.
    func signIn(
        email: String, password: String, totpCode: String?, recoveryCode: String?, kind: Session.Kind, userAgent: String?, origin: RequestOrigin
    ) async throws -> SignedIn {
        // An empty code field is no code: asked for one, not a wrong guess counted against the owner.
        let totpCode = totpCode.flatMap { $0.allSatisfy(\.isWhitespace) ? nil : $0 }
        let recoveryCode = recoveryCode.flatMap { $0.allSatisfy(\.isWhitespace) ? nil : $0 }
        let db = database.db
        // bcrypt reads a C string of at most 72 bytes: never let a NUL or an overlong tail count.
        let passwordUsable = PasswordPolicy.isHashable(password)

        let client = ClientAddress.key(origin.ip)
        var found = try await findUser(email: email, on: db)
        // An erased person's pseudonym names no one: answered as an unknown address is (bcrypt included), not sooner.
        if let id = found?.id, try await store.erased([id], on: db).contains(id) { found = nil }
        guard let user = found else {
            if case .locked(let wait) = try await loginThrottle.claimUnknown(email: Self.normalizedEmail(email), client: client, on: db) {
                // Recorded as a known account's is: the alert counts guessing that goes on against a lock.
                await security.record("login_locked", details: ["reason": "unknown_email"], origin: origin, audited: true)
                throw IdentityError.tooManyAttempts(retryAfter: wait)
            }
            try await hasher.verifyAgainstDummy(password)
            await security.record("login_failed", details: ["reason": "unknown_email"], origin: origin, audited: true)
            throw IdentityError.invalidCredentials
        }
        try await checkCredentials(of: user, origin: origin, locked: "login_locked", signedIn: false) {
            let passwordMatches = try await hasher.verify(password, hash: user.passwordHash)
            guard passwordUsable, passwordMatches else { return .failed(reason: "wrong_password", IdentityError.invalidCredentials) }
            if user.isDisabled {
                await security.record("login_refused", userID: user.id, details: ["reason": "disabled"], origin: origin, audited: true)
                throw IdentityError.accountDisabled
            }
            if user.hasTwoFactor {
                // Not an attempt yet: taken back, not cleared (a success would reset the count between code guesses).
                if totpCode == nil && recoveryCode == nil { return .incomplete(IdentityError.twoFactorRequired) }
                if let refused = try await checkSecondFactor(user: user, totpCode: totpCode, recoveryCode: recoveryCode, origin: origin, on: db) {
                    if refused == .blocked { return .failed(reason: "second_factor_blocked", IdentityError.secondFactorBlocked) }
                    // The right password with the code it just signed in with: the owner's double submit (a client that
                    // retries), no guess. Taken back here too, so it never pauses the owner's own address.
                    if refused == .codeAlreadyUsed || refused == .recoveryCodeJustUsed {
                        await security.record("login_refused", userID: user.id, details: ["reason": "code_already_used"], origin: origin, audited: true)
                        return .incomplete(IdentityError.wrongSecondFactor(refused))
                    }
                    return .failed(reason: "wrong_second_factor", IdentityError.wrongSecondFactor(refused))
                }
            }
            return .passed
        }
        if configuration.requireEmailVerification, user.emailVerifiedAt == nil { throw IdentityError.emailNotVerified }
        // A hash made before BCRYPT_COST changed is made again at the cost now set (bcrypt outside the transaction).
        let upgraded = passwordUsable && hasher.isOutdated(user.passwordHash) ? try await hasher.hash(password) : nil

        // A worker beside the server on SQLite can make this transaction busy (it reads, then writes): run it again.
        let signedIn: SignedIn? = try await database.modelTransaction { db in
            // The password (and second factor) were checked against a copy read before bcrypt ran: a reset, a
            // change or two-factor turned on that committed meanwhile revoked the sessions there were, not this one.
            guard let now = try await store.lockSignInFacts(userID: user.id!, on: db),
                  now.passwordHash == user.passwordHash, now.twoFactor == user.hasTwoFactor, !now.disabled
            else { return nil }
            // Not a password change: no session ends, and the time of the last change stays. (A sign-in of the same
            // user that was under way meanwhile finds another hash, is refused, and succeeds when tried again.)
            if let upgraded { try await store.replacePasswordHash(userID: user.id!, from: user.passwordHash, to: upgraded, on: db) }
            if try await store.isNewDevice(userID: user.id!, ip: origin.ip, userAgent: userAgent, on: db) {
                try await mail(user, .newSignIn, MailVariables([
                    "device": userAgent.map(Display.device) ?? "an unknown device", "ip": origin.ip ?? "an unknown address",
                    "time": ISO8601DateFormatter().string(from: clock.now()),
                ]), on: db)
            }
            let (session, refreshToken) = try await sessions.start(user: user, kind: kind, ip: origin.ip, userAgent: userAgent, on: db)
            try await store.recordSignIn(userID: user.id!, at: clock.now(), on: db)
            try await audit.record(
                .init(action: "security.login_succeeded", actorID: user.id, subjectType: "session", subjectID: session.id?.lowercasedString,
                      userID: user.id, details: ["session": kind.rawValue]),
                origin: origin, on: db)
            return SignedIn(user: user, session: session, refreshToken: refreshToken)
        }
        guard let signedIn else {
            await security.record("login_refused", userID: user.id, details: ["reason": "account_changed_during_sign_in"], origin: origin, audited: true)
            throw IdentityError.invalidCredentials
        }
        return signedIn
    }

    /// What a credential check found.
    enum CredentialCheck {
        case passed
        /// Wrong: counted as a failure, then `error` is thrown.
        case failed(reason: String, any Error)
        /// Right so far, but a step is missing (the second factor): the attempt is taken back, then `error` is thrown.
        case incomplete(any Error)
    }

    /// Runs `check` (a password, a second factor, or both) under the sign-in
    /// throttle: refused while the client's address or the account waits, a
    /// failure counted and audited, a success clearing the counts. Signing in
    /// and every re-authentication (password change, two-factor on or off)
    /// come through here, so a stolen session cannot guess faster than a login.
    /// An error `check` throws itself leaves the attempt counted.
    /// `signedIn`: a re-authentication, so the user (their session) is the actor of what is recorded; a sign-in may be anyone.
    func checkCredentials(
        of user: User, origin: RequestOrigin, locked event: String = "reauthentication_locked", signedIn: Bool = true, _ check: () async throws -> CredentialCheck
    ) async throws {
        let db = database.db
        let client = ClientAddress.key(origin.ip)
        let attempt: LoginThrottle.Attempt
        switch try await loginThrottle.claim(userID: user.id!, client: client, on: db) {
        case .locked(let wait):
            await security.record(event, userID: user.id, byUser: signedIn, origin: origin, audited: true)
            throw IdentityError.tooManyAttempts(retryAfter: wait)
        case .allowed(let claimed):
            attempt = claimed
        }
        switch try await check() {
        case .passed:
            try await loginThrottle.succeeded(userID: user.id!, client: client, on: db)
        case .incomplete(let error):
            try await loginThrottle.release(userID: user.id!, client: client, attempt: attempt, on: db)
            throw error
        case .failed(let reason, let error):
            if let delay = try await loginThrottle.failed(userID: user.id!, client: client, attempt: attempt, on: db) {
                await security.record(
                    "login_lockout", userID: user.id, byUser: signedIn,
                    details: ["failures": String(attempt.fromClient), "account_failures": String(attempt.onAccount), "seconds": String(Int(delay))],
                    origin: origin, audited: true)
                try await noticeLockout(user, seconds: Int(delay.rounded(.up)), secondFactorFailed: reason == "wrong_second_factor")
            }
            await security.record(
                "login_failed", userID: user.id, byUser: signedIn, details: ["reason": reason, "failures": String(attempt.fromClient)], origin: origin, audited: true)
            throw error
        }
    }

    /// Spends a refresh token for the next one. A spent token presented again
    /// revokes its session (someone else has used it).
    func refresh(token: String, kind: Session.Kind, origin: RequestOrigin) async throws -> SignedIn {
        switch try await sessions.refresh(token: token, kind: kind) {
        case .rotated(let user, let session, let next):
            return SignedIn(user: user, session: session, refreshToken: next)
        case .reused(let userID):
            await security.record("refresh_token_reuse", userID: userID, origin: origin, audited: true)
            throw IdentityError.invalidRefreshToken
        case .invalid:
            await security.record("refresh_token_rejected", origin: origin)
            throw IdentityError.invalidRefreshToken
        case .raced:
            // Not a failed authentication: the holder's other request has the next token.
            await security.record("refresh_token_raced", origin: origin)
            throw IdentityError.refreshRaced
        }
    }

    func activeSessions(of identity: Identity) async throws -> [Session] {
        try await sessions.activeSessions(userID: identity.userID.uuid, on: database.db)
    }

    /// Ends one of the user's own sessions; another user's is not found.
    func revokeSession(_ id: UUID, of identity: Identity) async throws {
        let db = database.db
        guard let session = try await sessions.session(id: id, userID: identity.userID.uuid, on: db) else { throw IdentityError.sessionNotFound }
        try await sessions.revoke(sessionID: session.id!, reason: "revoked_by_user", on: db)
    }

    func signOut(_ identity: Identity) async throws {
        try await sessions.revoke(sessionID: identity.sessionID.uuid, reason: "logout", on: database.db)
    }

    func signOutEverywhere(_ identity: Identity) async throws {
        try await sessions.revokeAll(userID: identity.userID.uuid, reason: "logout_all", on: database.db)
    }

    /// Wrong authenticator codes with the right password before codes are no
    /// longer taken: ten guesses of six digits stay a one-in-100,000 chance.
    static let secondFactorFailureLimit = 10
    static let secondFactorPause = "until you reset your password (a recovery code still signs you in)"

    /// Tells the user their sign-in is paused, at most once a day: anyone who
    /// knows an address can cause lockouts, and must not flood it with mail.
    /// `paused`: for how long, when it is not a number of seconds (codes blocked
    /// until a reset: always told, since only someone with the password can cause it).
    func noticeLockout(_ user: User, seconds: Int, secondFactorFailed: Bool, paused: String? = nil) async throws {
        let since = clock.now().addingTimeInterval(-86_400), notifications = self.notifications
        let minutes = max(1, (seconds + 59) / 60)
        var values = [
            "duration": LockoutAdvice.duration(seconds: seconds), "minutes": String(minutes),
            "advice": LockoutAdvice.advice(secondFactorFailed: secondFactorFailed, hasTwoFactor: user.hasTwoFactor),
        ]
        if let paused { values["paused"] = paused }
        let variables = MailVariables(values)
        try await database.transaction { db in
            // Nothing is made for a person erased meanwhile (the guessing raced the erasure): the row held
            // shared, an erasure waits for this notice and then removes it, or this waits and sees it.
            guard try await IdentityStore.holdUnerasedUser(user.id!, on: db as! any SQLDatabase) else { return }
            if paused == nil, try await notifications.store.exists(kind: .accountLocked, of: user.id!, since: since, on: db) { return }
            try await notifications.notify(user.id!, .accountLocked, variables, on: db)
        }
    }
}

/// What the lockout mail says: how long, and what to do, by what failed.
enum LockoutAdvice {
    static func duration(seconds: Int) -> String {
        if seconds < 60 { return seconds == 1 ? "1 second" : "\(seconds) seconds" }
        let minutes = (seconds + 59) / 60
        return minutes == 1 ? "1 minute" : "\(minutes) minutes"
    }

    static func advice(secondFactorFailed: Bool, hasTwoFactor: Bool) -> String {
        if secondFactorFailed {
            return "The password was right but the two-factor codes were not. If this was not you, someone knows your password: change it now. Your two-factor authentication kept them out."
        }
        if hasTwoFactor {
            return "If this was not you, someone may be guessing your password; two-factor authentication still stands in their way. Change your password if it is used anywhere else."
        }
        return "If this was not you, someone may be guessing your password: choose a strong one and turn on two-factor authentication."
    }
}
