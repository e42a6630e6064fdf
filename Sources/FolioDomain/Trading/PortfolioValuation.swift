import Foundation

/// The latest price of a symbol, with the previous close for the day's change.
public struct PriceQuote: Equatable, Sendable {
    public var symbol: String
    public var price: Decimal
    public var previousClose: Decimal?
    public var asOf: Date
    public var isStale: Bool

    public init(symbol: String, price: Decimal, previousClose: Decimal?, asOf: Date, isStale: Bool = false) {
        self.symbol = symbol
        self.price = price
        self.previousClose = previousClose
        self.asOf = asOf
        self.isStale = isStale
    }
}

/// One position valued at its quote.
public struct ValuedPosition: Equatable, Sendable {
    public var symbol: String
    public var quantity: Decimal
    public var averageCost: Decimal
    public var costBasis: Decimal
    /// Nil when no quote could be had; the position then counts at cost.
    public var quote: PriceQuote?
    public var marketValue: Decimal
    public var unrealizedPnL: Decimal
    /// Percent of cost basis, 4 places; nil for a zero basis.
    public var unrealizedPnLPercent: Decimal?
    public var dayChange: Decimal?
    /// Share of the portfolio's total value, 6 places (0.25 is a quarter).
    public var weight: Decimal
}

/// A portfolio valued in one pass over its positions and one batch of quotes.
public struct PortfolioValuation: Equatable, Sendable {
    public var cash: Decimal
    public var availableCash: Decimal
    public var positions: [ValuedPosition]
    public var marketValue: Decimal
    public var costBasis: Decimal
    public var unrealizedPnL: Decimal
    public var dayChange: Decimal
    public var totalValue: Decimal

    public init(cash: Decimal, availableCash: Decimal, holdings: [(symbol: String, position: Position)], quotes: [String: PriceQuote]) {
        var positions: [ValuedPosition] = []
        positions.reserveCapacity(holdings.count)
        var marketValue: Decimal = 0, costBasis: Decimal = 0, dayChange: Decimal = 0
        for (symbol, position) in holdings where position.quantity > 0 {
            let quote = quotes[symbol]
            let value = quote.map { Money.amount(quantity: position.quantity, price: $0.price) } ?? position.costBasis
            let change = quote.flatMap { quote in
                quote.previousClose.map { Money.amount(quantity: position.quantity, price: quote.price - $0) }
            }
            let pnl = value - position.costBasis
            positions.append(ValuedPosition(
                symbol: symbol, quantity: position.quantity, averageCost: position.averageCost, costBasis: position.costBasis,
                quote: quote, marketValue: value, unrealizedPnL: pnl,
                unrealizedPnLPercent: position.costBasis == 0 ? nil : ExactDecimal.rounded(pnl / position.costBasis * 100, scale: 4),
                dayChange: change, weight: 0))
            marketValue += value
            costBasis += position.costBasis
            dayChange += change ?? 0
        }
        let total = cash + marketValue
        for index in positions.indices {
            positions[index].weight = total == 0 ? 0 : ExactDecimal.rounded(positions[index].marketValue / total, scale: 6)
        }
        self.cash = cash
        self.availableCash = availableCash
        self.positions = positions.sorted { $0.marketValue == $1.marketValue ? $0.symbol < $1.symbol : $0.marketValue > $1.marketValue }
        self.marketValue = marketValue
        self.costBasis = costBasis
        self.unrealizedPnL = marketValue - costBasis
        self.dayChange = dayChange
        self.totalValue = total
    }
}
