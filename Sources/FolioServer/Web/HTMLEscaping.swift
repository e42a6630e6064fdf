import Mustache

/// HTML escaping by Unicode scalar. swift-mustache's own escaping compares
/// whole characters (grapheme clusters), so a `"` or `<` joined to a combining
/// mark or after a prepend character (U+0600) is one character that equals
/// neither, and passes through unescaped while the browser still reads a bare
/// quote or bracket. Every page and mail template declares
/// `{{% CONTENT_TYPE: FOLIO_HTML}}` to use this instead.
struct ScalarHTMLEscaping: MustacheContentType {
    static let name = "FOLIO_HTML"

    func escapeText(_ text: String) -> String {
        Self.escape(text)
    }

    static func escape(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        out.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out.append(contentsOf: "&amp;".unicodeScalars)
            case "<": out.append(contentsOf: "&lt;".unicodeScalars)
            case ">": out.append(contentsOf: "&gt;".unicodeScalars)
            case "\"": out.append(contentsOf: "&quot;".unicodeScalars)
            case "'": out.append(contentsOf: "&#39;".unicodeScalars)
            default: out.append(scalar)
            }
        }
        return String(out)
    }

    /// Before any template is parsed: the pragma names a registered type.
    static func register() {
        MustacheContentTypes.register(ScalarHTMLEscaping(), named: name)
    }
}
