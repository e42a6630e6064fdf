import FluentKit
import FolioDomain
import Foundation
import Hummingbird

/// `GET /api/portfolio`: cash, each position valued at its quote, and totals.
/// One query for the account, one for its holdings, one batch of quotes: never
/// a query per position.
struct PortfolioController: Sendable {
    let database: FolioDatabase
    let quotes: QuoteService

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        router.group("/api", context: AuthenticatedContext.self).get("/portfolio", use: show)
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

    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> PortfolioResponse {
        let db = database.db
        let userID = context.identity.userID
        let accountQuery = Account.query(on: db).filter(\.$userID == userID).sort(\.$createdAt)
        if let raw = request.uri.queryParameters["account_id"] {
            guard let id = UUID(uuidString: String(raw)) else {
                throw AppError.validation(field: "account_id", code: "invalid", message: "account_id must be a UUID.")
            }
            accountQuery.filter(\.$id == id)
        }
        guard let account = try await accountQuery.first() else { throw AppError.notFound("account") }
        let holdings = try await Holding.query(on: db).filter(\.$accountID == account.id!).all()
        let prices = await quotes.quotes(for: holdings.map(\.symbol))
        let valuation = PortfolioValuation(
            cash: account.cash.value, availableCash: account.availableCash,
            holdings: holdings.map { ($0.symbol, Position(quantity: $0.quantity.value, costBasis: $0.costBasis.value)) },
            quotes: prices)
        return PortfolioResponse(
            accountID: account.id!, cash: Cash.text(valuation.cash), availableCash: Cash.text(valuation.availableCash),
            positions: valuation.positions.map(PositionResponse.init), marketValue: Cash.text(valuation.marketValue),
            costBasis: Cash.text(valuation.costBasis), unrealizedPnL: Cash.text(valuation.unrealizedPnL),
            dayChange: Cash.text(valuation.dayChange), totalValue: Cash.text(valuation.totalValue), valuedAt: quotes.clock.now())
    }
}
