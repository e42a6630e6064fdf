import FluentKit
import Foundation

/// What administrators do to users and read about them, over HTTP
/// (`AdminController`) and the `folio users` commands (`UserAdministration`).
/// Every change is audited.
extension IdentityServices {
    /// Users in order of sign-up, one more than `limit` if there is a next page.
    func userPage(after cursor: UUID?, limit: Int) async throws -> [User] {
        try await store.users(after: cursor, limit: limit + 1, on: database.db)
    }

    /// Which of these users were erased.
    func erased(among users: [User]) async throws -> Set<UUID> {
        try await store.erased(users.compactMap(\.id), on: database.db)
    }

    /// Disables (ending every session) or enables a user. `actor` is the
    /// administrator, nil for the command line; an administrator cannot disable themselves.
    func setDisabled(_ disabled: Bool, user: User, actor: UUID?, origin: RequestOrigin) async throws -> User {
        if disabled, let actor, user.id == actor { throw IdentityError.cannotDisableSelf }
        guard let id = user.id else { throw IdentityError.userNotFound }
        try await database.modelTransaction { db in
            // Decided on the row as it is under its lock, not as `user` was read: another administrator's
            // change or an erasure made meanwhile is seen (PostgreSQL waits for it, SQLite's writer runs after it).
            let administrators = try await lockAndRefresh(user, id: id, on: db)
            // Nothing to change: no write, no sessions ended, no audit event of a change that did not happen.
            guard disabled != user.isDisabled else { return }
            if disabled, administrators == [id] { throw IdentityError.lastAdministrator }
            user.disabledAt = disabled ? clock.now() : nil
            user.updatedAt = clock.now()
            try await store.save(user, on: db)
            if disabled {
                try await sessions.revokeAll(userID: id, reason: "disabled_by_admin", on: db)
                // A link mailed before (to whoever held the account then) does not come back to life with the account.
                for purpose in [EmailToken.Purpose.resetPassword, .verifyEmail] {
                    try await store.retireEmailTokens(userID: id, purpose: purpose, at: clock.now(), on: db)
                }
            }
            try await audit.record(
                .init(action: disabled ? "admin.user_disabled" : "admin.user_enabled", actorID: actor, subjectType: "user",
                      subjectID: id.lowercasedString, userID: id),
                origin: origin, on: db)
        }
        return user
    }

    func setDisabled(_ disabled: Bool, userID: UUID, actor: UUID?, origin: RequestOrigin) async throws -> User {
        guard let user = try await store.user(id: userID, on: database.db) else { throw IdentityError.userNotFound }
        return try await setDisabled(disabled, user: user, actor: actor, origin: origin)
    }

    /// Sets a user's role; their sessions end, so the new role applies at once. False when they had it already
    /// (nothing changes: no sessions end, and no role change is audited).
    @discardableResult
    func setRole(_ role: User.Role, user: User, origin: RequestOrigin) async throws -> Bool {
        guard let id = user.id else { throw IdentityError.userNotFound }
        return try await database.modelTransaction { db in
            // Decided on the row as it is under its lock (see `setDisabled`).
            let administrators = try await lockAndRefresh(user, id: id, on: db)
            guard user.role != role.rawValue else { return false }
            if role != .admin, administrators == [id] { throw IdentityError.lastAdministrator }
            user.role = role.rawValue
            user.updatedAt = clock.now()
            try await store.save(user, on: db)
            try await sessions.revokeAll(userID: id, reason: "role_changed", on: db)
            try await audit.record(
                .init(action: "admin.role_changed", subjectType: "user", subjectID: id.lowercasedString, userID: id,
                      details: ["role": role.rawValue]),
                origin: origin, on: db)
            return true
        }
    }

    /// Takes the user's row and the enabled administrators' for update (`IdentityStore.lockForAdministration`),
    /// brings `user`'s role and disabled time up to date with the row, and returns the enabled administrators:
    /// demoting or disabling the last one would leave no one to administer Folio. An erased person's row
    /// changes no more (enabling one would also count a pseudonymised administrator as one).
    private func lockAndRefresh(_ user: User, id: UUID, on db: any Database) async throws -> Set<UUID> {
        guard let current = try await store.lockForAdministration(userID: id, on: db) else { throw IdentityError.userNotFound }
        if current.erased { throw IdentityError.userErased }
        if user.role != current.role { user.role = current.role }
        if user.disabledAt != current.disabledAt { user.disabledAt = current.disabledAt }
        return current.enabledAdministrators
    }

    /// The development outbox, newest first.
    func outboxMessages(recipient: String?, limit: Int) async throws -> [OutboxMessage] {
        try await outbox.recent(recipient: recipient.map(Self.normalizedEmail), limit: limit, on: database.db)
    }

    func auditEvents(action: String?, limit: Int) async throws -> [AuditEvent] {
        try await audit.recent(action: action, limit: limit, on: database.db)
    }

    /// Reading user data is an action too: it is audited.
    func recordAdminRead(_ action: String, actor: UUID, origin: RequestOrigin) async throws {
        try await audit.record(.init(action: action, actorID: actor, subjectType: "admin"), origin: origin, on: database)
    }
}
