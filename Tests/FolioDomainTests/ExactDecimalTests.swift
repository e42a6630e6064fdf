import Foundation
import Testing

@testable import FolioDomain

/// A decimal literal the test knows is valid, read exactly.
func dec(_ text: String) -> Decimal {
    try! ExactDecimal.parse(text)
}

@Suite("Exact decimals")
struct ExactDecimalTests {
    @Test("plain decimal text parses exactly and formats back unchanged", arguments: [
        "0", "1", "-1", "0.1", "12.50", "0.00000001", "12345678901.123456789", "123456789012345678",
        "99999999999999999999999999999999999999", "0.000000000000000001",
    ])
    func roundTrip(text: String) throws {
        let value = try ExactDecimal.parse(text)
        let expected = text == "12.50" ? "12.5" : text
        #expect(ExactDecimal.format(value) == expected)
    }

    @Test("malformed or lossy input is refused", arguments: [
        "", " 1", "1 ", "1.5abc", "1,5", "1,000.00", "--1", "+1", "1.2.3", ".", "-", "1e", "e5", "NaN", "Infinity", "0x10", "1.", ".5",
    ])
    func refused(text: String) {
        #expect(throws: ExactDecimal.ParseError.self) { try ExactDecimal.parse(text) }
    }

    @Test("more than 38 significant digits is refused rather than rounded")
    func tooManyDigits() {
        #expect(throws: ExactDecimal.ParseError.tooManyDigits) {
            try ExactDecimal.parse("1234567890123456789012345678901234567890")
        }
        #expect((try? ExactDecimal.parse("0.00000000000000000000000000000000001")) != nil)
    }

    @Test("exponent notation is read exactly")
    func exponent() throws {
        #expect(dec("1e-7") == dec("0.0000001"))
        #expect(dec("2.5E3") == 2500)
    }

    @Test("minimum scale pads cash amounts")
    func minimumScale() throws {
        #expect(ExactDecimal.format(dec("10"), minimumScale: 2) == "10.00")
        #expect(ExactDecimal.format(dec("10.5"), minimumScale: 2) == "10.50")
        #expect(ExactDecimal.format(dec("10.12345"), minimumScale: 2) == "10.12345")
    }

    @Test("0.1 + 0.2 is exactly 0.3")
    func noBinaryFloatingPoint() throws {
        #expect(dec("0.1") + dec("0.2") == dec("0.3"))
    }

    @Test("JSON numbers and strings both decode exactly; values encode as strings")
    func jsonRoundTrip() throws {
        struct Body: Codable { var quantity: DecimalValue }
        for (json, expected) in [
            (#"{"quantity":0.1}"#, "0.1"), (#"{"quantity":"0.1"}"#, "0.1"),
            (#"{"quantity":12345678901.123456789}"#, "12345678901.123456789"),
            (#"{"quantity":"123456789012345678"}"#, "123456789012345678"),
            (#"{"quantity":1e-7}"#, "0.0000001"),
        ] {
            let body = try JSONDecoder().decode(Body.self, from: Data(json.utf8))
            #expect(body.quantity.description == expected)
            let encoded = String(decoding: try JSONEncoder().encode(body), as: UTF8.self)
            #expect(encoded == #"{"quantity":"\#(expected)"}"#)
        }
        for bad in [#"{"quantity":"1.5abc"}"#, #"{"quantity":true}"#, #"{"quantity":null}"#, #"{"quantity":"1,5"}"#] {
            #expect(throws: DecodingError.self) { try JSONDecoder().decode(Body.self, from: Data(bad.utf8)) }
        }
    }

    @Test("rounding is explicit and banker's by default")
    func rounding() throws {
        #expect(ExactDecimal.rounded(dec("2.345"), scale: 2) == dec("2.34"))
        #expect(ExactDecimal.rounded(dec("2.355"), scale: 2) == dec("2.36"))
        #expect(ExactDecimal.rounded(dec("2.345"), scale: 2, mode: .up) == dec("2.35"))
        #expect(ExactDecimal.scale(of: dec("1.2300")) == 2)
    }
}
