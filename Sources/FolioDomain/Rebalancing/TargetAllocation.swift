/// Percentages of an account's value: targets, weights and drift. Held as a
/// `Ratio` whose value is the percentage itself ("60" is sixty percent),
/// with at most 4 decimal places where a person enters one.
public enum Percent {
    public static let places = 4
    public static let hundred: Ratio = 100

    /// `part` as a percentage of `whole`, to 4 places, half to even; 0 for an empty whole.
    public static func of(_ part: Cash, in whole: Cash) throws(MoneyError) -> Ratio {
        guard !whole.isZero else { return .zero }
        let fraction = try Ratio.quotient(part, whole, places: places + 2, rounding: .halfEven)
        return try fraction.scaledByHundred().rounded(places: places, .halfEven)
    }

    /// `percent` of `whole`, in cents, half to even. With `over`, `percent` is of a
    /// part of the targets (`over` percent of them) that `whole` is all of.
    public static func share(of whole: Cash, _ percent: Ratio, over: Ratio = hundred) throws(MoneyError) -> Cash {
        try whole.scaled(by: percent, over: over, places: Cash.centPlaces, rounding: .halfEven)
    }

    /// `percent` as a percentage of `part` percent (30 of 90 is 33.3333), to 4 places, half to even.
    public static func rescaled(_ percent: Ratio, over part: Ratio) throws(MoneyError) -> Ratio {
        try percent.scaled(by: hundred, over: part, places: places, rounding: .halfEven)
    }

    /// How far `current` is from `target`, relative to the target, in percent
    /// (4 places); nil for a zero target, which has no relative drift.
    public static func relative(_ points: Ratio, of target: Ratio) throws(MoneyError) -> Ratio? {
        guard target.isPositive else { return nil }
        return try points.scaled(by: hundred, over: target, places: places, rounding: .halfEven)
    }
}

extension Fixed {
    /// × 100, exactly (a fraction to 6 places is a percentage to 4).
    @inlinable
    func scaledByHundred() throws(MoneyError) -> Self {
        try Self(units: units * 100)
    }
}

/// How far a holding may drift from its target before the account needs
/// rebalancing: `absolutePoints` percentage points, or `relativePercent` of
/// its target, whichever is reached first (the robo-advisers' "5/25" rule).
public struct DriftBand: Equatable, Sendable {
    public var absolutePoints: Ratio
    public var relativePercent: Ratio

    public static let standard = DriftBand(absolutePoints: 5, relativePercent: 25)

    public init(absolutePoints: Ratio, relativePercent: Ratio) {
        self.absolutePoints = absolutePoints
        self.relativePercent = relativePercent
    }

    /// True when a holding at `current` percent is outside the band around `target`.
    /// A zero target has no room at all: any holding of it is outside.
    public func isOutside(current: Ratio, target: Ratio) -> Bool {
        let points = Ratio(uncheckedUnits: current.units - target.units).magnitude
        if !target.isPositive { return current.isPositive }
        if points > absolutePoints { return true }
        guard let relative = try? Percent.relative(points, of: target) else { return true }
        return relative > relativePercent
    }
}

/// A symbol's share of an account's target allocation.
public struct TargetWeight: Equatable, Sendable {
    public var symbol: String
    public var percent: Ratio

    public init(symbol: String, percent: Ratio) {
        self.symbol = symbol
        self.percent = percent
    }
}

/// What an account should hold: a weight per symbol and one for cash, which
/// together are exactly 100 %, and the band within which it may drift.
/// Symbols are upper-cased and kept in symbol order, so plans are deterministic.
public struct TargetAllocation: Equatable, Sendable {
    public private(set) var weights: [TargetWeight]
    /// Weights by asset class instead of by symbol (one or the other).
    public private(set) var classWeights: [ClassWeight] = []
    public private(set) var cashPercent: Ratio
    public private(set) var band: DriftBand

    /// What the planner is measured at; the API allows fewer (see `RebalanceController`).
    public static let maximumTargets = 10_000

    /// The allocation, or every field that is wrong: a bad or repeated
    /// symbol, a weight below 0, above 100 or finer than 0.0001 %, weights
    /// that do not sum to exactly 100 %, a band that is not positive.
    public init(weights: [TargetWeight], classWeights: [ClassWeight] = [], cashPercent: Ratio = .zero, band: DriftBand = .standard) throws(TradingError) {
        var issues: [FieldIssue] = []
        if !weights.isEmpty && !classWeights.isEmpty {
            issues.append(.init(field: "asset_classes", code: "conflict", message: "Give targets by symbol or by asset class, not both."))
        }
        var seenClasses = Set<AssetClass>()
        for (index, weight) in classWeights.enumerated() {
            let field = "asset_classes[\(index)]"
            if !seenClasses.insert(weight.assetClass).inserted {
                issues.append(.init(field: field + ".asset_class", code: "duplicate", message: "\(weight.assetClass.rawValue) is listed more than once."))
            }
            issues += Self.checkPercent(weight.percent, field: field + ".percent")
        }
        var seen = Set<String>()
        var normalized: [TargetWeight] = []
        normalized.reserveCapacity(weights.count)
        if weights.count > Self.maximumTargets {
            issues.append(.init(field: "targets", code: "too_many", message: "At most \(Self.maximumTargets) targets."))
        }
        var sum = cashPercent.units
        for weight in classWeights { sum += weight.percent.units }
        for (index, weight) in weights.enumerated() {
            let field = "targets[\(index)]"
            guard let symbol = OrderDraft.normalizedSymbol(weight.symbol) else {
                issues.append(.init(field: field + ".symbol", code: "invalid", message: "\(field).symbol must be a ticker such as VTI."))
                continue
            }
            if !seen.insert(symbol).inserted {
                issues.append(.init(field: field + ".symbol", code: "duplicate", message: "\(symbol) is listed more than once."))
            }
            issues += Self.checkPercent(weight.percent, field: field + ".percent")
            sum += weight.percent.units
            normalized.append(TargetWeight(symbol: symbol, percent: weight.percent))
        }
        issues += Self.checkPercent(cashPercent, field: "cash_percent")
        for (value, field) in [(band.absolutePoints, "drift_band.absolute_points"), (band.relativePercent, "drift_band.relative_percent")] {
            if !value.isPositive || value > Percent.hundred {
                issues.append(.init(field: field, code: "invalid", message: "\(field) must be above 0 and at most 100, with at most 4 decimal places."))
            } else if value.places > Percent.places {
                issues.append(.init(field: field, code: "too_precise", message: "\(field) may have at most \(Percent.places) decimal places."))
            }
        }
        if issues.isEmpty, sum != Int128(Ratio.one) * 100 {
            let total = Ratio(uncheckedUnits: sum).formatted(minimumFractionDigits: 0)
            issues.append(.init(field: "targets", code: "sum_not_100", message: "The weights, cash included, add up to \(total) %; they must add up to exactly 100 %."))
        }
        if !issues.isEmpty { throw .invalid(issues) }
        normalized.sort { $0.symbol < $1.symbol }
        self.weights = normalized
        self.classWeights = classWeights.sorted { $0.assetClass.rawValue < $1.assetClass.rawValue }
        self.cashPercent = cashPercent
        self.band = band
    }

    private static func checkPercent(_ percent: Ratio, field: String) -> [FieldIssue] {
        if percent.isNegative || percent > Percent.hundred {
            return [.init(field: field, code: "out_of_range", message: "\(field) must be from 0 to 100.")]
        }
        if percent.places > Percent.places {
            return [.init(field: field, code: "too_precise", message: "\(field) may have at most \(Percent.places) decimal places.")]
        }
        return []
    }

    /// The target of `symbol` in percent; nil when it has none (an unplanned holding).
    public func percent(of symbol: String) -> Ratio? {
        var low = 0, high = weights.count
        while low < high {
            let middle = (low + high) / 2
            if weights[middle].symbol < symbol { low = middle + 1 } else { high = middle }
        }
        return low < weights.count && weights[low].symbol == symbol ? weights[low].percent : nil
    }
}
