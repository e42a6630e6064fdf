import FluentKit
import FolioDomain
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
        /// Spent a moment ago by another request of the same holder (two tabs): refused, the session lives.
        case raced
        /// A spent token came back: the session has been revoked.
        case reused(userID: UUID)
    }

    /// `kind` is how the token came: a session's tokens are spent only the way
    /// it was started, so a cookie session's token sent in a JSON body is not
    /// turned into a bearer token readable by scripts (nor the reverse).
    func refresh(token: String, kind: Session.Kind) async throws -> RefreshOutcome {
        let now = clock.now()
        return try await database.modelTransaction { db in
            guard let stored = try await RefreshToken.query(on: db).filter(\.$tokenHash == SecureToken.hash(token)).first(),
                  let session = try await Session.find(stored.sessionID, on: db), session.kind == kind.rawValue
            else {
                return .invalid
            }
            // A token of a session that has ended (signed out, password changed, idle, disabled user) is refused
            // as it is, not spent: spent, a retry of it would count as reuse and raise a theft alert.
            guard session.isActive(at: now, idleTimeout: idleTimeout),
                  let user = try await User.find(stored.userID, on: db), !user.isDisabled
            else { return .invalid }
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
                return .raced
            }
            session.lastUsedAt = now
            try await session.save(on: db)
            return .rotated(user: user, session: session, refreshToken: try await issueRefreshToken(session: session, on: db))
        }
    }

    /// How stale a session's idle clock may grow before a request writes it: a minute, or a quarter of a
    /// shorter idle timeout. A once-a-minute write under a 60 s timeout let a session in use read as idle.
    var idleClockStep: TimeInterval { min(60, idleTimeout / 4) }

    /// The identity behind an access token's claims, if its session is still usable.
    func identity(userID: UUID, sessionID: UUID, credential: Identity.Credential) async throws -> Identity? {
        try await identity(where: "s.id = \(bind: sessionID) AND s.user_id = \(bind: userID)", credential: credential)
    }

    /// The identity behind a session cookie (an unspent refresh token of a cookie session).
    func identity(cookieToken: String) async throws -> Identity? {
        try await identity(
            where: """
                s.id = (SELECT t.session_id FROM refresh_tokens t WHERE t.token_hash = \(bind: SecureToken.hash(cookieToken)) AND t.used_at IS NULL) \
                AND s.kind = \(bind: Session.Kind.cookie.rawValue)
                """,
            credential: .cookie)
    }

    /// Session, user and default account in one query: every authenticated
    /// request pays one round trip, and a revoked session or disabled user
    /// stops at once. The idle clock is written at most once a minute (`idleClockStep`).
    private func identity(where condition: SQLQueryString, credential: Identity.Credential) async throws -> Identity? {
        let db = database.sql
        guard let row = try await db.raw("""
            SELECT s.id AS session_id, s.user_id, s.last_used_at, s.expires_at, s.revoked_at,
                   u.email, u.role, u.email_verified_at, u.disabled_at, u.totp_enabled_at, u.created_at,
                   (SELECT a.id FROM accounts a WHERE a.user_id = s.user_id ORDER BY a.created_at, a.id LIMIT 1) AS account_id
            FROM sessions s JOIN users u ON u.id = s.user_id
            WHERE \(condition)
            """).first()
        else { return nil }
        let now = clock.now()
        let sessionID = try row.decode(column: "session_id", as: SessionID.self)
        let lastUsed = try row.decode(column: "last_used_at", as: Date.self)
        guard try row.decode(column: "revoked_at", as: Date?.self) == nil, now < (try row.decode(column: "expires_at", as: Date.self)),
              now.timeIntervalSince(lastUsed) < idleTimeout, try row.decode(column: "disabled_at", as: Date?.self) == nil
        else { return nil }
        // Keep the idle clock honest without a write on every request.
        if now.timeIntervalSince(lastUsed) > idleClockStep {
            try await db.raw("UPDATE sessions SET last_used_at = \(bind: now) WHERE id = \(bind: sessionID)").run()
        }
        return Identity(
            userID: try row.decode(column: "user_id", as: UserID.self), sessionID: sessionID, email: try row.decode(column: "email", as: String.self),
            role: User.Role(rawValue: try row.decode(column: "role", as: String.self)) ?? .user,
            emailVerified: try row.decode(column: "email_verified_at", as: Date?.self) != nil,
            twoFactorEnabled: try row.decode(column: "totp_enabled_at", as: Date?.self) != nil, createdAt: try row.decode(column: "created_at", as: Date.self),
            defaultAccountID: try row.decode(column: "account_id", as: AccountID?.self), credential: credential)
    }

    /// The user's sessions still in use at `now`, newest first, at most 100.
    func activeSessions(userID: UUID, on db: any Database) async throws -> [Session] {
        let now = clock.now()
        return try await Session.query(on: db)
            .filter(\.$userID == userID).filter(\.$revokedAt == nil).filter(\.$expiresAt > now)
            .sort(\.$createdAt, .descending).limit(100).all()
            .filter { $0.isActive(at: now, idleTimeout: idleTimeout) }
    }

    /// One session of the user's; nil for another user's.
    func session(id: UUID, userID: UUID, on db: any Database) async throws -> Session? {
        try await Session.query(on: db).filter(\.$id == id).filter(\.$userID == userID).first()
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
