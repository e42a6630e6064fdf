import Foundation

/// A decimal that travels through JSON without loss: written as a string,
/// read from a string or a number (the decoder hands numbers over as exact
/// text, never through `Double`).
public struct DecimalValue: Codable, Hashable, Sendable, CustomStringConvertible {
    public var value: Decimal

    public init(_ value: Decimal) {
        self.value = value
    }

    public init(parsing text: String) throws(ExactDecimal.ParseError) {
        self.value = try ExactDecimal.parse(text)
    }

    public var description: String { ExactDecimal.format(value) }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            do {
                self.value = try ExactDecimal.parse(text)
            } catch {
                throw DecodingError.dataCorruptedError(
                    in: container, debugDescription: "expected a decimal number such as \"12.50\"")
            }
        } else if let number = try? container.decode(Decimal.self), !number.isNaN {
            self.value = number
        } else {
            throw DecodingError.typeMismatch(
                Decimal.self,
                .init(codingPath: decoder.codingPath, debugDescription: "expected a decimal number as a string or a number"))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
