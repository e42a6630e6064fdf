import FluentKit
import FolioDomain
import Foundation
import Hummingbird
import SQLKit

/// `GET /api/portfolio`: cash, each position valued at its quote, and totals.
/// One query for the account, one for its holdings, one batch of quotes: never
/// a query per position.
struct PortfolioController: Sendable {
    let database: FolioDatabase
    let quotes: QuoteService
    let snapshots: PortfolioSnapshots

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let api = router.group("/api", context: AuthenticatedContext.self)
        api.get("/portfolio", use: show)
        api.get("/portfolio/history", use: history)
    }

    struct PositionResponse: Codable, Sendable {
        var symbol: String
        var quantity: String
        var averageCost: String
        var costBasis: String
        var price: String?
        var priceTime: Date?
        var stale: Bool
        var marketValue: String
        var unrealizedPnL: String
        var unrealizedPnLPercent: String?
        var dayChange: String?
        var weight: String

        enum CodingKeys: String, CodingKey {
            case symbol, quantity, price, stale, weight
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
            quantity = ExactDecimal.format(position.quantity)
            averageCost = ExactDecimal.format(position.averageCost)
            costBasis = Cash.text(position.costBasis)
            price = position.quote.map { ExactDecimal.format($0.price, minimumScale: 2) }
            priceTime = position.quote?.asOf
            // No quote at all is the stalest a price can be.
            stale = position.quote?.isStale ?? true
            marketValue = Cash.text(position.marketValue)
            unrealizedPnL = Cash.text(position.unrealizedPnL)
            unrealizedPnLPercent = position.unrealizedPnLPercent.map { ExactDecimal.format($0) }
            dayChange = position.dayChange.map(Cash.text)
            weight = ExactDecimal.format(position.weight)
        }
    }

    struct PortfolioResponse: ResponseEncodable {
        var accountID: UUID
        var cash: String
        var availableCash: String
        var positions: [PositionResponse]
        var marketValue: String
        var costBasis: String
        var unrealizedPnL: String
        var dayChange: String
        var totalValue: String
        var valuedAt: Date

        enum CodingKeys: String, CodingKey {
            case cash, positions
            case accountID = "account_id"
            case availableCash = "available_cash"
            case marketValue = "market_value"
            case costBasis = "cost_basis"
            case unrealizedPnL = "unrealized_pnl"
            case dayChange = "day_change"
            case totalValue = "total_value"
            case valuedAt = "valued_at"
        }
    }

    /// The signed-in user's account named by `account_id`, or their first.
    func account(_ request: Request, userID: UUID) async throws -> Account {
        let accountQuery = Account.query(on: database.db).filter(\.$userID == userID).sort(\.$createdAt)
        if let raw = request.uri.queryParameters["account_id"] {
            guard let id = UUID(uuidString: String(raw)) else {
                throw AppError.validation(field: "account_id", code: "invalid", message: "account_id must be a UUID.")
            }
            accountQuery.filter(\.$id == id)
        }
        guard let account = try await accountQuery.first() else { throw AppError.notFound("account") }
        return account
    }

    func valuation(of account: Account) async throws -> PortfolioValuation {
        // Three columns by hand: decoding whole Fluent models goes through reflection,
        // which cost more than the rest of the request (see docs/PERFORMANCE.md).
        let rows = try await database.sql.select().columns("symbol", "quantity", "cost_basis").from("holdings")
            .where("account_id", .equal, account.id!).all()
        let holdings = try rows.map { row in
            (symbol: try row.decode(column: "symbol", as: String.self),
             position: Position(quantity: try row.decode(column: "quantity", as: StoredDecimal.self).value,
                                costBasis: try row.decode(column: "cost_basis", as: StoredDecimal.self).value))
        }
        let prices = await quotes.quotes(for: holdings.map(\.symbol))
        return PortfolioValuation(cash: account.cash.value, availableCash: account.availableCash, holdings: holdings, quotes: prices)
    }

    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> PortfolioResponse {
        let account = try await account(request, userID: context.identity.userID)
        let valuation = try await valuation(of: account)
        return PortfolioResponse(
            accountID: account.id!, cash: Cash.text(valuation.cash), availableCash: Cash.text(valuation.availableCash),
            positions: valuation.positions.map(PositionResponse.init), marketValue: Cash.text(valuation.marketValue),
            costBasis: Cash.text(valuation.costBasis), unrealizedPnL: Cash.text(valuation.unrealizedPnL),
            dayChange: Cash.text(valuation.dayChange), totalValue: Cash.text(valuation.totalValue), valuedAt: quotes.clock.now())
    }

    // MARK: - History

    enum HistoryRange: String, CaseIterable {
        case oneMonth = "1M", threeMonths = "3M", oneYear = "1Y", all = "ALL"

        func firstDay(today: TradingDay) -> TradingDay? {
            switch self {
            case .oneMonth: return today.adding(days: -31)
            case .threeMonths: return today.adding(days: -92)
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

        enum CodingKeys: String, CodingKey {
            case date, cash, provisional
            case marketValue = "market_value"
            case totalValue = "total_value"
        }

        init(_ value: DailyValue, provisional: Bool) {
            date = value.day.description
            cash = Cash.text(value.cash)
            marketValue = Cash.text(value.marketValue)
            totalValue = Cash.text(value.totalValue)
            self.provisional = provisional
        }
    }

    struct HistoryResponse: ResponseEncodable {
        var accountID: UUID
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
        let rawRange = request.uri.queryParameters["range"].map(String.init) ?? "1M"
        guard let range = HistoryRange(rawValue: rawRange.uppercased()) else {
            throw AppError.validation(field: "range", code: "invalid", message: "range must be one of \(HistoryRange.allCases.map(\.rawValue).joined(separator: ", ")).")
        }
        let account = try await account(request, userID: context.identity.userID)
        let today = TradingDay(quotes.clock.now())
        var complete = true
        do {
            try await snapshots.backfill(account, through: today.adding(days: -1))
        } catch {
            complete = false
            context.parent.logger.warning("portfolio history backfill failed", metadata: ["account_id": "\(account.id!)", "error": "\(error)"])
        }
        var points = try await snapshots.snapshots(of: account, from: range.firstDay(today: today)).map { HistoryPoint($0.value, provisional: false) }
        if today.isWeekday, points.last?.date != today.description {
            let valuation = try await valuation(of: account)
            points.append(HistoryPoint(DailyValue(day: today, cash: valuation.cash, marketValue: valuation.marketValue), provisional: true))
        }
        return HistoryResponse(accountID: account.id!, range: range.rawValue, complete: complete, data: points)
    }
}
