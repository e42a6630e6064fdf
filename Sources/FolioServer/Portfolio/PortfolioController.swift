import FolioDomain
import Foundation
import Hummingbird

/// `GET /api/portfolio`: cash, each position valued at its quote, and totals.
/// Two database round trips in all: the identity (with the default account)
/// and one query for the account's cash joined with its holdings; quotes come
/// from memory.
struct PortfolioController: Sendable {
    let store: TradingStore
    let quotes: QuoteService
    let snapshots: PortfolioSnapshots
    /// Linked accounts, for the net-worth view.
    let linked: PlaidStore
    /// Alpaca links: an account whose link was removed is no longer followed, so it is left out of net worth.
    let brokerage: BrokerageStore
    /// The value history is a reporting read: the read replica when one is configured and current.
    let reads: ReadRouting

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let api = router.group("/api", context: AuthenticatedContext.self)
        // Reads: they spend the lookups' part of the call budget, not the part kept for pricing orders.
        api.get("/portfolio", use: MarketDataController.lookingUp(show))
        api.get("/portfolio/history", use: MarketDataController.lookingUp(history))
    }

    struct PositionResponse: Encodable, JSONWritable, Sendable {
        var symbol: String
        var quantity: Quantity
        /// Not set aside by open sells: what a new sell may take.
        var availableQuantity: Quantity
        var averageCost: Price
        var costBasis: Cash
        var price: String?
        var priceTime: Date?
        var stale: Bool
        var marketValue: Cash
        var unrealizedPnL: Cash
        var unrealizedPnLPercent: Ratio?
        var dayChange: Cash?
        var weight: Ratio

        enum CodingKeys: String, CodingKey {
            case symbol, quantity, price, stale, weight
            case availableQuantity = "available_quantity"
            case averageCost = "average_cost"
            case costBasis = "cost_basis"
            case priceTime = "price_time"
            case marketValue = "market_value"
            case unrealizedPnL = "unrealized_pnl"
            case unrealizedPnLPercent = "unrealized_pnl_percent"
            case dayChange = "day_change"
        }

        init(_ position: ValuedPosition) {
            symbol = position.symbol
            quantity = position.quantity
            availableQuantity = position.availableQuantity
            averageCost = position.averageCost
            costBasis = position.costBasis
            price = position.quote.map { $0.price.formatted(minimumFractionDigits: 2) }
            priceTime = position.quote?.asOf
            // No quote at all is the stalest a price can be.
            stale = position.quote?.isStale ?? true
            marketValue = position.marketValue
            unrealizedPnL = position.unrealizedPnL
            unrealizedPnLPercent = position.unrealizedPnLPercent
            dayChange = position.dayChange
            weight = position.weight
        }

        func write(to json: inout JSONWriter) {
            json.beginObject()
            json.field("available_quantity", availableQuantity)
            json.field("average_cost", averageCost)
            json.field("cost_basis", costBasis)
            json.field("day_change", dayChange)
            json.field("market_value", marketValue)
            json.field("price", price)
            json.field("price_time", priceTime)
            json.field("quantity", quantity)
            json.field("stale", stale)
            json.field("symbol", symbol)
            json.field("unrealized_pnl", unrealizedPnL)
            json.field("unrealized_pnl_percent", unrealizedPnLPercent)
            json.field("weight", weight)
            json.endObject()
        }
    }

    struct PortfolioResponse: ResponseEncodable, JSONWritable {
        var accountID: AccountID
        var cash: Cash
        var availableCash: Cash
        var positions: [PositionResponse]
        var marketValue: Cash
        var costBasis: Cash
        var unrealizedPnL: Cash
        var dayChange: Cash
        /// False when some position's day's change is not known: `day_change` then covers the others only.
        var dayChangeComplete = true
        var totalValue: Cash
        var valuedAt: Date

        enum CodingKeys: String, CodingKey {
            case cash, positions
            case accountID = "account_id"
            case availableCash = "available_cash"
            case marketValue = "market_value"
            case costBasis = "cost_basis"
            case unrealizedPnL = "unrealized_pnl"
            case dayChange = "day_change"
            case dayChangeComplete = "day_change_complete"
            case totalValue = "total_value"
            case valuedAt = "valued_at"
        }

        func write(to json: inout JSONWriter) {
            json.beginObject()
            json.field("account_id", accountID)
            json.field("available_cash", availableCash)
            json.field("cash", cash)
            json.field("cost_basis", costBasis)
            json.field("day_change", dayChange)
            json.field("day_change_complete", dayChangeComplete)
            json.field("market_value", marketValue)
            json.key("positions")
            json.beginArray()
            for position in positions { position.write(to: &json) }
            json.endArray()
            json.field("total_value", totalValue)
            json.field("unrealized_pnl", unrealizedPnL)
            json.field("valued_at", valuedAt)
            json.endObject()
        }
    }

    /// The account named by `account_id`, or the user's default one.
    static func accountID(_ request: Request, identity: Identity) throws -> AccountID {
        if let raw = request.query["account_id"] {
            guard let id = AccountID(raw) else {
                throw TradingError.invalid(field: "account_id", code: "invalid", message: "account_id must be a UUID.")
            }
            return id
        }
        guard let id = identity.defaultAccountID else { throw TradingError.accountNotFound }
        return id
    }

    func valuation(of accountID: AccountID, owner: UserID, withDayChange: Bool = true, freshQuotes: Bool = false) async throws -> PortfolioValuation {
        try await snapshots.currentValuation(of: accountID, owner: owner, withDayChange: withDayChange, freshQuotes: freshQuotes)
    }

    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        switch request.query["view"] {
        case nil, "account": return try await account(request, context: context).response(from: request, context: context)
        case "net_worth":
            // Net worth takes in every account; an account_id is still checked as everywhere, never ignored unread.
            if request.query["account_id"] != nil {
                try await store.requireOwned(try Self.accountID(request, identity: context.identity), by: context.identity.userID)
            }
            return try await netWorth(context: context).response(from: request, context: context)
        default: throw TradingError.invalid(field: "view", code: "invalid", message: "view must be account (the default) or net_worth.")
        }
    }

    /// Every Folio account at current quotes, and every linked account at its reported balance.
    func netWorth(context: AuthenticatedContext) async throws -> NetWorthResponse {
        let userID = context.identity.userID
        var folio: [(AccountRecord, PortfolioValuation)] = []
        for account in try await store.accounts(of: userID) {
            folio.append((account, try await valuation(of: account.id, owner: userID)))
        }
        let items = try await linked.items(of: userID)
        let accounts = items.isEmpty ? [] : try await linked.accounts(of: userID)
        let unlinked = folio.contains { $0.0.kind == "brokerage" } ? try await brokerage.unlinkedAccounts(of: userID) : []
        return try NetWorthResponse.build(folio: folio, unlinked: unlinked, items: items, linked: accounts, now: quotes.clock.now())
    }

    func account(_ request: Request, context: AuthenticatedContext) async throws -> PortfolioResponse {
        let accountID = try Self.accountID(request, identity: context.identity)
        let valuation = try await valuation(of: accountID, owner: context.identity.userID)
        return PortfolioResponse(
            accountID: accountID, cash: valuation.cash, availableCash: valuation.availableCash,
            positions: valuation.positions.map(PositionResponse.init), marketValue: valuation.marketValue,
            costBasis: valuation.costBasis, unrealizedPnL: valuation.unrealizedPnL,
            dayChange: valuation.dayChange, dayChangeComplete: valuation.dayChangeComplete, totalValue: valuation.totalValue, valuedAt: quotes.clock.now())
    }

    // MARK: - History

    enum HistoryRange: String, CaseIterable {
        case oneMonth = "1M", threeMonths = "3M", yearToDate = "YTD", oneYear = "1Y", all = "ALL"

        /// The first day shown; the year to date starts at the last close of the year before, as its return does.
        func firstDay(today: TradingDay) -> TradingDay? {
            switch self {
            case .oneMonth: return today.adding(days: -31)
            case .threeMonths: return today.adding(days: -92)
            case .yearToDate: return TradingDay(year: today.year - 1, month: 12, day: 31)
            case .oneYear: return today.adding(days: -366)
            case .all: return nil
            }
        }
    }

    struct HistoryPoint: Codable, Sendable {
        var date: String
        var cash: String
        var marketValue: String
        var totalValue: String
        /// Today before its close snapshot: valued at current quotes, and will change.
        var provisional: Bool
        /// The provisional point used a stale quote (or a holding's cost, for want of any quote).
        var stale: Bool

        enum CodingKeys: String, CodingKey {
            case date, cash, provisional, stale
            case marketValue = "market_value"
            case totalValue = "total_value"
        }

        init(_ value: DailyValue, provisional: Bool, stale: Bool = false) {
            date = value.day.description
            cash = value.cash.description
            marketValue = value.marketValue.description
            totalValue = value.totalValue.description
            self.provisional = provisional
            self.stale = stale
        }
    }

    struct HistoryResponse: ResponseEncodable {
        var accountID: AccountID
        var range: String
        /// False when some past days could not be valued yet (market data unavailable).
        var complete: Bool
        var data: [HistoryPoint]

        enum CodingKeys: String, CodingKey {
            case range, complete, data
            case accountID = "account_id"
        }
    }

    /// Daily total value from the close snapshots; missing past days are
    /// backfilled first, and today appears as a provisional point until its close.
    @Sendable func history(_ request: Request, context: AuthenticatedContext) async throws -> HistoryResponse {
        let rawRange = request.query["range"].map(String.init) ?? "1M"
        guard let range = HistoryRange(rawValue: rawRange.uppercased()) else {
            throw TradingError.invalid(field: "range", code: "invalid", message: "range must be one of \(HistoryRange.allCases.map(\.rawValue).joined(separator: ", ")).")
        }
        let accountID = try Self.accountID(request, identity: context.identity)
        guard let account = try await store.account(accountID, of: context.identity.userID) else { throw TradingError.accountNotFound }
        let today = TradingDay(quotes.clock.now())
        var complete = true
        var wrote = false
        do {
            let backfill = try await snapshots.backfill(account, through: today.adding(days: -1))
            wrote = backfill.wrote
            complete = backfill.complete(from: range.firstDay(today: today))
        } catch {
            complete = false
            context.parent.logger.warning("portfolio history backfill failed", metadata: ["account_id": "\(account.id)", "error": "\(error)"])
        }
        // What this request just wrote is on the primary; otherwise the replica will do.
        let source = wrote ? store.database : await reads.reporting()
        var points = try await snapshots.snapshots(of: account, from: range.firstDay(today: today), on: source)
            .map { HistoryPoint($0.value, provisional: false) }
        // A weekend has no close; an account opened since Friday's close still shows what it holds now.
        if today.isWeekday || points.isEmpty, points.last?.date != today.description {
            let valuation = try await valuation(of: account.id, owner: account.userID, withDayChange: false, freshQuotes: true)
            points.append(HistoryPoint(DailyValue(day: today, cash: valuation.cash, marketValue: valuation.marketValue), provisional: true, stale: valuation.isStale))
        }
        return HistoryResponse(accountID: account.id, range: range.rawValue, complete: complete, data: points)
    }
}
