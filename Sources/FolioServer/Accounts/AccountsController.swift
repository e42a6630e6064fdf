import FluentKit
import FolioDomain
import Foundation
import Hummingbird
import NIOCore
import SQLKit

/// Accounts, paper deposits and withdrawals, and the ledger: `/api/accounts`,
/// `/api/transactions`, `/api/transactions.csv`. Everything is scoped to the
/// signed-in user; another user's account is 404.
struct AccountsController: Sendable {
    let ledger: Ledger
    let database: FolioDatabase
    let idempotency: Idempotency

    static let maximumPageSize = 200

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let api = router.group("/api", context: AuthenticatedContext.self)
        api.get("/accounts", use: list)
        api.get("/accounts/:id", use: show)
        api.post("/accounts/:id/deposits", use: deposit)
        api.post("/accounts/:id/withdrawals", use: withdraw)
        api.get("/transactions", use: transactions)
        api.get("/transactions.csv", use: transactionsCSV)
    }

    // MARK: - Accounts

    struct AccountResponse: ResponseEncodable {
        var id: UUID
        var name: String
        var kind: String
        var currency: String
        var cash: String
        var reservedCash: String
        var availableCash: String
        var createdAt: Date

        enum CodingKeys: String, CodingKey {
            case id, name, kind, currency, cash
            case reservedCash = "reserved_cash"
            case availableCash = "available_cash"
            case createdAt = "created_at"
        }

        init(_ account: Account) {
            id = account.id!
            name = account.name
            kind = account.kind
            currency = account.currency
            cash = Cash.text(account.cash.value)
            reservedCash = Cash.text(account.reservedCash.value)
            availableCash = Cash.text(account.availableCash)
            createdAt = account.createdAt
        }
    }

    struct AccountList: ResponseEncodable {
        var data: [AccountResponse]
    }

    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> AccountList {
        let accounts = try await Account.query(on: database.db).filter(\.$userID == context.identity.userID).sort(\.$createdAt).all()
        return AccountList(data: accounts.map(AccountResponse.init))
    }

    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> AccountResponse {
        AccountResponse(try await ownAccount(context))
    }

    func ownAccount(_ context: AuthenticatedContext) async throws -> Account {
        guard let id = context.parameters.get("id", as: UUID.self),
              let account = try await Account.query(on: database.db).filter(\.$id == id).filter(\.$userID == context.identity.userID).first()
        else { throw AppError.notFound("account") }
        return account
    }

    // MARK: - Deposits and withdrawals

    struct MovementRequest: Decodable {
        var amount: DecimalValue
        var description: String?
    }

    struct EntryResponse: ResponseEncodable, Encodable, Sendable {
        var id: UUID
        var accountID: UUID
        var type: String
        var symbol: String?
        var quantity: String?
        var price: String?
        var amount: String
        var orderID: UUID?
        var description: String?
        var occurredAt: Date

        enum CodingKeys: String, CodingKey {
            case id, type, symbol, quantity, price, amount, description
            case accountID = "account_id"
            case orderID = "order_id"
            case occurredAt = "occurred_at"
        }

        init(_ entry: LedgerEntry) {
            id = entry.id!
            accountID = entry.accountID
            type = entry.type
            symbol = entry.symbol
            quantity = entry.quantity.map { ExactDecimal.format($0.value) }
            price = entry.price.map { ExactDecimal.format($0.value) }
            amount = Cash.text(entry.amount.value)
            orderID = entry.orderID
            description = entry.entryDescription
            occurredAt = entry.occurredAt
        }
    }

    @Sendable func deposit(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await movement(.deposit, request: request, context: context)
    }

    @Sendable func withdraw(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await movement(.withdrawal, request: request, context: context)
    }

    func movement(_ kind: LedgerEntry.Kind, request: Request, context: AuthenticatedContext) async throws -> Response {
        let body = try await request.decodeBody(as: MovementRequest.self, context: context)
        let amount = body.amount.value
        if let issue = Cash.problem(amount, field: "amount", maximum: Ledger.maximumMovement) { throw AppError.validation([issue], detail: issue.message) }
        if let description = body.description, description.count > 200 {
            throw AppError.validation(field: "description", code: "too_long", message: "description may have at most 200 characters.")
        }
        guard let id = context.parameters.get("id", as: UUID.self) else { throw AppError.notFound("account") }
        let userID = context.identity.userID, ip = context.parent.clientIP, requestID = context.parent.requestID
        let ledger = self.ledger
        return try await idempotency.run(request, userID: userID, status: .created, location: { _ in nil }) { db -> EntryResponse in
            guard let account = try await ledger.lockedAccount(id, userID: userID, on: db) else { throw AppError.notFound("account") }
            do {
                return EntryResponse(try await ledger.move(
                    account: account, kind: kind, amount: amount, description: body.description, actorID: userID,
                    ip: ip, requestID: requestID, on: db))
            } catch Ledger.MovementError.insufficientFunds(let available) {
                throw AppError(
                    .unprocessableContent, code: "insufficient_funds",
                    detail: "Only \(Cash.text(available)) is available to withdraw.",
                    errors: [.init(field: "amount", code: "insufficient_funds", message: "amount exceeds the available cash of \(Cash.text(available)).")])
            }
        }
    }

    // MARK: - Ledger

    struct Filter {
        var accountID: UUID?
        var symbol: String?
        var type: LedgerEntry.Kind?
        var from: Date?
        var to: Date?
    }

    /// Reads the filters of `/api/transactions`, naming each malformed one.
    static func filter(_ request: Request) throws -> Filter {
        let query = request.uri.queryParameters
        var filter = Filter()
        var issues: [FieldIssue] = []
        if let raw = query["account_id"] {
            if let id = UUID(uuidString: String(raw)) { filter.accountID = id } else { issues.append(.init(field: "account_id", code: "invalid", message: "account_id must be a UUID.")) }
        }
        if let raw = query["symbol"] {
            if let symbol = OrderDraft.normalizedSymbol(String(raw)) { filter.symbol = symbol } else { issues.append(.init(field: "symbol", code: "invalid", message: "symbol must be a ticker.")) }
        }
        if let raw = query["type"] {
            if let kind = LedgerEntry.Kind(rawValue: String(raw)) { filter.type = kind } else {
                issues.append(.init(field: "type", code: "invalid", message: "type must be one of \(LedgerEntry.Kind.allCases.map(\.rawValue).joined(separator: ", ")).")) }
        }
        for (key, keyPath) in [("from" as Substring, \Filter.from), ("to", \Filter.to)] {
            if let raw = query[key] {
                if let date = Self.date(String(raw)) { filter[keyPath: keyPath] = date } else {
                    issues.append(.init(field: String(key), code: "invalid", message: "\(key) must be a date (2026-01-31) or an RFC 3339 time.")) }
            }
        }
        if !issues.isEmpty { throw AppError.validation(issues) }
        return filter
    }

    static func date(_ text: String) -> Date? {
        if let time = try? Date(text, strategy: .iso8601) { return time }
        return try? Date(text + "T00:00:00Z", strategy: .iso8601)
    }

    func query(_ filter: Filter, userID: UUID, on db: any Database) -> QueryBuilder<LedgerEntry> {
        let query = LedgerEntry.query(on: db).filter(\.$userID == userID)
        if let accountID = filter.accountID { query.filter(\.$accountID == accountID) }
        if let symbol = filter.symbol { query.filter(\.$symbol == symbol) }
        if let type = filter.type { query.filter(\.$type == type.rawValue) }
        if let from = filter.from { query.filter(\.$occurredAt >= from) }
        if let to = filter.to { query.filter(\.$occurredAt < to) }
        return query.sort(\.$occurredAt, .descending).sort(\.$id, .descending)
    }

    @Sendable func transactions(_ request: Request, context: AuthenticatedContext) async throws -> Page<EntryResponse> {
        let filter = try Self.filter(request)
        let limit = try Pagination.pageSize(request, maximum: Self.maximumPageSize)
        let query = query(filter, userID: context.identity.userID, on: database.db).limit(limit + 1)
        if let raw = request.uri.queryParameters["cursor"] {
            query.filter(Pagination.after(try Pagination.decode(raw), table: LedgerEntry.schema, timeColumn: "occurred_at", descending: true, owner: context.identity.userID))
        }
        let entries = try await query.all()
        let page = entries.prefix(limit)
        let next = entries.count > limit ? page.last.map { Pagination.cursor(after: $0.id!) } : nil
        return Page(data: page.map(EntryResponse.init), nextCursor: next)
    }

    /// The same rows as CSV, streamed page by page so a long history never sits in memory.
    @Sendable func transactionsCSV(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let filter = try Self.filter(request)
        let userID = context.identity.userID
        let database = self.database
        let controller = self
        let body = ResponseBody { writer in
            try await writer.write(ByteBuffer(string: "id,occurred_at,account_id,type,symbol,quantity,price,amount,order_id,description\n"))
            var cursor: UUID?
            while true {
                let query = controller.query(filter, userID: userID, on: database.db).limit(500)
                if let cursor {
                    query.filter(Pagination.after(cursor, table: LedgerEntry.schema, timeColumn: "occurred_at", descending: true, owner: userID))
                }
                let entries = try await query.all()
                if entries.isEmpty { break }
                var chunk = ""
                for entry in entries { chunk += CSV.row(EntryResponse(entry)) }
                try await writer.write(ByteBuffer(string: chunk))
                cursor = entries.last!.id!
                if entries.count < 500 { break }
            }
            try await writer.finish(nil)
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/csv; charset=utf-8", .contentDisposition: "attachment; filename=\"transactions.csv\""],
            body: body)
    }
}

/// Cash amounts as the API shows and accepts them.
enum Cash {
    /// Plain decimal with at least two places: "100000.00".
    static func text(_ value: Decimal) -> String {
        ExactDecimal.format(value, minimumScale: 2)
    }

    /// Why an entered cash amount is unacceptable, if it is.
    static func problem(_ amount: Decimal, field: String, maximum: Decimal) -> FieldIssue? {
        OrderDraftChecks.positive(amount, field: field, scale: Money.cashScale, maximum: maximum).first
    }
}

enum CSV {
    static func row(_ entry: AccountsController.EntryResponse) -> String {
        let time = entry.occurredAt.formatted(.iso8601)
        return [
            entry.id.uuidString, time, entry.accountID.uuidString, entry.type, entry.symbol ?? "", entry.quantity ?? "",
            entry.price ?? "", entry.amount, entry.orderID?.uuidString ?? "", entry.description ?? "",
        ].map(field).joined(separator: ",") + "\n"
    }

    /// RFC 4180 quoting, and a leading quote on text a spreadsheet would run as a formula.
    static func field(_ text: String) -> String {
        var value = text
        if let first = value.first, "=+-@\t\r".contains(first), Decimal(string: value) == nil { value = "'" + value }
        if value.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) {
            return "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        return value
    }
}
