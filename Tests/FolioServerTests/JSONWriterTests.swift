import FolioDomain
import Foundation
import Testing

@testable import FolioServer

@Suite("Responses that write their own JSON")
struct JSONWriterTests {
    /// Positions of every shape: priced with a previous close, priced without
    /// one, unpriced, a zero cost basis, a loss, fractions of a share.
    static func valuation() throws -> PortfolioValuation {
        let asOf = Date(timeIntervalSince1970: 1_764_434_100.987)
        let holdings: [(symbol: String, position: Position)] = [
            ("AAPL", Position(quantity: Quantity("12.5")!, costBasis: Cash("2000.10")!)),
            ("BRK.B", Position(quantity: Quantity("3")!, costBasis: Cash("1500.00")!)),
            ("GIFT", Position(quantity: Quantity("1")!, costBasis: .zero)),
            ("GONE", Position(quantity: Quantity("0.001")!, costBasis: Cash("0.50")!)),
        ]
        let quotes: [String: PriceQuote] = [
            "AAPL": PriceQuote(symbol: "AAPL", price: Price("189.98")!, previousClose: Price("191.02")!, asOf: asOf),
            "BRK.B": PriceQuote(symbol: "BRK.B", price: Price("0.4567")!, previousClose: nil, asOf: asOf, isStale: true),
            "GIFT": PriceQuote(symbol: "GIFT", price: Price("10.00")!, previousClose: Price("9.00")!, asOf: asOf),
        ]
        return try PortfolioValuation(cash: Cash("-0.01")!, availableCash: Cash("1234567.8901")!, holdings: holdings, quotes: quotes)
    }

    @Test("the portfolio response is byte for byte what JSONEncoder writes, nil fields left out, at whole seconds")
    func portfolioMatchesTheEncoder() throws {
        let valuation = try Self.valuation()
        for valuedAt in [Date(timeIntervalSince1970: 1_764_434_100.999), Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: 4_102_444_800.5)] {
            let response = PortfolioController.PortfolioResponse(
                accountID: AccountID(UUID()), cash: valuation.cash, availableCash: valuation.availableCash,
                positions: valuation.positions.map(PortfolioController.PositionResponse.init), marketValue: valuation.marketValue,
                costBasis: valuation.costBasis, unrealizedPnL: valuation.unrealizedPnL, dayChange: valuation.dayChange,
                totalValue: valuation.totalValue, valuedAt: valuedAt)
            var json = JSONWriter()
            response.write(to: &json)
            let encoded = try FolioJSON.encode(response)
            #expect(String(decoding: json.bytes, as: UTF8.self) == String(decoding: encoded, as: UTF8.self))
        }
        let empty = PortfolioController.PortfolioResponse(
            accountID: AccountID(UUID()), cash: .zero, availableCash: .zero, positions: [], marketValue: .zero, costBasis: .zero,
            unrealizedPnL: .zero, dayChange: .zero, totalValue: .zero, valuedAt: Date(timeIntervalSince1970: 1))
        var json = JSONWriter()
        empty.write(to: &json)
        #expect(String(decoding: json.bytes, as: UTF8.self) == String(decoding: try FolioJSON.encode(empty), as: UTF8.self))
    }

    @Test("strings are escaped exactly as the encoder escapes them: every control character, quotes, backslashes, slashes, DEL, U+2028, non-ASCII")
    func escapingMatchesEncoder() throws {
        struct Text: Encodable, JSONWritable {
            var value: String
            func write(to json: inout JSONWriter) {
                json.beginObject()
                json.field("value", value)
                json.endObject()
            }
        }
        let controls = String(decoding: (0..<0x20).map { UInt8($0) }, as: UTF8.self)
        for value in [controls, "quote \" backslash \\ slash / del \u{7F}", "line\u{2028}separator café € 😀", ""] {
            var json = JSONWriter()
            Text(value: value).write(to: &json)
            #expect(String(decoding: json.bytes, as: UTF8.self) == String(decoding: try FolioJSON.encode(Text(value: value)), as: UTF8.self))
        }
    }

    @Test("strings are escaped as JSON needs; objects and arrays get their commas")
    func escapingAndCommas() {
        var json = JSONWriter()
        json.beginObject()
        json.field("a", "quote \" backslash \\ newline \n")
        json.key("b")
        json.beginArray()
        json.beginObject()
        json.endObject()
        json.beginObject()
        json.field("c", true)
        json.endObject()
        json.endArray()
        json.field("d", nil as String?)
        json.endObject()
        #expect(String(decoding: json.bytes, as: UTF8.self) == #"{"a":"quote \" backslash \\ newline \n","b":[{},{"c":true}]}"#)
    }
}
