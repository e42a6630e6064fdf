/// What kind of holding a symbol is, for allocations by asset class.
public enum AssetClass: String, Sendable, CaseIterable, Codable {
    case equity, etf, fund, bond, cash, commodity, crypto, other

    /// From a vendor's instrument type ("Equity", "ETF", "Mutual Fund", …); `other` when unknown.
    public init(instrumentType: String) {
        switch instrumentType.lowercased() {
        case "equity", "common stock", "stock", "preferred stock", "adr": self = .equity
        case "etf", "etn": self = .etf
        case "mutual fund", "fund", "closed-end fund": self = .fund
        case "bond", "fixed income": self = .bond
        case "cryptocurrency", "crypto": self = .crypto
        case "commodity": self = .commodity
        default: self = .other
        }
    }
}

/// A target weight for an asset class as a whole.
public struct ClassWeight: Equatable, Sendable {
    public var assetClass: AssetClass
    public var percent: Ratio

    public init(assetClass: AssetClass, percent: Ratio) {
        self.assetClass = assetClass
        self.percent = percent
    }
}

extension TargetAllocation {
    /// Symbol weights for an allocation by asset class: each class's weight is
    /// shared among the symbols of that class the account holds, in proportion
    /// to their value (the mix inside a class is kept; its share is rebalanced),
    /// to 4 places, the largest holding taking what rounding leaves so the
    /// weights still sum to exactly 100 %. A class with nothing held cannot be
    /// shared out: `RebalanceError.nothingHeldInClass`.
    public func bySymbol(values: [String: Cash], classes: [String: AssetClass]) throws -> TargetAllocation {
        guard !classWeights.isEmpty else { return self }
        var weights: [TargetWeight] = []
        for target in classWeights where target.percent.isPositive {
            let members = values.filter { classes[$0.key] == target.assetClass && $0.value.isPositive }.sorted { a, b in
                a.value == b.value ? a.key < b.key : a.value > b.value
            }
            guard !members.isEmpty else { throw RebalanceError.nothingHeldInClass(target.assetClass.rawValue) }
            var classTotal = Cash.zero
            for member in members { classTotal = try classTotal + member.value }
            var given = Ratio.zero
            for member in members.dropFirst() {
                let share = try target.percent.scaled(by: member.value, over: classTotal, places: Percent.places, rounding: .halfEven)
                weights.append(TargetWeight(symbol: member.key, percent: share))
                given = try given + share
            }
            weights.append(TargetWeight(symbol: members[0].key, percent: try target.percent - given))
        }
        return try TargetAllocation(weights: weights, cashPercent: cashPercent, band: band)
    }
}
