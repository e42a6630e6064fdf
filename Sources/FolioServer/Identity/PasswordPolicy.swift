import Foundation

/// The password rules of OWASP ASVS 2.1: 12 to 128 characters, not a common
/// password, not built from the email address; no composition rules.
/// bcrypt reads only 72 bytes, so longer passwords are refused, never truncated.
struct PasswordPolicy: Sendable {
    static let minimumCharacters = 12
    static let maximumCharacters = 128
    static let maximumBytes = 72

    let commonPasswords: Set<String>

    /// What bcrypt can hash without losing part of it: no NUL, at most 72 bytes.
    static func isHashable(_ password: String) -> Bool {
        password.utf8.count <= maximumBytes && !password.utf8.contains(0)
    }

    static let standard = PasswordPolicy(commonPasswords: CommonPasswords.load())

    func problems(password: String, email: String, field: String = "password") -> [ProblemDetails.FieldError] {
        let characters = password.count
        if characters < Self.minimumCharacters {
            return [.init(field: field, code: "too_short", message: "The password must have at least \(Self.minimumCharacters) characters.")]
        }
        if characters > Self.maximumCharacters {
            return [.init(field: field, code: "too_long", message: "The password must have at most \(Self.maximumCharacters) characters.")]
        }
        if password.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return [.init(field: field, code: "invalid_characters", message: "The password must not contain control characters.")]
        }
        if password.utf8.count > Self.maximumBytes {
            return [.init(field: field, code: "too_long", message: "The password must be at most \(Self.maximumBytes) bytes long in UTF-8.")]
        }
        let lowered = password.lowercased()
        if commonPasswords.contains(lowered) {
            return [.init(field: field, code: "too_common", message: "This password is among the most common passwords; choose another.")]
        }
        let localPart = email.split(separator: "@").first.map { $0.lowercased() } ?? ""
        if localPart.count >= 3, lowered.contains(localPart) {
            return [.init(field: field, code: "contains_email", message: "The password must not contain your email address.")]
        }
        return []
    }
}

/// The 19,640 most common passwords shipped as data (Django's list, compiled
/// by Royce Williams from breach corpora; BSD licence), compared lower-cased.
enum CommonPasswords {
    static func load() -> Set<String> {
        guard let url = Bundle.module.url(forResource: "common-passwords", withExtension: "txt"),
              let text = try? String(contentsOf: url, encoding: .utf8)
        else {
            // Fail closed: without the list the check would silently pass everything.
            fatalError("common-passwords.txt is missing from the FolioServer bundle")
        }
        return Set(text.split(separator: "\n").map { $0.lowercased() })
    }
}
