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
        let cursor = try request.query["cursor"].map(Pagination.decode)
        let users = try await services.userPage(after: cursor, limit: limit)
        let page = users.prefix(limit)
        let next = users.count > limit ? page.last.map { Pagination.cursor(after: $0.id!) } : nil
        try await services.recordAdminRead("admin.users_listed", actor: context.identity.userID.uuid, origin: context.origin)
        let erased = try await services.erased(among: Array(page))
        return Page(data: page.map { user in
            var response = UserResponse(user)
            response.erased = erased.contains(user.id!)
            return response
        }, nextCursor: next)
    }

    @Sendable func disableUser(_ request: Request, context: AdminContext) async throws -> UserResponse {
        try await setDisabled(true, context: context)
    }

    @Sendable func enableUser(_ request: Request, context: AdminContext) async throws -> UserResponse {
        try await setDisabled(false, context: context)
    }

    func setDisabled(_ disabled: Bool, context: AdminContext) async throws -> UserResponse {
        // A malformed id names no user: 404, as every route with an id answers.
        guard let id = context.parameters.get("id").flatMap(UUID.init(uuidString:)) else { throw IdentityError.userNotFound }
        return UserResponse(try await services.setDisabled(disabled, userID: id, actor: context.identity.userID.uuid, origin: context.origin))
    }

    struct OutboxItem: Encodable, Sendable {
        var id: Identifier<OutboxTag>
        var recipient: String
        var subject: String
        var body: String
        var kind: String
        var createdAt: Date
    }

    @Sendable func outbox(_ request: Request, context: AdminContext) async throws -> Page<OutboxItem> {
        let limit = try Pagination.pageSize(request, maximum: Self.maximumPageSize)
        let messages = try await services.outboxMessages(recipient: request.query["recipient"].map(String.init), limit: limit)
        try await services.recordAdminRead("admin.outbox_read", actor: context.identity.userID.uuid, origin: context.origin)
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
    }

    @Sendable func auditEvents(_ request: Request, context: AdminContext) async throws -> Page<AuditItem> {
        let limit = try Pagination.pageSize(request, maximum: Self.maximumPageSize)
        let events = try await services.auditEvents(action: request.query["action"].map(String.init), limit: limit)
        return Page(
            data: events.map {
                AuditItem(id: Identifier($0.id!), occurredAt: $0.occurredAt, actorID: $0.actorID.map(UserID.init), action: $0.action, subjectType: $0.subjectType,
                          subjectID: $0.subjectID, ip: $0.ip, requestID: $0.requestID, details: $0.details)
            },
            nextCursor: nil)
    }
}

enum OutboxTag {}
enum AuditEventTag {}
