import Foundation
import Synchronization

/// Removes secrets and personal data from text before it reaches a log.
///
/// Redacts by key name (passwords, secrets, tokens, API keys, authorization,
/// cookies) in JSON text, escaped JSON and `key=value` / `key: value` text; and by
/// shape anywhere: bearer tokens, JWTs, API-key-looking values, US social
/// security numbers, Luhn-valid payment card numbers; email addresses are kept
/// partially (`j***@example.com`) so support can still tell users apart.
/// Before any of that, every configured secret value (`ConfiguredSecrets`) is
/// masked wherever it appears, whatever surrounds it: a vendor that quotes our
/// API key back in an error message does not get it into the log.
public struct LogRedactor: Sendable {
    public static let mask = "[REDACTED]"
    public static let standard = LogRedactor()

    /// Key fragments that mark a value as secret, compared case-insensitively
    /// with `-` and `_` treated alike.
    public static let sensitiveKeyFragments = [
        "password", "passwd", "passphrase", "secret", "token", "api_key", "apikey",
        "authorization", "cookie", "credential", "private_key", "key_id", "ssn", "card_number", "totp", "recovery_code", "otp_code",
    ]

    public init() {}

    public func isSensitiveKey(_ key: String) -> Bool {
        // Non-ASCII keys take Unicode lower-casing, which folds the Kelvin sign
        // "\u{212A}" into "k" ("to\u{212A}en" is a token key too).
        if key.utf8.contains(where: { $0 >= 0x80 }) {
            let folded = key.lowercased().replacingOccurrences(of: "-", with: "_")
            return Self.sensitiveKeyFragments.contains { folded.contains($0) }
        }
        // Byte by byte in place: this runs for every metadata key of every log line.
        return key.utf8.withContiguousStorageIfAvailable { bytes in
            Self.sensitiveKeyFragmentBytes.contains { Self.containsFolded(bytes, $0) }
        } ?? Self.sensitiveKeyFragmentBytes.contains { fragment in Array(key.utf8).withUnsafeBufferPointer { Self.containsFolded($0, fragment) } }
    }

    /// Whether `fragment` (lower case, "_" for a separator) occurs in `key`
    /// with ASCII letters lower-cased and "-" read as "_".
    static func containsFolded(_ key: UnsafeBufferPointer<UInt8>, _ fragment: [UInt8]) -> Bool {
        guard key.count >= fragment.count else { return false }
        func folded(_ byte: UInt8) -> UInt8 { byte >= 65 && byte <= 90 ? byte + 32 : (byte == 45 ? 95 : byte) }
        for start in 0...(key.count - fragment.count) {
            var index = 0
            while index < fragment.count, folded(key[start + index]) == fragment[index] { index += 1 }
            if index == fragment.count { return true }
        }
        return false
    }

    static let sensitiveKeyFragmentBytes = sensitiveKeyFragments.map { Array($0.utf8) }

    /// The value of a metadata entry: masked whole under a sensitive key,
    /// otherwise redacted by shape.
    public func redact(value: String, forKey key: String) -> String {
        isSensitiveKey(key) ? Self.mask : redact(value)
    }

    public func redact(_ text: String) -> String {
        if text.isEmpty { return text }
        var result = ConfiguredSecrets.mask(in: text)
        // Lower-cased once for every rule's trigger search, again only after a rule changed the text.
        var lowered = Scan.lowercased(result)
        for rule in Self.rules where rule.applies(to: result, lowered: lowered) {
            let changed = rule.apply(to: result)
            if changed != result {
                result = changed
                lowered = Scan.lowercased(result)
            }
        }
        return result
    }

    // MARK: - Rules

    private static let keyPattern =
        #"[A-Za-z0-9_.\-]*(?:password|passwd|passphrase|secret|token|api[_\-]?key|authorization|cookie|credential|private[_\-]?key|key[_\-]id|ssn|card[_\-]?number|totp|recovery[_\-]?code|otp[_\-]?code)[A-Za-z0-9_.\-]*"#

    static let rules: [Rule] = [
        // "password": "..." (also numbers and booleans) in JSON text.
        Rule(
            #""(\#(keyPattern))"(\s*:\s*)(?:"(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+\-]*|true|false)"#,
            template: "\"$1\"$2\"\(mask)\"", trigger: "\""),
        // The same inside a JSON string that itself holds JSON: \"password\":\"...\"
        Rule(
            #"\\"(\#(keyPattern))\\"(\s*:\s*)\\"(?:[^"\\]|\\[^"])*\\""#,
            template: "\\\\\"$1\\\\\"$2\\\\\"\(mask)\\\\\"", trigger: "\\\""),
        // Header lines: everything after "Authorization:" or "Cookie:" to the end of the line.
        Rule(
            #"\b((?:proxy-)?authorization|set-cookie|cookie)(\s*:\s*)[^\r\n"]+"#,
            template: "$1$2\(mask)", trigger: ":"),
        // key=value and key: value text, including query strings. A quoted value (as a Swift description or a
        // Python repr prints it, or escaped inside a JSON string) is masked to its closing quote; a repr's key is quoted.
        Rule(
            #"\b(\#(keyPattern)'?)(\s*[=:]\s*)(?:\\"(?:[^"\\]|\\[^"])*\\"|"(?:[^"\\\r\n]|\\.)*"|'(?:[^'\\\r\n]|\\.)*'|(?:(?:bearer|basic|token|digest)\s+)?[^\s&,;"'}\]\[]+)"#,
            template: "$1$2\(mask)", triggers: ["=", ":"]),
        Rule(#"\bbearer\s+[A-Za-z0-9\-._~+/]+=*"#, template: "Bearer \(mask)", trigger: "earer"),
        Rule(#"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"#, template: mask, trigger: "eyJ", caseInsensitive: false),
        // Keys with a vendor's known prefix: Stripe-style, SendGrid, AWS, GitHub, Slack, Plaid.
        Rule(
            #"\b(?:(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{8,}|SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9\-]{10,}|(?:access|public|link|processor)-(?:sandbox|development|production)-[0-9a-f\-]{8,})"#,
            template: mask,
            triggers: ["_live_", "_test_", "SG.", "AKIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "-sandbox-", "-development-", "-production-"],
            caseInsensitive: false),
        // Random-looking keys: mixed-case base62 of 24+, upper-case alphanumerics of 16+, hex of 32+.
        // A compact UTC time (20261124T010000Z, as backups are named) is not one.
        Rule(
            #"(?<![A-Za-z0-9])(?![0-9]{8}T[0-9]{6}Z(?![A-Za-z0-9]))(?:(?=[A-Za-z0-9]*[A-Z])(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[0-9])[A-Za-z0-9]{24,}|(?=[A-Z0-9]*[A-Z][A-Z0-9]*[0-9])(?=[A-Z0-9]*[0-9][A-Z0-9]*[A-Z])[A-Z0-9]{16,}|(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*[0-9])[0-9a-fA-F]{32,})(?![A-Za-z0-9])"#,
            template: mask, caseInsensitive: false, precheck: { Scan.longestRun(in: $0, of: Scan.isAlphanumeric) >= 16 }),
        CardNumberRule.rule,
        Rule(#"(?<![0-9])[0-9]{3}-[0-9]{2}-[0-9]{4}(?![0-9])"#, template: "[REDACTED_SSN]", trigger: "-", precheck: Scan.hasSocialSecurityShape),
        // Every address sign-up accepts: Unicode letters, and the local part's other marks (`_john`, `-jane`,
        // `josé`, `exämple.com`), except `=`, quotes and braces, which begin an address in a log line's text.
        Rule(
            #"(?<![\p{L}\p{M}\p{N}._%+\-!#$&*?^`~])([\p{L}\p{N}._%+\-!#$&*?^`~])[\p{L}\p{M}\p{N}._%+\-!#$&*?^`~]*@([\p{L}\p{N}](?:[\p{L}\p{M}\p{N}\-]*[\p{L}\p{M}\p{N}])?(?:\.[\p{L}\p{N}](?:[\p{L}\p{M}\p{N}\-]*[\p{L}\p{M}\p{N}])?)+)"#,
            template: "$1***@$2", trigger: "@"),
    ]
}

/// A class, so that walking the rules for every value of every line copies a
/// reference, not six fields with their reference counts.
final class Rule: @unchecked Sendable {
    // NSRegularExpression is immutable after creation and safe to share.
    let expression: NSRegularExpression
    let template: String
    let triggers: [String]
    /// The triggers as lower-case ASCII bytes, for a case-insensitive byte search.
    let triggerBytes: [[UInt8]]
    /// A scan that is false only when the expression cannot match (exact, never a guess).
    let precheck: (@Sendable (String) -> Bool)?
    let replace: (@Sendable (String) -> String)?

    init(_ pattern: String, template: String, trigger: String? = nil, triggers: [String] = [], caseInsensitive: Bool = true,
         precheck: (@Sendable (String) -> Bool)? = nil) {
        self.expression = try! NSRegularExpression(pattern: pattern, options: caseInsensitive ? [.caseInsensitive] : [])
        self.template = template
        self.triggers = (trigger.map { [$0] } ?? []) + triggers
        self.triggerBytes = self.triggers.map { Array($0.lowercased().utf8) }
        self.precheck = precheck
        self.replace = nil
    }

    init(_ pattern: String, trigger: String? = nil, precheck: (@Sendable (String) -> Bool)? = nil, replace: @escaping @Sendable (String) -> String) {
        self.expression = try! NSRegularExpression(pattern: pattern, options: [])
        self.template = ""
        self.triggers = trigger.map { [$0] } ?? []
        self.triggerBytes = self.triggers.map { Array($0.lowercased().utf8) }
        self.precheck = precheck
        self.replace = replace
    }

    /// Cheap tests that skip the expression when the text cannot match: most
    /// log values (ids, numbers, routes) never reach a regular expression,
    /// which is what made redaction the largest cost of a request's log line.
    func applies(to text: String, lowered: [UInt8]) -> Bool {
        if let precheck, !precheck(text) { return false }
        guard !triggerBytes.isEmpty else { return true }
        return triggerBytes.contains { Scan.contains(lowered, $0) }
    }

    func apply(to text: String) -> String {
        let range = NSRange(text.startIndex..., in: text)
        guard let replace else {
            return expression.stringByReplacingMatches(in: text, range: range, withTemplate: template)
        }
        var result = ""
        var cursor = text.startIndex
        for match in expression.matches(in: text, range: range) {
            guard let matchRange = Range(match.range, in: text) else { continue }
            result += text[cursor..<matchRange.lowerBound]
            result += replace(String(text[matchRange]))
            cursor = matchRange.upperBound
        }
        result += text[cursor...]
        return result
    }
}

/// Byte scans that rule out a match before any regular expression runs.
enum Scan {
    static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122)
    }

    static func isDigit(_ byte: UInt8) -> Bool {
        byte >= 48 && byte <= 57
    }

    /// The text's bytes with ASCII letters lower-cased.
    static func lowercased(_ text: String) -> [UInt8] {
        text.utf8.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }
    }

    /// Whether `needle` occurs in `haystack`.
    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, haystack.count >= needle.count else { return needle.isEmpty }
        let first = needle[0]
        for start in 0...(haystack.count - needle.count) where haystack[start] == first {
            var index = 1
            while index < needle.count, haystack[start + index] == needle[index] { index += 1 }
            if index == needle.count { return true }
        }
        return false
    }

    /// The longest run of bytes that pass `test`.
    static func longestRun(in text: String, of test: (UInt8) -> Bool) -> Int {
        var longest = 0, current = 0
        for byte in text.utf8 {
            if test(byte) {
                current += 1
                longest = max(longest, current)
            } else {
                current = 0
            }
        }
        return longest
    }

    /// A stretch of digits, spaces and dashes holding at least 13 digits: what a card number needs.
    static func hasCardLength(_ text: String) -> Bool {
        var digits = 0
        for byte in text.utf8 {
            if isDigit(byte) {
                digits += 1
                if digits >= 13 { return true }
            } else if byte != 32 && byte != 45 {
                digits = 0
            }
        }
        return false
    }

    /// `ddd-dd-dddd` somewhere in the text.
    static func hasSocialSecurityShape(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count >= 11 else { return false }
        for start in 0...(bytes.count - 11) where bytes[start + 3] == 45 && bytes[start + 6] == 45 {
            let digitOffsets = [0, 1, 2, 4, 5, 7, 8, 9, 10]
            if digitOffsets.allSatisfy({ isDigit(bytes[start + $0]) }) { return true }
        }
        return false
    }
}

/// Payment card numbers: 13 to 19 digits, optionally grouped by spaces or
/// dashes, that pass the Luhn check.
enum CardNumberRule {
    /// Not inside a word or an identifier: a UUID's last groups ("…-8ba0-868299266023") can pass Luhn by chance,
    /// and so can a UUID made of digits only, from its first group (8-4-4-4-12 digits is a UUID, not a card).
    static let rule = Rule(
        #"(?<![0-9A-Za-z])(?<![0-9A-Fa-f]{4}-)(?![0-9]{8}-[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{12}(?![0-9A-Za-z]))[0-9](?:[ \-]?[0-9]){12,}(?![0-9A-Za-z])"#,
        precheck: Scan.hasCardLength) { redactCards(in: $0) }

    /// A run of digit groups may hold a card next to other numbers ("1.50 4111 1111 1111 1111"):
    /// mask every stretch of whole groups that is 13 to 19 digits long and passes Luhn.
    static func redactCards(in candidate: String) -> String {
        // Groups of digits and the separator that follows each.
        var groups: [(digits: [Int], text: String)] = []
        var current: [Int] = []
        var text = ""
        for character in candidate {
            if let digit = character.wholeNumberValue {
                current.append(digit)
                text.append(character)
            } else {
                text.append(character)
                groups.append((current, text))
                current = []
                text = ""
            }
        }
        groups.append((current, text))

        var output = ""
        var start = 0
        while start < groups.count {
            var masked = false
            for end in stride(from: groups.count - 1, through: start, by: -1) {
                let digits = groups[start...end].flatMap(\.digits)
                guard (13...19).contains(digits.count), passesLuhn(digits) else { continue }
                output += "[REDACTED_CARD]"
                // Keep the separator after the card, if any.
                if let last = groups[end].text.last, last.wholeNumberValue == nil { output.append(last) }
                start = end + 1
                masked = true
                break
            }
            if !masked {
                output += groups[start].text
                start += 1
            }
        }
        return output
    }

    static func passesLuhn(_ digits: [Int]) -> Bool {
        var sum = 0
        for (offset, digit) in digits.reversed().enumerated() {
            if offset % 2 == 1 {
                let doubled = digit * 2
                sum += doubled > 9 ? doubled - 9 : doubled
            } else {
                sum += digit
            }
        }
        return sum % 10 == 0
    }
}

/// The secret values this process was configured with (signing keys, the
/// operator token, vendor keys and secrets, the database password), masked as
/// literals in every log line. Registered once at start-up by the composition
/// root; a test process registers each test's secrets too.
public enum ConfiguredSecrets {
    /// Shorter values are not masked: they would match ordinary text.
    public static let minimumLength = 8
    private static let values = Mutex<[[UInt8]]>([])

    public static func register(_ secrets: some Sequence<String>) {
        let new = secrets.filter { $0.utf8.count >= minimumLength }.map { Array($0.utf8) }
        guard !new.isEmpty else { return }
        values.withLock { values in
            for secret in new where !values.contains(secret) { values.append(secret) }
            // Longest first, so a secret that contains another is masked whole.
            values.sort { $0.count > $1.count }
        }
    }

    /// `text` with every registered secret replaced by the mask.
    public static func mask(in text: String) -> String {
        let secrets = values.withLock { $0 }
        guard !secrets.isEmpty else { return text }
        // This runs for every logged string: search in place, copy only when a secret is there.
        var text = text
        let present = text.withUTF8 { utf8 in secrets.filter { contains(utf8, $0) } }
        guard !present.isEmpty else { return text }
        var bytes = Array(text.utf8)
        for secret in present { bytes = replacing(secret, in: bytes) }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func contains(_ haystack: UnsafeBufferPointer<UInt8>, _ needle: [UInt8]) -> Bool {
        guard haystack.count >= needle.count, let first = needle.first else { return false }
        for start in 0...(haystack.count - needle.count) where haystack[start] == first {
            var index = 1
            while index < needle.count, haystack[start + index] == needle[index] { index += 1 }
            if index == needle.count { return true }
        }
        return false
    }

    private static func replacing(_ secret: [UInt8], in bytes: [UInt8]) -> [UInt8] {
        let mask = Array(LogRedactor.mask.utf8)
        var result: [UInt8] = []
        result.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            if index + secret.count <= bytes.count, bytes[index] == secret[0], bytes[index..<index + secret.count].elementsEqual(secret) {
                result += mask
                index += secret.count
            } else {
                result.append(bytes[index])
                index += 1
            }
        }
        return result
    }
}
