import Foundation

/// Growth factors and rates while they are chained or solved: 18 fraction
/// digits, so that chaining ten years of daily returns or solving for a rate
/// loses nothing a 4-place percentage could show. Never money.
public enum GrowthScale: FixedScale {
    public static var fractionDigits: Int { 18 }
    public static var precision: Int { 38 }
    public static var minimumDisplayDigits: Int { 0 }
}

public typealias Growth = Fixed<GrowthScale>

/// Money put into (+) or taken out of (−) an account from outside: deposits and withdrawals.
public struct ExternalFlow: Equatable, Sendable {
    public var at: Date
    public var amount: Cash

    public init(at: Date, amount: Cash) {
        self.at = at
        self.amount = amount
    }
}

/// Time- and money-weighted returns, in exact fixed point (no binary floating point).
public enum Returns {
    // MARK: - Time-weighted

    /// An account's value as of a moment: a close snapshot as of when it was
    /// taken (its cash and holdings are the ledger's then), today's as of now.
    public struct ValuePoint: Equatable, Sendable {
        public var at: Date
        public var value: Cash

        public init(at: Date, value: Cash) {
            self.at = at
            self.value = value
        }
    }

    /// The time-weighted return over values (oldest first), as a percentage to
    /// 4 places; nil with fewer than two values.
    ///
    /// Each span between two values is a sub-period: its return is
    /// (V(end) + W) ÷ (V(start) + D) − 1, where D is the money put in and W the
    /// money taken out after the start value was taken and up to the end value:
    /// money in counts from the start of the sub-period it falls in, and money
    /// out until its end (it earned or lost with the rest until it left).
    /// Counting a withdrawal from the start too made a loss on a day the
    /// account was emptied a loss of everything (0 ÷ (V − V)), and any loss on
    /// a day of a withdrawal larger than it was. Flows are not netted: a day
    /// whose deposit and withdrawal nearly cancel (an account funded, traded at
    /// a small loss and emptied) would divide by what is left of them and turn a
    /// 0.04 % loss into −81 %, or −100 % for good. The sub-period returns are
    /// chained geometrically. A sub-period whose start is empty is left out.
    public static func timeWeighted(values: [ValuePoint], flows: [ExternalFlow]) throws(MoneyError) -> Ratio? {
        guard values.count >= 2 else { return nil }
        var moneyIn = [Cash](repeating: .zero, count: values.count)
        var moneyOut = [Cash](repeating: .zero, count: values.count)
        for flow in flows where flow.at > values[0].at {
            // The first value taken at or after the flow; one after the last value is outside the range.
            guard let index = firstIndex(in: values, atOrAfter: flow.at) else { continue }
            if flow.amount.isNegative {
                moneyOut[index] = try moneyOut[index] - flow.amount
            } else {
                moneyIn[index] = try moneyIn[index] + flow.amount
            }
        }
        var growth = Growth.unit
        for index in 1..<values.count {
            let start = try values[index - 1].value + moneyIn[index]
            guard start.isPositive else { continue }
            let end = try values[index].value + moneyOut[index]
            let factor = try Growth.quotient(end, start, rounding: .halfEven)
            growth = try Growth.product(growth, factor, rounding: .halfEven)
        }
        return try percent(growth)
    }

    /// (growth − 1) as a percentage to 4 places, rounded once, half to even.
    public static func percent(_ growth: Growth) throws(MoneyError) -> Ratio {
        let (hundredfold, overflow) = (growth.units - Growth.unit.units).multipliedReportingOverflow(by: 100)
        guard !overflow else { throw .overflow }
        return try Ratio(exactly: try Growth(units: hundredfold).rounded(places: 4, .halfEven))
    }

    /// A return over `years` as the annual rate that compounds to it, or the
    /// reverse (`inverse`): (1 + p)^(1/years) − 1, or (1 + p)^years − 1, in percent.
    public static func compounded(_ percent: Ratio, years: Growth, inverse: Bool = false) throws(MoneyError) -> Ratio {
        guard years.isPositive else { throw .divisionByZero }
        let growth = try Growth(units: Int128(Growth.one) + (try Growth(exactly: percent)).units / 100)
        let exponent = inverse ? years : try Growth.quotient(Growth.unit, years, rounding: .halfEven)
        return try Self.percent(FixedMath.exponential(try Growth.product(exponent, FixedMath.naturalLog(growth), rounding: .halfEven)))
    }

    /// Years between two times, actual/365.
    public static func years(from start: Date, to end: Date) -> Growth {
        let milliseconds = Int128((end.timeIntervalSince(start) * 1000).rounded())
        return Growth(uncheckedUnits: milliseconds * Int128(Growth.one) / 31_536_000_000)
    }

    static func firstIndex(in values: [ValuePoint], atOrAfter date: Date) -> Int? {
        var low = 0, high = values.count
        while low < high {
            let middle = (low + high) / 2
            if values[middle].at < date { low = middle + 1 } else { high = middle }
        }
        return low < values.count ? low : nil
    }

    // MARK: - Money-weighted

    /// A cash flow for the internal rate of return, from the investor's side:
    /// money in is negative, money out (and the value at the end) positive.
    public struct DatedAmount: Equatable, Sendable {
        public var at: Date
        public var amount: Cash

        public init(at: Date, amount: Cash) {
            self.at = at
            self.amount = amount
        }
    }

    public enum RateOfReturn: Equatable, Sendable {
        /// The annual rate, as a percentage to 4 places.
        case rate(Ratio)
        /// No rate makes the flows' present value zero (all flows of one sign, say).
        case none(String)
    }

    /// The internal rate of return (money-weighted) per period of `periodYears`
    /// (a year unless told; actual/365 from the first flow): Newton's method
    /// from a first guess, and bisection over a bracket where the present
    /// value changes sign when Newton does not settle. Rates from −99.99 % to
    /// 1,000,000 % a period are searched: measure a short range per its own
    /// length, not per year, or a few good days compound past the search.
    public static func internalRate(_ flows: [DatedAmount], periodYears: Growth = .unit) -> RateOfReturn {
        guard let first = flows.map(\.at).min() else { return .none("There are no cash flows.") }
        guard flows.contains(where: \.amount.isNegative), flows.contains(where: \.amount.isPositive) else {
            return .none("The cash flows all go one way, so no rate of return exists.")
        }
        // Amounts scaled to at most 1 in size, times in years.
        let largest = flows.map(\.amount.magnitude).max()!
        guard let terms = try? flows.map({ flow throws(MoneyError) in
            (years: try Growth.quotient(years(from: first, to: flow.at), periodYears, rounding: .halfEven),
             amount: try Growth.quotient(flow.amount, largest, rounding: .halfEven))
        }) else { return .none("The cash flows are too large to solve for a rate.") }
        let npv = PresentValue(terms: terms)

        // Newton's method from 10 %.
        var rate = Growth(uncheckedUnits: Growth.unit.units / 10)
        for _ in 0..<60 {
            guard let (value, slope) = try? npv.valueAndSlope(at: rate), !slope.isZero,
                  let step = try? Growth.quotient(value, slope, rounding: .halfEven),
                  let next = try? rate - step, next > PresentValue.lowest, next < PresentValue.highest
            else { break }
            if step.magnitude.units <= 1_000 {  // 10^-15: settled
                return (try? .rate(percent(Growth(units: next.units + Growth.unit.units)))) ?? .none("The rate is beyond what can be shown.")
            }
            rate = next
        }
        // Bisection over the first bracket where the present value changes sign.
        let grid: [Growth] = [PresentValue.lowest] + ["-0.9", "-0.5", "-0.2", "0", "0.1", "0.5", "1", "3", "10", "100", "1000"].map { try! Growth(parsing: $0) } + [PresentValue.highest]
        var previous: (rate: Growth, sign: Bool)?
        for candidate in grid {
            guard let value = try? npv.value(at: candidate) else { continue }
            if value.isZero { return (try? .rate(percent(Growth(units: candidate.units + Growth.unit.units)))) ?? .none("The rate is beyond what can be shown.") }
            if let (low, lowSign) = previous, lowSign != value.isPositive {
                var (a, b) = (low, candidate)
                for _ in 0..<200 {
                    let middle = Growth(uncheckedUnits: (a.units + b.units) / 2)
                    guard let middleValue = try? npv.value(at: middle) else { break }
                    if middleValue.isPositive == lowSign { a = middle } else { b = middle }
                    if b.units - a.units <= 1 { break }
                }
                return (try? .rate(percent(Growth(units: a.units + Growth.unit.units)))) ?? .none("The rate is beyond what can be shown.")
            }
            previous = (candidate, value.isPositive)
        }
        return .none("No rate of return makes these cash flows balance.")
    }

    /// Σ amount × (1 + r)^−years and its slope in r.
    struct PresentValue {
        var terms: [(years: Growth, amount: Growth)]

        static let lowest = try! Growth(parsing: "-0.9999")
        static let highest = try! Growth(parsing: "10000")

        func value(at rate: Growth) throws(MoneyError) -> Growth {
            try valueAndSlope(at: rate).value
        }

        func valueAndSlope(at rate: Growth) throws(MoneyError) -> (value: Growth, slope: Growth) {
            let base = try Growth(units: rate.units + Growth.unit.units)
            let logBase = try FixedMath.naturalLog(base)
            var value = Growth.zero, slope = Growth.zero
            for term in terms {
                // (1 + r)^−t, and the slope's (1 + r)^−(t+1) = that ÷ (1 + r).
                let discount = try FixedMath.exponential(-(try Growth.product(term.years, logBase, rounding: .halfEven)))
                let discounted = try Growth.product(term.amount, discount, rounding: .halfEven)
                value = try value + discounted
                let slopeTerm = try Growth.quotient(try Growth.product(discounted, term.years, rounding: .halfEven), base, rounding: .halfEven)
                slope = try slope - slopeTerm
            }
            return (value, slope)
        }
    }
}

extension Fixed where Scale == GrowthScale {
    /// 1.000…
    public static var unit: Growth { Growth(uncheckedUnits: Int128(Growth.one)) }
}

extension FixedMath {
    static let ln2 = try! Growth(parsing: "0.693147180559945309")

    /// ln(x) for x > 0, to 18 places: x = m × 2^k with m in [1, 2), and
    /// ln m = 2 atanh((m − 1) / (m + 1)) by its series.
    public static func naturalLog(_ x: Growth) throws(MoneyError) -> Growth {
        guard x.isPositive else { throw .overflow }
        var m = x.units, k = 0
        let one = Int128(Growth.one)
        while m >= 2 * one { m /= 2; k += 1 }
        while m < one { m *= 2; k -= 1 }
        let mantissa = Growth(uncheckedUnits: m)
        let z = try Growth.quotient(try mantissa - .unit, try mantissa + .unit, rounding: .halfEven)
        let z2 = try Growth.product(z, z, rounding: .halfEven)
        var sum = Growth.zero, power = z, n: Int128 = 1
        while !power.isZero && n < 200 {
            sum = try sum + Growth(uncheckedUnits: power.units / n)
            power = try Growth.product(power, z2, rounding: .halfEven)
            n += 2
        }
        return try Growth(units: 2 * sum.units + Int128(k) * ln2.units)
    }

    /// e^y to 18 places: y = k ln 2 + r with |r| ≤ ln 2 / 2, e^r by its series, times 2^k.
    public static func exponential(_ y: Growth) throws(MoneyError) -> Growth {
        let k = try Growth.quotient(y, ln2, places: 0, rounding: .halfEven).units / Int128(Growth.one)
        guard k < 100 else { throw .overflow }
        guard k > -100 else { return .zero }
        let r = try y - Growth(units: k * ln2.units)
        var sum = Growth.unit, term = Growth.unit, n: Int128 = 1
        while !term.isZero && n < 60 {
            term = Growth(uncheckedUnits: try Growth.product(term, r, rounding: .halfEven).units / n)
            sum = try sum + term
            n += 1
        }
        var units = sum.units
        if k >= 0 {
            for _ in 0..<Int(k) {
                // Checked before doubling: past half the limit the doubling itself would overflow.
                guard units.magnitude <= Growth.limit / 2 else { throw .overflow }
                units *= 2
            }
        } else {
            for _ in 0..<Int(-k) { units /= 2 }
        }
        return Growth(uncheckedUnits: units)
    }
}
