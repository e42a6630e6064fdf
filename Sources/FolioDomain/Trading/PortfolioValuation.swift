import Foundation

/// The latest price of a symbol, with the previous close for the day's change.
public struct PriceQuote: Equatable, Sendable {
    public var symbol: String
    public var price: Price
    public var previousClose: Price?
    public var asOf: Date
    public var isStale: Bool
    /// When the previous close was struck: the start of the day this quote's change covers (nil: not known).
    public var previousCloseAt: Date?

    public init(symbol: String, price: Price, previousClose: Price?, asOf: Date, isStale: Bool = false, previousCloseAt: Date? = nil) {
        self.symbol = symbol
        self.price = price
        self.previousClose = previousClose
        self.asOf = asOf
        self.isStale = isStale
        self.previousCloseAt = previousCloseAt
    }
}

/// A symbol's buys and sells since its quote's previous close, netted: the day's change counts shares bought
/// today from what they cost and shares sold today to what they fetched, not from the previous close.
public struct DayTrades: Equatable, Sendable {
    /// Shares bought less shares sold.
    public var quantity: Quantity
    /// Cash the sales brought in less cash the buys paid out.
    public var cash: Cash
    /// Shares also came in or went out without a trade (a reconciliation's correction, a split): what was
    /// held at the close is not known from the trades.
    public var corrected: Bool

    public init(quantity: Quantity, cash: Cash, corrected: Bool = false) {
        self.quantity = quantity
        self.cash = cash
        self.corrected = corrected
    }

    /// The day's change of a holding of `quantity` shares now at `price`, `previousClose` at the last close:
    /// what it is worth now, less what the shares held at the close were worth then, plus the day's net cash.
    /// Nil when shares moved without a trade, or the trades took out more than was held.
    public func dayChange(quantity: Quantity, price: Price, previousClose: Price) throws(MoneyError) -> Cash? {
        guard !corrected else { return nil }
        let heldAtClose = try quantity - self.quantity
        guard !heldAtClose.isNegative else { return nil }
        return try Money.value(quantity: quantity, price: price) - Money.value(quantity: heldAtClose, price: previousClose) + cash
    }
}

/// One position valued at its quote.
public struct ValuedPosition: Equatable, Sendable {
    public var symbol: String
    public var quantity: Quantity
    public var averageCost: Price
    public var costBasis: Cash
    /// Nil when no quote could be had; the position then counts at cost.
    public var quote: PriceQuote?
    public var marketValue: Cash
    public var unrealizedPnL: Cash
    /// Percent of cost basis, 4 places; nil for a zero basis.
    public var unrealizedPnLPercent: Ratio?
    /// Since the previous close: quantity × (price − previous close) for shares held then, price − cost for shares
    /// bought since, and a sale's proceeds less the previous close. Nil without a previous close, for a quote of
    /// an earlier session, or when shares moved without a trade since the close.
    public var dayChange: Cash?
    /// Share of the portfolio's total value, 6 places (0.25 is a quarter).
    public var weight: Ratio
    /// Shares set aside by open sells: they are still held (and valued), but not free to sell again.
    public var reservedQuantity: Quantity = .zero

    /// What a new sell may take.
    public var availableQuantity: Quantity { Quantity(uncheckedUnits: quantity.units - reservedQuantity.units) }
}

/// A portfolio valued in one pass over its positions and one batch of quotes.
/// Values shown are rounded half to even to the cent; the sums are exact sums
/// of what is shown (the day's change also holds positions sold out since the
/// close, which are not shown). A value beyond what cash can hold is `MoneyError.overflow`.
public struct PortfolioValuation: Equatable, Sendable {
    public var cash: Cash
    public var availableCash: Cash
    public var positions: [ValuedPosition]
    public var marketValue: Cash
    public var costBasis: Cash
    public var unrealizedPnL: Cash
    /// The positions' day's change, and that of positions sold out since the previous close.
    public var dayChange: Cash
    /// False when some position's (or sold-out holding's) day's change is not known (no quote of this session):
    /// `dayChange` then covers only the others, and is no figure for the whole portfolio.
    public var dayChangeComplete = true
    public var totalValue: Cash

    /// Some position is valued at a stale quote, or at its cost for want of any quote.
    public var isStale: Bool { positions.contains { $0.quote?.isStale ?? true } }

    /// `dayTrades`: each symbol's buys and sells since `tradesSince`, the previous close of quotes taken now (none:
    /// every share counts from the close). A quote whose previous close is another has no day's change here.
    /// `reserved`: the shares open sells set aside, by symbol (none: all are free).
    public init(
        cash: Cash, availableCash: Cash, holdings: [(symbol: String, position: Position)], quotes: [String: PriceQuote],
        dayTrades: [String: DayTrades] = [:], tradesSince: Date? = nil, reserved: [String: Quantity] = [:]
    ) throws(MoneyError) {
        /// The quote's day is the one the trades were read for.
        func sameDay(_ quote: PriceQuote) -> Bool {
            guard let tradesSince, let since = quote.previousCloseAt else { return true }
            return since == tradesSince
        }
        // First pass: each position's value, so the positions can be built
        // once, already in order (largest first) and with their weights.
        // Plain values only, so that sorting moves no reference counts.
        // A quote is found by its index in `quotes`, so no quote is copied until its position is built.
        var valued: [(value: Cash, holding: Int, quote: Dictionary<String, PriceQuote>.Index?)] = []
        valued.reserveCapacity(holdings.count)
        var marketValue = Cash.zero
        for index in holdings.indices where holdings[index].position.quantity.isPositive {
            let position = holdings[index].position
            let found = quotes.index(forKey: holdings[index].symbol)
            let value = try found.map { found throws(MoneyError) in try Money.value(quantity: position.quantity, price: quotes.values[found].price) } ?? position.costBasis
            valued.append((value, index, found))
            marketValue = try marketValue + value
        }
        valued.sort { a, b in
            a.value == b.value ? holdings[a.holding].symbol < holdings[b.holding].symbol : a.value > b.value
        }
        let total = try cash + marketValue

        var positions: [ValuedPosition] = []
        positions.reserveCapacity(valued.count)
        var costBasis = Cash.zero, dayChange = Cash.zero
        for (value, index, found) in valued {
            let (symbol, position) = holdings[index]
            let quote = found.map { quotes.values[$0] }
            var change: Cash?
            if let quote, let previous = quote.previousClose, sameDay(quote) {
                if let traded = dayTrades[symbol] {
                    change = try traded.dayChange(quantity: position.quantity, price: quote.price, previousClose: previous)
                } else {
                    change = try Money.value(quantity: position.quantity, price: try quote.price - previous)
                }
            }
            let pnl = try value - position.costBasis
            var percent: Ratio?
            if !position.costBasis.isZero {
                // The fraction to 6 places is the percentage to 4, times 100: one rounding.
                let fraction = try Ratio.quotient(pnl, position.costBasis, rounding: .halfEven)
                percent = try Ratio(units: fraction.units * 100)
            }
            let weight = total.isZero ? Ratio.zero : try Ratio.quotient(value, total, rounding: .halfEven)
            positions.append(ValuedPosition(
                symbol: symbol, quantity: position.quantity, averageCost: position.averageCost, costBasis: position.costBasis,
                quote: quote, marketValue: value, unrealizedPnL: pnl, unrealizedPnLPercent: percent, dayChange: change, weight: weight,
                reservedQuantity: reserved.isEmpty ? .zero : reserved[symbol] ?? .zero))
            costBasis = try costBasis + position.costBasis
            if let change { dayChange = try dayChange + change } else { dayChangeComplete = false }
        }
        // Sold out since the close: no position to show, but the day's change holds the sale.
        let held = dayTrades.isEmpty ? [] : Set(valued.map { holdings[$0.holding].symbol })
        for (symbol, traded) in dayTrades where !held.contains(symbol) {
            guard let quote = quotes[symbol], let previous = quote.previousClose, sameDay(quote),
                  let change = try traded.dayChange(quantity: .zero, price: quote.price, previousClose: previous)
            else {
                dayChangeComplete = false
                continue
            }
            dayChange = try dayChange + change
        }
        self.cash = cash
        self.availableCash = availableCash
        self.positions = positions
        self.marketValue = marketValue
        self.costBasis = costBasis
        self.unrealizedPnL = try marketValue - costBasis
        self.dayChange = dayChange
        self.totalValue = total
    }
}
