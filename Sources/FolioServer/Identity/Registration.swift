import FluentKit
import FolioDomain
import Foundation
import SQLKit

/// Signing up and proving an email address.
extension IdentityServices {
    /// Registers a new user with a paper account and sends the verification
    /// link. An address already in use gets the same outcome after the same
    /// bcrypt work, so the caller cannot tell who has an account; the owner of
    /// the address is told by email instead (docs/SECURITY.md).
    func register(email rawEmail: String, password: String, origin: RequestOrigin) async throws {
        let email = Self.normalizedEmail(rawEmail)
        // Every field's problem at once, so the form is corrected in one go.
        var problems: [FieldIssue] = []
        if !Self.isPlausibleEmail(email) { problems.append(FieldIssue(field: "email", code: "invalid", message: "Enter a valid email address.")) }
        problems += passwordPolicy.problems(password: password, email: email)
        if !problems.isEmpty { throw IdentityError.invalid(problems) }

        let hash = try await hasher.hash(password)
        let db = database.db
        try await answeringEvenly {
            if let existing = try await store.user(email: email, on: db) {
                if signUpAgainRestarts(existing) {
                    guard try await mayMail(existing, .duplicateRegistration, origin: origin) else { return }
                    try await restartUnverified(existing, origin: origin)
                    return
                }
                try await database.modelTransaction { db in
                    // Erased since it was looked up: the address is no one's now, and nothing is mailed to it.
                    guard try await store.lockUnerasedUser(existing.id!, on: db) else { return }
                    guard try await mayMail(existing, .duplicateRegistration, origin: origin, on: db) else { return }
                    try await mail(existing, .duplicateRegistration, MailVariables(["reset_link": "\(configuration.publicURL)/reset-password"]), on: db)
                }
                return
            }
            let user = User(email: email, passwordHash: hash, now: clock.now())
            do {
                try await database.modelTransaction { db in
                    try await store.insert(user, on: db)
                    try await audit.record(
                        .init(action: "user.registered", actorID: user.id, subjectType: "user", subjectID: user.id?.lowercasedString, userID: user.id),
                        origin: origin, on: db)
                    try await ledger.openPaperAccount(
                        for: UserID(user.id!), startingCash: configuration.startingCash, context: origin.audit, on: db as! any SQLDatabase)
                    try await sendVerification(to: user, origin: origin, on: db)
                }
            } catch where DatabaseConstraint(error)?.kind == .unique {
                // A concurrent registration of the same address won: this one is a second sign-up of it, answered the same way.
                origin.logger.info("registration raced on a duplicate email")
                if let winner = try await store.user(email: email, on: db), signUpAgainRestarts(winner),
                   try await mayMail(winner, .duplicateRegistration, origin: origin) {
                    try await restartUnverified(winner, origin: origin)
                }
            }
        }
    }

    /// Whether a second sign-up of the user's address restarts the account (`restartUnverified`): it is unproven
    /// and enabled, and sign-in waits for verification. Where sign-in does not wait, an unverified account is
    /// a working one, and it is not wiped.
    private func signUpAgainRestarts(_ user: User) -> Bool {
        user.emailVerifiedAt == nil && !user.isDisabled && configuration.requireEmailVerification
    }

    /// An address signed up for again before it was verified. Either sign-up may be someone else's, made to
    /// hold the address with a password they know (a "pre-registration" takeover, should its owner then follow
    /// the first verification link): neither password stands, the earlier links die, and the owner of the
    /// address chooses the password by a link that also proves the address.
    func restartUnverified(_ user: User, origin: RequestOrigin) async throws {
        let unusable = try await hasher.unusableHash()
        let now = clock.now()
        try await database.modelTransaction { db in
            // The row first, as every change of a user takes it: erased since it was looked up, nothing is written or mailed.
            guard try await store.lockUnerasedUser(user.id!, on: db) else { return }
            // Verified meanwhile (its owner followed a link just now): the address is proven, the account stays.
            guard let current = try await store.user(id: user.id!, on: db), current.emailVerifiedAt == nil else { return }
            try await store.retireEmailTokens(userID: user.id!, purpose: .verifyEmail, at: now, on: db)
            try await store.retireEmailTokens(userID: user.id!, purpose: .resetPassword, at: now, on: db)
            current.passwordHash = unusable
            current.passwordChangedAt = now
            current.updatedAt = now
            try await store.save(current, on: db)
            try await sessions.revokeAll(userID: user.id!, reason: "registration_repeated", on: db)
            try await audit.record(
                .init(action: "user.registration_repeated", actorID: nil, subjectType: "user", subjectID: user.id?.lowercasedString, userID: user.id),
                origin: origin, on: db)
            let token = try await createEmailToken(for: current, purpose: .resetPassword, lifetime: Self.emailTokenLifetime, on: db)
            try await mail(current, .duplicateRegistration, MailVariables(["link": "\(configuration.publicURL)/reset-password?token=\(token)"]), on: db)
        }
    }

    func sendVerification(to user: User, origin: RequestOrigin, on db: any Database) async throws {
        let token = try await createEmailToken(for: user, purpose: .verifyEmail, lifetime: Self.emailTokenLifetime, on: db)
        try await mail(user, .verifyEmail, MailVariables(["link": "\(configuration.publicURL)/verify-email?token=\(token)"]), on: db)
    }

    /// Spends a verification link and marks the address verified.
    func verifyEmail(token: String, origin: RequestOrigin) async throws {
        try await database.modelTransaction { db in
            // A disabled (or erased) account's link is dead, as its reset links are.
            guard let user = try await consumeEmailToken(token, purpose: .verifyEmail, on: db), !user.isDisabled else {
                throw FieldIssue(field: "token", code: "invalid_token", message: "This verification link is invalid, used or expired. If your address is verified already, sign in; if not, ask for a new link.")
            }
            if user.emailVerifiedAt == nil {
                user.emailVerifiedAt = clock.now()
                user.updatedAt = clock.now()
                try await store.save(user, on: db)
            }
            try await audit.record(
                .init(action: "user.email_verified", actorID: user.id, subjectType: "user", subjectID: user.id?.lowercasedString, userID: user.id),
                origin: origin, on: db)
        }
    }

    /// A new link for an unverified, enabled user; nothing, silently, otherwise.
    func resendVerification(email: String, origin: RequestOrigin) async throws {
        let db = database.db
        try await answeringEvenly {
            guard let user = try await findUser(email: email, on: db), user.emailVerifiedAt == nil, !user.isDisabled else { return }
            try await database.modelTransaction { db in
                guard try await store.lockUnerasedUser(user.id!, on: db) else { return }
                guard try await mayMail(user, .verifyEmail, origin: origin, on: db) else { return }
                try await sendVerification(to: user, origin: origin, on: db)
            }
        }
    }
}
