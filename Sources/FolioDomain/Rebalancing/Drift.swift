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
    /// Nil for the cash line and for a line of a whole asset class.
    public var symbol: String?
    public var assetClass: AssetClass?
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
    /// Every target and every holding, in symbol order, unplanned holdings
    /// included; for targets by asset class, one line per class instead.
    public var lines: [DriftLine]
    /// The holdings and targets summed by asset class (the same as `lines` for targets by class).
    public var byClass: [DriftLine]
    public var cash: DriftLine
    /// Some line (cash included) is outside its band.
    public var outsideBand: Bool
    /// Some value is at a stale quote or at cost.
    public var stale: Bool

    /// `cash` is the account's whole cash, reserved included: it is part of its
    /// value. `classes` names each symbol's asset class (`other` when missing).
    public init(
        holdings: [PricedHolding], quotes: [String: PriceQuote], cash: Cash, allocation: TargetAllocation, classes: [String: AssetClass] = [:]
    ) throws(MoneyError) {
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
        func line(symbol: String?, assetClass: AssetClass?, quantity: Quantity, value: Cash, target: Ratio?, stale: Bool) throws(MoneyError) -> DriftLine {
            let current = try Percent.of(value, in: total)
            let targetPercent = target ?? .zero
            let points = try current - targetPercent
            return DriftLine(
                symbol: symbol, assetClass: assetClass, quantity: quantity, value: value, currentPercent: current, targetPercent: target,
                targetValue: try Percent.share(of: total, targetPercent), driftPoints: points,
                driftRelativePercent: try Percent.relative(points, of: targetPercent),
                outsideBand: band.isOutside(current: current, target: targetPercent), stale: stale)
        }
        func assetClass(_ symbol: String) -> AssetClass { classes[symbol] ?? .other }

        var symbolLines: [DriftLine] = []
        symbolLines.reserveCapacity(max(values.count, allocation.weights.count))
        for weight in allocation.weights {
            let held = values[weight.symbol]
            symbolLines.append(try line(
                symbol: weight.symbol, assetClass: assetClass(weight.symbol), quantity: held?.quantity ?? .zero, value: held?.value ?? .zero,
                target: weight.percent, stale: held?.stale ?? quotes[weight.symbol].map(\.isStale) ?? true))
        }
        for (symbol, held) in values where allocation.percent(of: symbol) == nil {
            symbolLines.append(try line(
                symbol: symbol, assetClass: assetClass(symbol), quantity: held.quantity, value: held.value,
                target: allocation.classWeights.isEmpty ? nil : .zero, stale: held.stale))
        }
        symbolLines.sort { $0.symbol! < $1.symbol! }

        // By class: the class's weight, or the sum of its symbols' weights.
        var classValues: [AssetClass: (value: Cash, stale: Bool)] = [:]
        for (symbol, held) in values {
            let entry = classValues[assetClass(symbol)] ?? (.zero, false)
            classValues[assetClass(symbol)] = (try entry.value + held.value, entry.stale || held.stale)
        }
        var classTargets: [AssetClass: Ratio] = [:]
        if allocation.classWeights.isEmpty {
            for weight in allocation.weights { classTargets[assetClass(weight.symbol)] = try (classTargets[assetClass(weight.symbol)] ?? .zero) + weight.percent }
        } else {
            for weight in allocation.classWeights { classTargets[weight.assetClass] = weight.percent }
        }
        var classLines: [DriftLine] = []
        for assetClass in AssetClass.allCases where classValues[assetClass] != nil || classTargets[assetClass] != nil {
            let held = classValues[assetClass]
            classLines.append(try line(
                symbol: nil, assetClass: assetClass, quantity: .zero, value: held?.value ?? .zero, target: classTargets[assetClass], stale: held?.stale ?? false))
        }

        self.totalValue = total
        self.lines = allocation.classWeights.isEmpty ? symbolLines : classLines
        self.byClass = classLines
        // Cash is what the trades leave over, not something traded: only the absolute band applies to it,
        // so a few dollars short of a share do not put a zero cash target outside its band.
        var cashLine = try line(symbol: nil, assetClass: nil, quantity: .zero, value: cash, target: allocation.cashPercent, stale: false)
        cashLine.outsideBand = cashLine.driftPoints.magnitude > band.absolutePoints
        self.cash = cashLine
        self.outsideBand = self.cash.outsideBand || lines.contains { $0.outsideBand }
        self.stale = values.values.contains { $0.stale }
    }
}
