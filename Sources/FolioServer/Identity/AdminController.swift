import FluentKit
import FolioDomain
import Foundation
import Hummingbird

/// Administrator routes: users, the development outbox and the audit trail.
/// Every action is recorded in the audit trail (who, what, when, from where).
struct AdminController: Sendable {
    let services: IdentityServices

    static let maximumPageSize = 100

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let admin = router.group("/api/admin", context: AuthenticatedContext.self).group(context: AdminContext.self)
        admin.get("/users", use: listUsers)
        admin.post("/users/:id/disable", use: disableUser)
        admin.post("/users/:id/enable", use: enableUser)
        // Outbox messages hold live reset links: in production no one reads them over HTTP.
        if !services.configuration.isProduction { admin.get("/outbox", use: outbox) }
        admin.get("/audit-events", use: auditEvents)
    }

    @Sendable func listUsers(_ request: Request, context: AdminContext) async throws -> Page<UserResponse> {
        let limit = try Pagination.pageSize(request, maximum: Self.maximumPageSize)
        let query = User.query(on: services.database.db).sort(\.$createdAt).sort(\.$id).limit(limit + 1)
        if let raw = request.uri.queryParameters["cursor"] {
            query.filter(Pagination.after(try Pagination.decode(raw), table: User.schema, timeColumn: "created_at", descending: false))
        }
        let users = try await query.all()
        let page = users.prefix(limit)
        let next = users.count > limit ? page.last.map { Pagination.cursor(after: $0.id!) } : nil
        try await record("admin.users_listed", subjectID: nil, context: context)
        return Page(data: page.map(UserResponse.init), nextCursor: next)
    }

    @Sendable func disableUser(_ request: Request, context: AdminContext) async throws -> UserResponse {
        try await setDisabled(true, request: request, context: context)
    }

    @Sendable func enableUser(_ request: Request, context: AdminContext) async throws -> UserResponse {
        try await setDisabled(false, request: request, context: context)
    }

    func setDisabled(_ disabled: Bool, request: Request, context: AdminContext) async throws -> UserResponse {
        let id = try context.parameters.require("id", as: UUID.self)
        let db = services.database.db
        guard let user = try await User.find(id, on: db) else { throw AppError.notFound("user") }
        if disabled, user.id == context.identity.userID.uuid {
            throw AppError(.conflict, code: "cannot_disable_self", detail: "Administrators cannot disable their own account.")
        }
        try await db.transaction { db in
            user.disabledAt = disabled ? (user.disabledAt ?? services.clock.now()) : nil
            user.updatedAt = services.clock.now()
            try await user.save(on: db)
            if disabled { try await services.sessions.revokeAll(userID: user.id!, reason: "disabled_by_admin", on: db) }
            try await services.audit.record(
                .init(action: disabled ? "admin.user_disabled" : "admin.user_enabled", actorID: context.identity.userID.uuid, subjectType: "user",
                      subjectID: user.id?.uuidString.lowercased(), userID: user.id),
                context: context.parent.parent, on: db)
        }
        return UserResponse(user)
    }

    struct OutboxItem: Encodable, Sendable {
        var id: Identifier<OutboxTag>
        var recipient: String
        var subject: String
        var body: String
        var kind: String
        var createdAt: Date
        enum CodingKeys: String, CodingKey {
            case id, recipient, subject, body, kind
            case createdAt = "created_at"
        }
    }

    @Sendable func outbox(_ request: Request, context: AdminContext) async throws -> Page<OutboxItem> {
        let limit = try Pagination.pageSize(request, maximum: Self.maximumPageSize)
        let query = OutboxMessage.query(on: services.database.db).sort(\.$createdAt, .descending).sort(\.$id, .descending).limit(limit)
        if let recipient = request.uri.queryParameters["recipient"] {
            query.filter(\.$recipient == IdentityServices.normalizedEmail(String(recipient)))
        }
        let messages = try await query.all()
        try await record("admin.outbox_read", subjectID: nil, context: context)
        return Page(
            data: messages.map { OutboxItem(id: Identifier($0.id!), recipient: $0.recipient, subject: $0.subject, body: $0.body, kind: $0.kind, createdAt: $0.createdAt) },
            nextCursor: nil)
    }

    struct AuditItem: Encodable, Sendable {
        var id: Identifier<AuditEventTag>
        var occurredAt: Date
        var actorID: UserID?
        var action: String
        var subjectType: String
        var subjectID: String?
        var ip: String?
        var requestID: String?
        var details: String
        enum CodingKeys: String, CodingKey {
            case id, action, ip, details
            case occurredAt = "occurred_at"
            case actorID = "actor_id"
            case subjectType = "subject_type"
            case subjectID = "subject_id"
            case requestID = "request_id"
        }
    }

    @Sendable func auditEvents(_ request: Request, context: AdminContext) async throws -> Page<AuditItem> {
        let limit = try Pagination.pageSize(request, maximum: Self.maximumPageSize)
        let query = AuditEvent.query(on: services.database.db).sort(\.$occurredAt, .descending).sort(\.$id, .descending).limit(limit)
        if let action = request.uri.queryParameters["action"] { query.filter(\.$action == String(action)) }
        let events = try await query.all()
        return Page(
            data: events.map {
                AuditItem(id: Identifier($0.id!), occurredAt: $0.occurredAt, actorID: $0.actorID.map(UserID.init), action: $0.action, subjectType: $0.subjectType,
                          subjectID: $0.subjectID, ip: $0.ip, requestID: $0.requestID, details: $0.details)
            },
            nextCursor: nil)
    }

    func record(_ action: String, subjectID: String?, context: AdminContext) async throws {
        try await services.audit.record(
            .init(action: action, actorID: context.identity.userID.uuid, subjectType: "admin", subjectID: subjectID),
            context: context.parent.parent, on: services.database.db)
    }
}

enum OutboxTag {}
enum AuditEventTag {}
