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
        // An erased person's row changes no more (enabling one would also count a pseudonymised administrator as one).
        if let id = user.id, try await !store.erased([id], on: database.db).isEmpty { throw IdentityError.userErased }
        // Nothing to change: no write, no sessions ended, no audit event of a change that did not happen.
        guard disabled != user.isDisabled else { return user }
        try await database.modelTransaction { db in
            if disabled { try await refuseLastAdministrator(user, on: db) }
            user.disabledAt = disabled ? (user.disabledAt ?? clock.now()) : nil
            user.updatedAt = clock.now()
            try await store.save(user, on: db)
            if disabled { try await sessions.revokeAll(userID: user.id!, reason: "disabled_by_admin", on: db) }
            try await audit.record(
                .init(action: disabled ? "admin.user_disabled" : "admin.user_enabled", actorID: actor, subjectType: "user",
                      subjectID: user.id?.lowercasedString, userID: user.id),
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
        guard user.role != role.rawValue else { return false }
        try await database.modelTransaction { db in
            if role != .admin { try await refuseLastAdministrator(user, on: db) }
            user.role = role.rawValue
            user.updatedAt = clock.now()
            try await store.save(user, on: db)
            try await sessions.revokeAll(userID: user.id!, reason: "role_changed", on: db)
            try await audit.record(
                .init(action: "admin.role_changed", subjectType: "user", subjectID: user.id?.lowercasedString, userID: user.id,
                      details: ["role": role.rawValue]),
                origin: origin, on: db)
        }
        return true
    }

    /// Demoting or disabling the last enabled administrator would leave no one to administer Folio:
    /// checked in the change's own transaction, under the administrators' rows.
    /// The user's role and state as they are under the lock, not as read before (they may have changed since).
    private func refuseLastAdministrator(_ user: User, on db: any Database) async throws {
        guard let id = user.id else { return }
        let enabled = try await IdentityStore.lockEnabledAdministrators(postgres: database.kind == .postgres, on: database.sqlDatabase(db))
        if enabled == [id] { throw IdentityError.lastAdministrator }
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
        try await audit.record(.init(action: action, actorID: actor, subjectType: "admin"), origin: origin, on: database.db)
    }
}
