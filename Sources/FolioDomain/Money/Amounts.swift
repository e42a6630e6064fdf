/// Cash: 4 fraction digits, 20 digits in all (`NUMERIC(20,4)`), shown with at
/// least 2 ("10.00"). Movements are in cents; the extra places are for fees
/// and interest below a cent.
public enum CashScale: FixedScale {
    public static var fractionDigits: Int { 4 }
    public static var precision: Int { 20 }
    public static var minimumDisplayDigits: Int { 2 }
}

/// Shares: 9 fraction digits, as brokers allow for fractional shares (`NUMERIC(28,9)`).
public enum QuantityScale: FixedScale {
    public static var fractionDigits: Int { 9 }
    public static var precision: Int { 28 }
    public static var minimumDisplayDigits: Int { 0 }
}

/// Prices: 8 fraction digits for sub-penny quotes (`NUMERIC(20,8)`), shown
/// with at least 2 ("151.00", "101.2345") wherever a person or client sees one.
public enum PriceScale: FixedScale {
    public static var fractionDigits: Int { 8 }
    public static var precision: Int { 20 }
    public static var minimumDisplayDigits: Int { 2 }
}

/// Ratios shown to users: percentages to 4 places, portfolio weights to 6.
public enum RatioScale: FixedScale {
    public static var fractionDigits: Int { 6 }
    public static var precision: Int { 30 }
    public static var minimumDisplayDigits: Int { 0 }
}

/// Marks Folio's exact amount types, whatever their scale.
public protocol ExactAmount {}
extension Fixed: ExactAmount {}

public typealias Cash = Fixed<CashScale>
public typealias Quantity = Fixed<QuantityScale>
public typealias Price = Fixed<PriceScale>
public typealias Ratio = Fixed<RatioScale>

extension Fixed where Scale == CashScale {
    /// Cash moves in whole cents.
    public static var centPlaces: Int { 2 }
}

/// The text of a JSON number exactly as it was written. Folio's JSON decoder
/// hands numbers over as this, so that money never passes through `Double`
/// or `Decimal`; other decoders refuse it.
public struct JSONNumberText: Decodable, Sendable {
    public var text: String

    public init(_ text: String) {
        self.text = text
    }

    public init(from decoder: any Decoder) throws {
        throw DecodingError.typeMismatch(
            JSONNumberText.self, .init(codingPath: decoder.codingPath, debugDescription: "exact numbers need Folio's JSON decoder"))
    }
}

extension Fixed: Codable {
    /// Always a JSON string, so no client reads it through a float.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// A string or a number, read through the same exact parse; a value the
    /// type cannot hold is a `FieldIssue` naming the field.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text: String
        do {
            text = try container.decode(String.self)
        } catch let issue as FieldIssue {
            // A string the decoder refused as text (a NUL in it): that refusal, not "expected a string".
            throw issue
        } catch {
            guard let number = try? container.decode(JSONNumberText.self) else {
                throw DecodingError.typeMismatch(
                    Fixed.self, .init(codingPath: decoder.codingPath, debugDescription: "expected a decimal number as a string or a number"))
            }
            text = number.text
        }
        do {
            self = try Fixed(parsing: text)
        } catch {
            throw FieldIssue.amount(error, field: FieldIssue.path(decoder.codingPath), scale: Scale.fractionDigits)
        }
    }
}

extension FieldIssue {
    /// The issue for an amount that did not parse.
    public static func amount(_ error: MoneyParseError, field: String, scale: Int) -> FieldIssue {
        switch error {
        case .empty, .malformed:
            FieldIssue(field: field, code: "invalid", message: "\(field) must be a decimal number such as \"12.50\".")
        case .tooPrecise:
            FieldIssue(field: field, code: "too_precise", message: "\(field) may have at most \(scale) decimal places.")
        case .tooLarge:
            FieldIssue(field: field, code: "too_large", message: "\(field) is larger than Folio can hold.")
        }
    }

    /// A coding path as a field name: `legs[0].symbol`.
    public static func path(_ codingPath: [any CodingKey]) -> String {
        var result = ""
        for key in codingPath {
            if let index = key.intValue {
                result += "[\(index)]"
            } else {
                result += result.isEmpty ? key.stringValue : "." + key.stringValue
            }
        }
        return result
    }
}
