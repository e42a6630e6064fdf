import Crypto
import Foundation

/// Verifies Plaid's webhooks as https://plaid.com/docs/api/webhooks/webhook-verification/
/// describes, and refuses everything else:
/// 1. `Plaid-Verification` is a JWT whose header says `alg: ES256`: any other
///    algorithm (`none`, HS256, ES384…) is refused before anything is fetched;
/// 2. the key named by `kid` comes from `/webhook_verification_key/get`,
///    cached, refused once Plaid gives it an `expired_at`;
/// 3. the ES256 signature over `header.payload` verifies under that key;
/// 4. `iat` is at most five minutes old (and not in the future);
/// 5. the SHA-256 of the raw body equals `request_body_sha256`, compared in constant time.
struct PlaidWebhookVerifier: Sendable {
    enum Failure: String, Error, Sendable {
        case notConfigured = "not_configured"
        case missingHeader = "missing_header"
        case malformed
        case wrongAlgorithm = "wrong_algorithm"
        case unknownKey = "unknown_key"
        case expiredKey = "expired_key"
        case badSignature = "bad_signature"
        case stale
        case bodyMismatch = "body_mismatch"
    }

    /// Nil without Plaid settings: then every webhook is refused.
    let keys: PlaidKeyCache?
    let clock: AppClock

    /// How old a webhook may be; also how long its body hash is remembered against replays.
    static let window: TimeInterval = 300

    /// The body's SHA-256 (hex) when the webhook verifies.
    func verify(header: String?, body: [UInt8]) async throws(Failure) -> String {
        guard let keys else { throw .notConfigured }
        guard let header, !header.isEmpty else { throw .missingHeader }
        let parts = header.split(separator: ".", omittingEmptySubsequences: false)
        guard header.utf8.count <= 8192, parts.count == 3,
              let headerBytes = SecureToken.decodeBase64URL(parts[0]), let payloadBytes = SecureToken.decodeBase64URL(parts[1]),
              let signatureBytes = SecureToken.decodeBase64URL(parts[2]),
              let jose = try? JSONValue.parse(headerBytes), let claims = try? JSONValue.parse(payloadBytes)
        else { throw .malformed }
        // The algorithm first: a token that names any other is refused before a key is looked up.
        guard jose["alg"]?.string == "ES256" else { throw .wrongAlgorithm }
        guard let kid = jose["kid"]?.string, !kid.isEmpty, kid.utf8.count <= 200 else { throw .malformed }
        let key: PlaidVerificationKey
        do { key = try await keys.key(kid) } catch { throw .unknownKey }
        guard key.expiredAt == nil else { throw .expiredKey }
        guard key.alg == "ES256", key.crv == "P-256", let publicKey = Self.publicKey(key) else { throw .unknownKey }
        guard signatureBytes.count == 64, let signature = try? P256.Signing.ECDSASignature(rawRepresentation: signatureBytes),
              publicKey.isValidSignature(signature, for: Data((parts[0] + "." + parts[1]).utf8))
        else { throw .badSignature }
        guard let iatText = claims["iat"]?.numberText, let iat = Int64(iatText) else { throw .malformed }
        let now = clock.now().timeIntervalSince1970
        guard now - Double(iat) <= Self.window, Double(iat) - now <= Self.window else { throw .stale }
        guard let claimed = claims["request_body_sha256"]?.string else { throw .malformed }
        let actual = SHA256.hash(data: body).map { String(format: "%02x", $0) }.joined()
        guard Self.constantTimeEqual(Array(actual.utf8), Array(claimed.lowercased().utf8)) else { throw .bodyMismatch }
        return actual
    }

    static func publicKey(_ key: PlaidVerificationKey) -> P256.Signing.PublicKey? {
        guard let x = SecureToken.decodeBase64URL(key.x), let y = SecureToken.decodeBase64URL(key.y), x.count == 32, y.count == 32 else { return nil }
        return try? P256.Signing.PublicKey(x963Representation: [0x04] + Array(x) + Array(y))
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}

/// Plaid's webhook keys by `kid`. A key is fetched when first seen and again
/// after an hour (to learn of its `expired_at`); an unknown `kid` is fetched
/// at most once a minute, and all fetches together at most `fetchesPerMinute`,
/// so forged headers with made-up key ids cannot make Folio hammer Plaid.
/// When a kept key cannot be fetched again, the kept copy is used.
actor PlaidKeyCache {
    typealias Fetch = @Sendable (String) async throws -> PlaidVerificationKey

    private let fetch: Fetch
    private let clock: AppClock
    private var keys: [String: (key: PlaidVerificationKey, fetchedAt: Date)] = [:]
    private var lastAttempt: [String: Date] = [:]
    private var recentFetches: [Date] = []
    let fetchesPerMinute: Int
    static let keepFor: TimeInterval = 3600

    struct Refused: Error {}

    init(fetchesPerMinute: Int = 10, clock: AppClock, fetch: @escaping Fetch) {
        self.fetch = fetch
        self.clock = clock
        self.fetchesPerMinute = fetchesPerMinute
    }

    func key(_ kid: String) async throws -> PlaidVerificationKey {
        let now = clock.now()
        if let kept = keys[kid], kept.key.expiredAt != nil || now.timeIntervalSince(kept.fetchedAt) < Self.keepFor { return kept.key }
        if let last = lastAttempt[kid], now.timeIntervalSince(last) < 60 {
            if let kept = keys[kid] { return kept.key }
            throw Refused()
        }
        recentFetches.removeAll { now.timeIntervalSince($0) >= 60 }
        guard recentFetches.count < fetchesPerMinute else {
            if let kept = keys[kid] { return kept.key }
            throw Refused()
        }
        recentFetches.append(now)
        lastAttempt[kid] = now
        do {
            let key = try await fetch(kid)
            guard key.kid == kid else { throw Refused() }
            keys[kid] = (key, now)
            if lastAttempt.count > 1000 { lastAttempt = lastAttempt.filter { now.timeIntervalSince($0.value) < 60 } }
            return key
        } catch {
            if let kept = keys[kid] { return kept.key }
            throw error
        }
    }
}
