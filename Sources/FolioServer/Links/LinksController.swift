import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// Linked banks and brokerages through Plaid, under `/api/links`, scoped to
/// the signed-in user: another user's item is 404. The access token never
/// appears in an answer.
struct LinksController: Sendable {
    let links: PlaidLinks

    static let maximumPageSize = 200

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let api = router.group("/api/links", context: AuthenticatedContext.self)
        api.get("", use: list)
        api.post("/plaid/link-token", use: linkToken)
        api.post("/plaid/exchange", use: exchange)
        api.get("/transactions", use: transactions)
        api.get("/transactions.csv", use: transactionsCSV)
        api.get("/holdings", use: holdings)
        api.post("/:id/sync", use: sync)
        api.post("/:id/relinked", use: relinked)
        api.delete("/:id", use: remove)
    }

    // MARK: - Answers

    struct AccountResponse: ResponseEncodable, Encodable, Sendable {
        var id: String
        var itemID: String
        var name: String
        var officialName: String?
        var mask: String?
        var type: String
        var subtype: String?
        var currentBalance: Cash?
        var availableBalance: Cash?
        var creditLimit: Cash?
        var currency: String?

        init(_ linked: LinkedAccount) {
            id = linked.id.lowercasedString
            itemID = linked.itemID.lowercasedString
            name = linked.account.name
            officialName = linked.account.officialName
            mask = linked.account.mask
            type = linked.account.type
            subtype = linked.account.subtype
            currentBalance = linked.account.current
            availableBalance = linked.account.available
            creditLimit = linked.account.limit
            currency = linked.account.currency
        }
    }

    struct ItemResponse: ResponseEncodable, Encodable, Sendable {
        var id: String
        var institutionID: String?
        var institutionName: String?
        var status: String
        var errorCode: String?
        var errorMessage: String?
        var lastSyncedAt: Date?
        var holdingsRefreshedAt: Date?
        var createdAt: Date
        var accounts: [AccountResponse]

        init(_ item: PlaidItem, accounts: [LinkedAccount]) {
            id = item.id.lowercasedString
            institutionID = item.institutionID
            institutionName = item.institutionName
            status = item.status.rawValue
            errorCode = item.errorCode
            errorMessage = item.errorMessage
            lastSyncedAt = item.lastSyncedAt
            holdingsRefreshedAt = item.holdingsRefreshedAt
            createdAt = item.createdAt
            self.accounts = accounts.filter { $0.itemID == item.id }.map(AccountResponse.init)
        }
    }

    struct ItemList: ResponseEncodable {
        var data: [ItemResponse]
    }

    struct LinkTokenRequest: Decodable {
        /// Set to re-link an item whose login broke (Link's update mode).
        var itemID: String?
    }

    struct LinkTokenResponse: ResponseEncodable {
        var linkToken: String
        var expiration: String?
    }

    struct ExchangeRequest: Decodable {
        var publicToken: String?
    }

    // MARK: - Items

    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> ItemList {
        let userID = context.identity.userID
        let items = try await links.store.items(of: userID)
        let accounts = items.isEmpty ? [] : try await links.store.accounts(of: userID)
        return ItemList(data: items.map { ItemResponse($0, accounts: accounts) })
    }

    @Sendable func linkToken(_ request: Request, context: AuthenticatedContext) async throws -> LinkTokenResponse {
        let body = try await Self.optionalBody(request, as: LinkTokenRequest.self, context: context)
        var itemID: UUID?
        if let raw = body?.itemID {
            guard let id = UUID(uuidString: raw) else { throw TradingError.invalid(field: "item_id", code: "invalid", message: "item_id must be a UUID.") }
            itemID = id
        }
        let token = try await links.createLinkToken(userID: context.identity.userID, relinking: itemID)
        return LinkTokenResponse(linkToken: token.token, expiration: token.expiration)
    }

    @Sendable func exchange(_ request: Request, context: AuthenticatedContext) async throws -> EditedResponse<ItemResponse> {
        let body = try await request.decodeBody(as: ExchangeRequest.self, context: context)
        guard let publicToken = body.publicToken, (1...512).contains(publicToken.utf8.count),
              publicToken.utf8.allSatisfy({ (0x21...0x7E).contains($0) })
        else {
            throw TradingError.invalid(field: "public_token", code: "required", message: "public_token is required: the token Plaid Link gave on success.")
        }
        let item = try await links.exchange(userID: context.identity.userID, publicToken: publicToken, origin: context.origin)
        let accounts = try await links.store.accounts(of: context.identity.userID, item: item.id)
        return EditedResponse(status: .created, headers: [.location: "/api/links"], response: ItemResponse(item, accounts: accounts))
    }

    @Sendable func sync(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await links.requestSync(try Self.itemID(context), userID: context.identity.userID)
        return Response(status: .accepted)
    }

    @Sendable func relinked(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await links.loginRepaired(try Self.itemID(context), userID: context.identity.userID)
        return Response(status: .accepted)
    }

    @Sendable func remove(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await links.remove(try Self.itemID(context), userID: context.identity.userID, origin: context.origin)
        return Response(status: .noContent)
    }

    static func itemID(_ context: AuthenticatedContext) throws -> UUID {
        guard let id = context.parameters.get("id").flatMap(UUID.init(uuidString:)) else { throw LinkError.itemNotFound }
        return id
    }

    /// A body that may be absent altogether.
    static func optionalBody<T: Decodable>(_ request: Request, as type: T.Type, context: AuthenticatedContext) async throws -> T? {
        var request = request
        let buffer = try await request.collectBody(upTo: 1 << 16)
        guard buffer.readableBytes > 0 else { return nil }
        return try await request.decodeBody(as: T.self, context: context)
    }

    // MARK: - Transactions

    struct TransactionResponse: ResponseEncodable, Encodable, Sendable {
        var id: String
        var itemID: String
        var accountID: String?
        var transactionID: String
        /// Positive: money into the account; negative: money out (Plaid's sign turned around).
        var amount: Cash
        var currency: String?
        var date: String
        var authorizedDate: String?
        var name: String
        var merchantName: String?
        var category: String?
        var pending: Bool

        init(_ linked: LinkedTransaction) {
            id = linked.id.lowercasedString
            itemID = linked.itemID.lowercasedString
            accountID = linked.accountID?.lowercasedString
            transactionID = linked.transaction.transactionID
            amount = linked.transaction.amount
            currency = linked.transaction.currency
            date = linked.transaction.date
            authorizedDate = linked.transaction.authorizedDate
            name = linked.transaction.name
            merchantName = linked.transaction.merchantName
            category = linked.transaction.category
            pending = linked.transaction.pending
        }
    }

    /// `account_id` (a linked account's id), `type` (`inflow` or `outflow`), `from`, `to` and `pending`, each malformed one named.
    func filter(_ request: Request, userID: UserID) async throws -> PlaidStore.TransactionFilter {
        let query = request.query
        var filter = PlaidStore.TransactionFilter()
        var issues: [FieldIssue] = []
        if let raw = query["account_id"] {
            if let id = UUID(uuidString: String(raw)) { filter.accountID = id } else {
                issues.append(.init(field: "account_id", code: "invalid", message: "account_id must be a UUID."))
            }
        }
        for (key, keyPath) in [("from", \PlaidStore.TransactionFilter.from), ("to", \PlaidStore.TransactionFilter.to)] {
            if let raw = query[key] {
                if let date = key == "to" ? StrictDate.end(String(raw)) : StrictDate.dayOrTime(String(raw)) { filter[keyPath: keyPath] = date } else {
                    issues.append(.init(field: key, code: "invalid", message: "\(key) must be a real day (2026-01-31) or an RFC 3339 time (2026-01-31T14:30:00Z)."))
                }
            }
        }
        if let raw = query["type"] {
            switch raw {
            case "inflow": filter.inflow = true
            case "outflow": filter.inflow = false
            default: issues.append(.init(field: "type", code: "invalid", message: "type must be inflow (money in) or outflow (money out)."))
            }
        }
        if let raw = query["pending"] {
            switch raw {
            case "true": filter.pending = true
            case "false": filter.pending = false
            default: issues.append(.init(field: "pending", code: "invalid", message: "pending must be true or false."))
            }
        }
        // `to` ends the range, exclusive: one that ends where it starts is before it, as on /api/transactions.
        if let from = filter.from, let to = filter.to, to <= from {
            issues.append(.init(field: "to", code: "before_from", message: "to must not be before from."))
        }
        if !issues.isEmpty { throw TradingError.invalid(issues) }
        if let id = filter.accountID, try await links.store.account(id, owner: userID) == nil { throw LinkError.accountNotFound }
        return filter
    }

    @Sendable func transactions(_ request: Request, context: AuthenticatedContext) async throws -> Page<TransactionResponse> {
        let userID = context.identity.userID
        let filter = try await filter(request, userID: userID)
        let limit = try Pagination.pageSize(request, maximum: Self.maximumPageSize)
        var cursor: PlaidStore.TransactionCursor?
        if let raw = request.query["cursor"] {
            guard let decoded = PlaidStore.TransactionCursor(raw) else {
                throw AppError.validation(field: "cursor", code: "invalid", message: "The cursor is not one this server gave out.")
            }
            cursor = decoded
        }
        let rows = try await links.store.transactions(of: userID, filter: filter, after: cursor, limit: limit + 1)
        let page = rows.prefix(limit)
        let next = rows.count > limit ? page.last.map { PlaidStore.TransactionCursor(occurredAt: $0.occurredAt, id: $0.id).text } : nil
        return Page(data: page.map(TransactionResponse.init), nextCursor: next)
    }

    /// The same rows as CSV, streamed page by page.
    @Sendable func transactionsCSV(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let userID = context.identity.userID
        let filter = try await filter(request, userID: userID)
        let store = links.store
        return CSV.download(
            filename: "linked-transactions.csv", header: "id,date,account_id,amount,currency,name,merchant_name,category,pending,transaction_id",
            page: { (after: PlaidStore.TransactionCursor?) in try await store.transactions(of: userID, filter: filter, after: after, limit: CSV.pageSize) },
            cursor: { PlaidStore.TransactionCursor(occurredAt: $0.occurredAt, id: $0.id) },
            row: { row in
                let t = row.transaction
                return [
                    row.id.lowercasedString, t.date, row.accountID?.lowercasedString ?? "", t.amount.description, t.currency ?? "", t.name,
                    t.merchantName ?? "", t.category ?? "", t.pending ? "true" : "false", t.transactionID,
                ].map(CSV.field).joined(separator: ",") + "\n"
            })
    }

    // MARK: - Holdings

    struct HoldingResponse: ResponseEncodable, Encodable, Sendable {
        var itemID: String
        var accountID: String?
        var securityID: String
        var ticker: String?
        var name: String?
        var securityType: String?
        var quantity: Quantity
        var costBasis: Cash?
        var institutionPrice: String
        var institutionPriceAsOf: String?
        var institutionValue: Cash
        var currency: String?

        init(_ linked: LinkedHolding) {
            let holding = linked.holding
            itemID = linked.itemID.lowercasedString
            accountID = linked.accountID?.lowercasedString
            securityID = holding.securityID
            ticker = holding.ticker
            name = holding.securityName
            securityType = holding.securityType
            quantity = holding.quantity
            costBasis = holding.costBasis
            institutionPrice = holding.institutionPrice.formatted(minimumFractionDigits: 2)
            institutionPriceAsOf = holding.institutionPriceAsOf
            institutionValue = holding.institutionValue
            currency = holding.currency
        }
    }

    struct HoldingList: ResponseEncodable {
        var data: [HoldingResponse]
    }

    @Sendable func holdings(_ request: Request, context: AuthenticatedContext) async throws -> HoldingList {
        HoldingList(data: try await links.store.holdings(of: context.identity.userID).map(HoldingResponse.init))
    }
}

/// `POST /webhooks/plaid`: outside `/api`, without cookies or CSRF tokens (the
/// middleware leave `/webhooks/` alone), with its own rate limit and a small
/// body limit. A webhook that does not verify is refused with 401, counted
/// and recorded as a security event, and nothing in it is read. One that
/// verifies is recorded, answered 200 at once, and its work queued.
struct PlaidWebhookController: Sendable {
    let links: PlaidLinks
    let verifier: PlaidWebhookVerifier
    let security: SecurityEvents
    let rejections: WebhookRejections
    let metrics: FolioMetrics

    static let path = "/webhooks/plaid"
    static let bodyLimit = 64 << 10
    static let verificationHeader = HTTPField.Name("Plaid-Verification")!

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        router.post(RouterPath(Self.path), use: receive)
    }

    struct Received: ResponseEncodable {
        var received: Bool
        var duplicate: Bool
        var action: String
    }

    @Sendable func receive(_ request: Request, context: FolioRequestContext) async throws -> Received {
        var request = request
        let buffer: ByteBuffer
        do { buffer = try await request.collectBody(upTo: Self.bodyLimit) } catch {
            await rejections.refuse(vendor: "plaid", reason: "too_large", metrics: metrics, security: security, origin: context.origin)
            throw ProblemMiddleware.payloadTooLarge()
        }
        let body = Array(buffer: buffer)
        let bodyHash: String
        do {
            bodyHash = try await verifier.verify(header: request.headers[Self.verificationHeader], body: body, client: ClientAddress.key(context.clientIP))
        } catch {
            await rejections.refuse(vendor: "plaid", reason: error.rawValue, metrics: metrics, security: security, origin: context.origin)
            throw AppError(
                .unauthorized, code: "webhook_unverified",
                detail: "The webhook's Plaid-Verification header did not verify; nothing was processed.",
                // A 401 names what would authenticate the request (RFC 9110): here the header Plaid signs.
                headers: [.wwwAuthenticate: Self.verificationHeader.rawName])
        }
        metrics.webhookVerification(vendor: "plaid", result: "verified")
        guard let json = try? JSONValue.parse(body), let type = json["webhook_type"]?.string, let code = json["webhook_code"]?.string else {
            throw AppError(.badRequest, code: "malformed_webhook", detail: "The webhook body has no webhook_type or webhook_code.")
        }
        // Recorded and acted on in one transaction: a webhook whose work could not be queued is not marked as taken, so Plaid's retry is.
        let links = self.links, now = links.clock.now()
        let (fresh, action) = try await links.store.database.transaction { db in
            let fresh = try await links.store.recordWebhook(
                bodySHA256: bodyHash, itemID: json["item_id"]?.string, type: type, code: code, now: now, window: PlaidWebhookVerifier.replayWindow, on: db)
            return (fresh, try await links.handleWebhook(json, fresh: fresh, on: db))
        }
        context.logger.info("Plaid webhook received", metadata: [
            "webhook_type": "\(type)", "webhook_code": "\(code)", "action": "\(action.rawValue)", "duplicate": "\(!fresh)"])
        return Received(received: true, duplicate: !fresh, action: action.rawValue)
    }
}

/// Webhooks refused, by vendor and reason: the seed's alert on verification
/// failures reads these (metrics export arrives with the observability work).
final class WebhookRejections: Sendable {
    private let counts = Mutex<[String: Int]>([:])

    func count(vendor: String, reason: String) {
        counts.withLock { $0["\(vendor):\(reason)", default: 0] += 1 }
    }

    var all: [String: Int] { counts.withLock { $0 } }

    /// A refused webhook: counted here (for /health/detailed) and in the metrics, and logged as a security event.
    func refuse(vendor: String, reason: String, metrics: FolioMetrics, security: SecurityEvents, origin: RequestOrigin) async {
        count(vendor: vendor, reason: reason)
        metrics.webhookVerification(vendor: vendor, result: reason)
        await security.record("webhook_verification_failed", details: ["vendor": vendor, "reason": reason], origin: origin)
    }
}
