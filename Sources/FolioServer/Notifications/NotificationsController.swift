import FolioDomain
import Foundation
import Hummingbird

/// `/api/notifications`: the signed-in user's notifications and their mail preferences.
struct NotificationsController: Sendable {
    let store: NotificationStore
    let clock: AppClock
    let unsubscribe: UnsubscribeLinks
    /// Which mail a person gets is on the audit trail: mail turned off is news of the account that no longer reaches them.
    let security: SecurityEvents

    static let maximumPageSize = 200

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let api = router.group("/api/notifications", context: AuthenticatedContext.self)
        api.get("", use: list)
        api.post("/read", use: readAll)
        api.get("/preferences", use: preferences)
        api.put("/preferences", use: setPreferences)
        api.post("/:id/read", use: read)
    }

    struct NotificationResponse: Encodable, Sendable {
        var id: String
        var kind: String
        var category: String
        var title: String
        var body: String
        /// The event's figures (symbol, quantity, price…), all strings.
        var data: [String: String]
        var createdAt: Date
        var readAt: Date?
        var read: Bool

        init(_ row: NotificationStore.Row) {
            id = row.id.lowercasedString
            kind = row.kind
            category = row.category
            title = row.title
            body = row.body
            data = (try? MailVariables(json: row.data).values) ?? [:]
            createdAt = row.createdAt
            readAt = row.readAt
            read = row.readAt != nil
        }
    }

    struct ListResponse: ResponseEncodable {
        var data: [NotificationResponse]
        var nextCursor: String?
        var unreadCount: Int
    }

    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> ListResponse {
        let userID = context.identity.userID.uuid
        let limit = try Pagination.pageSize(request, maximum: Self.maximumPageSize)
        let cursor = try request.query["cursor"].map { try Pagination.decode(Substring($0)) }
        let unreadOnly: Bool
        switch request.query["unread"] {
        case nil, "false": unreadOnly = false
        case "true": unreadOnly = true
        default: throw AppError.validation(field: "unread", code: "invalid", message: "unread must be true or false.")
        }
        let rows = try await store.page(of: userID, after: cursor, unreadOnly: unreadOnly, limit: limit + 1)
        let page = rows.prefix(limit)
        return ListResponse(
            data: page.map(NotificationResponse.init), nextCursor: rows.count > limit ? page.last.map { Pagination.cursor(after: $0.id) } : nil,
            unreadCount: try await store.unreadCount(of: userID))
    }

    struct ReadResponse: ResponseEncodable {
        var read: Int
        var unreadCount: Int
    }

    @Sendable func read(_ request: Request, context: AuthenticatedContext) async throws -> ReadResponse {
        let userID = context.identity.userID.uuid
        // Someone else's notification, or none: the same 404.
        guard let raw = context.parameters.get("id"), let id = UUID(uuidString: raw), try await store.markRead(id, of: userID, now: clock.now()) else {
            throw AppError(.notFound, code: "notification_not_found", detail: "There is no such notification.")
        }
        return ReadResponse(read: 1, unreadCount: try await store.unreadCount(of: userID))
    }

    /// `{"through": id}`, optional: only the notifications no newer than that one (what a page showed).
    /// Any other key is refused: without `through` every notification is marked read, so `{"id": …}` meant
    /// for one must not quietly mark them all.
    struct ReadAllRequest: Decodable {
        var through: String?

        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Key.self)
            let others = container.allKeys.map(\.stringValue).filter { $0 != "through" }.sorted()
            guard others.isEmpty else {
                let issues = others.map {
                    ProblemDetails.FieldError(
                        field: $0, code: "unknown_field",
                        message: "\($0) is not a field of this request: it takes only through (the newest notification to mark); to mark one, POST /api/notifications/{id}/read.")
                }
                throw AppError.validation(issues, detail: issues.count == 1 ? issues[0].message : nil)
            }
            through = try container.decodeIfPresent(String.self, forKey: Key(stringValue: "through"))
        }
    }

    @Sendable func readAll(_ request: Request, context: AuthenticatedContext) async throws -> ReadResponse {
        let userID = context.identity.userID.uuid
        var through: UUID?
        if let raw = try await LinksController.optionalBody(request, as: ReadAllRequest.self, context: context)?.through {
            guard let id = UUID(uuidString: raw) else { throw AppError.validation(field: "through", code: "invalid", message: "through must be a notification's id.") }
            through = id
        }
        guard let count = try await store.markAllRead(of: userID, through: through, now: clock.now()) else {
            throw AppError(.notFound, code: "notification_not_found", detail: "There is no such notification.")
        }
        return ReadResponse(read: count, unreadCount: try await store.unreadCount(of: userID))
    }

    struct Preference: Codable, Sendable {
        var category: String
        var email: Bool
        /// Security notices are always mailed.
        var locked: Bool
    }

    struct PreferencesResponse: ResponseEncodable {
        var preferences: [Preference]
    }

    @Sendable func preferences(_ request: Request, context: AuthenticatedContext) async throws -> PreferencesResponse {
        let choices = try await store.preferences(of: context.identity.userID.uuid)
        return PreferencesResponse(preferences: NoticeCategory.allCases.map {
            Preference(category: $0.rawValue, email: choices[$0] ?? true, locked: $0.alwaysMailed)
        })
    }

    /// `{"email": {"orders": false, "cash": true}}`: the categories named change, the others stay.
    struct PreferencesRequest: Decodable {
        var email: [String: Bool]?
    }

    @Sendable func setPreferences(_ request: Request, context: AuthenticatedContext) async throws -> PreferencesResponse {
        let body = try await request.decodeBody(as: PreferencesRequest.self, context: context)
        guard let email = body.email, !email.isEmpty else {
            throw AppError.validation(field: "email", code: "required", message: "email must map categories to true or false.")
        }
        var choices: [NoticeCategory: Bool] = [:]
        var issues: [FieldIssue] = []
        for (name, wanted) in email {
            guard let category = NoticeCategory(rawValue: name) else {
                issues.append(.init(field: "email.\(name)", code: "unknown_category", message: "Categories are \(NoticeCategory.allCases.map(\.rawValue).joined(separator: ", "))."))
                continue
            }
            if category.alwaysMailed && !wanted {
                issues.append(.init(field: "email.\(name)", code: "always_on", message: "Security notices are always mailed."))
                continue
            }
            choices[category] = wanted
        }
        if !issues.isEmpty { throw TradingError.invalid(issues) }
        let before = try await store.preferences(of: context.identity.userID.uuid)
        guard try await store.setPreferences(choices, of: context.identity.userID.uuid, now: clock.now()) else { throw IdentityError.userErased }
        // What changed, on the audit trail; a request that changes nothing records nothing.
        let changed = choices.filter { before[$0.key] != $0.value }
        if !changed.isEmpty {
            await security.record(
                "mail_preferences_changed", userID: context.identity.userID.uuid, byUser: true,
                details: Dictionary(uniqueKeysWithValues: changed.map { ($0.key.rawValue, $0.value ? "on" : "off") }), origin: context.origin, audited: true)
        }
        return try await preferences(request, context: context)
    }

    /// Whom and what an unsubscribe link is about; a link Folio did not sign is refused as a bad request.
    func unsubscribing(_ token: Substring?) throws -> (userID: UUID, category: NoticeCategory) {
        guard let token, let found = unsubscribe.verify(String(token)) else {
            throw AppError(
                .badRequest, code: "invalid_token",
                detail: "This link to stop email was cut short, or is not one Folio can check (it may be from mail sent before the server's key was replaced). Sign in and choose which mail you get in Settings.",
                errors: [.init(field: "token", code: "invalid_token", message: "Open the link from the email again, whole.")])
        }
        return found
    }

    /// Whether the link's mail is still on (the page then asks); refused as `stopMail` refuses.
    func stillMailed(_ token: Substring?) async throws -> (category: NoticeCategory, on: Bool) {
        let (userID, category) = try unsubscribing(token)
        switch try await store.mailState(category, of: userID) {
        case .erased: throw AppError(.notFound, code: "not_found", detail: "The account this email was sent for was closed and its data erased.")
        case .alreadyOff: return (category, false)
        case .stopped: return (category, true)
        }
    }

    /// Turns the link's category of mail off (a mail app's one-click POST, or the page's button).
    func stopMail(_ token: Substring?, origin: RequestOrigin) async throws -> NoticeCategory {
        let (userID, category) = try unsubscribing(token)
        switch try await store.stopMail(category, of: userID, now: clock.now()) {
        case .erased:
            throw AppError(.notFound, code: "not_found", detail: "The account this email was sent for was closed and its data erased.")
        case .alreadyOff:
            return category
        case .stopped:
            // Whoever holds the mail's link, not necessarily its person: no actor.
            await security.record(
                "mail_preferences_changed", userID: userID, details: [category.rawValue: "off", "by": "unsubscribe_link"], origin: origin, audited: true)
            return category
        }
    }
}
