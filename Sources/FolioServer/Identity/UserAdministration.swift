import FluentKit
import FolioDomain
import SQLKit
import Foundation

/// What the `folio users` and `folio outbox` commands do, kept here so it is
/// tested like the rest of the server. Every change is audited with no
/// request id and `cli` as the address.
public struct UserAdministration: Sendable {
    let database: FolioDatabase
    let clock: AppClock
    let hasher: PasswordHasher
    let policy: PasswordPolicy
    let audit: AuditLog
    let sessions: SessionStore
    let ledger: Ledger

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public struct UserSummary: Sendable {
        public var id: UUID
        public var email: String
        public var role: String
        public var verified: Bool
        public var disabled: Bool
        public var createdAt: Date
    }

    public struct OutboxEntry: Sendable {
        public var createdAt: Date
        public var recipient: String
        public var subject: String
        public var body: String
    }

    let startingCash: Cash

    public init(services: FolioServices) {
        self.database = services.database
        self.clock = services.identity.clock
        self.hasher = services.identity.hasher
        self.policy = services.identity.passwordPolicy
        self.audit = services.identity.audit
        self.sessions = services.identity.sessions
        self.ledger = services.ledger
        self.startingCash = services.configuration.startingCash
    }

    /// Creates an administrator whose address counts as verified.
    @discardableResult
    public func createAdmin(email: String, password: String) async throws -> UUID {
        let email = IdentityServices.normalizedEmail(email)
        guard IdentityServices.isPlausibleEmail(email) else { throw Failure(description: "\(email) is not a valid email address") }
        if let problem = policy.problems(password: password, email: email).first { throw Failure(description: problem.message) }
        let db = database.db
        if try await User.query(on: db).filter(\.$email == email).first() != nil {
            throw Failure(description: "a user with email \(email) already exists; use `folio users set-role \(email) admin`")
        }
        let now = clock.now()
        let user = User(email: email, passwordHash: try await hasher.hash(password), role: .admin, now: now)
        user.emailVerifiedAt = now
        try await db.transaction { db in
            try await user.create(on: db)
            try await audit.record(.init(action: "admin.user_created", subjectType: "user", subjectID: user.id?.uuidString.lowercased(), userID: user.id, details: ["role": "admin"]), ip: "cli", requestID: nil, on: db)
            try await ledger.openPaperAccount(for: UserID(user.id!), startingCash: startingCash, context: AuditContext(ip: "cli"), on: db as! any SQLDatabase)
        }
        return user.id!
    }

    public func list() async throws -> [UserSummary] {
        try await User.query(on: database.db).sort(\.$createdAt).all().map {
            UserSummary(id: $0.id!, email: $0.email, role: $0.role, verified: $0.emailVerifiedAt != nil, disabled: $0.isDisabled, createdAt: $0.createdAt)
        }
    }

    public func setRole(email: String, role: String) async throws {
        guard let role = User.Role(rawValue: role) else { throw Failure(description: "role must be one of \(User.Role.allCases.map(\.rawValue).joined(separator: ", "))") }
        let user = try await find(email)
        try await database.db.transaction { db in
            user.role = role.rawValue
            user.updatedAt = clock.now()
            try await user.save(on: db)
            try await sessions.revokeAll(userID: user.id!, reason: "role_changed", on: db)
            try await audit.record(.init(action: "admin.role_changed", subjectType: "user", subjectID: user.id?.uuidString.lowercased(), userID: user.id, details: ["role": role.rawValue]), ip: "cli", requestID: nil, on: db)
        }
    }

    public func disable(email: String) async throws {
        let user = try await find(email)
        try await database.db.transaction { db in
            user.disabledAt = user.disabledAt ?? clock.now()
            user.updatedAt = clock.now()
            try await user.save(on: db)
            try await sessions.revokeAll(userID: user.id!, reason: "disabled_by_admin", on: db)
            try await audit.record(.init(action: "admin.user_disabled", subjectType: "user", subjectID: user.id?.uuidString.lowercased(), userID: user.id), ip: "cli", requestID: nil, on: db)
        }
    }

    public func outbox(limit: Int) async throws -> [OutboxEntry] {
        try await OutboxMessage.query(on: database.db).sort(\.$createdAt, .descending).limit(limit).all().map {
            OutboxEntry(createdAt: $0.createdAt, recipient: $0.recipient, subject: $0.subject, body: $0.body)
        }
    }

    private func find(_ email: String) async throws -> User {
        guard let user = try await User.query(on: database.db).filter(\.$email == IdentityServices.normalizedEmail(email)).first() else {
            throw Failure(description: "no user with email \(email)")
        }
        return user
    }
}
