import FolioDomain
import Foundation

/// A response that writes its own JSON. Foundation's `JSONEncoder` took a
/// third of the server's CPU on the portfolio read (it boxes every value into
/// a tree, converts every key to snake_case and sorts the keys per object), so
/// responses on hot paths write their keys directly. Their output must be
/// byte for byte what `FolioJSON.encoder` writes for them; a test compares the two.
protocol JSONWritable {
    func write(to json: inout JSONWriter)
}

/// Appends JSON to a byte array. Keys are written as given: a caller lists
/// them in the order `.sortedKeys` would, and leaves out nil values as the
/// synthesized `Encodable` conformances do.
struct JSONWriter {
    private(set) var bytes: [UInt8] = []
    /// Whether the next key or array element needs a comma before it.
    private var afterValue = false

    init(capacity: Int = 1024) {
        bytes.reserveCapacity(capacity)
    }

    mutating func beginObject() {
        separate()
        bytes.append(UInt8(ascii: "{"))
    }

    mutating func endObject() {
        bytes.append(UInt8(ascii: "}"))
        afterValue = true
    }

    mutating func beginArray() {
        separate()
        bytes.append(UInt8(ascii: "["))
    }

    mutating func endArray() {
        bytes.append(UInt8(ascii: "]"))
        afterValue = true
    }

    mutating func key(_ name: StaticString) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
    }

    /// Forgets what was written (sent on already), keeping the place in the document.
    mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
    }

    /// A key known only at run time (the export's column names).
    mutating func key(named name: String) {
        separate()
        JSONText.append(name, to: &bytes, shortEscapes: true)
        bytes.append(UInt8(ascii: ":"))
    }

    mutating func null() {
        separate()
        bytes.append(contentsOf: "null".utf8)
        afterValue = true
    }

    mutating func integer(_ value: Int64) {
        separate()
        bytes.append(contentsOf: String(value).utf8)
        afterValue = true
    }

    mutating func string(_ value: String) {
        separate()
        JSONText.append(value, to: &bytes, shortEscapes: true)
        afterValue = true
    }

    /// A parsed JSON value, written as its own `text` writes it (numbers as written, keys sorted).
    mutating func value(_ value: JSONValue) {
        separate()
        bytes.append(contentsOf: value.text.utf8)
        afterValue = true
    }

    mutating func bool(_ value: Bool) {
        separate()
        bytes.append(contentsOf: (value ? "true" : "false").utf8)
        afterValue = true
    }

    /// RFC 3339 in UTC to the whole second, as the encoder's `.iso8601` writes it.
    mutating func date(_ value: Date) {
        let seconds = Int64(value.timeIntervalSince1970.rounded(.down))
        // 2026-11-29T16:55:00.000Z → 2026-11-29T16:55:00Z
        string(String(LogTimestamp.format(milliseconds: seconds * 1000).dropLast(5)) + "Z")
    }

    // Fields: a key and its value; a nil value leaves the key out.

    mutating func field(_ name: StaticString, _ value: String?) {
        guard let value else { return }
        key(name)
        string(value)
    }

    mutating func field(_ name: StaticString, _ value: Bool) {
        key(name)
        bool(value)
    }

    mutating func field(_ name: StaticString, _ value: Date?) {
        guard let value else { return }
        key(name)
        date(value)
    }

    /// Amounts and ids are JSON strings of their description, as their `Encodable` conformances write them.
    mutating func field(_ name: StaticString, _ value: (some CustomStringConvertible)?) {
        guard let value else { return }
        key(name)
        string(value.description)
    }

    private mutating func separate() {
        if afterValue { bytes.append(UInt8(ascii: ",")) }
        afterValue = false
    }
}
