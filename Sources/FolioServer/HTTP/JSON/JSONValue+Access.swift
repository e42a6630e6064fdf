/// Reading a vendor's answer without `Codable`: members by name, values by
/// kind, and the document written back as text (keys sorted). Numbers stay
/// the exact text the vendor wrote.
extension JSONValue {
    subscript(_ key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    /// A string's text. U+0000 is dropped: no text Folio stores can hold it
    /// (PostgreSQL refuses it), and a vendor's stray NUL must not fail the
    /// write its answer leads to, again at every retry.
    var string: String? {
        guard case .string(let text) = self else { return nil }
        return text.utf8.contains(0) ? text.replacingOccurrences(of: "\u{0}", with: "") : text
    }

    /// A JSON number's text as written (never through `Double`).
    var numberText: String? {
        if case .number(let text) = self { return text }
        return nil
    }

    var bool: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// The elements of an array; empty for anything else.
    var elements: [JSONValue] {
        if case .array(let values) = self { return values }
        return []
    }

    var isNull: Bool { self == .null }

    /// The document as JSON text, object keys sorted.
    var text: String {
        var result = ""
        write(to: &result)
        return result
    }

    private func write(to result: inout String) {
        switch self {
        case .null: result += "null"
        case .bool(let value): result += value ? "true" : "false"
        case .number(let text): result += text
        case .string(let text): result += JSONText.quote(text)
        case .array(let values):
            result += "["
            for (index, value) in values.enumerated() {
                if index > 0 { result += "," }
                value.write(to: &result)
            }
            result += "]"
        case .object(let members):
            result += "{"
            for (index, key) in members.keys.sorted().enumerated() {
                if index > 0 { result += "," }
                result += JSONText.quote(key)
                result += ":"
                members[key]!.write(to: &result)
            }
            result += "}"
        }
    }
}
