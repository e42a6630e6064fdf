/// Text a person writes that others see later (a statement's description, an
/// order's own id): it may not hold characters that make it show something
/// other than what it holds.
public enum UserText {
    /// Control characters (a line break can forge a line in a CSV or a log),
    /// and bidirectional controls (U+202E and its kin turn "gpj.exe" into
    /// "exe.jpg" on screen). Other format characters, such as the zero-width
    /// joiner in emoji sequences, are fine.
    public static func hasHiddenCharacters(_ text: some StringProtocol) -> Bool {
        text.unicodeScalars.contains { $0.properties.generalCategory == .control || $0.properties.isBidiControl }
    }
}
