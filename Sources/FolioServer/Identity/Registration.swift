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
        guard Self.isPlausibleEmail(email) else {
            throw FieldIssue(field: "email", code: "invalid", message: "Enter a valid email address.")
        }
        let problems = passwordPolicy.problems(password: password, email: email)
        if !problems.isEmpty { throw IdentityError.invalid(problems) }

        let hash = try await hasher.hash(password)
        let db = database.db
        if let existing = try await store.user(email: email, on: db) {
            try await mail(existing, .duplicateRegistration, MailVariables(["reset_link": "\(configuration.publicURL)/reset-password"]), on: db)
            return
        }
        let user = User(email: email, passwordHash: hash, now: clock.now())
        do {
            try await db.transaction { db in
                try await store.insert(user, on: db)
                try await audit.record(
                    .init(action: "user.registered", actorID: user.id, subjectType: "user", subjectID: user.id?.lowercasedString, userID: user.id),
                    origin: origin, on: db)
                try await ledger.openPaperAccount(
                    for: UserID(user.id!), startingCash: configuration.startingCash, context: origin.audit, on: db as! any SQLDatabase)
                try await sendVerification(to: user, origin: origin, on: db)
            }
        } catch where DatabaseConstraint(error)?.kind == .unique {
            // A concurrent registration of the same address won; answer the same way.
            origin.logger.info("registration raced on a duplicate email")
        }
    }

    func sendVerification(to user: User, origin: RequestOrigin, on db: any Database) async throws {
        let token = try await createEmailToken(for: user, purpose: .verifyEmail, lifetime: Self.emailTokenLifetime, on: db)
        try await mail(user, .verifyEmail, MailVariables(["link": "\(configuration.publicURL)/verify-email?token=\(token)"]), on: db)
    }

    /// Spends a verification link and marks the address verified.
    func verifyEmail(token: String, origin: RequestOrigin) async throws {
        try await database.db.transaction { db in
            guard let user = try await consumeEmailToken(token, purpose: .verifyEmail, on: db) else {
                throw FieldIssue(field: "token", code: "invalid_token", message: "This verification link is invalid, used or expired.")
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
        if let user = try await findUser(email: email, on: db), user.emailVerifiedAt == nil, !user.isDisabled {
            try await sendVerification(to: user, origin: origin, on: db)
        }
    }
}
