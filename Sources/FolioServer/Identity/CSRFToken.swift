import Crypto
import Foundation

/// Signed double-submit CSRF tokens bound to a session: HMAC-SHA256 over the
/// session id under a key derived from SECRET_KEY (previous keys still verify).
struct CSRFTokens: Sendable {
    let signingKey: SymmetricKey
    let verifyingKeys: [SymmetricKey]

    init(secretKey: String, previousKeys: [String]) {
        self.signingKey = SecureToken.derivedKey(from: secretKey, purpose: "csrf")
        self.verifyingKeys = ([secretKey] + previousKeys).map { SecureToken.derivedKey(from: $0, purpose: "csrf") }
    }

    func token(for sessionID: UUID) -> String {
        SecureToken.base64URL(HMAC<SHA256>.authenticationCode(for: Data(sessionID.uuidString.utf8), using: signingKey))
    }

    func isValid(_ token: String, for sessionID: UUID) -> Bool {
        verifyingKeys.contains { key in
            ConstantTime.equals(token, SecureToken.base64URL(HMAC<SHA256>.authenticationCode(for: Data(sessionID.uuidString.utf8), using: key)))
        }
    }
}
