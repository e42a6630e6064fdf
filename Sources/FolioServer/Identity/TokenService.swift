import Crypto
import Foundation
import JWTKit

/// Claims of a Folio access token (RFC 8725 practice: pinned algorithm,
/// issuer and audience checked, short lifetime, unique id).
struct AccessTokenClaims: JWTPayload {
    var iss: IssuerClaim
    var aud: AudienceClaim
    var sub: SubjectClaim
    var iat: IssuedAtClaim
    var exp: ExpirationClaim
    var jti: IDClaim
    /// The session the token was issued in; revoking the session ends the token.
    var sid: String

    func verify(using algorithm: some JWTAlgorithm) async throws {
        guard iss.value == TokenService.issuer else { throw JWTError.claimVerificationFailure(failedClaim: iss, reason: "wrong issuer") }
        try aud.verifyIntendedAudience(includes: TokenService.audience)
        // Expiry is checked by TokenService against its injected clock.
    }
}

/// Signs access tokens with SECRET_KEY (HS256) and verifies them with it or
/// with a key in PREVIOUS_SECRET_KEYS during a rotation. Each key is known by a
/// `kid` derived from it, so a token names the key that signed it.
final class TokenService: Sendable {
    static let issuer = "folio"
    static let audience = "folio-api"

    let keys: JWTKeyCollection
    let signingKeyID: JWKIdentifier
    /// Every key id that may verify: the signing key's and the previous keys'.
    let knownKeyIDs: Set<String>
    let lifetime: TimeInterval
    let clock: AppClock

    private init(keys: JWTKeyCollection, signingKeyID: JWKIdentifier, knownKeyIDs: Set<String>, lifetime: TimeInterval, clock: AppClock) {
        self.keys = keys
        self.signingKeyID = signingKeyID
        self.knownKeyIDs = knownKeyIDs
        self.lifetime = lifetime
        self.clock = clock
    }

    static func make(secretKey: String, previousKeys: [String], lifetime: TimeInterval, clock: AppClock) async -> TokenService {
        let keys = JWTKeyCollection()
        for key in [secretKey] + previousKeys {
            // Lengths were checked at configuration time; jwt-kit asserts on short HMAC keys.
            await keys.add(hmac: HMACKey(from: key), digestAlgorithm: .sha256, kid: keyID(for: key))
        }
        return TokenService(
            keys: keys, signingKeyID: keyID(for: secretKey), knownKeyIDs: Set(([secretKey] + previousKeys).map { keyID(for: $0).string }),
            lifetime: lifetime, clock: clock)
    }

    struct Header: Decodable {
        var alg: String?
        var kid: String?
    }

    static func header(of token: String) -> Header? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy(isCanonicalBase64URL), let data = SecureToken.decodeBase64URL(parts[0]) else { return nil }
        return try? JSONDecoder().decode(Header.self, from: data)
    }

    /// Base64url as RFC 7515 writes it: no padding, nothing but the alphabet, no stray bits in the last
    /// character. A token has one spelling, so a list or cache keyed on its text cannot be dodged
    /// (jwt-kit's decoder would take `sig=` or a last character with other spare bits as the same signature).
    static func isCanonicalBase64URL(_ part: Substring) -> Bool {
        var last: UInt8 = 0
        for byte in part.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): last = byte - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): last = byte - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): last = byte - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"): last = 62
            case UInt8(ascii: "_"): last = 63
            default: return false
            }
        }
        // The last character of 2 (or 3) left over carries 4 (or 2) spare bits, which must be zero.
        switch part.utf8.count % 4 {
        case 0: return !part.isEmpty
        case 2: return last & 0x0F == 0
        case 3: return last & 0x03 == 0
        default: return false
        }
    }

    /// A public, stable name for a key: the first 8 bytes of its SHA-256.
    static func keyID(for secret: String) -> JWKIdentifier {
        JWKIdentifier(string: SHA256.hash(data: Data(secret.utf8)).prefix(8).map { String(format: "%02x", $0) }.joined())
    }

    func issue(userID: UUID, sessionID: UUID) async throws -> String {
        // NumericDate in whole seconds, as most JWT libraries expect.
        let now = Date(timeIntervalSince1970: clock.now().timeIntervalSince1970.rounded(.down))
        let claims = AccessTokenClaims(
            iss: .init(value: Self.issuer), aud: .init(value: [Self.audience]), sub: .init(value: userID.lowercasedString),
            iat: .init(value: now), exp: .init(value: now.addingTimeInterval(lifetime)),
            jti: .init(value: UUID.random().lowercasedString), sid: sessionID.lowercasedString)
        var header = JWTHeader()
        header.typ = "JWT"
        return try await keys.sign(claims, kid: signingKeyID, header: header)
    }

    /// What a presented token turned out to be.
    enum Check: Equatable {
        case valid(userID: UUID, sessionID: UUID)
        /// Ours, genuine and unaltered, but past its lifetime: an ordinary client
        /// that has not refreshed yet, told apart so it does not look like an attack.
        case expired
        /// Forged, altered, from the future, signed with another algorithm or an
        /// unknown key, meant for someone else, or not a token at all.
        case invalid
    }

    /// The verified claims, or why there are none: expired for a genuine token
    /// past its lifetime, invalid for anything forged, signed with another
    /// algorithm or an unknown key, or meant for someone else.
    func check(_ token: String) async -> Check {
        // jwt-kit neither checks the header's `alg` against the key nor refuses
        // an unknown `kid` (it falls back to a default key), so pin both here.
        guard let header = Self.header(of: token), header.alg == "HS256", let kid = header.kid, knownKeyIDs.contains(kid),
              let claims = try? await keys.verify(token, as: AccessTokenClaims.self),
              let userID = UUID(uuidString: claims.sub.value), let sessionID = UUID(uuidString: claims.sid)
        else { return .invalid }
        let now = clock.now()
        // No leeway beyond a second of clock skew; a token from the future is refused too.
        guard claims.iat.value <= now.addingTimeInterval(1) else { return .invalid }
        // A lifetime longer than this server gives (a token made with the key by someone else: for years, say) is no token of its.
        guard claims.exp.value.timeIntervalSince(claims.iat.value) <= lifetime + 1 else { return .invalid }
        guard claims.exp.value > now else { return .expired }
        return .valid(userID: userID, sessionID: sessionID)
    }
}

/// The time source of the server, injectable so tests control expiry and lockouts.
public struct AppClock: Sendable {
    public var now: @Sendable () -> Date

    public init(now: @escaping @Sendable () -> Date) {
        self.now = now
    }

    public static let system = AppClock { Date() }
}
