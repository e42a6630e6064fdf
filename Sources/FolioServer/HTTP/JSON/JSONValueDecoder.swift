import FolioDomain
import Foundation

/// Decodes `Decodable` types from a `JSONValue`.
///
/// - Keys are snake_case in JSON: a Swift key `limitPrice` is looked up as
///   `limit_price` (keys already in snake_case are left alone), and the
///   coding path names the JSON key, so an error names the field the client sent.
/// - Numbers reach `JSONNumberText` (and so the money types) as the exact
///   text written. Integers are read exactly; `Double` and `Float` are
///   refused: nothing in a request is a float.
/// - Dates are RFC 3339 strings; unknown keys are ignored, never bound.
struct JSONValueDecoder {
    func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try JSONValueDecoding(value: value, codingPath: []).decodeValue(T.self)
    }

    /// `limitPrice` → `limit_price`, `clientOrderID` → `client_order_id`.
    static func snakeCase(_ key: String) -> String {
        guard key.contains(where: \.isUppercase) else { return key }
        let characters = Array(key)
        var result = ""
        for (index, character) in characters.enumerated() {
            if character.isUppercase, index > 0 {
                let previous = characters[index - 1]
                let nextIsLower = index + 1 < characters.count && characters[index + 1].isLowercase
                if previous.isLowercase || previous.isNumber || (previous.isUppercase && nextIsLower) { result.append("_") }
            }
            result.append(contentsOf: character.lowercased())
        }
        return result
    }
}

/// A coding key named by its JSON spelling.
struct JSONKey: CodingKey {
    var stringValue: String
    var intValue: Int?

    init(stringValue: String) {
        self.stringValue = stringValue
    }

    init(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }
}

private struct JSONValueDecoding: Decoder {
    let value: JSONValue
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let members) = value else { throw mismatch([String: JSONValue].self, "an object") }
        return KeyedDecodingContainer(KeyedContainer<Key>(members: members, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = value else { throw mismatch([JSONValue].self, "an array") }
        return UnkeyedContainer(elements: elements, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleValueContainer(value: value, codingPath: codingPath)
    }

    func mismatch(_ type: Any.Type, _ expected: String) -> DecodingError {
        DecodingError.typeMismatch(type, .init(codingPath: codingPath, debugDescription: "expected \(expected)"))
    }

    func decodeValue<T: Decodable>(_ type: T.Type) throws -> T {
        try SingleValueContainer(value: value, codingPath: codingPath).decode(T.self)
    }
}

private struct KeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let members: [String: JSONValue]
    let codingPath: [any CodingKey]

    var allKeys: [Key] { members.keys.compactMap { Key(stringValue: $0) } }

    func jsonName(_ key: Key) -> String { JSONValueDecoder.snakeCase(key.stringValue) }

    func contains(_ key: Key) -> Bool { members[jsonName(key)] != nil }

    func member(_ key: Key) throws -> (JSONValue, [any CodingKey]) {
        let name = jsonName(key)
        let path = codingPath + [JSONKey(stringValue: name)]
        guard let value = members[name] else {
            throw DecodingError.keyNotFound(JSONKey(stringValue: name), .init(codingPath: codingPath, debugDescription: "\(name) is required"))
        }
        return (value, path)
    }

    func decodeNil(forKey key: Key) throws -> Bool {
        guard let value = members[jsonName(key)] else { return true }
        return value == .null
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        let (value, path) = try member(key)
        return try SingleValueContainer(value: value, codingPath: path).decode(T.self)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        let (value, path) = try member(key)
        return try JSONValueDecoding(value: value, codingPath: path).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        let (value, path) = try member(key)
        return try JSONValueDecoding(value: value, codingPath: path).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        JSONValueDecoding(value: .object(members), codingPath: codingPath)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        let (value, path) = try member(key)
        return JSONValueDecoding(value: value, codingPath: path)
    }
}

private struct UnkeyedContainer: UnkeyedDecodingContainer {
    let elements: [JSONValue]
    let codingPath: [any CodingKey]
    var currentIndex = 0

    init(elements: [JSONValue], codingPath: [any CodingKey]) {
        self.elements = elements
        self.codingPath = codingPath
    }

    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    mutating func next() throws -> (JSONValue, [any CodingKey]) {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(JSONValue.self, .init(codingPath: codingPath, debugDescription: "the array has no more elements"))
        }
        defer { currentIndex += 1 }
        return (elements[currentIndex], codingPath + [JSONKey(intValue: currentIndex)])
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, elements[currentIndex] == .null else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let (value, path) = try next()
        return try SingleValueContainer(value: value, codingPath: path).decode(T.self)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        let (value, path) = try next()
        return try JSONValueDecoding(value: value, codingPath: path).container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let (value, path) = try next()
        return try JSONValueDecoding(value: value, codingPath: path).unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder {
        let (value, path) = try next()
        return JSONValueDecoding(value: value, codingPath: path)
    }
}

private struct SingleValueContainer: SingleValueDecodingContainer {
    let value: JSONValue
    let codingPath: [any CodingKey]

    func mismatch(_ type: Any.Type, _ expected: String) -> DecodingError {
        if value == .null {
            return DecodingError.valueNotFound(type, .init(codingPath: codingPath, debugDescription: "expected \(expected), found null"))
        }
        return DecodingError.typeMismatch(type, .init(codingPath: codingPath, debugDescription: "expected \(expected)"))
    }

    func decodeNil() -> Bool { value == .null }

    func decode(_ type: Bool.Type) throws -> Bool {
        guard case .bool(let bool) = value else { throw mismatch(type, "true or false") }
        return bool
    }

    func decode(_ type: String.Type) throws -> String {
        guard case .string(let string) = value else { throw mismatch(type, "a string") }
        // JSON may carry U+0000, but no text Folio stores can: PostgreSQL refuses it and SQLite cuts the text
        // there (so "a@example.com\u0000x" would read back as another person's address). Refused for every field.
        guard !string.utf8.contains(0) else {
            let field = FieldIssue.path(codingPath)
            throw FieldIssue(field: field, code: "invalid_characters", message: "\(field) must not contain a NUL character (\\u0000).")
        }
        return string
    }

    func decode(_ type: Double.Type) throws -> Double { throw mismatch(type, "no float: amounts are exact decimals") }
    func decode(_ type: Float.Type) throws -> Float { throw mismatch(type, "no float: amounts are exact decimals") }

    func integer<I: FixedWidthInteger>(_ type: I.Type) throws -> I {
        guard case .number(let text) = value, let integer = I(text) else { throw mismatch(type, "a whole number") }
        return integer
    }

    func decode(_ type: Int.Type) throws -> Int { try integer(type) }
    func decode(_ type: Int8.Type) throws -> Int8 { try integer(type) }
    func decode(_ type: Int16.Type) throws -> Int16 { try integer(type) }
    func decode(_ type: Int32.Type) throws -> Int32 { try integer(type) }
    func decode(_ type: Int64.Type) throws -> Int64 { try integer(type) }
    func decode(_ type: UInt.Type) throws -> UInt { try integer(type) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try integer(type) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try integer(type) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try integer(type) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try integer(type) }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        switch type {
        case is JSONNumberText.Type:
            guard case .number(let text) = value else { throw mismatch(type, "a number") }
            return JSONNumberText(text) as! T
        case is Date.Type:
            guard case .string(let text) = value, let date = StrictDate.time(text) else { throw mismatch(type, "an RFC 3339 time") }
            return date as! T
        case is UUID.Type:
            guard case .string(let text) = value, let uuid = UUID(uuidString: text) else { throw mismatch(type, "a UUID") }
            return uuid as! T
        case is Decimal.Type:
            throw mismatch(type, "no Decimal: amounts are Folio's exact types")
        default:
            return try T(from: JSONValueDecoding(value: value, codingPath: codingPath))
        }
    }
}
