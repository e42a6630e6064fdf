import Foundation

/// Strict, lossless parsing and formatting of decimal numbers.
///
/// `Decimal(string:)` accepts trailing garbage ("1.5abc" is 1.5) and a literal
/// `Decimal` goes through `Double`; money never takes either path.
public enum ExactDecimal {
    /// Foundation's `Decimal` holds 38 significant digits; refuse anything larger
    /// instead of silently rounding it.
    public static let maximumSignificantDigits = 38

    public enum ParseError: Error, Equatable, Sendable {
        case empty
        case malformed
        case tooManyDigits
    }

    /// Parses plain decimal notation (`-12.50`, `0.1`, `1e-7`). No thousands
    /// separators, no locale, no surrounding spaces, no `NaN` or infinities.
    public static func parse(_ text: String) throws(ParseError) -> Decimal {
        if text.isEmpty { throw .empty }
        var digits = 0
        var seenDigit = false
        var seenPoint = false
        var seenExponent = false
        var previous: Character? = nil
        for (index, character) in text.enumerated() {
            switch character {
            case "0"..."9":
                seenDigit = true
                if !seenExponent { digits += 1 }
            case "-", "+":
                let atStart = index == 0 && character == "-"
                let afterExponent = previous == "e" || previous == "E"
                guard atStart || afterExponent else { throw .malformed }
            case ".":
                guard !seenPoint, !seenExponent, previous?.isNumber == true else { throw .malformed }
                seenPoint = true
            case "e", "E":
                guard seenDigit, !seenExponent else { throw .malformed }
                seenExponent = true
            default:
                throw .malformed
            }
            previous = character
        }
        guard seenDigit, let last = text.last, last.isNumber else { throw .malformed }
        if significantDigits(of: text) > maximumSignificantDigits { throw .tooManyDigits }
        guard let value = Decimal(string: text, locale: Locale(identifier: "en_US_POSIX")), !value.isNaN else {
            throw .malformed
        }
        return value
    }

    /// Plain notation, no exponent, no grouping, `.` as separator.
    public static func format(_ value: Decimal) -> String {
        value.description
    }

    /// Formats with at least `minimumScale` fraction digits (for cash: "10.00").
    public static func format(_ value: Decimal, minimumScale: Int) -> String {
        let plain = format(value)
        let parts = plain.split(separator: ".", maxSplits: 1)
        let fraction = parts.count == 2 ? String(parts[1]) : ""
        guard fraction.count < minimumScale else { return plain }
        let padding = String(repeating: "0", count: minimumScale - fraction.count)
        return String(parts[0]) + "." + fraction + padding
    }

    /// Rounds to `scale` fraction digits with banker's rounding unless told otherwise.
    public static func rounded(_ value: Decimal, scale: Int, mode: NSDecimalNumber.RoundingMode = .bankers) -> Decimal {
        var input = value
        var result = Decimal()
        NSDecimalRound(&result, &input, scale, mode)
        return result
    }

    /// Number of fraction digits the value carries (0 for integers).
    public static func scale(of value: Decimal) -> Int {
        let text = format(value)
        guard let point = text.firstIndex(of: ".") else { return 0 }
        return text.distance(from: text.index(after: point), to: text.endIndex)
    }

    private static func significantDigits(of text: String) -> Int {
        let mantissa = text.prefix { $0 != "e" && $0 != "E" }.filter(\.isNumber)
        let trimmed = mantissa.drop { $0 == "0" }
        return max(trimmed.count, 1)
    }
}
