import FluentKit
import Foundation

/// A login: one refresh-token family. Revoking it ends every token issued in it.
final class Session: Model, @unchecked Sendable {
    static let schema = "sessions"

    enum Kind: String, Codable, Sendable {
        case bearer, cookie
    }

    @ID(key: .id) var id: UUID?
    @Field(key: "user_id") var userID: UUID
    @Field(key: "kind") var kind: String
    @Field(key: "created_at") var createdAt: Date
    @Field(key: "last_used_at") var lastUsedAt: Date
    @Field(key: "expires_at") var expiresAt: Date
    @OptionalField(key: "revoked_at") var revokedAt: Date?
    @OptionalField(key: "revoke_reason") var revokeReason: String?
    @OptionalField(key: "ip") var ip: String?
    @OptionalField(key: "user_agent") var userAgent: String?

    init() {}

    init(userID: UUID, kind: Kind, now: Date, lifetime: TimeInterval, ip: String?, userAgent: String?) {
        self.id = UUID.random()
        self.userID = userID
        self.kind = kind.rawValue
        self.createdAt = now
        self.lastUsedAt = now
        self.expiresAt = now.addingTimeInterval(lifetime)
        self.ip = ip
        self.userAgent = userAgent.map { String($0.prefix(256)) }
    }

    /// Usable when not revoked, not past its absolute lifetime and not idle too long.
    func isActive(at now: Date, idleTimeout: TimeInterval) -> Bool {
        revokedAt == nil && now < expiresAt && now.timeIntervalSince(lastUsedAt) < idleTimeout
    }
}

/// One refresh credential of a session, stored only as a hash; used once.
final class RefreshToken: Model, @unchecked Sendable {
    static let schema = "refresh_tokens"

    @ID(key: .id) var id: UUID?
    @Field(key: "session_id") var sessionID: UUID
    @Field(key: "user_id") var userID: UUID
    @Field(key: "token_hash") var tokenHash: String
    @Field(key: "created_at") var createdAt: Date
    @OptionalField(key: "used_at") var usedAt: Date?

    init() {}

    init(sessionID: UUID, userID: UUID, tokenHash: String, now: Date) {
        self.id = UUID.random()
        self.sessionID = sessionID
        self.userID = userID
        self.tokenHash = tokenHash
        self.createdAt = now
    }
}
