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
/// - Dates are RFC 3339 strings.
/// - A key the type never reads is ignored, never bound (a `role` in a
///   sign-up is no role), unless it looks like a misspelling of one it reads
///   (`time_in_forse`, `acount_id`, `timeInForce`): that is refused (422
///   `unknown_field`, naming the key meant), since the field it was meant to
///   be would silently take its default (a DAY order instead of GTC, the
///   default account instead of the one named).
struct JSONValueDecoder {
    func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        let reads = KeyReads()
        let decoded: T
        do {
            decoded = try JSONValueDecoding(value: value, codingPath: [], reads: reads).decodeValue(T.self)
        } catch {
            // A field missing or wrong for want of its misspelt key (`type` sent for the required `order_type`):
            // the misspelling is what to fix, and says so. Only the keys read before the failure are known.
            try Self.refuseMisspellings(reads)
            throw error
        }
        try Self.refuseMisspellings(reads)
        return decoded
    }

    private static func refuseMisspellings(_ reads: KeyReads) throws {
        let misspelt = reads.misspellings()
        guard !misspelt.isEmpty else { return }
        let issues = misspelt.map {
            FieldIssue(field: $0.field, code: "unknown_field", message: "\($0.field) is not a field of this request; did you mean \($0.meant)?")
        }
        throw AppError.validation(issues, detail: issues.count == 1 ? issues[0].message : "The request has misspelt fields.")
    }

    /// `key` is within two edits of `known`, the same letters in another spelling
    /// (`timeInForce`, `time-in-force`), or a short form of it as other trading APIs
    /// write them: its initials (`tif`), one of its words (`type` for `order_type`,
    /// `account` for `account_id`), or its letters abbreviated (`qty`). A misspelling
    /// rather than a field of its own.
    static func looksLike(_ key: String, _ known: String) -> Bool {
        func plain(_ text: String) -> [Character] { Array(text.lowercased().filter { $0 != "_" && $0 != "-" }) }
        let a = plain(key), b = plain(known)
        if a == b { return true }
        if isShortForm(a, of: known) { return true }
        guard min(a.count, b.count) >= 4, abs(a.count - b.count) <= 2 else { return false }
        // Levenshtein distance, two rows.
        var previous = Array(0...b.count), current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[b.count] <= 2
    }

    /// `key` (letters only, lower case) is the initials of a name of several words, one
    /// of its words of four letters or more, or three letters or more that begin it and
    /// come in its order (an abbreviation) while leaving at least two of it out.
    static func isShortForm(_ key: [Character], of known: String) -> Bool {
        let words = known.split(separator: "_").map { Array($0) }
        guard key.count >= 2 else { return false }
        if words.count >= 2 {
            if key == words.compactMap(\.first) { return true }
            if key.count >= 4, words.contains(where: { $0 == key }) { return true }
        }
        let letters = words.joined().map { $0 }
        guard key.count >= 3, key.count + 2 <= letters.count, key.first == letters.first else { return false }
        var remaining = letters[...]
        for character in key {
            guard let found = remaining.firstIndex(of: character) else { return false }
            remaining = remaining[(found + 1)...]
        }
        return true
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

/// The keys of every object a decode looked at, and which of them the
/// decoded type read (asked for, present or not, or listed through
/// `allKeys`); one decode runs on one task, so no lock.
private final class KeyReads {
    /// One object's keys, and those read: shared by every container opened on the object.
    final class Object {
        let members: Set<String>
        var read: Set<String> = []

        init(members: Set<String>) {
            self.members = members
        }
    }

    private var objects: [String: Object] = [:]

    /// The record of the object at `path` (an object read twice, as a type may, has one).
    func saw(_ members: [String: JSONValue], at path: String) -> Object {
        if let known = objects[path] { return known }
        let object = Object(members: Set(members.keys))
        objects[path] = object
        return object
    }

    /// Every member no decode read that looks like a key it did read, as field paths
    /// (`legs[0].quantiy`) with the key meant, sorted; at most `limit`, so a body of
    /// thousands of near-miss keys is not answered with a longer list of them.
    func misspellings(limit: Int = 20) -> [(field: String, meant: String)] {
        objects.flatMap { path, object -> [(field: String, meant: String)] in
            let known = object.read.sorted()
            return object.members.subtracting(object.read).compactMap { key in
                known.first { JSONValueDecoder.looksLike(key, $0) }.map { (path.isEmpty ? key : path + "." + key, $0) }
            }
        }.sorted { $0.field < $1.field }.prefix(limit).map { $0 }
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
    let reads: KeyReads
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let members) = value else { throw mismatch([String: JSONValue].self, "an object") }
        let object = reads.saw(members, at: FieldIssue.path(codingPath))
        return KeyedDecodingContainer(KeyedContainer<Key>(members: members, codingPath: codingPath, object: object, reads: reads, listing: .init()))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = value else { throw mismatch([JSONValue].self, "an array") }
        return UnkeyedContainer(elements: elements, codingPath: codingPath, reads: reads)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleValueContainer(value: value, codingPath: codingPath, reads: reads)
    }

    func mismatch(_ type: Any.Type, _ expected: String) -> DecodingError {
        DecodingError.typeMismatch(type, .init(codingPath: codingPath, debugDescription: "expected \(expected)"))
    }

    func decodeValue<T: Decodable>(_ type: T.Type) throws -> T {
        try SingleValueContainer(value: value, codingPath: codingPath, reads: reads).decode(T.self)
    }
}

private struct KeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let members: [String: JSONValue]
    let codingPath: [any CodingKey]
    /// What `reads` knows of this object: the keys read from it.
    let object: KeyReads.Object
    let reads: KeyReads
    /// Whether this container listed the object's keys (`allKeys`): a dictionary (`[String: …]`) then asks
    /// for each by the name it was given, the JSON's own, which is not snake-cased again. This container's
    /// alone: a struct decoded from the same object still reads its fields by their snake-case names.
    let listing: Listing

    final class Listing {
        var listed = false
    }

    var allKeys: [Key] {
        object.read.formUnion(object.members)
        listing.listed = true
        return members.keys.compactMap { Key(stringValue: $0) }
    }

    /// The JSON name of `key`, counted as read: asking for a key, there or not, is knowing it.
    func jsonName(_ key: Key) -> String {
        if listing.listed, members[key.stringValue] != nil { return key.stringValue }
        let name = JSONValueDecoder.snakeCase(key.stringValue)
        object.read.insert(name)
        return name
    }

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
        return try SingleValueContainer(value: value, codingPath: path, reads: reads).decode(T.self)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        let (value, path) = try member(key)
        return try JSONValueDecoding(value: value, codingPath: path, reads: reads).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        let (value, path) = try member(key)
        return try JSONValueDecoding(value: value, codingPath: path, reads: reads).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        JSONValueDecoding(value: .object(members), codingPath: codingPath, reads: reads)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        let (value, path) = try member(key)
        return JSONValueDecoding(value: value, codingPath: path, reads: reads)
    }
}

private struct UnkeyedContainer: UnkeyedDecodingContainer {
    let elements: [JSONValue]
    let codingPath: [any CodingKey]
    let reads: KeyReads
    var currentIndex = 0

    init(elements: [JSONValue], codingPath: [any CodingKey], reads: KeyReads) {
        self.elements = elements
        self.codingPath = codingPath
        self.reads = reads
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
        return try SingleValueContainer(value: value, codingPath: path, reads: reads).decode(T.self)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        let (value, path) = try next()
        return try JSONValueDecoding(value: value, codingPath: path, reads: reads).container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let (value, path) = try next()
        return try JSONValueDecoding(value: value, codingPath: path, reads: reads).unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder {
        let (value, path) = try next()
        return JSONValueDecoding(value: value, codingPath: path, reads: reads)
    }
}

private struct SingleValueContainer: SingleValueDecodingContainer {
    let value: JSONValue
    let codingPath: [any CodingKey]
    let reads: KeyReads

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
            return try T(from: JSONValueDecoding(value: value, codingPath: codingPath, reads: reads))
        }
    }
}
