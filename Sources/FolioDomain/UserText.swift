/// Text a person writes that others see later (a statement's description, an
/// order's own id): it may not hold characters that make it show something
/// other than what it holds.
public enum UserText {
    /// Names as a sentence lists them: "AAPL", "AAPL and MSFT", "AAPL, MSFT and VTI".
    public static func list(_ names: [String]) -> String {
        guard let last = names.last else { return "" }
        return names.count == 1 ? last : names.dropLast().joined(separator: ", ") + " and " + last
    }

    /// Control characters (a line break can forge a line in a CSV or a log),
    /// and bidirectional controls (U+202E and its kin turn "gpj.exe" into
    /// "exe.jpg" on screen). Other format characters, such as the zero-width
    /// joiner in emoji sequences, are fine.
    public static func hasHiddenCharacters(_ text: some StringProtocol) -> Bool {
        text.unicodeScalars.contains(where: isHidden)
    }

    /// Text from elsewhere (a bank's name for a payment) as Folio keeps it:
    /// each control character a space, bidirectional controls gone. It is
    /// not ours to refuse, and it must not forge a line or reverse a name.
    public static func shown(_ text: String) -> String {
        guard hasHiddenCharacters(text) else { return text }
        var kept = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if scalar.properties.isBidiControl { continue }
            kept.append(scalar.properties.generalCategory == .control ? " " : scalar)
        }
        return String(kept)
    }

    /// A vendor's message as Folio keeps and shows it (stored on an item or an order, put in mail and problems):
    /// `shown`, trimmed, and at most `limit` code points; nil when nothing is left.
    public static func fromVendor(_ text: String?, limit: Int = 300) -> String? {
        guard let text else { return nil }
        let kept = shown(text).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !kept.isEmpty else { return nil }
        guard length(kept) > limit else { return kept }
        return String(String.UnicodeScalarView(kept.unicodeScalars.prefix(limit - 1))) + "…"
    }

    /// Its length as limits count it: in code points. Swift's `count` counts a
    /// letter with any number of combining marks as one character, so a
    /// "200-character" description could hold 170,000 accents.
    public static func length(_ text: some StringProtocol) -> Int {
        text.unicodeScalars.count
    }

    static func isHidden(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.generalCategory == .control || scalar.properties.isBidiControl
    }
}
