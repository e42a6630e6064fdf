/// A holding with what the drift and the planner need to know of it.
public struct PricedHolding: Equatable, Sendable {
    public var symbol: String
    public var quantity: Quantity
    /// Not set aside by open sells: what a rebalance may sell.
    public var availableQuantity: Quantity
    public var costBasis: Cash

    public init(symbol: String, quantity: Quantity, availableQuantity: Quantity, costBasis: Cash) {
        self.symbol = symbol
        self.quantity = quantity
        self.availableQuantity = availableQuantity
        self.costBasis = costBasis
    }

    public init(_ holding: HoldingState) {
        self.init(symbol: holding.symbol, quantity: holding.quantity, availableQuantity: holding.availableQuantity, costBasis: holding.costBasis)
    }
}

/// One symbol (or cash) against its target.
public struct DriftLine: Equatable, Sendable {
    /// Nil for the cash line.
    public var symbol: String?
    public var quantity: Quantity
    /// At the quote; at cost when there is none (then `stale`).
    public var value: Cash
    public var currentPercent: Ratio
    /// Nil for a holding without a target ("unplanned"), whose target is 0.
    public var targetPercent: Ratio?
    public var targetValue: Cash
    /// current − target, in percentage points.
    public var driftPoints: Ratio
    /// The drift as a percentage of the target; nil for a zero target.
    public var driftRelativePercent: Ratio?
    public var outsideBand: Bool
    /// The quote is stale, or missing and the value is the cost.
    public var stale: Bool

    public var planned: Bool { targetPercent != nil }
}

/// An account's holdings and cash against its target allocation.
public struct DriftReport: Equatable, Sendable {
    public var totalValue: Cash
    /// Every target and every holding, in symbol order; unplanned holdings included.
    public var lines: [DriftLine]
    public var cash: DriftLine
    /// Some line (cash included) is outside its band.
    public var outsideBand: Bool
    /// Some value is at a stale quote or at cost.
    public var stale: Bool

    /// `cash` is the account's whole cash, reserved included: it is part of its value.
    public init(holdings: [PricedHolding], quotes: [String: PriceQuote], cash: Cash, allocation: TargetAllocation) throws(MoneyError) {
        var values: [String: (quantity: Quantity, value: Cash, stale: Bool)] = [:]
        values.reserveCapacity(holdings.count)
        var total = cash
        for holding in holdings where holding.quantity.isPositive {
            let quote = quotes[holding.symbol]
            let value = try quote.map { quote throws(MoneyError) in try Money.value(quantity: holding.quantity, price: quote.price) } ?? holding.costBasis
            values[holding.symbol] = (holding.quantity, value, quote?.isStale ?? true)
            total = try total + value
        }
        let band = allocation.band
        func line(symbol: String?, quantity: Quantity, value: Cash, target: Ratio?, stale: Bool) throws(MoneyError) -> DriftLine {
            let current = try Percent.of(value, in: total)
            let targetPercent = target ?? .zero
            let points = try current - targetPercent
            return DriftLine(
                symbol: symbol, quantity: quantity, value: value, currentPercent: current, targetPercent: target,
                targetValue: try Percent.share(of: total, targetPercent), driftPoints: points,
                driftRelativePercent: try Percent.relative(points, of: targetPercent),
                outsideBand: band.isOutside(current: current, target: targetPercent), stale: stale)
        }
        var lines: [DriftLine] = []
        lines.reserveCapacity(max(values.count, allocation.weights.count))
        for weight in allocation.weights {
            let held = values[weight.symbol]
            lines.append(try line(
                symbol: weight.symbol, quantity: held?.quantity ?? .zero, value: held?.value ?? .zero, target: weight.percent,
                stale: held?.stale ?? quotes[weight.symbol].map(\.isStale) ?? true))
        }
        for (symbol, held) in values where allocation.percent(of: symbol) == nil {
            lines.append(try line(symbol: symbol, quantity: held.quantity, value: held.value, target: nil, stale: held.stale))
        }
        lines.sort { $0.symbol! < $1.symbol! }
        self.totalValue = total
        self.lines = lines
        // Cash is what the trades leave over, not something traded: only the absolute band applies to it,
        // so a few dollars short of a share do not put a zero cash target outside its band.
        var cashLine = try line(symbol: nil, quantity: .zero, value: cash, target: allocation.cashPercent, stale: false)
        cashLine.outsideBand = cashLine.driftPoints.magnitude > band.absolutePoints
        self.cash = cashLine
        self.outsideBand = self.cash.outsideBand || lines.contains { $0.outsideBand }
        self.stale = values.values.contains { $0.stale }
    }
}
