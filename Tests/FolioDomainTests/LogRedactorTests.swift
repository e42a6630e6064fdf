import Foundation
import Testing

@testable import FolioDomain

@Suite("Log redactor")
struct LogRedactorTests {
    let redactor = LogRedactor.standard

    @Test("passwords, secrets and tokens are masked by key in key=value and key: value text", arguments: [
        "password=hunter2hunter2", "PASSWORD: hunter2hunter2", "secret=hunter2hunter2", "token=hunter2hunter2",
        "api_key=hunter2hunter2", "Api-Key: hunter2hunter2", "access_token=hunter2hunter2",
        "refresh_token = hunter2hunter2", "client_secret=hunter2hunter2", "/login?user=bob&password=hunter2hunter2&x=1",
    ])
    func keyValueText(line: String) {
        let redacted = redactor.redact("request \(line) done")
        #expect(!redacted.contains("hunter2hunter2"), "\(redacted)")
        #expect(redacted.contains(LogRedactor.mask))
        #expect(redacted.hasPrefix("request ") && redacted.hasSuffix(" done") || line.contains("&x=1"))
    }

    @Test("a quoted value after a sensitive key is masked whole, as a Swift description or a Python repr prints it; the text after it stays", arguments: [
        #"Credentials(email: "a@example.com", password: "hunter 2 hunter")"#, #"{'password': 'hunter 2 hunter', 'x': 1}"#,
        #"client_secret="hunter 2 hunter" next"#, #"{"error":"bad request: token: \"hunter 2 hunter\" refused"}"#,
        #"password: "with \"hunter 2 hunter\" inside""#,
    ])
    func quotedValues(line: String) {
        let redacted = redactor.redact(line)
        #expect(!redacted.contains("hunter"), "\(redacted)")
        #expect(redacted.contains(LogRedactor.mask))
        #expect(line.hasSuffix("next") ? redacted.hasSuffix(" next") : true, "\(redacted)")
        #expect(line.contains("refused") ? redacted.hasSuffix(#" refused"}"#) : true, "\(redacted)")
    }

    @Test("authorization and cookie header lines are masked to the end of the line")
    func headerLines() {
        let text = "Authorization: Basic dXNlcjpwYXNz\nCookie: session=abc123; csrf=def456\nAccept: */*"
        let redacted = redactor.redact(text)
        #expect(!redacted.contains("dXNlcjpwYXNz"))
        #expect(!redacted.contains("abc123"))
        #expect(!redacted.contains("def456"))
        #expect(redacted.contains("Accept: */*"))
    }

    @Test("values under sensitive keys in JSON text are masked, other values kept")
    func jsonText() {
        let json = #"{"email_verified":true,"password":"p@ss \"quoted\" word","nested":{"refresh_token":"r-123","pin":1234},"amount":"12.50","api_key":12345678}"#
        let redacted = redactor.redact(json)
        #expect(!redacted.contains("p@ss"))
        #expect(!redacted.contains("quoted"))
        #expect(!redacted.contains("r-123"))
        #expect(!redacted.contains("12345678"))
        #expect(redacted.contains(#""amount":"12.50""#))
        #expect(redacted.contains(#""pin":1234"#))
        #expect(redacted.contains(#""password":"[REDACTED]""#))
    }

    @Test("JSON carried inside a JSON string is redacted too")
    func escapedJSON() {
        let text = #"{"body":"{\"password\":\"s3cr3t-value\",\"symbol\":\"AAPL\"}"}"#
        let redacted = redactor.redact(text)
        #expect(!redacted.contains("s3cr3t-value"))
        #expect(redacted.contains(#"\"symbol\":\"AAPL\""#))
    }

    @Test("bearer tokens and JWTs are masked anywhere in text")
    func bearerAndJWT() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
        #expect(!redactor.redact("got \(jwt) from client").contains("dozjg"))
        #expect(!redactor.redact("got \(jwt) from client").contains("eyJzdWIi"))
        let bearer = redactor.redact("header was bearer abc.DEF-ghi~123/xyz== ok")
        #expect(bearer == "header was Bearer [REDACTED] ok")
    }

    @Test("API-key-looking values are masked", arguments: [
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "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",
        "AKIAIOSFODNN7EXAMPLE", "access-sandbox-de3ce8ef-33f8-452c-a685-8671031fc0f6",
        "PKQ7B2W9XK3N4M8R5T1Y", "Xq7pL2mN9vB4cR8tY6wK3jH5sD1fG0aZ", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    ])
    func apiKeys(key: String) {
        let redacted = redactor.redact("key \(key) used")
        #expect(!redacted.contains(key), "\(redacted)")
    }

    @Test("sensitive keys are recognized through Unicode case folding; ordinary log keys are not sensitive")
    func sensitiveKeysFolded() {
        let redactor = LogRedactor()
        for key in ["password", "X-Api-Key", "SESSION_TOKEN", "set-cookie", "to\u{212A}en", "private-\u{212A}ey", "Recovery-Code"] {
            #expect(redactor.isSensitiveKey(key), "\(key)")
        }
        for key in ["request_id", "route", "status", "duration_ms", "méthode", "symbol"] {
            #expect(!redactor.isSensitiveKey(key), "\(key)")
        }
    }

    @Test("ordinary identifiers, amounts and UUIDs survive")
    func ordinaryTextSurvives() {
        let text = "order 5f0c7a52-8d4e-4b7e-9a3c-2b1d0e9f8a7c for AAPL qty=1.5 price 189.25 at 2026-11-29T04:37:50Z status=filled route=/api/orders/:id"
        #expect(redactor.redact(text) == text)
        // A backup's name (a compact UTC time), and an audit head's short hash, say which one to an operator.
        let backup = "backup taken backup=/var/lib/folio/backups/folio-20261124T010000Z heads: account:5f0c7a52 126 9f86d081884c7d65"
        #expect(redactor.redact(backup) == backup)
        #expect(redactor.redact("key PKQ7B2W9XK3N4M8R5T1YZ used") == "key [REDACTED] used", "a key of that length that is not a time still goes")
    }

    @Test("identifiers whose digits pass Luhn by chance are kept whole: a UUID is not a card")
    func uuidsAreNotCards() {
        // "0-868299266023" and "0868299266023" both pass Luhn.
        for text in ["account 5d85c851-c217-432b-8ba0-868299266023 skipped", "\"account_id\":\"5d85c851-c217-432b-8ba0-868299266023\""] {
            #expect(redactor.redact(text) == text)
        }
        #expect(redactor.redact("card 4111-1111-1111-1111, account 8ba0-4111111111111111") == "card [REDACTED_CARD], account 8ba0-4111111111111111")
        #expect(redactor.redact("card-4111111111111111 on file") == "card-[REDACTED_CARD] on file", "a word before a dash is not an identifier group")
        // A UUID of digits only ("4444-555555555555" passes Luhn); a card in the same shape of groups but longer is still one.
        let digitsOnly = "item 11111111-2222-3333-4444-555555555555 synced"
        #expect(redactor.redact(digitsOnly) == digitsOnly)
        #expect(redactor.redact("card 4111 1111 1111 1111 here") == "card [REDACTED_CARD] here")
    }

    @Test("US social security numbers are masked")
    func ssn() {
        #expect(redactor.redact("ssn on file 123-45-6789.") == "ssn on file [REDACTED_SSN].")
    }

    @Test("Luhn-valid card numbers of 13 to 19 digits are masked, other digit runs kept", arguments: [
        ("4111111111111111", true), ("4111 1111 1111 1111", true), ("4111-1111-1111-1111", true),
        ("378282246310005", true), ("6011000990139424", true), ("4222222222222", true),
        ("4111111111111112", false), ("1234567890", false),
    ])
    func cards(number: String, masked: Bool) {
        let redacted = redactor.redact("card \(number) charged")
        #expect(redacted.contains(number) == !masked, "\(redacted)")
        #expect(redacted.contains("[REDACTED_CARD]") == masked)
    }

    @Test("email addresses are kept partially")
    func emails() {
        #expect(redactor.redact("welcome john.doe+x@example.com!") == "welcome j***@example.com!")
        #expect(redactor.redact("from A@mail.example.co.uk") == "from A***@mail.example.co.uk")
    }

    @Test("every address sign-up accepts is masked: a local part that starts with a mark, Unicode letters in it or in the domain; the text before it stays")
    func unusualEmails() {
        #expect(redactor.redact("to _john.smith@example.com") == "to _***@example.com")
        #expect(redactor.redact("to -jane@example.org") == "to -***@example.org")
        #expect(redactor.redact("to josé@example.com") == "to j***@example.com")
        #expect(redactor.redact("to jöhn.doe@example.com") == "to j***@example.com")
        #expect(redactor.redact("to john@exämple.com") == "to j***@exämple.com")
        #expect(redactor.redact("recipient=jane@example.org") == "recipient=j***@example.org")
        #expect(redactor.redact(#"{"to":"jane@example.org"}"#) == #"{"to":"j***@example.org"}"#)
    }

    @Test("sensitive keys are recognised case-insensitively, with dashes or underscores")
    func sensitiveKeys() {
        for key in ["password", "New_Password", "X-API-Key", "Authorization", "set-cookie", "refreshToken", "client_secret"] {
            #expect(redactor.isSensitiveKey(key), "\(key)")
        }
        for key in ["email", "symbol", "quantity", "request_id", "status"] {
            #expect(!redactor.isSensitiveKey(key), "\(key)")
        }
        #expect(redactor.redact(value: "anything", forKey: "password") == LogRedactor.mask)
        #expect(redactor.redact(value: "ssn 123-45-6789", forKey: "note") == "ssn [REDACTED_SSN]")
    }

    @Test("randomized: secrets planted in random text never survive redaction")
    func plantedSecretsNeverSurvive() {
        var generator = SeededGenerator(seed: 0x5EC12E7)
        let filler = ["order", "filled", "AAPL", "quantity", "1.50", "user", "login", "from", "status", "ok", "{", "}", ",", ":", "the", "cash", "2026-11-29"]
        for _ in 0..<2_000 {
            let secrets = (0..<3).map { _ in Planted.random(using: &generator) }
            var words: [String] = []
            for secret in secrets {
                for _ in 0..<Int.random(in: 0...6, using: &generator) { words.append(filler.randomElement(using: &generator)!) }
                words.append(secret.text)
            }
            for _ in 0..<Int.random(in: 0...6, using: &generator) { words.append(filler.randomElement(using: &generator)!) }
            let line = words.joined(separator: " ")
            let redacted = redactor.redact(line)
            for secret in secrets {
                #expect(!redacted.contains(secret.secret), "leaked \(secret.secret) from: \(line) -> \(redacted)")
                if redacted.contains(secret.secret) { return }  // one report is enough
            }
        }
    }
}

/// A secret in the shape it takes in a log line.
struct Planted {
    var text: String
    var secret: String

    static func random(using generator: inout SeededGenerator) -> Planted {
        let password = randomString(length: Int.random(in: 8...24, using: &generator), alphabet: "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!#$%^*()_+-.~", using: &generator)
        let base62 = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        switch Int.random(in: 0..<10, using: &generator) {
        case 0:
            let key = ["password", "Password", "new_password", "client_secret", "api_key", "access_token", "refresh_token", "token"].randomElement(using: &generator)!
            let separator = ["=", ": ", " = ", ":"].randomElement(using: &generator)!
            return Planted(text: "\(key)\(separator)\(password)", secret: password)
        case 1:
            let key = ["password", "secret", "refresh_token", "authorization"].randomElement(using: &generator)!
            return Planted(text: #"{"\#(key)": "\#(password)"}"#, secret: password)
        case 2:
            let token = randomString(length: 40, alphabet: base62 + "-._~", using: &generator)
            return Planted(text: "Authorization: Bearer \(token)", secret: token)
        case 3:
            let part = { (n: Int, g: inout SeededGenerator) in randomString(length: n, alphabet: base62 + "_-", using: &g) }
            let signature = part(43, &generator)
            return Planted(text: "eyJ\(part(30, &generator)).eyJ\(part(50, &generator)).\(signature)", secret: signature)
        case 4:
            let area = Int.random(in: 100...899, using: &generator)
            let ssn = "\(area)-\(Int.random(in: 10...99, using: &generator))-\(Int.random(in: 1000...9999, using: &generator))"
            return Planted(text: ssn, secret: ssn)
        case 5:
            let digits = luhnNumber(length: [13, 15, 16, 19].randomElement(using: &generator)!, using: &generator)
            let separator = ["", " ", "-"].randomElement(using: &generator)!
            let grouped = stride(from: 0, to: digits.count, by: 4).map { start in
                String(digits[digits.index(digits.startIndex, offsetBy: start)..<digits.index(digits.startIndex, offsetBy: min(start + 4, digits.count))])
            }.joined(separator: separator)
            return Planted(text: grouped, secret: grouped)
        case 6:
            var key = randomString(length: 32, alphabet: base62, using: &generator)
            key.replaceSubrange(key.startIndex..<key.index(key.startIndex, offsetBy: 3), with: "aZ7")
            return Planted(text: key, secret: key)
        case 7:
            let key = "sk_live_" + randomString(length: 24, alphabet: base62, using: &generator)
            return Planted(text: key, secret: key)
        case 8:
            let local = randomString(length: Int.random(in: 2...12, using: &generator), alphabet: "abcdefghijklmnopqrstuvwxyz0123456789.", using: &generator)
            let email = "q\(local)z@example.com"
            return Planted(text: email, secret: email)
        default:
            let cookie = randomString(length: 20, alphabet: base62, using: &generator)
            return Planted(text: "Cookie: __Host-session=\(cookie); theme=dark", secret: cookie)
        }
    }

    static func randomString(length: Int, alphabet: String, using generator: inout SeededGenerator) -> String {
        let characters = Array(alphabet)
        return String((0..<length).map { _ in characters.randomElement(using: &generator)! })
    }

    static func luhnNumber(length: Int, using generator: inout SeededGenerator) -> String {
        var digits = [Int.random(in: 3...6, using: &generator)] + (1..<(length - 1)).map { _ in Int.random(in: 0...9, using: &generator) }
        for check in 0...9 where CardNumberRule.passesLuhn(digits + [check]) {
            digits.append(check)
            break
        }
        return digits.map(String.init).joined()
    }
}

/// The domain's SplitMix64, so failures reproduce.
typealias SeededGenerator = SeededRandom
