import FluentKit
import FolioDomain
import Foundation

/// Changing a password, and resetting a forgotten one by an emailed link.
extension IdentityServices {
    static let invalidResetLink = FieldIssue(field: "token", code: "invalid_token", message: "This reset link is invalid, used or expired: ask for a new one.")

    /// Needs the current password; every session ends, this one included.
    func changePassword(of identity: Identity, current: String, new: String, origin: RequestOrigin) async throws {
        guard let user = try await store.user(id: identity.userID.uuid, on: database.db) else { throw IdentityError.userNotFound }
        try await checkCredentials(of: user, origin: origin) {
            guard PasswordPolicy.isHashable(current), try await hasher.verify(current, hash: user.passwordHash) else {
                return .failed(reason: "wrong_current_password", FieldIssue(field: "current_password", code: "incorrect", message: "The current password is wrong."))
            }
            return .passed
        }
        // A change that changes nothing would end every session and mail the owner for nothing.
        if new == current {
            throw IdentityError.invalid([FieldIssue(field: "new_password", code: "unchanged", message: "The new password is the current one; choose another.")])
        }
        try await setPassword(user: user, to: new, field: "new_password", reason: "password_changed", origin: origin)
    }

    /// Mails a reset link to an enabled user; nothing, silently, for an unknown address.
    func requestPasswordReset(email: String, origin: RequestOrigin) async throws {
        let db = database.db
        try await answeringEvenly {
            guard let user = try await findUser(email: email, on: db), !user.isDisabled else { return }
            try await database.modelTransaction { db in
                // Erased since it was looked up: no link goes to the address.
                guard try await store.lockUnerasedUser(user.id!, on: db) else { return }
                guard try await mayMail(user, .resetPassword, origin: origin, on: db) else { return }
                let token = try await createEmailToken(for: user, purpose: .resetPassword, lifetime: Self.resetTokenLifetime, on: db)
                try await mail(user, .resetPassword, MailVariables(["link": "\(configuration.publicURL)/reset-password?token=\(token)"]), on: db)
            }
        }
    }

    /// The link is spent only together with a password the policy accepts.
    func confirmPasswordReset(token: String, newPassword: String, origin: RequestOrigin) async throws {
        // A disabled account's link is dead: whoever holds it must not choose the password it wakes up with.
        guard let (stored, user) = try await findEmailToken(token, purpose: .resetPassword, on: database.db), !user.isDisabled else { throw Self.invalidResetLink }
        try await setPassword(user: user, to: newPassword, field: "new_password", reason: "password_reset", spending: stored, origin: origin)
    }

    /// Sets a new password, ends every session of the user (ASVS 2.2.3 / 3.3.3)
    /// and tells them by email.
    func setPassword(
        user: User, to password: String, field: String, reason: String, spending resetToken: EmailToken? = nil, origin: RequestOrigin
    ) async throws {
        let problems = passwordPolicy.problems(password: password, email: user.email, field: field)
        if !problems.isEmpty { throw IdentityError.invalid(problems) }
        let hash = try await hasher.hash(password)
        let now = clock.now()
        try await database.modelTransaction { db in
            // Erased while the hash was made: nothing is written back onto the pseudonymous row.
            guard try await store.lockUnerasedUser(user.id!, on: db) else { throw resetToken == nil ? IdentityError.userErased : Self.invalidResetLink }
            if let resetToken, !(try await spend(resetToken, on: db)) { throw Self.invalidResetLink }
            // Any other reset link dies with the old password.
            try await store.retireEmailTokens(userID: user.id!, purpose: .resetPassword, at: now, on: db)
            user.passwordHash = hash
            user.passwordChangedAt = now
            user.updatedAt = now
            user.failedLoginCount = 0
            user.lockedUntil = nil
            try await store.clearAllSignInFailures(userID: user.id!, on: db)
            // The reset link proves its opener is the owner: their address is known again, so guessing
            // from elsewhere (what the lockout mail told them to reset for) cannot lock them out.
            if reason == "password_reset", let ip = origin.ip {
                try await store.clearSignInFailures(userID: user.id!, client: ClientAddress.key(ip), now: now, on: db)
            }
            // Following a reset link proves the address too.
            if reason == "password_reset", user.emailVerifiedAt == nil { user.emailVerifiedAt = now }
            try await store.save(user, on: db)
            try await sessions.revokeAll(userID: user.id!, reason: reason, on: db)
            try await audit.record(
                .init(action: "user." + reason, actorID: user.id, subjectType: "user", subjectID: user.id?.lowercasedString, userID: user.id),
                origin: origin, on: db)
            try await mail(user, .passwordChanged, on: db)
        }
    }
}
