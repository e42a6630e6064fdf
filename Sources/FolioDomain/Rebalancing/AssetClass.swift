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
    /// to their value (the mix inside a class is kept; its share is rebalanced).
    /// Shares are in steps of 0.0001 %: each rounded down, then the steps left
    /// over go one each to the largest remainders (ties by symbol), so every
    /// share lies between 0 and the class weight and they sum to it exactly.
    /// A class whose holdings are all worth nothing at today's prices (dust of
    /// less than half a cent) is shared equally among them: the class is held, as
    /// saving the targets found. A class with nothing held cannot be shared out:
    /// `RebalanceError.nothingHeldInClass`.
    public func bySymbol(values: [String: Cash], classes: [String: AssetClass]) throws -> TargetAllocation {
        guard !classWeights.isEmpty else { return self }
        let stepUnits = Int128(Ratio.one) / 10_000  // 0.0001 (percent) in units
        var weights: [TargetWeight] = []
        for target in classWeights where target.percent.isPositive {
            let held = values.filter { classes[$0.key] == target.assetClass && !$0.value.isNegative }.sorted { $0.key < $1.key }
            let valued = held.filter { $0.value.isPositive }
            let members: [(symbol: String, weight: Int128)] = valued.isEmpty ? held.map { ($0.key, 1) } : valued.map { ($0.key, $0.value.units) }
            guard !members.isEmpty else { throw RebalanceError.nothingHeldInClass(target.assetClass.rawValue) }
            var total: Int128 = 0
            for member in members { total += member.weight }
            let steps = target.percent.units / stepUnits
            var shares: [(symbol: String, steps: Int128, remainder: Int128)] = members.map { member in
                let exact = steps * member.weight
                return (member.symbol, exact / total, exact % total)
            }
            var left = steps - shares.reduce(0) { $0 + $1.steps }
            for index in shares.indices.sorted(by: { shares[$0].remainder == shares[$1].remainder ? shares[$0].symbol < shares[$1].symbol : shares[$0].remainder > shares[$1].remainder }) {
                guard left > 0 else { break }
                shares[index].steps += 1
                left -= 1
            }
            for share in shares { weights.append(TargetWeight(symbol: share.symbol, percent: Ratio(uncheckedUnits: share.steps * stepUnits))) }
        }
        return try TargetAllocation(weights: weights, cashPercent: cashPercent, band: band)
    }
}
