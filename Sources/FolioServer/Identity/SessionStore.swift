import FluentKit
import Foundation
import SQLKit

/// Sessions and their rotating refresh tokens (RFC 9700): each refresh spends
/// the presented token and issues the next; presenting a spent token revokes
/// the whole session, because someone else has used it.
struct SessionStore: Sendable {
    let database: FolioDatabase
    let clock: AppClock
    let idleTimeout: TimeInterval
    let maxAge: TimeInterval

    /// How long a just-spent refresh token is treated as a race rather than a theft.
    static let reuseGrace: TimeInterval = 10

    /// Starts a session and returns it with its first refresh token.
    func start(user: User, kind: Session.Kind, ip: String?, userAgent: String?, on db: any Database) async throws -> (Session, String) {
        let now = clock.now()
        let session = Session(userID: user.id!, kind: kind, now: now, lifetime: maxAge, ip: ip, userAgent: userAgent)
        try await session.create(on: db)
        let token = try await issueRefreshToken(session: session, on: db)
        return (session, token)
    }

    func issueRefreshToken(session: Session, on db: any Database) async throws -> String {
        let token = SecureToken.generate()
        try await RefreshToken(sessionID: session.id!, userID: session.userID, tokenHash: SecureToken.hash(token), now: clock.now()).create(on: db)
        return token
    }

    enum RefreshOutcome {
        case rotated(user: User, session: Session, refreshToken: String)
        case invalid
        /// A spent token came back: the session has been revoked.
        case reused(userID: UUID)
    }

    func refresh(token: String) async throws -> RefreshOutcome {
        let now = clock.now()
        return try await database.db.transaction { db in
            guard let stored = try await RefreshToken.query(on: db).filter(\.$tokenHash == SecureToken.hash(token)).first() else {
                return .invalid
            }
            // Spend the token; the condition makes two concurrent refreshes with it race safely.
            let spent = try await (db as! any SQLDatabase).raw("""
                UPDATE refresh_tokens SET used_at = \(bind: now) WHERE id = \(bind: stored.id!) AND used_at IS NULL RETURNING id
                """).all()
            guard !spent.isEmpty else {
                // Spent a moment ago (two tabs refreshing at once) is a race, not theft (RFC 9700 §4.14.2 allows the grace).
                if let usedAt = stored.usedAt, now.timeIntervalSince(usedAt) > Self.reuseGrace {
                    try await revoke(sessionID: stored.sessionID, reason: "refresh_token_reuse", on: db)
                    return .reused(userID: stored.userID)
                }
                return .invalid
            }
            guard let session = try await Session.find(stored.sessionID, on: db), session.isActive(at: now, idleTimeout: idleTimeout),
                  let user = try await User.find(stored.userID, on: db), !user.isDisabled
            else { return .invalid }
            session.lastUsedAt = now
            try await session.save(on: db)
            return .rotated(user: user, session: session, refreshToken: try await issueRefreshToken(session: session, on: db))
        }
    }

    /// The identity behind an access token's claims, if its session is still usable.
    func identity(userID: UUID, sessionID: UUID, credential: Identity.Credential) async throws -> Identity? {
        let db = database.db
        guard let session = try await Session.find(sessionID, on: db), session.userID == userID else { return nil }
        return try await identity(session: session, credential: credential, on: db)
    }

    /// The identity behind a session cookie (an unspent refresh token).
    func identity(cookieToken: String) async throws -> Identity? {
        let db = database.db
        guard let stored = try await RefreshToken.query(on: db).filter(\.$tokenHash == SecureToken.hash(cookieToken)).filter(\.$usedAt == nil).first(),
              let session = try await Session.find(stored.sessionID, on: db)
        else { return nil }
        return try await identity(session: session, credential: .cookie, on: db)
    }

    private func identity(session: Session, credential: Identity.Credential, on db: any Database) async throws -> Identity? {
        let now = clock.now()
        guard session.isActive(at: now, idleTimeout: idleTimeout),
              let user = try await User.find(session.userID, on: db), !user.isDisabled
        else { return nil }
        // Keep the idle clock honest without a write on every request.
        if now.timeIntervalSince(session.lastUsedAt) > 60 {
            session.lastUsedAt = now
            try await session.save(on: db)
        }
        return Identity(user: user, session: session, credential: credential)
    }

    func revoke(sessionID: UUID, reason: String, on db: any Database) async throws {
        try await Session.query(on: db).filter(\.$id == sessionID).filter(\.$revokedAt == nil)
            .set(\.$revokedAt, to: clock.now()).set(\.$revokeReason, to: reason).update()
    }

    /// Ends every session of the user, but `except` if given.
    func revokeAll(userID: UUID, except: UUID? = nil, reason: String, on db: any Database) async throws {
        let query = Session.query(on: db).filter(\.$userID == userID).filter(\.$revokedAt == nil)
        if let except { query.filter(\.$id != except) }
        try await query.set(\.$revokedAt, to: clock.now()).set(\.$revokeReason, to: reason).update()
    }
}
