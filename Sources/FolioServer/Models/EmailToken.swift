import FluentKit
import Foundation

/// A single-use, expiring token sent by email (verification, password reset), stored hashed.
final class EmailToken: Model, @unchecked Sendable {
    static let schema = "email_tokens"

    enum Purpose: String, Codable, Sendable {
        case verifyEmail = "verify_email"
        case resetPassword = "reset_password"
    }

    @ID(key: .id) var id: UUID?
    @Field(key: "user_id") var userID: UUID
    @Field(key: "purpose") var purpose: String
    @Field(key: "token_hash") var tokenHash: String
    @Field(key: "created_at") var createdAt: Date
    @Field(key: "expires_at") var expiresAt: Date
    @OptionalField(key: "used_at") var usedAt: Date?

    init() {}

    init(userID: UUID, purpose: Purpose, tokenHash: String, now: Date, lifetime: TimeInterval) {
        self.id = UUID.random()
        self.userID = userID
        self.purpose = purpose.rawValue
        self.tokenHash = tokenHash
        self.createdAt = now
        self.expiresAt = now.addingTimeInterval(lifetime)
    }
}

/// A TOTP recovery code, stored hashed, usable once.
final class RecoveryCode: Model, @unchecked Sendable {
    static let schema = "recovery_codes"

    @ID(key: .id) var id: UUID?
    @Field(key: "user_id") var userID: UUID
    @Field(key: "code_hash") var codeHash: String
    @Field(key: "created_at") var createdAt: Date
    @OptionalField(key: "used_at") var usedAt: Date?

    init() {}

    init(userID: UUID, codeHash: String, now: Date) {
        self.id = UUID.random()
        self.userID = userID
        self.codeHash = codeHash
        self.createdAt = now
    }
}
