import FluentKit
import FolioDomain
import Foundation
import Hummingbird

/// A person who uses Folio. Storage shape only; responses use `UserResponse`.
final class User: Model, @unchecked Sendable {
    static let schema = "users"

    enum Role: String, Codable, Sendable, CaseIterable {
        case user, admin
    }

    @ID(key: .id) var id: UUID?
    @Field(key: "email") var email: String
    @Field(key: "password_hash") var passwordHash: String
    @Field(key: "role") var role: String
    @OptionalField(key: "email_verified_at") var emailVerifiedAt: Date?
    @OptionalField(key: "disabled_at") var disabledAt: Date?
    @OptionalField(key: "totp_secret_sealed") var totpSecretSealed: String?
    @OptionalField(key: "totp_enabled_at") var totpEnabledAt: Date?
    @Field(key: "failed_login_count") var failedLoginCount: Int
    @OptionalField(key: "locked_until") var lockedUntil: Date?
    @Field(key: "password_changed_at") var passwordChangedAt: Date
    @Field(key: "created_at") var createdAt: Date
    @Field(key: "updated_at") var updatedAt: Date

    init() {}

    init(email: String, passwordHash: String, role: Role = .user, now: Date) {
        self.id = UUID.random()
        self.email = email
        self.passwordHash = passwordHash
        self.role = role.rawValue
        self.failedLoginCount = 0
        self.passwordChangedAt = now
        self.createdAt = now
        self.updatedAt = now
    }

    var userRole: Role { Role(rawValue: role) ?? .user }
    var isDisabled: Bool { disabledAt != nil }
    var hasTwoFactor: Bool { totpEnabledAt != nil }
}

/// The user as the API shows it: never a hash, secret or counter.
struct UserResponse: Codable, Sendable, ResponseEncodable {
    var id: UserID
    var email: String
    var role: String
    var emailVerified: Bool
    var twoFactorEnabled: Bool
    var disabled: Bool
    /// Erased at the person's request: the row stays, pseudonymised, disabled for good.
    var erased = false
    var createdAt: Date

    init(_ identity: Identity) {
        self.id = identity.userID
        self.email = identity.email
        self.role = identity.role.rawValue
        self.emailVerified = identity.emailVerified
        self.twoFactorEnabled = identity.twoFactorEnabled
        self.disabled = false
        self.createdAt = identity.createdAt
    }

    init(_ user: User) {
        self.id = UserID(user.id!)
        self.email = user.email
        self.role = user.role
        self.emailVerified = user.emailVerifiedAt != nil
        self.twoFactorEnabled = user.hasTwoFactor
        self.disabled = user.isDisabled
        self.createdAt = user.createdAt
    }
}
