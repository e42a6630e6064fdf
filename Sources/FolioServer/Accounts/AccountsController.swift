import FolioDomain
import Foundation
import Hummingbird
import NIOCore

/// Accounts, paper deposits and withdrawals, and the ledger: `/api/accounts`,
/// `/api/transactions`, `/api/transactions.csv`. Everything is scoped to the
/// signed-in user; another user's account is 404.
struct AccountsController: Sendable {
    let accounts: AccountService
    let store: TradingStore
    let idempotency: Idempotency
    /// The ledger list and its CSV are reporting reads: the read replica when one is configured and current.
    let reads: ReadRouting

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
        var id: AccountID
        var name: String
        var kind: String
        var currency: String
        var cash: Cash
        var reservedCash: Cash
        var availableCash: Cash
        var createdAt: Date

        init(_ account: AccountRecord) {
            id = account.id
            name = account.name
            kind = account.kind
            currency = account.currency
            cash = account.cash
            reservedCash = account.reservedCash
            availableCash = account.state.availableCash
            createdAt = account.createdAt
        }
    }

    struct AccountList: ResponseEncodable {
        var data: [AccountResponse]
    }

    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> AccountList {
        AccountList(data: try await store.accounts(of: context.identity.userID).map(AccountResponse.init))
    }

    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> AccountResponse {
        guard let id = context.parameters.get("id").flatMap(AccountID.init),
              let account = try await store.account(id, of: context.identity.userID)
        else { throw TradingError.accountNotFound }
        return AccountResponse(account)
    }

    // MARK: - Deposits and withdrawals

    struct MovementRequest: Decodable {
        var amount: Cash
        var description: String?

        enum CodingKeys: String, CodingKey {
            case amount, description
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            do {
                amount = try container.decode(Cash.self, forKey: .amount)
            } catch let issue as FieldIssue where issue.code == "too_precise" {
                // Deposits and withdrawals are in cents: the limit said is theirs, however many places were sent.
                throw FieldIssue(field: issue.field, code: issue.code, message: "\(issue.field) may have at most \(Cash.centPlaces) decimal places.")
            }
            description = try container.decodeIfPresent(String.self, forKey: .description)
        }
    }

    struct EntryResponse: ResponseEncodable, Encodable, Sendable {
        var id: EntryID
        var accountID: AccountID
        var type: String
        var symbol: String?
        var quantity: Quantity?
        var price: Price?
        var amount: Cash
        var orderID: OrderID?
        var description: String?
        var occurredAt: Date

        init(_ entry: EntryRecord) {
            id = entry.line.id
            accountID = entry.accountID
            type = entry.line.kind.rawValue
            symbol = entry.line.symbol
            quantity = entry.line.quantity
            price = entry.line.price
            amount = entry.line.amount
            orderID = entry.line.orderID
            description = entry.line.description
            occurredAt = entry.line.occurredAt
        }
    }

    @Sendable func deposit(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await movement(.deposit, request: request, context: context)
    }

    @Sendable func withdraw(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await movement(.withdrawal, request: request, context: context)
    }

    func movement(_ movement: TradingRules.CashMovement, request: Request, context: AuthenticatedContext) async throws -> Response {
        let body = try await request.decodeBody(as: MovementRequest.self, context: context)
        guard let id = context.parameters.get("id").flatMap(AccountID.init) else { throw TradingError.accountNotFound }
        let userID = context.identity.userID, audit = context.auditContext, accounts = self.accounts
        return try await idempotency.run(request, userID: userID, status: .created, location: { (_: EntryResponse) in nil }, prepare: {}) { _, db in
            EntryResponse(try await accounts.move(
                movement, amount: body.amount, description: body.description, account: id, owner: userID, actor: userID, context: audit, on: db))
        }
    }

    // MARK: - Ledger

    /// Reads the filters of `/api/transactions`, naming each malformed one.
    static func filter(_ request: Request) throws -> TradingStore.EntryFilter {
        let query = request.query
        var filter = TradingStore.EntryFilter()
        var issues: [FieldIssue] = []
        if let raw = query["account_id"] {
            if let id = AccountID(raw) { filter.accountID = id } else { issues.append(.init(field: "account_id", code: "invalid", message: "account_id must be a UUID.")) }
        }
        if let raw = query["symbol"] {
            if let symbol = OrderDraft.normalizedSymbol(String(raw)) { filter.symbol = symbol } else { issues.append(.init(field: "symbol", code: "invalid", message: "symbol must be a ticker.")) }
        }
        if let raw = query["type"] {
            if let kind = LedgerKind(rawValue: raw.lowercased()) { filter.kind = kind } else {
                issues.append(.init(field: "type", code: "invalid", message: "type must be one of \(LedgerKind.allCases.map(\.rawValue).joined(separator: ", ")).")) }
        }
        // Days are UTC days, or the person's own with `tz` (the web page sends the browser's zone).
        var zone = TimeZone.gmt
        if let raw = query["tz"] {
            if let named = StrictDate.zone(named: String(raw)) { zone = named } else {
                issues.append(.init(field: "tz", code: "invalid", message: "tz must be a time zone name such as America/New_York."))
            }
        }
        for (key, keyPath) in [("from", \TradingStore.EntryFilter.from), ("to", \TradingStore.EntryFilter.to)] {
            if let raw = query[key] {
                if let date = key == "to" ? StrictDate.end(String(raw), in: zone) : StrictDate.dayOrTime(String(raw), in: zone) { filter[keyPath: keyPath] = date } else {
                    issues.append(.init(field: String(key), code: "invalid", message: "\(key) must be a real day (2026-01-31) or an RFC 3339 time (2026-01-31T14:30:00Z).")) }
            }
        }
        // A range that ends before it starts (or where it starts: `to=2026-12-06` ends at the 7th's midnight, `from=2026-12-07`
        // starts there) matches nothing for a reason a person should hear. `to` is where the range ends, exclusive.
        if let from = filter.from, let to = filter.to, to <= from {
            issues.append(.init(field: "to", code: "before_from", message: "to must not be before from."))
        }
        if !issues.isEmpty { throw TradingError.invalid(issues) }
        return filter
    }

    @Sendable func transactions(_ request: Request, context: AuthenticatedContext) async throws -> Page<EntryResponse> {
        let filter = try Self.filter(request)
        let limit = try Pagination.pageSize(request, maximum: Self.maximumPageSize)
        let cursor = try request.query["cursor"].map(Pagination.decode)
        try await store.requireOwned(filter.accountID, by: context.identity.userID)
        let entries = try await reads.store().entries(of: context.identity.userID, filter: filter, after: cursor, limit: limit + 1)
        let page = entries.prefix(limit)
        let next = entries.count > limit ? page.last.map { Pagination.cursor(after: $0.line.id.uuid) } : nil
        return Page(data: page.map(EntryResponse.init), nextCursor: next)
    }

    /// The same rows as CSV, streamed page by page so a long history never sits in memory.
    @Sendable func transactionsCSV(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let filter = try Self.filter(request)
        let userID = context.identity.userID
        try await self.store.requireOwned(filter.accountID, by: userID)
        let store = await reads.store()
        return CSV.download(
            filename: "transactions.csv", header: "id,occurred_at,account_id,type,symbol,quantity,price,amount,order_id,description",
            page: { (after: UUID?) in try await store.entries(of: userID, filter: filter, after: after, limit: CSV.pageSize) },
            cursor: { $0.line.id.uuid }, row: { CSV.row(EntryResponse($0)) })
    }
}

enum CSV {
    static let pageSize = 500

    /// A CSV download streamed page by page (`page` gives the rows after a
    /// cursor, `cursor` names a row), so a long history never sits in memory.
    static func download<Row: Sendable, Cursor: Sendable>(
        filename: String, header: String,
        page: @escaping @Sendable (Cursor?) async throws -> [Row], cursor: @escaping @Sendable (Row) -> Cursor,
        row: @escaping @Sendable (Row) -> String
    ) -> Response {
        let body = ResponseBody { writer in
            try await writer.write(ByteBuffer(string: header + "\n"))
            var after: Cursor?
            while true {
                let rows = try await page(after)
                if rows.isEmpty { break }
                try await writer.write(ByteBuffer(string: rows.map(row).joined()))
                after = cursor(rows.last!)
                if rows.count < pageSize { break }
            }
            try await writer.finish(nil)
        }
        return Response(
            status: .ok, headers: [.contentType: "text/csv; charset=utf-8", .contentDisposition: "attachment; filename=\"\(filename)\""], body: body)
    }

    static func row(_ entry: AccountsController.EntryResponse) -> String {
        let time = entry.occurredAt.formatted(.iso8601)
        return [
            entry.id.description, time, entry.accountID.description, entry.type, entry.symbol ?? "", entry.quantity?.description ?? "",
            entry.price?.description ?? "", entry.amount.description, entry.orderID?.description ?? "", entry.description ?? "",
        ].map(field).joined(separator: ",") + "\n"
    }

    /// RFC 4180 quoting, and a leading quote on text a spreadsheet would run as a formula.
    /// Decided on Unicode scalars, as a spreadsheet reads them: a Swift `Character` joins
    /// `\r\n` into one, or a comma, a quote or an `=` with a combining mark after it.
    static func field(_ text: String) -> String {
        var value = text
        if startsLikeFormula(value), (try? Fixed<WideScale>(parsing: value)) == nil { value = "'" + value }
        guard value.unicodeScalars.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return value }
        var quoted = String.UnicodeScalarView()
        quoted.append("\"")
        for scalar in value.unicodeScalars {
            quoted.append(scalar)
            if scalar == "\"" { quoted.append("\"") }
        }
        quoted.append("\"")
        return String(quoted)
    }

    static let formulaStarts: Set<Unicode.Scalar> = ["=", "+", "-", "@", "\t", "\r"]
    /// Full-width forms that an East Asian spreadsheet may take for the ASCII ones.
    static let wideFormulaStarts: Set<Unicode.Scalar> = ["\u{FF1D}", "\u{FF0B}", "\u{FF0D}", "\u{FF20}"]
    /// Blanks a spreadsheet may skip before it looks for a formula.
    static let leadingBlanks: Set<Unicode.Scalar> = [" ", "\u{A0}", "\u{3000}"]

    /// The first scalar after any leading blanks would start a formula.
    static func startsLikeFormula(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first(where: { !leadingBlanks.contains($0) }) else { return false }
        return formulaStarts.contains(first) || wideFormulaStarts.contains(first)
    }
}

extension TradingStore {
    /// An `account_id` filter names one of the user's accounts: another's (or none) is 404, as on every
    /// route that takes an account id, rather than a list that looks like an empty ledger.
    func requireOwned(_ id: AccountID?, by userID: UserID) async throws {
        if let id, try await account(id, of: userID) == nil { throw TradingError.accountNotFound }
    }
}
