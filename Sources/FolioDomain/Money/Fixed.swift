/// The scale of a fixed-point type: how many fraction digits it keeps, how
/// many digits it may hold in all (the `NUMERIC(precision, scale)` of its
/// column), and how many fraction digits it shows at least.
public protocol FixedScale: Sendable {
    static var fractionDigits: Int { get }
    static var precision: Int { get }
    static var minimumDisplayDigits: Int { get }
}

/// An exact decimal held as a whole number of its smallest unit
/// (`units × 10^-fractionDigits`) in an `Int128`.
///
/// Every operation is exact or names its rounding; a result beyond the
/// type's precision is an error (`MoneyError.overflow`), never a wrapped or
/// rounded value. Parsing reads plain decimal text and JSON numbers straight
/// from their bytes and refuses what the type cannot hold exactly.
@frozen
public struct Fixed<Scale: FixedScale>: Sendable, Hashable, Comparable {
    // The units are kept as two 64-bit words, not one `Int128`: an `Int128`
    // field needs 16-byte alignment, which Swift 6.3's async frames on Linux
    // do not always give (a value held across an `await` corrupted the task
    // that held it). Arithmetic runs on `units` in registers.
    @usableFromInline let low: UInt64
    @usableFromInline let high: Int64

    /// The value as a whole number of its smallest unit.
    @inlinable
    public var units: Int128 { Int128(high) << 64 | Int128(low) }

    /// A value whose units are known to be within the precision.
    @inlinable
    public init(uncheckedUnits units: Int128) {
        self.low = UInt64(truncatingIfNeeded: units)
        self.high = Int64(truncatingIfNeeded: units >> 64)
    }

    /// A value of `units`, refused when beyond the precision.
    @inlinable
    public init(units: Int128) throws(MoneyError) {
        guard units.magnitude <= Self.limit else { throw .overflow }
        self.init(uncheckedUnits: units)
    }

    public static var zero: Self { Self(uncheckedUnits: 0) }

    /// The largest magnitude in units: `10^precision - 1`.
    @inlinable
    public static var limit: UInt128 { FixedMath.powerOfTen(Scale.precision) - 1 }

    /// One whole (1.000…) in units.
    @inlinable
    public static var one: UInt128 { FixedMath.powerOfTen(Scale.fractionDigits) }

    /// The largest value the type holds.
    public static var max: Self { Self(uncheckedUnits: Int128(limit)) }

    @inlinable public var isZero: Bool { units == 0 }
    @inlinable public var isNegative: Bool { units < 0 }
    @inlinable public var isPositive: Bool { units > 0 }
    @inlinable public var magnitude: Self { Self(uncheckedUnits: Int128(units.magnitude)) }

    @inlinable
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.units < rhs.units }

    @inlinable
    public static func + (lhs: Self, rhs: Self) throws(MoneyError) -> Self {
        try Self(units: lhs.units + rhs.units)
    }

    @inlinable
    public static func - (lhs: Self, rhs: Self) throws(MoneyError) -> Self {
        try Self(units: lhs.units - rhs.units)
    }

    @inlinable
    public static prefix func - (value: Self) -> Self {
        Self(uncheckedUnits: -value.units)
    }

    @inlinable
    public static func min(_ a: Self, _ b: Self) -> Self { a < b ? a : b }

    @inlinable
    public static func max(_ a: Self, _ b: Self) -> Self { a < b ? b : a }

    /// A whole number.
    @inlinable
    public init(_ whole: Int) throws(MoneyError) {
        let (units, overflow) = Int128(whole).multipliedReportingOverflow(by: Int128(Self.one))
        guard !overflow else { throw .overflow }
        try self.init(units: units)
    }

    // MARK: - Products, quotients, conversions

    /// `a × b` with `places` fraction digits (the scale's unless told), rounded
    /// once by `rule`. The product is formed exactly (up to 256 bits) first.
    @inlinable
    public static func product<A, B>(_ a: Fixed<A>, _ b: Fixed<B>, places: Int = Scale.fractionDigits, rounding rule: RoundingRule) throws(MoneyError) -> Self {
        let negative = (a.units < 0) != (b.units < 0)
        let full = FixedMath.multiply(a.units.magnitude, b.units.magnitude)
        let shift = A.fractionDigits + B.fractionDigits - places
        let magnitude: UInt128
        if shift >= 0 {
            magnitude = try FixedMath.divide(high: full.high, low: full.low, by: FixedMath.powerOfTen(shift), negative: negative, rule: rule)
        } else {
            guard full.high == 0 else { throw .overflow }
            let (scaled, overflow) = full.low.multipliedReportingOverflow(by: FixedMath.powerOfTen(-shift))
            guard !overflow else { throw .overflow }
            magnitude = scaled
        }
        return try Self(magnitude: magnitude, places: places, negative: negative)
    }

    /// `a ÷ b` with `places` fraction digits (the scale's unless told), rounded once by `rule`.
    @inlinable
    public static func quotient<A, B>(_ a: Fixed<A>, _ b: Fixed<B>, places: Int = Scale.fractionDigits, rounding rule: RoundingRule) throws(MoneyError) -> Self {
        guard b.units != 0 else { throw .divisionByZero }
        let negative = (a.units < 0) != (b.units < 0)
        // units at `places` = a.units × 10^(places + B − A) ÷ b.units
        let exponent = places + B.fractionDigits - A.fractionDigits
        if exponent >= 0 {
            let full = FixedMath.multiply(a.units.magnitude, FixedMath.powerOfTen(exponent))
            let magnitude = try FixedMath.divide(high: full.high, low: full.low, by: b.units.magnitude, negative: negative, rule: rule)
            return try Self(magnitude: magnitude, places: places, negative: negative)
        }
        let (divisor, overflow) = b.units.magnitude.multipliedReportingOverflow(by: FixedMath.powerOfTen(-exponent))
        if overflow {
            // The quotient is below half a unit: only rounding away from zero makes it one.
            let away = a.units != 0 && (rule == .up || (rule == .ceiling && !negative) || (rule == .floor && negative))
            return try Self(magnitude: away ? 1 : 0, places: places, negative: negative)
        }
        let magnitude = try FixedMath.divide(high: 0, low: a.units.magnitude, by: divisor, negative: negative, rule: rule)
        return try Self(magnitude: magnitude, places: places, negative: negative)
    }

    /// `self × numerator ÷ denominator` with `places` fraction digits (the
    /// scale's unless told), exact until the one rounding: the share of an
    /// amount that goes with part of a quantity.
    @inlinable
    public func scaled<N>(by numerator: Fixed<N>, over denominator: Fixed<N>, places: Int = Scale.fractionDigits, rounding rule: RoundingRule) throws(MoneyError) -> Self {
        guard denominator.units != 0 else { throw .divisionByZero }
        let negative = (units < 0) != ((numerator.units < 0) != (denominator.units < 0))
        let full = FixedMath.multiply(units.magnitude, numerator.units.magnitude)
        // Dropping fraction digits divides the dividend by 10^drop as part of the one division.
        let drop = Scale.fractionDigits - places
        let (divisor, overflow) = denominator.units.magnitude.multipliedReportingOverflow(by: FixedMath.powerOfTen(drop))
        guard !overflow else { throw .overflow }
        let magnitude = try FixedMath.divide(high: full.high, low: full.low, by: divisor, negative: negative, rule: rule)
        return try Self(magnitude: magnitude, places: places, negative: negative)
    }

    /// The same value at another scale, rounded by `rule` when it has more digits than that scale keeps.
    @inlinable
    public init<Other>(_ other: Fixed<Other>, rounding rule: RoundingRule) throws(MoneyError) {
        let negative = other.units < 0
        let shift = Other.fractionDigits - Scale.fractionDigits
        if shift >= 0 {
            self = try Self(magnitude: FixedMath.divide(high: 0, low: other.units.magnitude, by: FixedMath.powerOfTen(shift), negative: negative, rule: rule), negative: negative)
        } else {
            let (scaled, overflow) = other.units.magnitude.multipliedReportingOverflow(by: FixedMath.powerOfTen(-shift))
            guard !overflow else { throw .overflow }
            self = try Self(magnitude: scaled, negative: negative)
        }
    }

    /// The same value at another scale; refused when a digit would be lost.
    @inlinable
    public init<Other>(exactly other: Fixed<Other>) throws(MoneyError) {
        let converted = try Self(other, rounding: .down)
        let back = try Fixed<Other>(converted, rounding: .down)
        guard back.units == other.units else { throw .inexact }
        self = converted
    }

    /// Rounded to `places` fraction digits (at most the scale's), by `rule`.
    @inlinable
    public func rounded(places: Int, _ rule: RoundingRule) throws(MoneyError) -> Self {
        let drop = Scale.fractionDigits - places
        guard drop > 0 else { return self }
        let step = FixedMath.powerOfTen(drop)
        let negative = units < 0
        let kept = try FixedMath.divide(high: 0, low: units.magnitude, by: step, negative: negative, rule: rule)
        let (magnitude, overflow) = kept.multipliedReportingOverflow(by: step)
        guard !overflow else { throw .overflow }
        return try Self(magnitude: magnitude, negative: negative)
    }

    /// Fraction digits that are not trailing zeros: 2 for 12.50, 0 for 3.
    @inlinable
    public var places: Int {
        var remainder = units.magnitude % Self.one
        guard remainder != 0 else { return 0 }
        var places = Scale.fractionDigits
        while remainder % 10 == 0 {
            remainder /= 10
            places -= 1
        }
        return places
    }

    /// From a magnitude counted in units of 10^-places.
    @inlinable
    init(magnitude: UInt128, places: Int, negative: Bool) throws(MoneyError) {
        precondition(places >= 0 && places <= Scale.fractionDigits, "\(places) places is beyond the scale")
        let (scaled, overflow) = magnitude.multipliedReportingOverflow(by: FixedMath.powerOfTen(Scale.fractionDigits - places))
        guard !overflow else { throw .overflow }
        try self.init(magnitude: scaled, negative: negative)
    }

    @inlinable
    init(magnitude: UInt128, negative: Bool) throws(MoneyError) {
        guard magnitude <= Self.limit else { throw .overflow }
        let signed = Int128(magnitude)
        self.init(uncheckedUnits: negative ? -signed : signed)
    }
}

extension Fixed: ExpressibleByIntegerLiteral {
    /// For constants in code and tests; a literal beyond the precision is a programming error.
    public init(integerLiteral value: Int) {
        do { try self.init(value) } catch { preconditionFailure("\(value) is beyond \(Self.self)") }
    }
}

/// How a result with more digits than its scale keeps is rounded.
public enum RoundingRule: Sendable, Equatable {
    /// Toward zero.
    case down
    /// Away from zero.
    case up
    /// Toward negative infinity.
    case floor
    /// Toward positive infinity.
    case ceiling
    /// To the nearest, ties to the even neighbour (banker's rounding).
    case halfEven
    /// To the nearest, ties away from zero.
    case halfUp
}

/// Why a fixed-point operation has no result.
public enum MoneyError: Error, Equatable, Sendable {
    /// The result is beyond the type's precision (its column would not hold it).
    case overflow
    case divisionByZero
    /// A conversion would have lost digits.
    case inexact
}

public enum FixedMath {
    /// 10^n for n in 0...38 (10^38 is the largest power of ten a `UInt128` holds).
    @inlinable
    public static func powerOfTen(_ exponent: Int) -> UInt128 {
        switch exponent {
        case 0: 1
        case 1: 10
        case 2: 100
        case 3: 1000
        case 4: 10000
        case 5: 100000
        case 6: 1000000
        case 7: 10000000
        case 8: 100000000
        case 9: 1000000000
        case 10: 10000000000
        case 11: 100000000000
        case 12: 1000000000000
        case 13: 10000000000000
        case 14: 100000000000000
        case 15: 1000000000000000
        case 16: 10000000000000000
        case 17: 100000000000000000
        case 18: 1000000000000000000
        case 19: 10000000000000000000
        case 20: 100000000000000000000
        case 21: 1000000000000000000000
        case 22: 10000000000000000000000
        case 23: 100000000000000000000000
        case 24: 1000000000000000000000000
        case 25: 10000000000000000000000000
        case 26: 100000000000000000000000000
        case 27: 1000000000000000000000000000
        case 28: 10000000000000000000000000000
        case 29: 100000000000000000000000000000
        case 30: 1000000000000000000000000000000
        case 31: 10000000000000000000000000000000
        case 32: 100000000000000000000000000000000
        case 33: 1000000000000000000000000000000000
        case 34: 10000000000000000000000000000000000
        case 35: 100000000000000000000000000000000000
        case 36: 1000000000000000000000000000000000000
        case 37: 10000000000000000000000000000000000000
        case 38: 100000000000000000000000000000000000000
        default: preconditionFailure("10^\(exponent) is beyond 128 bits")
        }
    }

    /// The full 256-bit product. Amounts mostly fit in 64 bits, where one
    /// machine multiply gives the exact result.
    @inlinable
    public static func multiply(_ a: UInt128, _ b: UInt128) -> (high: UInt128, low: UInt128) {
        if a >> 64 == 0, b >> 64 == 0 {
            let (high, low) = UInt64(truncatingIfNeeded: a).multipliedFullWidth(by: UInt64(truncatingIfNeeded: b))
            return (0, UInt128(high) << 64 | UInt128(low))
        }
        let full = a.multipliedFullWidth(by: b)
        return (full.high, full.low)
    }

    /// `(high, low) ÷ divisor` for a 256-bit dividend, rounded by `rule`; the
    /// sign only steers `floor` and `ceiling`.
    @inlinable
    public static func divide(high: UInt128, low: UInt128, by divisor: UInt128, negative: Bool, rule: RoundingRule) throws(MoneyError) -> UInt128 {
        guard divisor != 0 else { throw .divisionByZero }
        guard high < divisor else { throw .overflow }
        // The common cases first: 256-by-128-bit division is long division in
        // software, 128-bit division a library call, 64-bit one instruction.
        let quotient: UInt128, remainder: UInt128
        if high == 0 {
            if low >> 64 == 0, divisor >> 64 == 0 {
                let (q, r) = UInt64(truncatingIfNeeded: low).quotientAndRemainder(dividingBy: UInt64(truncatingIfNeeded: divisor))
                (quotient, remainder) = (UInt128(q), UInt128(r))
            } else {
                (quotient, remainder) = low.quotientAndRemainder(dividingBy: divisor)
            }
        } else {
            (quotient, remainder) = divisor.dividingFullWidth((high: high, low: low))
        }
        guard remainder != 0 else { return quotient }
        let away: Bool
        switch rule {
        case .down: away = false
        case .up: away = true
        case .floor: away = negative
        case .ceiling: away = !negative
        case .halfEven, .halfUp:
            // Compare the remainder with half the divisor without doubling it (no overflow).
            let rest = divisor - remainder
            if remainder > rest { away = true } else if remainder < rest { away = false } else { away = rule == .halfUp || quotient & 1 == 1 }
        }
        guard away else { return quotient }
        guard quotient < UInt128.max else { throw .overflow }
        return quotient + 1
    }
}
