import Foundation

/// JSON reduced to one spelling: object keys sorted, insignificant white
/// space dropped, numbers written from their exact value (`1.50`, `1.5` and
/// `15e-1` are all `15e-1`, however many digits they have). Two bodies that
/// mean the same have the same canonical form, whatever order a client's
/// serializer put the keys in. An amount is read the same from a string or
/// a number, so `"amount": "1000.00"` and `"amount": 1000` are one spelling too.
enum CanonicalJSON {
    /// The members of the routes that take an `Idempotency-Key` that hold an amount (a string there is its number's
    /// text): deposits and withdrawals, orders, rebalance runs. Other strings stay as they are.
    static let amountMembers: Set<String> = [
        "amount", "quantity", "notional", "limit_price", "stop_price", "cash_reserve", "min_trade_amount", "price_tolerance_percent",
    ]

    /// The canonical text of `bytes`, or nil when it is not JSON.
    static func text(of bytes: some Collection<UInt8>) -> String? {
        (try? JSONValue.parse(bytes)).map(text)
    }

    static func text(_ value: JSONValue) -> String {
        switch value {
        case .null: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .number(let text): return number(text)
        case .string(let value): return JSONText.quote(value)
        case .array(let values): return "[" + values.map(text).joined(separator: ",") + "]"
        case .object(let members):
            return "{" + members.keys.sorted().map { JSONText.quote($0) + ":" + member($0, members[$0]!) }.joined(separator: ",") + "}"
        }
    }

    private static let numberBytes = Set("0123456789.-+eE".utf8)

    private static func member(_ name: String, _ value: JSONValue) -> String {
        // Only a string that is a JSON number as it stands (no white space around it, which the parser would skip).
        if amountMembers.contains(name), case .string(let written) = value, written.utf8.allSatisfy({ Self.numberBytes.contains($0) }),
           case .number(let exact)? = try? JSONValue.parse(written.utf8) {
            return number(exact)
        }
        return text(value)
    }

    /// A JSON number's exact value as `[-]digits e exponent` with no leading
    /// or trailing zeros in the digits (`0` for zero). Any length: nothing is cut.
    static func number(_ text: String) -> String {
        var negative = false
        var digits: [UInt8] = []
        var fractionDigits = 0
        var inFraction = false
        var bytes = Substring(text).utf8[...]
        if bytes.first == UInt8(ascii: "-") {
            negative = true
            bytes = bytes.dropFirst()
        }
        while let byte = bytes.first, byte != UInt8(ascii: "e"), byte != UInt8(ascii: "E") {
            bytes = bytes.dropFirst()
            if byte == UInt8(ascii: ".") {
                inFraction = true
                continue
            }
            if inFraction { fractionDigits += 1 }
            digits.append(byte)
        }
        // Slice once at each end: removing one digit at a time from the front is quadratic on a long number.
        guard let first = digits.firstIndex(where: { $0 != UInt8(ascii: "0") }), let last = digits.lastIndex(where: { $0 != UInt8(ascii: "0") }) else {
            return "0"
        }
        // What the digits' position moves the written exponent by: at most the body's length either way.
        let shift = (digits.count - 1 - last) - fractionDigits
        return (negative ? "-" : "") + String(decoding: digits[first...last], as: UTF8.self) + "e"
            + exponentSum(bytes.isEmpty ? bytes : bytes.dropFirst(), plus: shift)
    }

    /// `written + shift` in decimal, exactly, for an exponent of any length (the parser checked its grammar:
    /// an optional sign and digits). A client may write an exponent near or past `Int`'s limits; it is
    /// added digit by digit then, never with arithmetic that could overflow (and stop the server).
    static func exponentSum(_ written: Substring.UTF8View.SubSequence, plus shift: Int) -> String {
        var bytes = written
        var negative = false
        if let sign = bytes.first, sign == UInt8(ascii: "-") || sign == UInt8(ascii: "+") {
            negative = sign == UInt8(ascii: "-")
            bytes = bytes.dropFirst()
        }
        var digits = Array(bytes.drop { $0 == UInt8(ascii: "0") })
        // Short enough for Int with room for any shift (the body is far shorter than 10^17 bytes).
        if digits.count <= 17 {
            let value = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
            return String((negative ? -value : value) + shift)
        }
        // At least 10^17: larger than any shift, so the sum keeps the written sign, and only its magnitude
        // grows (a shift the same way) or shrinks (the other way) by |shift|.
        var carry = Int(shift.magnitude)
        let grows = (shift < 0) == negative
        var index = digits.count - 1
        while carry > 0 {
            var digit = Int(digits[index] - UInt8(ascii: "0")) + (grows ? carry % 10 : -(carry % 10))
            carry /= 10
            if digit > 9 { digit -= 10; carry += 1 }
            if digit < 0 { digit += 10; carry += 1 }
            digits[index] = UInt8(ascii: "0") + UInt8(digit)
            if index == 0 {
                if carry > 0 { digits.insert(UInt8(ascii: "0") + UInt8(carry), at: 0) }  // grows only: a borrow cannot pass the top
                break
            }
            index -= 1
        }
        let trimmed = digits.drop { $0 == UInt8(ascii: "0") }
        return (negative ? "-" : "") + String(decoding: trimmed, as: UTF8.self)
    }
}
