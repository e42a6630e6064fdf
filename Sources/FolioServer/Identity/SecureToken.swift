import Crypto
import Foundation

/// Opaque secrets handed to clients (refresh tokens, email tokens, recovery
/// codes): drawn from the system CSPRNG, stored only as SHA-256 hashes.
enum SecureToken {
    /// `byteCount` random bytes as unpadded base64url (32 bytes: 256 bits).
    static func generate(byteCount: Int = 32) -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<byteCount).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return base64URL(bytes)
    }

    /// Hex SHA-256 of the token: what the database keeps.
    static func hash(_ token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    static func base64URL(_ bytes: some Sequence<UInt8>) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decodeBase64URL(_ text: some StringProtocol) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64)
    }

    /// A key for one purpose derived from a signing secret, so that one
    /// secret never serves two algorithms directly.
    /// Names a key without revealing it (HMAC under a key derived for this purpose alone, 12 bytes): what
    /// `instances.key_fingerprints` holds, so that a command can tell whether running instances know its key.
    static func fingerprint(of secret: String) -> String {
        base64URL(HMAC<SHA256>.authenticationCode(for: Data("folio key fingerprint".utf8), using: derivedKey(from: secret, purpose: "fingerprint")).prefix(12))
    }

    static func derivedKey(from secret: String, purpose: String) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: Data(secret.utf8)), salt: Data("folio".utf8),
            info: Data(purpose.utf8), outputByteCount: 32)
    }
}

/// Seals small secrets at rest (TOTP secrets, brokerage keys, Plaid access tokens) with AES-GCM under a key
/// derived from SECRET_KEY; opens with the current or a previous key.
struct SecretBox: Sendable {
    let sealingKey: SymmetricKey
    let openingKeys: [SymmetricKey]

    init(secretKey: String, previousKeys: [String]) {
        self.sealingKey = SecureToken.derivedKey(from: secretKey, purpose: "secret-box")
        self.openingKeys = ([secretKey] + previousKeys).map { SecureToken.derivedKey(from: $0, purpose: "secret-box") }
    }

    func seal(_ text: String) throws -> String {
        try AES.GCM.seal(Data(text.utf8), using: sealingKey).combined!.base64EncodedString()
    }

    func open(_ sealed: String) -> String? {
        openReportingKey(sealed)?.text
    }

    /// The text, and whether it was sealed under an older key (then seal it again).
    func openReportingKey(_ sealed: String) -> (text: String, sealedWithOldKey: Bool)? {
        guard let data = Data(base64Encoded: sealed), let box = try? AES.GCM.SealedBox(combined: data) else { return nil }
        for (index, key) in openingKeys.enumerated() {
            if let plain = try? AES.GCM.open(box, using: key) { return (String(decoding: plain, as: UTF8.self), index > 0) }
        }
        return nil
    }

    /// Salted SHA-256 for short secrets a user types (recovery codes): `salt:hash`.
    static func saltedHash(_ text: String, salt: String = SecureToken.generate(byteCount: 16)) -> String {
        salt + ":" + SecureToken.hash(salt + text)
    }

    static func matches(_ text: String, saltedHash stored: String) -> Bool {
        guard let colon = stored.firstIndex(of: ":") else { return false }
        return ConstantTime.equals(saltedHash(text, salt: String(stored[..<colon])), stored)
    }
}
