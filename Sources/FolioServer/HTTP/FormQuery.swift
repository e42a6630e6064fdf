import Foundation
import Hummingbird

/// A request's query string read as HTML forms write it: `+` is a space and
/// `%2B` a plus (`query=apple+corp` searches for "apple corp"). Hummingbird's
/// own `queryParameters` leaves `+` as it is. The first value of a name wins.
struct FormQuery: Sendable {
    private let values: [String: Substring]

    init(_ raw: String?) {
        var values: [String: Substring] = [:]
        for (name, value) in Self.pairs(raw ?? "") where values[name] == nil {
            values[name] = Substring(value)
        }
        self.values = values
    }

    /// Every name and value in order, repeats included (a form body reads the same way).
    static func pairs(_ text: String) -> [(String, String)] {
        text.split(separator: "&", omittingEmptySubsequences: true).compactMap { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = decode(parts[0]) else { return nil }
            return (name, parts.count > 1 ? decode(parts[1]) ?? "" : "")
        }
    }

    subscript(name: String) -> Substring? { values[name] }

    /// Every name and its value, sorted by name.
    var all: [(key: String, value: Substring)] { values.sorted { $0.key < $1.key } }

    /// `+` as a space, then percent-decoding; nil when the escapes are not UTF-8.
    static func decode(_ text: Substring) -> String? {
        String(text.replacing("+", with: " ")).removingPercentEncoding
    }
}

extension Request {
    /// The query string, decoded as forms encode it (see `FormQuery`).
    var query: FormQuery { FormQuery(uri.query) }
}
