import Foundation
import Testing

@testable import FolioDomain

/// A value the test knows is valid, read exactly.
func cash(_ text: String) -> Cash { try! Cash(parsing: text) }
func qty(_ text: String) -> Quantity { try! Quantity(parsing: text) }
func px(_ text: String) -> Price { try! Price(parsing: text) }

@Suite("Fixed-point amounts")
struct FixedTests {
    @Test("plain decimal text parses exactly and formats back unchanged", arguments: [
        "0", "1", "-1", "0.1", "12.5", "0.00000001", "12345678901.12345678", "123456789012",
        "99999999999.99999999", "-0.00000001",
    ])
    func roundTrip(text: String) throws {
        // The canonical text (what SQLite stores and digests hash) keeps only what the value has.
        #expect(try Price(parsing: text).formatted(minimumFractionDigits: 0) == text)
        let padded = text.contains(".") ? text + "000" : text + ".000"
        #expect(try Price(parsing: padded).formatted(minimumFractionDigits: 0) == text, "trailing zeros hold nothing")
        #expect(try Quantity(parsing: padded.count <= 21 ? padded : text).description == (try Quantity(parsing: text)).description)
    }

    @Test("cash and prices show at least two places; quantities only what they have")
    func display() throws {
        #expect(cash("10").description == "10.00")
        #expect(cash("10.5").description == "10.50")
        #expect(cash("10.1234").description == "10.1234")
        #expect(cash("-0.01").description == "-0.01")
        #expect(qty("2.500").description == "2.5")
        #expect(px("151").description == "151.00")
        #expect(px("151.5").description == "151.50")
        #expect(px("101.2345").description == "101.2345")
        #expect(px("0.00000001").description == "0.00000001")
        #expect(px("151.00").formatted(minimumFractionDigits: 0) == "151")
    }

    @Test("malformed text is refused", arguments: [
        "", " 1", "1 ", "1.5abc", "1,5", "1,000.00", "--1", "+1", "1.2.3", ".", "-", "1e", "e5", "NaN", "Infinity", "0x10", "1.", ".5", "1e+", "١",
    ])
    func refused(text: String) {
        #expect(throws: MoneyParseError.self) { try Price(parsing: text) }
    }

    @Test("a value the type cannot hold is refused, never rounded: too many places, too large, or more than 38 digits")
    func refusedNotRounded() throws {
        #expect(throws: MoneyParseError.tooPrecise) { try Cash(parsing: "1.00001") }
        #expect(throws: MoneyParseError.tooPrecise) { try Cash(parsing: "100.00000000000000000000000000000000000001") }
        #expect(throws: MoneyParseError.tooPrecise) { try Quantity(parsing: "0.0000000001") }
        #expect(throws: MoneyParseError.tooLarge) { try Cash(parsing: "10000000000000000") }
        #expect(throws: MoneyParseError.tooLarge) { try Cash(parsing: "1e16") }
        #expect(throws: MoneyParseError.tooLarge) { try Price(parsing: "1234567890123456789012345678901234567890") }
        #expect(try Cash(parsing: "9999999999999999.9999") == Cash.max)
        #expect(try Cash(parsing: "100.00000000000000000000000000000000000000") == cash("100"), "zeros past the scale hold nothing")
    }

    @Test("38-digit types refuse a longer number as too large, never trap: a CSV cell such as -9999…(40 digits) once stopped the server")
    func thirtyEightDigits() throws {
        let nines = String(repeating: "9", count: 38)
        #expect(try Fixed<WideScale>(parsing: nines + "e-18") == Fixed<WideScale>.max)
        #expect(try Fixed<WideScale>(parsing: "-" + nines + "e-18") == -Fixed<WideScale>.max)
        for digits in 39...45 {
            let long = String(repeating: "9", count: digits)
            #expect(throws: MoneyParseError.tooLarge) { try Fixed<WideScale>(parsing: "-" + long) }
            #expect(throws: MoneyParseError.tooLarge) { try Fixed<WideScale>(parsing: long + "e-18") }
            #expect(throws: MoneyParseError.tooLarge) { try Fixed<GrowthScale>(parsing: long) }
            #expect(throws: MoneyParseError.tooLarge) { try Fixed<WideScale>(parsing: long + "e-18", rounding: .halfEven) }
        }
        // Leading zeros count for nothing.
        #expect(try Fixed<WideScale>(parsing: String(repeating: "0", count: 60) + "1") == Fixed<WideScale>(parsing: "1"))
    }

    @Test("exponent notation is read exactly")
    func exponent() throws {
        #expect(px("1e-7") == px("0.0000001"))
        #expect(px("2.5E3") == 2500)
        #expect(px("12.5e-1") == px("1.25"))
        #expect(px("0e99999999999") == 0)
        #expect(throws: MoneyParseError.tooPrecise) { try Price(parsing: "1e-9") }
    }

    @Test("an exponent too long to hold is weighed, not cut: a tiny value stays too precise, a huge one too large")
    func hugeExponents() {
        let many = String(repeating: "0", count: 100_000)
        #expect(throws: MoneyParseError.tooPrecise) { try Cash(parsing: "1" + many + "e-1000000") }
        #expect(throws: MoneyParseError.tooLarge) { try Cash(parsing: "0." + many + "1e1000000") }
        #expect(throws: MoneyParseError.tooLarge) { try Cash(parsing: "1e99999999999999999999") }
        #expect(throws: MoneyParseError.tooPrecise) { try Cash(parsing: "1e-99999999999999999999") }
        #expect((try? Cash(parsing: "0e-99999999999999999999")) == 0)
    }

    @Test("vendor prices may round the places past the scale, by a named rule")
    func vendorRounding() throws {
        #expect(try Price(parsing: "123.456789012345678901", rounding: .halfEven) == px("123.45678901"))
        #expect(try Price(parsing: "0.000000005", rounding: .halfEven) == 0)
        #expect(try Price(parsing: "0.000000015", rounding: .halfEven) == px("0.00000002"))
        #expect(try Price(parsing: "0.0000000051", rounding: .halfEven) == px("0.00000001"))
        #expect(try Price(parsing: "1e-20", rounding: .up) == px("0.00000001"))
    }

    @Test("0.1 + 0.2 is exactly 0.3")
    func noBinaryFloatingPoint() throws {
        #expect(try cash("0.1") + cash("0.2") == cash("0.3"))
    }

    @Test("an overflow is an error, never a wrapped value")
    func overflow() {
        #expect(throws: MoneyError.overflow) { try Cash.max + cash("0.0001") }
        #expect(throws: MoneyError.overflow) { try -Cash.max - cash("1") }
        #expect(throws: MoneyError.overflow) { try Cash.product(Quantity.max, Price.max, rounding: .down) }
        #expect(throws: MoneyError.divisionByZero) { try Cash.quotient(cash("1"), Quantity.zero, rounding: .down) }
    }

    @Test("each rounding rule, on both signs")
    func rounding() throws {
        let cases: [(String, RoundingRule, String)] = [
            ("2.345", .halfEven, "2.34"), ("2.355", .halfEven, "2.36"), ("-2.345", .halfEven, "-2.34"),
            ("2.345", .halfUp, "2.35"), ("-2.345", .halfUp, "-2.35"), ("2.344", .halfUp, "2.34"),
            ("2.341", .up, "2.35"), ("-2.341", .up, "-2.35"), ("2.349", .down, "2.34"), ("-2.349", .down, "-2.34"),
            ("-2.341", .ceiling, "-2.34"), ("2.341", .ceiling, "2.35"), ("-2.341", .floor, "-2.35"), ("2.349", .floor, "2.34"),
        ]
        for (input, rule, expected) in cases {
            #expect(try cash(input).rounded(places: 2, rule) == cash(expected), "\(input) \(rule)")
        }
        #expect(cash("1.2300").places == 2)
        #expect(cash("7").places == 0)
    }

    @Test("a product is exact before its one rounding")
    func products() throws {
        #expect(try Money.cost(quantity: qty("0.000001"), price: px("190.96")) == cash("0.01"), "a tiny buy is never free")
        #expect(try Money.proceeds(quantity: qty("0.000001"), price: px("190.96")) == cash("0"), "a tiny sale never creates cash")
        #expect(try Money.value(quantity: qty("123456789.123456789"), price: px("12345.12345678")) == cash("1524089303306.73"))  // checked with Python's decimal module
        // 999999999.123456789 × 0.00000001 = 9.99999999123456789: up to the cent is 10.00.
        #expect(try Cash.product(qty("999999999.123456789"), px("0.00000001"), places: 2, rounding: .up) == cash("10"))
        #expect(try qty("10").scaled(by: qty("1"), over: qty("3"), rounding: .down) == qty("3.333333333"))
        #expect(try cash("100").scaled(by: qty("1"), over: qty("3"), places: 2, rounding: .halfEven) == cash("33.33"))
    }

    @Test("Foundation's JSON coders read amounts from strings and write them as strings")
    func codable() throws {
        struct Body: Codable { var quantity: Quantity }
        let body = try JSONDecoder().decode(Body.self, from: Data(#"{"quantity":"12345678901.123456789"}"#.utf8))
        #expect(body.quantity == qty("12345678901.123456789"))
        #expect(String(decoding: try JSONEncoder().encode(body), as: UTF8.self) == #"{"quantity":"12345678901.123456789"}"#)
        #expect(throws: (any Error).self, "a JSON number needs Folio's decoder, which keeps its text") {
            try JSONDecoder().decode(Body.self, from: Data(#"{"quantity":0.1}"#.utf8))
        }
        #expect(throws: FieldIssue.self) { try JSONDecoder().decode(Body.self, from: Data(#"{"quantity":"0.0000000001"}"#.utf8)) }
    }
}

/// Every operation checked against `Decimal` on random values of each scale,
/// including the extremes, where `Decimal` (38 digits) is exact.
@Suite("Fixed-point amounts against Decimal")
struct FixedPropertyTests {
    static let seeds: [UInt64] = [1, 20_261_129]

    func decimal<S>(_ value: Fixed<S>) -> Decimal {
        Decimal(string: value.formatted(minimumFractionDigits: 0), locale: Locale(identifier: "en_US_POSIX"))!
    }

    func rounded(_ value: Decimal, places: Int, _ rule: RoundingRule) -> Decimal {
        var input = value, result = Decimal()
        let mode: NSDecimalNumber.RoundingMode
        switch rule {
        case .ceiling: mode = .up
        case .floor: mode = .down
        case .up: mode = value < 0 ? .down : .up
        case .down: mode = value < 0 ? .up : .down
        case .halfUp: mode = .plain
        case .halfEven: mode = .bankers
        }
        NSDecimalRound(&result, &input, places, mode)
        return result
    }

    /// Random units of up to `digits` digits, with the extremes mixed in.
    func units<S: FixedScale>(_: S.Type, digits: Int, using random: inout SeededRandom) -> Int128 {
        let limit = Int128(Fixed<S>.limit)
        switch random.next() % 10 {
        case 0: return limit
        case 1: return -limit
        case 2: return Int128(random.next() % 3) - 1
        default:
            let cap = Int128(FixedMath.powerOfTen(min(digits, S.precision)))
            let high = Int128(random.next() % UInt64.max), low = Int128(random.next())
            var value = (high << 64 | low) % cap
            if random.next() % 2 == 0 { value = -value }
            return value
        }
    }

    @Test("format, parse, add, subtract and compare agree with Decimal", arguments: seeds)
    func arithmetic(seed: UInt64) throws {
        var random = SeededRandom(seed: seed)
        for _ in 0..<2000 {
            let a = Cash(uncheckedUnits: units(CashScale.self, digits: 20, using: &random))
            let b = Cash(uncheckedUnits: units(CashScale.self, digits: 20, using: &random))
            #expect(try Cash(parsing: a.description) == a)
            #expect(decimal(a) == Decimal(string: a.description)!)
            let sum = decimal(a) + decimal(b)
            if abs(sum) > decimal(Cash.max) {
                #expect(throws: MoneyError.overflow) { try a + b }
            } else {
                #expect(decimal(try a + b) == sum)
            }
            let difference = decimal(a) - decimal(b)
            if abs(difference) > decimal(Cash.max) {
                #expect(throws: MoneyError.overflow) { try a - b }
            } else {
                #expect(decimal(try a - b) == difference)
            }
            #expect((a < b) == (decimal(a) < decimal(b)))
            let q = Quantity(uncheckedUnits: units(QuantityScale.self, digits: 28, using: &random))
            #expect(try Quantity(parsing: q.description) == q)
            let p = Price(uncheckedUnits: units(PriceScale.self, digits: 20, using: &random))
            #expect(try Price(parsing: p.description) == p)
        }
    }

    @Test("products and quotients round once, as Decimal rounds the exact value", arguments: seeds)
    func productsAndQuotients(seed: UInt64) throws {
        var random = SeededRandom(seed: seed)
        let rules: [RoundingRule] = [.up, .down, .ceiling, .floor, .halfUp, .halfEven]
        for _ in 0..<2000 {
            // Products with at most 37 digits, so Decimal holds them exactly; one factor may be at its extreme.
            let wide = random.next() % 2 == 0
            let q = Quantity(uncheckedUnits: units(QuantityScale.self, digits: wide ? 28 : 18, using: &random))
            let p = Price(uncheckedUnits: units(PriceScale.self, digits: wide ? 9 : 19, using: &random))
            let rule = rules[Int(random.next() % UInt64(rules.count))]
            let places = Int(random.next() % 5)
            let exact = decimal(q) * decimal(p)
            let expected = rounded(exact, places: places, rule)
            if abs(expected) > decimal(Cash.max) {
                #expect(throws: MoneyError.overflow) { try Cash.product(q, p, places: places, rounding: rule) }
            } else {
                #expect(decimal(try Cash.product(q, p, places: places, rounding: rule)) == expected, "\(q) × \(p) \(rule) \(places)")
            }
            // Quotients of cash by quantities, as an average cost is formed.
            let c = Cash(uncheckedUnits: units(CashScale.self, digits: 18, using: &random))
            let d = Quantity(uncheckedUnits: units(QuantityScale.self, digits: 18, using: &random))
            guard d.units != 0 else { continue }
            let quotient = rounded(decimal(c) / decimal(d), places: 8, rule)
            if abs(quotient) > decimal(Price.max) {
                #expect(throws: MoneyError.overflow) { try Price.quotient(c, d, rounding: rule) }
            } else {
                #expect(decimal(try Price.quotient(c, d, rounding: rule)) == quotient, "\(c) ÷ \(d) \(rule)")
            }
        }
    }

    @Test("an order filled in parts is charged, and paid, what one fill of it would be: the running total rounded, against Decimal", arguments: seeds)
    func fillsInParts(seed: UInt64) throws {
        var random = SeededRandom(seed: seed)
        for _ in 0..<500 {
            var value = FillValue.zero, exact = Decimal(0), charged = Decimal(0), paid = Decimal(0), bumped = Decimal(0)
            // Up to 8 parts of at most 10^6 shares (9 places) at most $10^5 (8 places): totals Decimal holds exactly.
            for _ in 0..<(1 + random.next() % 8) {
                let quantity = Quantity(uncheckedUnits: Int128(1 + random.next() % 1_000_000_000_000_000))
                let price = Price(uncheckedUnits: Int128(1 + random.next() % 10_000_000_000_000))
                let cost = try Money.cost(quantity: quantity, price: price, after: value)
                let proceeds = try Money.proceeds(quantity: quantity, price: price, after: value)
                // No part is charged more, or paid less, than its own rounding would.
                let alone = (cost: try Money.cost(quantity: quantity, price: price), proceeds: try Money.proceeds(quantity: quantity, price: price))
                #expect(cost <= alone.cost && proceeds >= alone.proceeds)
                #expect(cost >= (try Cash(parsing: "0.01")) && !proceeds.isNegative)
                let before = rounded(exact, places: 2, .up)
                charged += decimal(cost)
                paid += decimal(proceeds)
                exact += decimal(quantity) * decimal(price)
                value = try value.adding(quantity, price)
                // A part whose change of the total rounds to nothing is charged a cent (a buy is a debit).
                if rounded(exact, places: 2, .up) == before { bumped += Decimal(string: "0.01")! }
                #expect(charged == rounded(exact, places: 2, .up) + bumped, "charged \(charged) for \(exact)")
                #expect(paid == rounded(exact, places: 2, .down), "paid \(paid) for \(exact)")
            }
        }
        // The largest fill there can be adds up without wrapping.
        let most = try FillValue.zero.adding(Quantity.max, Price.max)
        #expect(throws: MoneyError.overflow) { try most.cents(rounding: .up) }
    }
}
