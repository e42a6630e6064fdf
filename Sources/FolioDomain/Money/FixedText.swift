/// Why a piece of text is not a value of a fixed-point type.
public enum MoneyParseError: Error, Equatable, Sendable {
    case empty
    /// Not plain decimal notation (`-12.50`, `0.1`, `1e-7`).
    case malformed
    /// More fraction digits than the type keeps (and they are not zeros).
    case tooPrecise
    /// Beyond the type's precision.
    case tooLarge
}

extension Fixed {
    /// Reads plain decimal notation straight from UTF-8 bytes: an optional
    /// `-`, digits, an optional fraction, an optional exponent (`1e-7`,
    /// `2.5E3`). No spaces, `+` sign, grouping, locale, `NaN` or infinities.
    /// A value the type cannot hold exactly is refused, never rounded: digits
    /// past the scale must be zeros, and the magnitude must fit the precision.
    /// Strings and JSON numbers take this same path.
    @inlinable
    public init<Bytes: Collection>(parsing bytes: Bytes) throws(MoneyParseError) where Bytes.Element == UInt8 {
        try self.init(parsing: bytes, rounding: nil)
    }

    /// Like `init(parsing:)`, but digits past the scale are rounded by `rule`
    /// instead of refused (for a vendor's prices, which may carry more places
    /// than Folio keeps); nil refuses them.
    @inlinable
    public init<Bytes: Collection>(parsing bytes: Bytes, rounding rule: RoundingRule?) throws(MoneyParseError) where Bytes.Element == UInt8 {
        if bytes.isEmpty { throw .empty }
        var index = bytes.startIndex
        let negative = bytes[index] == UInt8(ascii: "-")
        if negative { index = bytes.index(after: index) }

        // Grammar: digits ('.' digits)? ([eE] [+-]? digits)?
        let integerStart = index
        while index != bytes.endIndex, FixedText.isDigit(bytes[index]) { index = bytes.index(after: index) }
        let integerEnd = index
        guard integerStart != integerEnd else { throw .malformed }
        var fractionStart = index, fractionEnd = index
        if index != bytes.endIndex, bytes[index] == UInt8(ascii: ".") {
            index = bytes.index(after: index)
            fractionStart = index
            while index != bytes.endIndex, FixedText.isDigit(bytes[index]) { index = bytes.index(after: index) }
            fractionEnd = index
            guard fractionStart != fractionEnd else { throw .malformed }
        }
        var exponent = 0
        if index != bytes.endIndex, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index = bytes.index(after: index)
            var exponentNegative = false
            if index != bytes.endIndex, bytes[index] == UInt8(ascii: "-") || bytes[index] == UInt8(ascii: "+") {
                exponentNegative = bytes[index] == UInt8(ascii: "-")
                index = bytes.index(after: index)
            }
            let digitsStart = index
            while index != bytes.endIndex, FixedText.isDigit(bytes[index]) {
                // Past 2^40 the exponent outweighs any number of digits a body can carry; it saturates there.
                if exponent < 1 << 40 { exponent = exponent * 10 + Int(bytes[index] &- 48) }
                index = bytes.index(after: index)
            }
            guard digitsStart != index else { throw .malformed }
            if exponentNegative { exponent = -exponent }
        }
        guard index == bytes.endIndex else { throw .malformed }

        // value = digits × 10^(exponent − fraction length); units = digits × 10^shift.
        let fractionLength = bytes.distance(from: fractionStart, to: fractionEnd)
        let shift = exponent - fractionLength + Scale.fractionDigits
        let digitCount = bytes.distance(from: integerStart, to: integerEnd) + fractionLength
        // Digits counted into the units; the ones after must all be zeros.
        let kept = shift >= 0 ? digitCount : digitCount + shift
        let limit = Self.limit
        var magnitude: UInt128 = 0
        var position = 0
        var tooLarge = false
        // The first digit dropped past the scale, and whether any later one is not zero.
        var firstDropped: UInt8 = 0
        var restNonZero = false
        for range in [integerStart..<integerEnd, fractionStart..<fractionEnd] {
            var cursor = range.lowerBound
            while cursor != range.upperBound {
                let digit = UInt128(bytes[cursor] &- 48)
                if position < kept {
                    // Checked before the multiply: at 38 digits, ten times the limit is past UInt128 and would trap.
                    if !tooLarge {
                        if magnitude > (limit - digit) / 10 { tooLarge = true } else { magnitude = magnitude * 10 + digit }
                    }
                } else if digit != 0 {
                    guard rule != nil else { throw .tooPrecise }
                    if position == kept { firstDropped = UInt8(digit) } else { restNonZero = true }
                }
                position += 1
                cursor = bytes.index(after: cursor)
            }
        }
        if kept < 0, firstDropped != 0 || restNonZero {
            // Every digit is past the scale: the first dropped one is a zero in front of them.
            restNonZero = true
            firstDropped = 0
        }
        if let rule, firstDropped != 0 || restNonZero {
            let away: Bool
            switch rule {
            case .down: away = false
            case .up: away = true
            case .floor: away = negative
            case .ceiling: away = !negative
            case .halfUp: away = firstDropped >= 5
            case .halfEven: away = firstDropped > 5 || (firstDropped == 5 && (restNonZero || magnitude & 1 == 1))
            }
            if away {
                magnitude += 1
                if magnitude > limit { tooLarge = true }
            }
        }
        if tooLarge { throw .tooLarge }
        if shift > 0, magnitude != 0 {
            guard shift <= Scale.precision else { throw .tooLarge }
            let (scaled, overflow) = magnitude.multipliedReportingOverflow(by: FixedMath.powerOfTen(shift))
            guard !overflow, scaled <= limit else { throw .tooLarge }
            magnitude = scaled
        }
        let signed = Int128(magnitude)
        self.init(uncheckedUnits: negative ? -signed : signed)
    }

    @inlinable
    public init(parsing text: some StringProtocol, rounding rule: RoundingRule? = nil) throws(MoneyParseError) {
        var text = String(text)
        let result = text.withUTF8 { bytes in Result { () throws(MoneyParseError) in try Self(parsing: bytes, rounding: rule) } }
        self = try result.get()
    }

    /// Plain notation with at least `minimumFractionDigits` (and at most the
    /// scale's) fraction digits; trailing zeros beyond them are dropped.
    @inlinable
    public func formatted(minimumFractionDigits: Int) -> String {
        let magnitude = units.magnitude
        let one = Self.one
        let whole = magnitude / one
        var fraction = UInt64(truncatingIfNeeded: magnitude % one)
        var digits = Scale.fractionDigits
        while digits > minimumFractionDigits, fraction % 10 == 0 {
            fraction /= 10
            digits -= 1
        }
        var wholeDigits = 1
        var probe = whole
        while probe >= 10 {
            probe /= 10
            wholeDigits += 1
        }
        let negative = units < 0
        let length = (negative ? 1 : 0) + wholeDigits + (digits > 0 ? digits + 1 : 0)
        return String(unsafeUninitializedCapacity: length) { buffer in
            var end = length
            for _ in 0..<digits {
                end -= 1
                buffer[end] = UInt8(truncatingIfNeeded: fraction % 10) &+ 48
                fraction /= 10
            }
            if digits > 0 {
                end -= 1
                buffer[end] = UInt8(ascii: ".")
            }
            if whole <= UInt64.max {
                var rest = UInt64(whole)
                repeat {
                    end -= 1
                    buffer[end] = UInt8(truncatingIfNeeded: rest % 10) &+ 48
                    rest /= 10
                } while rest != 0
            } else {
                var rest = whole
                repeat {
                    end -= 1
                    buffer[end] = UInt8(truncatingIfNeeded: rest % 10) &+ 48
                    rest /= 10
                } while rest != 0
            }
            if negative { buffer[0] = UInt8(ascii: "-") }
            return length
        }
    }
}

extension Fixed: CustomStringConvertible, LosslessStringConvertible {
    /// Shown with the scale's minimum display digits: "10.00" for cash, "1.5" for a quantity.
    public var description: String { formatted(minimumFractionDigits: Scale.minimumDisplayDigits) }

    public init?(_ description: String) {
        guard let value = try? Self(parsing: description) else { return nil }
        self = value
    }
}

public enum FixedText {
    /// Unsigned decimal text with its whole digits grouped in threes: "1234567.50" is "1,234,567.50".
    public static func grouped(_ unsigned: Substring) -> String {
        let point = unsigned.firstIndex(of: ".") ?? unsigned.endIndex
        let whole = Array(unsigned[..<point])
        var grouped = ""
        for (index, character) in whole.enumerated() {
            if index > 0, (whole.count - index) % 3 == 0 { grouped.append(",") }
            grouped.append(character)
        }
        return grouped + unsigned[point...]
    }

    @inlinable
    static func isDigit(_ byte: UInt8) -> Bool { byte >= 48 && byte <= 57 }
}
