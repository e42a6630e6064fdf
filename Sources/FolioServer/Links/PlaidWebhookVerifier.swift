import Crypto
import Foundation

/// Verifies Plaid's webhooks as https://plaid.com/docs/api/webhooks/webhook-verification/
/// describes, and refuses everything else:
/// 1. `Plaid-Verification` is a JWT whose header says `alg: ES256`: any other
///    algorithm (`none`, HS256, ES384…) is refused before anything is fetched;
/// 2. the key named by `kid` comes from `/webhook_verification_key/get`,
///    cached, refused once Plaid gives it an `expired_at`;
/// 3. the ES256 signature over `header.payload` verifies under that key;
/// 4. `iat` is at most five minutes old (and at most a minute ahead);
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

    /// How old a webhook may be.
    static let window: TimeInterval = 300
    /// How far ahead of Folio's clock Plaid's may be.
    static let futureSkew: TimeInterval = 60
    /// How long a body hash is remembered against replays: as long as a token issued that far ahead stays acceptable.
    static let replayWindow: TimeInterval = window + futureSkew

    /// The body's SHA-256 (hex) when the webhook verifies.
    /// `client`: who sent it (`ClientAddress.key`), whose budget a key id Folio does not hold is fetched on.
    func verify(header: String?, body: [UInt8], client: String = "") async throws(Failure) -> String {
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
        do { key = try await keys.key(kid, client: client) } catch { throw .unknownKey }
        guard !key.expired else { throw .expiredKey }
        guard key.alg == "ES256", key.crv == "P-256", let publicKey = Self.publicKey(key) else { throw .unknownKey }
        guard signatureBytes.count == 64, let signature = try? P256.Signing.ECDSASignature(rawRepresentation: signatureBytes),
              publicKey.isValidSignature(signature, for: Data((parts[0] + "." + parts[1]).utf8))
        else { throw .badSignature }
        guard let iatText = claims["iat"]?.numberText, let iat = Int64(iatText) else { throw .malformed }
        let now = clock.now().timeIntervalSince1970
        guard now - Double(iat) <= Self.window, Double(iat) - now <= Self.futureSkew else { throw .stale }
        guard let claimed = claims["request_body_sha256"]?.string else { throw .malformed }
        let actual = SHA256.hash(data: body).map { String(format: "%02x", $0) }.joined()
        guard ConstantTime.equals(actual, claimed.lowercased()) else { throw .bodyMismatch }
        return actual
    }

    static func publicKey(_ key: PlaidVerificationKey) -> P256.Signing.PublicKey? {
        guard let x = SecureToken.decodeBase64URL(key.x), let y = SecureToken.decodeBase64URL(key.y), x.count == 32, y.count == 32 else { return nil }
        return try? P256.Signing.PublicKey(x963Representation: [0x04] + Array(x) + Array(y))
    }
}

/// Plaid's webhook keys by `kid`.
/// - A key Folio holds is used for an hour, then fetched again to learn of an
///   `expired_at`; while Plaid cannot be asked it is used for up to a day, then refused.
/// - A `kid` Folio does not hold is fetched at most once a minute, and such
///   fetches at most `fetchesPerMinute` for each client address (as
///   `ClientAddress.key` counts it) and ten times that for all together, so
///   forged headers with made-up key ids cannot make Folio hammer Plaid, nor
///   one forger spend the budget that lets Plaid's own webhook, signed with a
///   key Plaid has just rotated to, be verified. That budget is the unknown
///   ids' alone: refreshing the keys Folio holds never waits on it.
/// - Two webhooks naming one new `kid` at once share one fetch.
actor PlaidKeyCache {
    typealias Fetch = @Sendable (String) async throws -> PlaidVerificationKey

    private let fetch: Fetch
    private let clock: AppClock
    private var keys: [String: (key: PlaidVerificationKey, fetchedAt: Date)] = [:]
    private var lastAttempt: [String: Date] = [:]
    private var unknownFetches: [Date] = []
    private var unknownFetchesByClient: [String: [Date]] = [:]
    private var inFlight: [String: Task<PlaidVerificationKey, any Error>] = [:]
    let fetchesPerMinute: Int
    static let refreshAfter: TimeInterval = 3600
    static let longestWithoutRefresh: TimeInterval = 86_400
    /// Keys held at most (Plaid has a handful); beyond it the oldest go.
    static let capacity = 64

    struct Refused: Error {}

    init(fetchesPerMinute: Int = 10, clock: AppClock, fetch: @escaping Fetch) {
        self.fetch = fetch
        self.clock = clock
        self.fetchesPerMinute = fetchesPerMinute
    }

    func key(_ kid: String, client: String = "") async throws -> PlaidVerificationKey {
        let now = clock.now()
        if let kept = keys[kid] {
            // A retired key stays retired; a fresh one is used as it is.
            if kept.key.expired || now.timeIntervalSince(kept.fetchedAt) < Self.refreshAfter { return kept.key }
            if let last = lastAttempt[kid], now.timeIntervalSince(last) < 60 { return try usable(kept, now: now) }
            do { return try await fetched(kid, now: now) } catch { return try usable(kept, now: now) }
        }
        // An id never seen: once a minute per id, and within the unknown ids' budget.
        if let task = inFlight[kid] {
            let key = try await task.value
            guard key.kid == kid else { throw Refused() }
            return key
        }
        if let last = lastAttempt[kid], now.timeIntervalSince(last) < 60 { throw Refused() }
        unknownFetches.removeAll { now.timeIntervalSince($0) >= 60 }
        var clientFetches = (unknownFetchesByClient[client] ?? []).filter { now.timeIntervalSince($0) < 60 }
        guard clientFetches.count < fetchesPerMinute, unknownFetches.count < fetchesPerMinute * 10 else { throw Refused() }
        unknownFetches.append(now)
        clientFetches.append(now)
        unknownFetchesByClient[client] = clientFetches
        // Clients are remembered a minute; a flood from many addresses is forgotten as fast as it comes.
        if unknownFetchesByClient.count > 1000 { unknownFetchesByClient = unknownFetchesByClient.filter { $0.value.contains { now.timeIntervalSince($0) < 60 } } }
        return try await fetched(kid, now: now)
    }

    private func usable(_ kept: (key: PlaidVerificationKey, fetchedAt: Date), now: Date) throws -> PlaidVerificationKey {
        guard now.timeIntervalSince(kept.fetchedAt) < Self.longestWithoutRefresh else { throw Refused() }
        return kept.key
    }

    private func fetched(_ kid: String, now: Date) async throws -> PlaidVerificationKey {
        lastAttempt[kid] = now
        // Attempts are remembered a minute; a flood of made-up ids is forgotten as fast as it comes.
        if lastAttempt.count > 1000 { lastAttempt = lastAttempt.filter { now.timeIntervalSince($0.value) < 60 } }
        let fetch = self.fetch
        let task = Task { try await fetch(kid) }
        inFlight[kid] = task
        defer { if inFlight[kid] == task { inFlight[kid] = nil } }
        let key = try await task.value
        guard key.kid == kid else { throw Refused() }
        keys[kid] = (key, now)
        if keys.count > Self.capacity, let oldest = keys.min(by: { $0.value.fetchedAt < $1.value.fetchedAt })?.key { keys[oldest] = nil }
        return key
    }
}
