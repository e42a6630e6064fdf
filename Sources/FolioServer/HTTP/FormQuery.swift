import Foundation
import Hummingbird

/// A request's query string read as HTML forms write it: `+` is a space and
/// `%2B` a plus (`query=apple+corp` searches for "apple corp"). Hummingbird's
/// own `queryParameters` leaves `+` as it is. The first value of a name wins.
struct FormQuery: Sendable {
    private let values: [String: Substring]

    init(_ raw: String?) {
        var values: [String: Substring] = [:]
        for pair in (raw ?? "").split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = Self.decode(parts[0]), values[name] == nil else { continue }
            values[name] = Substring(parts.count > 1 ? Self.decode(parts[1]) ?? "" : "")
        }
        self.values = values
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
