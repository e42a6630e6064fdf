import Crypto
import FluentKit
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdOTP
import HummingbirdTesting
import JWTKit
import Testing

@testable import FolioServer

/// The session id and user id an access token carries, read without verifying it.
func claims(of token: String) throws -> (sub: String, sid: String) {
    let parts = token.split(separator: ".")
    var payload = String(parts[1]).replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while payload.count % 4 != 0 { payload += "=" }
    let data = try #require(Data(base64Encoded: payload))
    let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    return (object["sub"] as! String, object["sid"] as! String)
}

func forge(
    secret: String, kid: String?, sub: String, sid: String, now: Date, audience: String = TokenService.audience, issuer: String = TokenService.issuer,
    issuedAgo: TimeInterval = 5, expiresIn: TimeInterval = 600
) async throws -> String {
    let keys = JWTKeyCollection()
    await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: kid.map { JWKIdentifier(string: $0) })
    let payload = AccessTokenClaims(
        iss: .init(value: issuer), aud: .init(value: [audience]), sub: .init(value: sub), iat: .init(value: now.addingTimeInterval(-issuedAgo)),
        exp: .init(value: now.addingTimeInterval(expiresIn)), jti: .init(value: UUID().uuidString), sid: sid)
    return try await keys.sign(payload, kid: kid.map { JWKIdentifier(string: $0) })
}

func base64URL(_ text: String) -> String {
    Data(text.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
}

@Suite("Web security")
struct WebSecurityTests {
    static let currentKey = "5d2c8e1f9a3b7c6d0e4f8a2b1c9d3e7f6a0b5c4d8e2f1a9b3c7d6e0f4a8b2c1d"
    static let previousKey = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"

    @Test("the seed's JWT check: an invalid bearer token on a protected route is 401 problem+json", arguments: TestDatabaseKind.all)
    func invalidToken(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let response = try await client.execute(uri: "/api/auth/me", method: .get, headers: [.authorization: "Bearer invalid_token"])
            #expect(response.status == .unauthorized)
            #expect(try problem(response).code == "invalid_token")
            #expect(response.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true)
            #expect(env.logs.lines.contains { $0.contains("token_rejected") })
            let none = try await client.execute(uri: "/api/auth/me", method: .get)
            #expect(none.status == .unauthorized)
        }
    }

    @Test("forged, alg none, other algorithm, expired, future-dated, wrong issuer, wrong audience and unknown kid are 401; a previous key still verifies", arguments: TestDatabaseKind.all)
    func tokenAttacks(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock, configure: {
            $0.secretKey = Self.currentKey
            $0.previousSecretKeys = [Self.previousKey]
        }) { client, env in
            let tokens = try await signUp(client, env, email: "target@example.com")
            let (sub, sid) = try claims(of: tokens["access_token"] as! String)
            let currentKid = TokenService.keyID(for: Self.currentKey).string

            func status(_ token: String) async throws -> HTTPResponse.Status {
                try await client.execute(uri: "/api/auth/me", method: .get, headers: [.authorization: "Bearer \(token)"]).status
            }
            #expect(try await status(try await forge(secret: Self.previousKey, kid: TokenService.keyID(for: Self.previousKey).string, sub: sub, sid: sid, now: clock.now)) == .ok)
            #expect(try await status(try await forge(secret: Self.currentKey, kid: currentKid, sub: sub, sid: sid, now: clock.now)) == .ok)
            // Ids in the token are lower case, as in every response; a token from before that (upper case) still works.
            #expect(sub == sub.lowercased() && sid == sid.lowercased())
            #expect(try await status(try await forge(secret: Self.currentKey, kid: currentKid, sub: sub.uppercased(), sid: sid.uppercased(), now: clock.now)) == .ok)

            let strangerKey = String(repeating: "f0", count: 32)
            #expect(try await status(try await forge(secret: strangerKey, kid: currentKid, sub: sub, sid: sid, now: clock.now)) == .unauthorized)
            #expect(try await status(try await forge(secret: strangerKey, kid: TokenService.keyID(for: strangerKey).string, sub: sub, sid: sid, now: clock.now)) == .unauthorized)
            #expect(try await status(try await forge(secret: Self.currentKey, kid: "0011223344556677", sub: sub, sid: sid, now: clock.now)) == .unauthorized)
            #expect(try await status(try await forge(secret: Self.currentKey, kid: nil, sub: sub, sid: sid, now: clock.now)) == .unauthorized)
            #expect(try await status(try await forge(secret: Self.currentKey, kid: currentKid, sub: sub, sid: sid, now: clock.now, audience: "someone-else")) == .unauthorized)
            #expect(try await status(try await forge(secret: Self.currentKey, kid: currentKid, sub: sub, sid: sid, now: clock.now, expiresIn: -1)) == .unauthorized)
            #expect(try await status(try await forge(secret: Self.currentKey, kid: currentKid, sub: sub, sid: sid, now: clock.now, issuer: "not-folio")) == .unauthorized)
            // Issued a minute from now: a token from the future is refused (a second of skew is allowed).
            #expect(try await status(try await forge(secret: Self.currentKey, kid: currentKid, sub: sub, sid: sid, now: clock.now, issuedAgo: -60)) == .unauthorized)
            #expect(try await status(try await forge(secret: Self.currentKey, kid: currentKid, sub: sub, sid: sid, now: clock.now, issuedAgo: -0.5)) == .ok)

            // A token has one spelling (RFC 7515's base64url): padding, a stray character, or other spare bits in a
            // part's last character leave the bytes as they were, and are refused all the same.
            let genuine = tokens["access_token"] as! String
            #expect(try await status(genuine) == .ok)
            let genuineSignature = String(genuine.split(separator: ".")[2])
            let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
            let lastValue = alphabet.firstIndex(of: genuineSignature.last!)!
            // 32 bytes are 43 characters: the last carries 2 spare bits, zero in the genuine token.
            let spareBitsSet = String(genuineSignature.dropLast()) + String(alphabet[lastValue | 1])
            let head = genuine.split(separator: ".").prefix(2).joined(separator: ".")
            for respelled in [genuine + "=", head + "." + spareBitsSet, head + "." + genuineSignature + "%", head.replacingOccurrences(of: "-", with: "+") + "." + genuineSignature] where respelled != genuine {
                #expect(try await status(respelled) == .unauthorized, "\(respelled)")
            }
            #expect(TokenService.isCanonicalBase64URL("AA") && !TokenService.isCanonicalBase64URL("AB") && !TokenService.isCanonicalBase64URL("A")
                    && !TokenService.isCanonicalBase64URL("") && !TokenService.isCanonicalBase64URL("AA==") && TokenService.isCanonicalBase64URL("AAA")
                    && !TokenService.isCanonicalBase64URL("AAB") && TokenService.isCanonicalBase64URL("AAAA"))

            // alg none: no signature at all.
            let payload = try JSONSerialization.data(withJSONObject: [
                "iss": "folio", "aud": ["folio-api"], "sub": sub, "sid": sid, "iat": Int(clock.now.timeIntervalSince1970), "exp": Int(clock.now.timeIntervalSince1970) + 600, "jti": "x",
            ])
            let none = base64URL(#"{"alg":"none","typ":"JWT","kid":"\#(currentKid)"}"#) + "." + base64URL(String(decoding: payload, as: UTF8.self)) + "."
            #expect(try await status(none) == .unauthorized)
            // HS512 with the right key: the algorithm is pinned to HS256.
            let keys = JWTKeyCollection()
            await keys.add(hmac: HMACKey(from: Self.currentKey), digestAlgorithm: .sha512, kid: JWKIdentifier(string: currentKid))
            let hs512 = try await keys.sign(
                AccessTokenClaims(iss: .init(value: "folio"), aud: .init(value: ["folio-api"]), sub: .init(value: sub), iat: .init(value: clock.now), exp: .init(value: clock.now.addingTimeInterval(600)), jti: .init(value: "y"), sid: sid),
                kid: JWKIdentifier(string: currentKid))
            #expect(try await status(hs512) == .unauthorized)

            // A header claiming another algorithm over a valid HS256 signature.
            let claimsJSON = try JSONSerialization.data(withJSONObject: [
                "iss": "folio", "aud": ["folio-api"], "sub": sub, "sid": sid, "iat": Int(clock.now.timeIntervalSince1970), "exp": Int(clock.now.timeIntervalSince1970) + 600, "jti": "z",
            ])
            for alg in ["HS384", "HS512", "RS256"] {
                let input = base64URL(#"{"alg":"\#(alg)","typ":"JWT","kid":"\#(currentKid)"}"#) + "." + base64URL(String(decoding: claimsJSON, as: UTF8.self))
                let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: Data(Self.currentKey.utf8)))
                let signature = Data(mac).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
                #expect(try await status(input + "." + signature) == .unauthorized, "\(alg)")
            }
            // The same with the right algorithm is accepted, so the refusals above are about the algorithm.
            let input = base64URL(#"{"alg":"HS256","typ":"JWT","kid":"\#(currentKid)"}"#) + "." + base64URL(String(decoding: claimsJSON, as: UTF8.self))
            let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: Data(Self.currentKey.utf8)))
            let signature = Data(mac).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
            #expect(try await status(input + "." + signature) == .ok)
            // Signed with the key but for 30 years, where this server gives 15 minutes: refused.
            let longLived = try await forge(secret: Self.currentKey, kid: currentKid, sub: sub, sid: sid, now: clock.now, expiresIn: 30 * 365 * 86_400)
            #expect(try await status(longLived) == .unauthorized)

            // The real token expires after 15 minutes, and is counted as expired, not as an attack
            // (FolioFailedAuthenticationBurst counts token_rejected only); a forged expired token is still rejected.
            clock.advance(by: 901)
            #expect(try await status(tokens["access_token"] as! String) == .unauthorized)
            func lastSecurityEvent() -> String? {
                env.logs.objects.last { $0["message"] as? String == "security event" }?["event"] as? String
            }
            #expect(lastSecurityEvent() == "token_expired")
            #expect(try await status(try await forge(secret: strangerKey, kid: currentKid, sub: sub, sid: sid, now: clock.now, expiresIn: -1)) == .unauthorized)
            #expect(lastSecurityEvent() == "token_rejected")
        }
    }

    @Test("cookie sessions: an unsafe request without the CSRF token, with a wrong one or from a foreign origin is 403 and writes nothing", arguments: TestDatabaseKind.all)
    func csrf(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            try await signUp(client, env, email: "browser@example.com")
            let login = try await post(client, "/api/auth/login", ["email": "browser@example.com", "password": strongPassword, "session": "cookie"])
            #expect(login.status == .ok)
            let setCookie = try #require(login.headers[.setCookie])
            #expect(setCookie.hasPrefix("__Host-folio_session="))
            for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] { #expect(setCookie.contains(attribute), "\(setCookie)") }
            #expect(!setCookie.contains("Domain="))
            let body = try json(login)
            #expect(body["refresh_token"] == nil)
            let csrfToken = try #require(body["csrf_token"] as? String)
            let cookie = String(setCookie.split(separator: ";")[0])

            let withCookie: HTTPFields = [.cookie: cookie]
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: withCookie).status == .ok)

            let missing = try await client.execute(uri: "/api/auth/logout", method: .post, headers: withCookie)
            #expect(missing.status == .forbidden)
            #expect(try problem(missing).code == "csrf_failed")
            var wrong = withCookie
            wrong[AuthController.csrfHeader] = "not-the-token"
            #expect(try await client.execute(uri: "/api/auth/logout", method: .post, headers: wrong).status == .forbidden)
            var foreign = withCookie
            foreign[AuthController.csrfHeader] = csrfToken
            foreign[.origin] = "https://malicious-site.com"
            let refused = try await client.execute(uri: "/api/auth/logout", method: .post, headers: foreign)
            #expect(refused.status == .forbidden)
            // The address is at fault, not the page's age: the Origin is named, and where Folio's pages are.
            let own = try #require(OriginGuardMiddleware.ownOrigin(env.configuration))
            #expect(try problem(refused).errors?.map(\.field) == ["Origin"])
            #expect(try problem(refused).errors?.first?.message.contains("Open Folio at \(own)") == true)
            var crossSite = withCookie
            crossSite[AuthController.csrfHeader] = csrfToken
            crossSite[HTTPField.Name("Sec-Fetch-Site")!] = "cross-site"
            #expect(try await client.execute(uri: "/api/auth/logout", method: .post, headers: crossSite).status == .forbidden)
            // Nothing was written: the session still works.
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: withCookie).status == .ok)
            #expect(env.logs.lines.filter { $0.contains("csrf_failed") }.count >= 4)

            var good = withCookie
            good[AuthController.csrfHeader] = csrfToken
            good[.origin] = "https://app.example.com"
            #expect(try await client.execute(uri: "/api/auth/logout", method: .post, headers: good).status == .noContent)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: withCookie).status == .unauthorized)
        }
    }

    @Test("cookie refresh rotates the cookie and needs the CSRF token", arguments: TestDatabaseKind.all)
    func cookieRefresh(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            try await signUp(client, env, email: "rotate@example.com")
            let login = try await post(client, "/api/auth/login", ["email": "rotate@example.com", "password": strongPassword, "session": "cookie"])
            let cookie = String(try #require(login.headers[.setCookie]).split(separator: ";")[0])
            let csrfToken = try json(login)["csrf_token"] as! String
            #expect(try await client.execute(uri: "/api/auth/refresh", method: .post, headers: [.cookie: cookie]).status == .forbidden)
            let refreshed = try await client.execute(uri: "/api/auth/refresh", method: .post, headers: [.cookie: cookie, AuthController.csrfHeader: csrfToken])
            #expect(refreshed.status == .ok)
            let next = String(try #require(refreshed.headers[.setCookie]).split(separator: ";")[0])
            #expect(next != cookie)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: [.cookie: next]).status == .ok)
        }
    }

    @Test("a refresh token is spent only the way its session was started: a cookie's not from a body, a bearer's not from a cookie", arguments: TestDatabaseKind.all)
    func refreshKeepsItsKind(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "kinds@example.com")
            let login = try await post(client, "/api/auth/login", ["email": "kinds@example.com", "password": strongPassword, "session": "cookie"])
            let cookie = String(try #require(login.headers[.setCookie]).split(separator: ";")[0])
            let cookieToken = String(try #require(cookie.split(separator: "=", maxSplits: 1).last))

            // The cookie's token sent as JSON would come back as a bearer token a script can read.
            let asBody = try await post(client, "/api/auth/refresh", ["refresh_token": cookieToken])
            #expect(asBody.status == .unauthorized)
            #expect(try problem(asBody).code == "invalid_refresh_token")
            #expect(asBody.headers[.setCookie] == nil)
            // Not spent: the cookie session goes on and refreshes the way it was started.
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: [.cookie: cookie]).status == .ok)
            let refreshed = try await client.execute(uri: "/api/auth/refresh", method: .post, headers: [.cookie: cookie])
            #expect(refreshed.status == .ok)
            #expect(try json(refreshed)["refresh_token"] == nil)
            // Another tab refreshing with the same cookie a moment later is refused, and its answer leaves the new cookie be.
            let raced = try await client.execute(uri: "/api/auth/refresh", method: .post, headers: [.cookie: cookie])
            #expect(raced.status == .unauthorized)
            #expect(raced.headers[.setCookie] == nil)
            #expect(try problem(raced).code == "refresh_token_just_used", "a client can tell a race from a dead session")

            // A bearer session's token offered as the cookie is refused too, and stays good in a body.
            let bearerToken = try #require(tokens["refresh_token"] as? String)
            let foreignCookie: HTTPFields = [.cookie: "\(AuthController.cookieName)=\(bearerToken)"]
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: foreignCookie).status == .unauthorized)
            let asCookie = try await client.execute(uri: "/api/auth/refresh", method: .post, headers: foreignCookie)
            #expect(asCookie.status == .unauthorized)
            #expect(try problem(asCookie).code == "invalid_refresh_token")
            // A cookie that names no live session is dropped, not sent again on every request.
            #expect(asCookie.headers[.setCookie]?.hasPrefix("\(AuthController.cookieName)=;") == true, "\(asCookie.headers)")
            #expect(asCookie.headers[.setCookie]?.contains("Max-Age=0") == true)
            let inBody = try await post(client, "/api/auth/refresh", ["refresh_token": bearerToken])
            #expect(inBody.status == .ok)
            #expect(try json(inBody)["refresh_token"] is String)
        }
    }

    @Test("bearer-authenticated unsafe requests need no CSRF token; unauthenticated ones are refused", arguments: TestDatabaseKind.all)
    func bearerNeedsNoCSRF(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            let tokens = try await signUp(client, env, email: "api@example.com")
            #expect(try await client.execute(uri: "/api/auth/logout", method: .post, headers: bearer(tokens)).status == .noContent)
            // The seed's check, on the unsafe routes that exist: no credentials, nothing happens.
            for path in ["/api/auth/logout", "/api/auth/logout-all", "/api/auth/password", "/api/auth/2fa/enroll", "/api/admin/users/\(UUID())/disable"] {
                let response = try await client.execute(uri: path, method: .post)
                #expect(response.status == .unauthorized, "\(path)")
            }
        }
    }

    @Test("CORS: a foreign origin and its preflight get no CORS headers; an allowed origin gets exactly its own origin and Vary", arguments: TestDatabaseKind.all)
    func cors(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            func refusals() -> Int { env.logs.lines.filter { $0.contains("\"cors_refused\"") }.count }
            // Folio's own pages send Origin on their POSTs: same-origin, no CORS headers, and no refusal recorded.
            let own = try #require(OriginGuardMiddleware.ownOrigin(env.configuration))
            let sameOrigin = try await client.execute(uri: "/api/health", method: .get, headers: [.origin: own])
            #expect(sameOrigin.status == .ok)
            #expect(sameOrigin.headers[.accessControlAllowOrigin] == nil)
            #expect(refusals() == 0)
            let foreign = try await client.execute(uri: "/api/health", method: .get, headers: [.origin: "https://malicious-site.com"])
            #expect(foreign.status == .ok)
            #expect(foreign.headers[.accessControlAllowOrigin] == nil)
            #expect(refusals() == 1)
            let nullOrigin = try await client.execute(uri: "/api/health", method: .get, headers: [.origin: "null"])
            #expect(nullOrigin.headers[.accessControlAllowOrigin] == nil)
            let preflight = try await client.execute(uri: "/api/auth/login", method: .options, headers: [.origin: "https://malicious-site.com", .accessControlRequestMethod: "POST"])
            #expect(preflight.status == .forbidden)
            #expect(try problem(preflight).code == "cors_origin_refused")
            #expect(preflight.headers[.accessControlAllowOrigin] == nil)
            #expect(preflight.headers[.accessControlAllowMethods] == nil)

            let allowed = try await client.execute(uri: "/api/health", method: .get, headers: [.origin: "https://app.example.com"])
            #expect(allowed.headers[.accessControlAllowOrigin] == "https://app.example.com")
            #expect(allowed.headers[.vary] == "Origin")
            #expect(allowed.headers[.accessControlAllowCredentials] == "true")
            // The allowed page can read a CSV's file name and why a token was refused.
            let exposed = Set((allowed.headers[.accessControlExposeHeaders] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            #expect(exposed.isSuperset(of: ["Content-Disposition", "WWW-Authenticate", "X-Request-ID", "Retry-After"]), "\(exposed)")
            // Without Origin, or from the site itself, the answer varies on it too: a shared cache keeps the copies apart.
            for headers: HTTPFields in [[:], [.origin: own]] {
                let cached = try await client.execute(uri: "/openapi.json", method: .get, headers: headers)
                #expect(cached.headers[values: .vary].contains("Origin"), "\(headers)")
            }
            let allowedPreflight = try await client.execute(uri: "/api/auth/login", method: .options, headers: [.origin: "https://app.example.com", .accessControlRequestMethod: "POST"])
            #expect(allowedPreflight.status == .noContent)
            #expect(allowedPreflight.headers[.accessControlAllowOrigin] == "https://app.example.com")
            #expect(allowedPreflight.headers[.accessControlAllowHeaders]?.contains("X-CSRF-Token") == true)
        }
    }

    @Test("every response carries the security headers", arguments: ["/health", "/api/health", "/api/nowhere", "/api/auth/me"])
    func securityHeaders(path: String) async throws {
        try await withTestAppOnEachDatabase { client, _ in
            let response = try await client.execute(uri: path, method: .get)
            #expect(response.headers[.contentSecurityPolicy] == "default-src 'none'; frame-ancestors 'none'")
            #expect(response.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff")
            #expect(response.headers[HTTPField.Name("Referrer-Policy")!] == "no-referrer")
            #expect(response.headers[HTTPField.Name("X-Frame-Options")!] == "DENY")
            #expect(response.headers[HTTPField.Name("Permissions-Policy")!] != nil)
            #expect(response.headers[.server] == nil)
            #expect(response.headers[HTTPField.Name("Strict-Transport-Security")!] == nil)
            if path.hasPrefix("/api") { #expect(response.headers[.cacheControl] == "no-store") }
        }
    }

    @Test("an answer is never cacheable unless its route says so, however its path is spelled (//api reaches the API too)")
    func noStoreByDefault() async throws {
        try await withTestApp(.sqlite) { client, env in
            let tokens = try await signUp(client, env, email: "spelled@example.com")
            for path in ["//api/portfolio", "///api/auth/me", "/health"] {
                let response = try await client.execute(uri: path, method: .get, headers: bearer(tokens))
                #expect(response.headers[.cacheControl] == "no-store", "\(path) answered \(response.status) with \(response.headers[.cacheControl] ?? "no Cache-Control")")
            }
            let portfolio = try await client.execute(uri: "//api/portfolio", method: .get, headers: bearer(tokens))
            #expect(portfolio.status == .ok, "the doubled slash reaches the API: that is why it must not be cacheable")
        }
    }

    @Test("production responses carry HSTS", arguments: TestDatabaseKind.all)
    func hsts(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.environment = .production }) { client, _ in
            let response = try await client.execute(uri: "/health", method: .get)
            #expect(response.headers[HTTPField.Name("Strict-Transport-Security")!] == "max-age=63072000; includeSubDomains")
        }
    }

    @Test("the auth bucket answers 429 with Retry-After and RateLimit headers", arguments: TestDatabaseKind.all)
    func rateLimit(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.rateLimit = .init(enabled: true, requestsPerMinute: 1000, authRequestsPerMinute: 3) }) { client, _ in
            for _ in 0..<3 {
                let response = try await post(client, "/api/auth/login", ["email": "x@example.com", "password": "whatever at all"])
                #expect(response.status == .unauthorized)
                #expect(response.headers[HTTPField.Name("RateLimit-Policy")!] == "\"auth\";q=3;w=60")
            }
            let limited = try await post(client, "/api/auth/login", ["email": "x@example.com", "password": "whatever at all"])
            #expect(limited.status == .tooManyRequests)
            #expect(try problem(limited).code == "rate_limited")
            let retryAfter = try #require(limited.headers[.retryAfter].flatMap(Int.init))
            #expect((1...20).contains(retryAfter))
            #expect(limited.headers[HTTPField.Name("RateLimit")!]?.hasPrefix("\"auth\";r=0;t=") == true)
            // Other routes are not in the auth bucket.
            #expect(try await client.execute(uri: "/api/health", method: .get).status == .ok)
        }
    }

    @Test("after 5 failed logins the account waits, with a security event for each failure", arguments: TestDatabaseKind.all)
    func lockout(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock) { client, env in
            try await signUp(client, env, email: "victim@example.com")
            for _ in 0..<5 {
                #expect(try await post(client, "/api/auth/login", ["email": "victim@example.com", "password": "guess guess guess"]).status == .unauthorized)
            }
            let sixth = try await post(client, "/api/auth/login", ["email": "victim@example.com", "password": strongPassword])
            #expect(sixth.status == .tooManyRequests)
            #expect(try problem(sixth).code == "too_many_attempts")
            #expect(["30", "31"].contains(sixth.headers[.retryAfter] ?? ""))
            #expect(env.logs.lines.filter { $0.contains("\"event\":\"login_failed\"") }.count == 5)
            #expect(env.logs.lines.contains { $0.contains("login_lockout") })
            let failures = try await AuditEvent.query(on: env.database.db).filter(\.$action == "security.login_failed").count()
            #expect(failures == 5)
            clock.advance(by: 31)
            #expect(try await post(client, "/api/auth/login", ["email": "victim@example.com", "password": strongPassword]).status == .ok)
        }
    }

    @Test("a burst of parallel guesses cannot get past the count: the sixth and later are refused before bcrypt", arguments: TestDatabaseKind.all)
    func lockoutBurst(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await signUp(client, env, email: "burst@example.com")
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for index in 0..<10 {
                    group.addTask { try await post(client, "/api/auth/login", ["email": "burst@example.com", "password": "guess number \(index)!"]).status }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == .unauthorized }.count == 5)
            #expect(statuses.filter { $0 == .tooManyRequests }.count == 5)
        }
    }

    @Test("unknown emails are throttled like real ones, so a lockout does not reveal an account", arguments: TestDatabaseKind.all)
    func unknownEmailLockout(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, _ in
            for _ in 0..<5 {
                #expect(try await post(client, "/api/auth/login", ["email": "ghost@example.com", "password": "guess guess guess"]).status == .unauthorized)
            }
            let sixth = try await post(client, "/api/auth/login", ["email": "ghost@example.com", "password": "guess guess guess"])
            #expect(sixth.status == .tooManyRequests)
            #expect(try problem(sixth).code == "too_many_attempts")
        }
    }

    @Test("a password reset clears a lockout, so nobody can lock the owner out for good", arguments: TestDatabaseKind.all)
    func resetClearsLockout(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await signUp(client, env, email: "locked@example.com")
            for _ in 0..<5 { _ = try await post(client, "/api/auth/login", ["email": "locked@example.com", "password": "guess guess guess"]) }
            _ = try await post(client, "/api/auth/password-reset/request", ["email": "locked@example.com"])
            let token = try await outboxToken(env, email: "locked@example.com", kind: "reset_password")
            #expect(try await post(client, "/api/auth/password-reset/confirm", ["token": token, "new_password": "fresh start passphrase 7"]).status == .noContent)
            #expect(try await post(client, "/api/auth/login", ["email": "locked@example.com", "password": "fresh start passphrase 7"]).status == .ok)
        }
    }

    @Test("the headers name the bucket with the fewest requests left, and a signed-in read under /api/auth/ does not spend the sign-in allowance", arguments: TestDatabaseKind.all)
    func tightestBucketSpeaks(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.rateLimit = .init(enabled: true, requestsPerMinute: 1000, authRequestsPerMinute: 5) }) { client, env in
            let tokens = try await signUp(client, env, email: "reader@example.com")
            // Signing up spent some of the address's auth bucket; reads of the signed-in person spend none.
            for _ in 0..<10 {
                let me = try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens))
                #expect(me.status == .ok)
                #expect(me.headers[HTTPField.Name("RateLimit-Policy")!]?.hasPrefix("\"auth\"") == false)
            }
            // A request both buckets count says what the auth bucket has left, not the user bucket's hundreds.
            let logout = try await client.execute(uri: "/api/auth/logout", method: .post, headers: bearer(tokens))
            #expect(logout.status == .noContent)
            #expect(logout.headers[HTTPField.Name("RateLimit-Policy")!] == "\"auth\";q=5;w=60", "\(logout.headers)")
        }
    }

    @Test("the auth bucket cannot be dodged with a doubled slash", arguments: TestDatabaseKind.all)
    func doubleSlash(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.rateLimit = .init(enabled: true, requestsPerMinute: 1000, authRequestsPerMinute: 2) }) { client, _ in
            _ = try await post(client, "/api/auth/login", ["email": "x@example.com", "password": "whatever at all"])
            _ = try await post(client, "/api//auth/login", ["email": "x@example.com", "password": "whatever at all"])
            #expect(try await post(client, "/api//auth/login", ["email": "x@example.com", "password": "whatever at all"]).status == .tooManyRequests)
        }
    }

    @Test("after a reload a cookie session gets its CSRF token back, and login works despite a stale cookie", arguments: TestDatabaseKind.all)
    func csrfRecovery(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            try await signUp(client, env, email: "reload@example.com")
            let login = try await post(client, "/api/auth/login", ["email": "reload@example.com", "password": strongPassword, "session": "cookie"])
            let cookie = String(try #require(login.headers[.setCookie]).split(separator: ";")[0])
            let original = try json(login)["csrf_token"] as? String
            let again = try await client.execute(uri: "/api/auth/csrf", method: .get, headers: [.cookie: cookie])
            #expect(try json(again)["csrf_token"] as? String == original)
            let relogin = try await post(client, "/api/auth/login", ["email": "reload@example.com", "password": strongPassword, "session": "cookie"], headers: [.cookie: cookie])
            #expect(relogin.status == .ok)
        }
    }

    @Test("passwords with control characters are refused; a NUL cannot make an empty password work", arguments: TestDatabaseKind.all)
    func controlCharacters(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, _ in
            let response = try await post(client, "/api/auth/register", ["email": "nul@example.com", "password": "\u{0}aaaaaaaaaaaaaaaa"])
            #expect(response.status == .unprocessableContent)
            #expect(try problem(response).errors?.first?.code == "invalid_characters")
        }
    }

    @Test("a NUL character is refused in every text field, naming it: no lookalike email, no client_order_id cut short, no 500 from PostgreSQL", arguments: TestDatabaseKind.all)
    func nulInText(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "ann@example.com")
            let lookalike = try await post(client, "/api/auth/register", ["email": "ann@example.com\u{0}x", "password": strongPassword])
            #expect(lookalike.status == .unprocessableContent)
            #expect(try problem(lookalike).errors?.map(\.field) == ["email"])
            #expect(try problem(lookalike).errors?.first?.code == "invalid_characters")
            let users = try await env.database.sql.raw("SELECT COUNT(*) AS n FROM users").first(decodingColumn: "n", as: Int.self)
            #expect(users == 1)
            let order = try await post(
                client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "MARKET", "client_order_id": "a\u{0}b"], headers: bearer(tokens))
            #expect(order.status == .unprocessableContent)
            #expect(try problem(order).errors?.map(\.field) == ["client_order_id"])
            #expect(try await env.orders().isEmpty)
            // Nested fields are named by their path.
            let account = try await env.firstAccount()
            let targets = try await RebalanceTests.put(
                client, "/api/accounts/\(account.id)/targets", ["targets": [["symbol": "AA\u{0}PL", "percent": "100"]], "cash_percent": "0"], headers: bearer(tokens))
            #expect(targets.status == .unprocessableContent)
            #expect(try problem(targets).errors?.first?.field == "targets[0].symbol")
            // And in a URL, where a query parameter would reach a lookup.
            for uri in ["/api/orders?symbol=AA%00PL", "/api/admin/audit-events?action=a%00b"] {
                let refused = try await client.execute(uri: uri, method: .get, headers: bearer(tokens))
                #expect(refused.status == .badRequest, "\(uri)")
                #expect(refused.headers[.contentType] == "application/problem+json")
            }
        }
    }

    @Test("the outbox is not readable over HTTP in production", arguments: TestDatabaseKind.all)
    func noOutboxInProduction(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.environment = .production }) { client, env in
            try await UserAdministration(services: env.services).createAdmin(email: "root@example.com", password: strongPassword)
            let admin = try json(try await post(client, "/api/auth/login", ["email": "root@example.com", "password": strongPassword]))
            #expect(try await client.execute(uri: "/api/admin/outbox", method: .get, headers: bearer(admin)).status == .notFound)
            #expect(try await client.execute(uri: "/api/admin/users", method: .get, headers: bearer(admin)).status == .ok)
        }
    }

    @Test("client addresses come from the socket unless a trusted proxy forwarded the request")
    func clientAddress() {
        #expect(ClientAddress.resolve(peer: "203.0.113.9", forwardedFor: "1.2.3.4", trustedProxies: []) == "203.0.113.9")
        #expect(ClientAddress.resolve(peer: "10.0.0.2", forwardedFor: "6.6.6.6, 198.51.100.7", trustedProxies: ["10.0.0.2"]) == "198.51.100.7")
        #expect(ClientAddress.resolve(peer: "10.0.0.2", forwardedFor: "198.51.100.7, 10.0.0.3", trustedProxies: ["10.0.0.2", "10.0.0.3"]) == "198.51.100.7")
        #expect(ClientAddress.resolve(peer: nil, forwardedFor: "1.2.3.4", trustedProxies: ["10.0.0.2"]) == nil)
    }

    @Test("a forwarded address is read as an address: a proxy's port or brackets are dropped, ranges of proxies are trusted, and text that is no address leaves the request the proxy's")
    func forwardedAddressShapes() throws {
        let proxies: TrustedProxies = ["10.0.0.0/8", "fd00::/8"]
        // Each connection's port would make a new rate-limit key.
        #expect(ClientAddress.resolve(peer: "10.1.2.3", forwardedFor: "198.51.100.7:51234", trustedProxies: proxies) == "198.51.100.7")
        #expect(ClientAddress.resolve(peer: "10.1.2.3", forwardedFor: "[2001:DB8::7]:51234", trustedProxies: proxies) == "2001:db8::7")
        #expect(ClientAddress.resolve(peer: "10.1.2.3", forwardedFor: "[2001:db8::7]", trustedProxies: proxies) == "2001:db8::7")
        #expect(ClientAddress.resolve(peer: "fd12::1", forwardedFor: "2001:db8:0:0::7", trustedProxies: proxies) == "2001:db8::7")
        // A chain of proxies within the ranges is walked past.
        #expect(ClientAddress.resolve(peer: "10.0.0.2", forwardedFor: "6.6.6.6, 198.51.100.7, 10.9.9.9:80, fd00::5", trustedProxies: proxies) == "198.51.100.7")
        // Outside the ranges: the socket's peer, whatever the header says.
        #expect(ClientAddress.resolve(peer: "11.0.0.2", forwardedFor: "198.51.100.7", trustedProxies: proxies) == "11.0.0.2")
        #expect(ClientAddress.resolve(peer: "fe00::1", forwardedFor: "198.51.100.7", trustedProxies: proxies) == "fe00::1")
        // What the proxy wrote is no address: counted under the proxy, not under a text a client could vary.
        for junk in ["unknown", "198.51.100.7:port", "198.51.100.7:", "[2001:db8::7]x", "<script>", "1.2.3"] {
            #expect(ClientAddress.resolve(peer: "10.1.2.3", forwardedFor: "203.0.113.1, \(junk)", trustedProxies: proxies) == "10.1.2.3", "\(junk)")
        }
        // An IPv4 address written as IPv6 by a dual-stack socket is matched as IPv4.
        #expect(ClientAddress.resolve(peer: "::ffff:10.0.0.2", forwardedFor: "198.51.100.7", trustedProxies: proxies) == "198.51.100.7")
        // An IPv4 range written the IPv6 way, with an IPv6 prefix, is the same range.
        let mapped = try #require(TrustedProxies(["::ffff:10.0.0.0/104"]))
        #expect(mapped.contains("10.1.2.3") && mapped.contains("::ffff:10.9.9.9") && !mapped.contains("11.0.0.1"))
        #expect(TrustedProxies.reach(of: "::ffff:10.0.0.0/104") == .network)
        #expect(TrustedProxies.reach(of: "::ffff:0:0/96") == .everyAddress)
        #expect(TrustedProxies(["::ffff:10.0.0.0/64"]) == nil, "neither an IPv4 nor an IPv6 prefix of a mapped address")
        #expect(ClientAddress.resolve(peer: "10.1.2.3", forwardedFor: "::ffff:198.51.100.7", trustedProxies: proxies) == "198.51.100.7")
    }
}

@Suite("Administration and two-factor authentication")
struct AdminAndTwoFactorTests {
    @Test("admins list users page by page and disable them; every admin action is audited", arguments: TestDatabaseKind.all)
    func admin(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await UserAdministration(services: env.services).createAdmin(email: "root@example.com", password: strongPassword)
            let admin = try json(try await post(client, "/api/auth/login", ["email": "root@example.com", "password": strongPassword]))
            let user = try await signUp(client, env, email: "member@example.com")
            try await signUp(client, env, email: "third@example.com")

            let first = try json(try await client.execute(uri: "/api/admin/users?limit=2", method: .get, headers: bearer(admin)))
            let cursor = try #require(first["next_cursor"] as? String)
            #expect((first["data"] as? [[String: Any]])?.count == 2)
            let second = try json(try await client.execute(uri: "/api/admin/users?limit=2&cursor=\(cursor)", method: .get, headers: bearer(admin)))
            #expect((second["data"] as? [[String: Any]])?.count == 1)
            #expect(second["next_cursor"] == nil)
            #expect(try await client.execute(uri: "/api/admin/users?limit=1000", method: .get, headers: bearer(admin)).status == .unprocessableContent)

            let memberID = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(user)))["id"] as! String
            let disabled = try await client.execute(uri: "/api/admin/users/\(memberID)/disable", method: .post, headers: bearer(admin))
            #expect(disabled.status == .ok)
            #expect(try json(disabled)["disabled"] as? Bool == true)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(user)).status == .unauthorized)
            #expect(try await client.execute(uri: "/api/admin/users/\(UUID())/disable", method: .post, headers: bearer(admin)).status == .notFound)

            let adminID = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(admin)))["id"] as! String
            let events = try await AuditEvent.query(on: env.database.db).filter(\.$action == "admin.user_disabled").all()
            #expect(events.count == 1)
            #expect(events.first?.actorID?.uuidString.lowercased() == adminID.lowercased())
            #expect(events.first?.subjectID?.lowercased() == memberID.lowercased())
            #expect(events.first?.requestID != nil)
            let trail = try json(try await client.execute(uri: "/api/admin/audit-events?action=admin.user_disabled", method: .get, headers: bearer(admin)))
            #expect((trail["data"] as? [[String: Any]])?.count == 1)

            // Disabling someone disabled already changes nothing and audits nothing.
            let twice = try await client.execute(uri: "/api/admin/users/\(memberID)/disable", method: .post, headers: bearer(admin))
            #expect(twice.status == .ok)
            #expect(try json(twice)["disabled"] as? Bool == true)
            #expect(try await AuditEvent.query(on: env.database.db).filter(\.$action == "admin.user_disabled").count() == 1)
            // An erased person's row changes no more: neither disabled nor enabled through the API.
            let third = try await signUp(client, env, email: "third-erased@example.com")
            let thirdID = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(third)))["id"] as! String
            _ = try await UserAdministration(services: env.services).erase(email: "third-erased@example.com")
            for verb in ["disable", "enable"] {
                let refused = try await client.execute(uri: "/api/admin/users/\(thirdID)/\(verb)", method: .post, headers: bearer(admin))
                #expect(refused.status == .conflict, "\(verb): \(String(buffer: refused.body))")
                #expect(try json(refused)["code"] as? String == "user_erased")
            }
            #expect(try await AuditEvent.query(on: env.database.db).filter(\.$subjectID == thirdID.lowercased()).filter(\.$action ~~ ["admin.user_disabled", "admin.user_enabled"]).count() == 0)
        }
    }

    @Test("a disable, enable or role change decided on an old read of the user goes by the row as it is now", arguments: TestDatabaseKind.all)
    func administrationReadsTheRowUnderItsLock(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let identity = env.services.identity
            let origin = RequestOrigin.commandLine(logger: Logger(label: "test"))
            try await UserAdministration(services: env.services).createAdmin(email: "root@example.com", password: strongPassword)
            _ = try await signUp(client, env, email: "stale@example.com")
            func read() async throws -> User { try #require(try await User.query(on: env.database.db).filter(\.$email == "stale@example.com").first()) }
            func count(_ action: String) async throws -> Int { try await AuditEvent.query(on: env.database.db).filter(\.$action == action).count() }

            // Two administrators read the same enabled user; both disable them: one change, one audit event.
            let seenByFirst = try await read(), seenBySecond = try await read()
            #expect(try await identity.setDisabled(true, user: seenByFirst, actor: nil, origin: origin).isDisabled)
            #expect(try await identity.setDisabled(true, user: seenBySecond, actor: nil, origin: origin).isDisabled)
            #expect(try await count("admin.user_disabled") == 1)
            // One read them disabled, the user was enabled since: disabling again is a change.
            let disabledRead = try await read()
            _ = try await identity.setDisabled(false, user: try await read(), actor: nil, origin: origin)
            #expect(try await identity.setDisabled(true, user: disabledRead, actor: nil, origin: origin).isDisabled)
            #expect(try await count("admin.user_disabled") == 2)
            #expect(try await read().isDisabled)

            // The same for roles: the second promotion of an old read changes nothing.
            let roleFirst = try await read(), roleSecond = try await read()
            #expect(try await identity.setRole(.admin, user: roleFirst, origin: origin))
            #expect(try await !identity.setRole(.admin, user: roleSecond, origin: origin))
            #expect(roleSecond.role == "admin")
            #expect(try await count("admin.role_changed") == 1)

            // Erased after the read: neither enabled nor given a role.
            let beforeErasure = try await read()
            _ = try await UserAdministration(services: env.services).erase(email: "stale@example.com")
            await #expect(throws: IdentityError.userErased) { try await identity.setDisabled(false, user: beforeErasure, actor: nil, origin: origin) }
            await #expect(throws: IdentityError.userErased) { try await identity.setRole(.admin, user: beforeErasure, origin: origin) }
            let erased = try #require(try await User.query(on: env.database.db).filter(\.$id == beforeErasure.id!).first())
            #expect(erased.isDisabled)
            #expect(erased.role == "user")
        }
    }

    @Test("two administrators disabling or demoting each other at once leave one enabled administrator", arguments: TestDatabaseKind.all)
    func lastAdministratorUnderRace(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { _, env in
            let administration = UserAdministration(services: env.services), identity = env.services.identity
            let origin = RequestOrigin.commandLine(logger: Logger(label: "test"))
            for round in 0..<4 {
                let first = try await administration.createAdmin(email: "a\(round)@example.com", password: strongPassword)
                let second = try await administration.createAdmin(email: "b\(round)@example.com", password: strongPassword)
                // Only these two are enabled administrators this round: the earlier rounds' one is demoted first.
                for user in try await User.query(on: env.database.db).filter(\.$role == "admin").all() where ![first, second].contains(user.id!) {
                    try await identity.setRole(.user, user: user, origin: origin)
                }
                let users = try await User.query(on: env.database.db).filter(\.$id ~~ [first, second]).all()
                let a = try #require(users.first { $0.id == first }), b = try #require(users.first { $0.id == second })
                let one = Task {
                    if round.isMultiple(of: 2) { _ = try await identity.setDisabled(true, userID: second, actor: first, origin: origin) }
                    else { try await identity.setRole(.user, user: b, origin: origin) }
                }
                let other = Task {
                    if round.isMultiple(of: 2) { _ = try await identity.setDisabled(true, userID: first, actor: second, origin: origin) }
                    else { try await identity.setRole(.user, user: a, origin: origin) }
                }
                let outcomes = [await one.result, await other.result]
                #expect(outcomes.filter { if case .success = $0 { true } else { false } }.count == 1, "round \(round)")
                #expect(outcomes.contains { if case .failure(IdentityError.lastAdministrator) = $0 { true } else { false } }, "round \(round)")
                let enabled = try await User.query(on: env.database.db).filter(\.$role == "admin").filter(\.$disabledAt == nil).count()
                #expect(enabled == 1, "round \(round)")
            }
        }
    }

    @Test("through a key rotation, CSRF tokens and TOTP secrets made under the previous key still work, and the TOTP secret is sealed again under the new key", arguments: TestDatabaseKind.all)
    func rotationKeepsCSRFAndTOTP(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.secretKey = WebSecurityTests.previousKey; $0.csrfProtectionEnabled = true }) { client, env in
            let tokens = try await signUp(client, env, email: "rotate@example.com")
            let cookieLogin = try json(try await post(client, "/api/auth/login", ["email": "rotate@example.com", "password": strongPassword, "session": "cookie"]))
            let csrfToken = try #require(cookieLogin["csrf_token"] as? String)
            let session = try #require(try await Session.query(on: env.database.db).filter(\.$kind == "cookie").first()?.id)

            _ = try await client.execute(uri: "/api/auth/2fa/enroll", method: .post, headers: bearer(tokens))
            let enrolled = try #require(try await User.query(on: env.database.db).filter(\.$email == "rotate@example.com").first())
            let oldSeal = try #require(enrolled.totpSecretSealed)
            let secret = try #require(SecretBox(secretKey: WebSecurityTests.previousKey, previousKeys: []).open(oldSeal))
            func code() -> String { String(format: "%06d", TOTP(secret: secret).compute(date: env.clock.now)) }
            #expect(try await post(client, "/api/auth/2fa/confirm", ["password": strongPassword, "totp_code": code()], headers: bearer(tokens)).status == .ok)

            func services(key: String, previous: [String]) async -> FolioServices {
                var dependencies = env.services.dependencies
                dependencies.configuration.secretKey = key
                dependencies.configuration.previousSecretKeys = previous
                return await FolioServices(dependencies)
            }
            let rotating = await services(key: WebSecurityTests.currentKey, previous: [WebSecurityTests.previousKey])
            let newOnly = await services(key: WebSecurityTests.currentKey, previous: [])
            #expect(rotating.identity.csrf.isValid(csrfToken, for: session), "the old key's CSRF token still verifies during the rotation")
            #expect(!newOnly.identity.csrf.isValid(csrfToken, for: session), "and no longer once the old key is gone")
            #expect(newOnly.identity.secretBox.open(oldSeal) == nil, "the new key alone cannot open the old seal")

            // Signing in with a code during the rotation seals the secret again under the new key.
            // (Each code is used in a later 30-second step: a code works once.)
            let origin = RequestOrigin(ip: "127.0.0.1", requestID: nil, logger: env.services.logger)
            env.clock.advance(by: 30)
            _ = try await rotating.identity.signIn(
                email: "rotate@example.com", password: strongPassword, totpCode: code(), recoveryCode: nil, kind: .bearer, userAgent: nil, origin: origin)
            let resealed = try #require(try await User.query(on: env.database.db).filter(\.$email == "rotate@example.com").first()?.totpSecretSealed)
            #expect(resealed != oldSeal)
            #expect(newOnly.identity.secretBox.open(resealed) == secret)
            env.clock.advance(by: 30)
            _ = try await newOnly.identity.signIn(
                email: "rotate@example.com", password: strongPassword, totpCode: code(), recoveryCode: nil, kind: .bearer, userAgent: nil, origin: origin)
        }
    }

    @Test("a set-up started in another session while a confirmation is checked turns nothing on; a set-up never replaces the secret of a second factor that is on", arguments: TestDatabaseKind.all)
    func setUpRaces(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let first = try await signUp(client, env, email: "raced@example.com")
            let second = try json(try await post(client, "/api/auth/login", ["email": "raced@example.com", "password": strongPassword]))
            func stored() async throws -> User { try #require(try await User.query(on: env.database.db).filter(\.$email == "raced@example.com").first()) }
            #expect(try await client.execute(uri: "/api/auth/2fa/enroll", method: .post, headers: bearer(first)).status == .ok)
            let checked = try #require(try await stored().totpSecretSealed)
            let userID = try #require(try await stored().id)
            let store = env.services.identity.store
            // The confirmation read `checked` and is checking its code when the other session starts a set-up.
            #expect(try await client.execute(uri: "/api/auth/2fa/enroll", method: .post, headers: bearer(second)).status == .ok)
            let replaced = try #require(try await stored().totpSecretSealed)
            #expect(replaced != checked)
            let turnedOn = try await env.database.modelTransaction { db in
                try await store.enableSecondFactor(userID: userID, sealed: checked, now: env.clock.now, on: db)
            }
            #expect(!turnedOn, "the secret the code came from is no longer the one on file")
            #expect(try await stored().totpEnabledAt == nil)

            // Confirmed with the secret on file, as the app shows it: on.
            let secret = try #require(SecretBox(secretKey: env.configuration.secretKey, previousKeys: []).open(replaced))
            let code = String(format: "%06d", TOTP(secret: secret).compute(date: env.clock.now))
            #expect(try await post(client, "/api/auth/2fa/confirm", ["password": strongPassword, "totp_code": code], headers: bearer(first)).status == .ok)
            // A set-up that read the user before that confirmation writes nothing now.
            let late = try await env.database.modelTransaction { db in
                try await store.startSecondFactorSetUp(userID: userID, sealed: checked, now: env.clock.now, on: db)
            }
            #expect(!late)
            #expect(try await stored().totpSecretSealed == replaced)
            #expect(try await stored().totpEnabledAt != nil)
        }
    }

    @Test("being asked for the second factor is no failed attempt: after a lockout for wrong codes, the owner signs in with the password, then the code", arguments: TestDatabaseKind.all)
    func twoFactorAfterLockout(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "locked2fa@example.com")
            _ = try await client.execute(uri: "/api/auth/2fa/enroll", method: .post, headers: bearer(tokens))
            let user = try #require(try await User.query(on: env.database.db).filter(\.$email == "locked2fa@example.com").first())
            let sealed = try #require(user.totpSecretSealed)
            let secret = try #require(SecretBox(secretKey: env.configuration.secretKey, previousKeys: []).open(sealed))
            func code() -> String { String(format: "%06d", TOTP(secret: secret).compute(date: env.clock.now)) }
            #expect(try await post(client, "/api/auth/2fa/confirm", ["password": strongPassword, "totp_code": code()], headers: bearer(tokens)).status == .ok)
            env.clock.advance(by: 60)  // the next step's code, not the one just spent

            func signIn(_ body: [String: String]) async throws -> TestResponse {
                try await post(client, "/api/auth/login", ["email": "locked2fa@example.com", "password": strongPassword].merging(body) { _, new in new })
            }
            // As the web page does it: the password, then (asked for it) the code. Asked ten times: never a lock.
            for _ in 0..<10 { #expect(try problem(try await signIn([:])).code == "two_factor_required") }
            // Five wrong codes lock the address for 30 s; the right code is refused meanwhile.
            let wrong = code() == "123456" ? "654321" : "123456"
            for _ in 0..<5 { #expect(try await signIn(["totp_code": wrong]).status == .unauthorized) }
            #expect(try await signIn(["totp_code": code()]).status == .tooManyRequests)
            env.clock.advance(by: 31)
            // After the wait: the password step is no attempt, so the code that follows gets in.
            #expect(try problem(try await signIn([:])).code == "two_factor_required")
            let signedIn = try await signIn(["totp_code": code()])
            #expect(signedIn.status == .ok, "\(String(buffer: signedIn.body))")
        }
    }

    @Test("ten wrong authenticator codes with the right password stop codes being taken, whatever waits pass; the owner is told; a recovery code still signs in and takes codes again", arguments: TestDatabaseKind.all)
    func secondFactorGuessingBlocked(kind: TestDatabaseKind) async throws {
        let week: TimeInterval = 7 * 86_400
        try await withTestApp(kind, configure: { $0.sessionIdleTimeout = week; $0.sessionMaxAge = week; $0.accessTokenLifetime = week }) { client, env in
            let tokens = try await signUp(client, env, email: "guessed2fa@example.com")
            _ = try await client.execute(uri: "/api/auth/2fa/enroll", method: .post, headers: bearer(tokens))
            let user = try #require(try await User.query(on: env.database.db).filter(\.$email == "guessed2fa@example.com").first())
            let sealed = try #require(user.totpSecretSealed)
            let secret = try #require(SecretBox(secretKey: env.configuration.secretKey, previousKeys: []).open(sealed))
            func code() -> String { String(format: "%06d", TOTP(secret: secret).compute(date: env.clock.now)) }
            let confirmed = try await post(client, "/api/auth/2fa/confirm", ["password": strongPassword, "totp_code": code()], headers: bearer(tokens))
            let recovery = try #require(try json(confirmed)["recovery_codes"] as? [String])
            func signIn(_ body: [String: String]) async throws -> TestResponse {
                try await post(client, "/api/auth/login", ["email": "guessed2fa@example.com", "password": strongPassword].merging(body) { _, new in new })
            }
            // An empty code field is no guess: asked for the code, nothing counted.
            for _ in 0..<12 { #expect(try problem(try await signIn(["totp_code": "", "recovery_code": " "])).code == "two_factor_required") }
            // Someone with the password guesses, waiting out every pause of the throttle between guesses.
            for guess in 0..<IdentityServices.secondFactorFailureLimit {
                env.clock.advance(by: 3_600)
                let wrong = code() == "123456" ? "654321" : "123456"
                let refused = try await signIn(["totp_code": wrong])
                #expect(try refused.status == .unauthorized && problem(refused).code == "invalid_two_factor_code", "guess \(guess + 1)")
            }
            env.clock.advance(by: 3_600)
            let blocked = try await signIn(["totp_code": code()])
            #expect(try blocked.status == .forbidden && problem(blocked).code == "two_factor_blocked", "\(String(buffer: blocked.body))")
            #expect(try await env.outbox(kind: "account_locked").contains { $0.body.contains("paused until you reset your password") })
            #expect(env.logs.lines.contains { $0.contains("second_factor_blocked") })
            // A session and the password cannot guess on through the routes that change the second factor.
            env.clock.advance(by: 3_600)
            let disable = try await post(client, "/api/auth/2fa/disable", ["password": strongPassword, "totp_code": code()], headers: bearer(tokens))
            #expect(try disable.status == .unprocessableContent && problem(disable).errors?.first?.code == "blocked", "\(String(buffer: disable.body))")
            // The owner, with a recovery code, gets in (once this address's pause is over); codes are taken again.
            env.clock.advance(by: 3_600)
            let recovered = try await signIn(["recovery_code": recovery[0]])
            #expect(recovered.status == .ok, "\(String(buffer: recovered.body))")
            env.clock.advance(by: 60)
            #expect(try await signIn(["totp_code": code()]).status == .ok)
        }
    }

    @Test("a code sent again with the right password after it signed in (a client that retries) never pauses the owner's address: the next sign-in goes through", arguments: TestDatabaseKind.all)
    func doubleSubmittedCode(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "retrying@example.com")
            _ = try await client.execute(uri: "/api/auth/2fa/enroll", method: .post, headers: bearer(tokens))
            let user = try #require(try await User.query(on: env.database.db).filter(\.$email == "retrying@example.com").first())
            let sealed = try #require(user.totpSecretSealed)
            let secret = try #require(SecretBox(secretKey: env.configuration.secretKey, previousKeys: []).open(sealed))
            func code() -> String { String(format: "%06d", TOTP(secret: secret).compute(date: env.clock.now)) }
            let confirmed = try await post(client, "/api/auth/2fa/confirm", ["password": strongPassword, "totp_code": code()], headers: bearer(tokens))
            let recovery = try #require(try json(confirmed)["recovery_codes"] as? [String])
            env.clock.advance(by: 30)
            let body = ["email": "retrying@example.com", "password": strongPassword, "totp_code": code()]
            #expect(try await post(client, "/api/auth/login", body).status == .ok)
            for attempt in 1...8 {
                let again = try await post(client, "/api/auth/login", body)
                #expect(try again.status == .unauthorized && problem(again).detail == SecondFactorRefusal.codeAlreadyUsed.message, "send \(attempt)")
            }
            let recovered = try await post(client, "/api/auth/login", ["email": "retrying@example.com", "password": strongPassword, "recovery_code": recovery[0]])
            #expect(recovered.status == .ok, "not paused: \(String(buffer: recovered.body))")
            #expect(env.logs.lines.filter { $0.contains("code_already_used") }.count == 8, "each sent again is still recorded")
            // A wrong password is still counted, however it is sent.
            for _ in 0..<5 { _ = try await post(client, "/api/auth/login", ["email": "retrying@example.com", "password": "not the password at all", "totp_code": code()]) }
            #expect(try await post(client, "/api/auth/login", body).status == .tooManyRequests)
        }
    }

    @Test("a recovery code sent again just after it signed in, or several times at once (a double click), never pauses the owner's address; an old spent code still counts", arguments: TestDatabaseKind.all)
    func doubleSubmittedRecoveryCode(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "twice@example.com")
            _ = try await client.execute(uri: "/api/auth/2fa/enroll", method: .post, headers: bearer(tokens))
            let user = try #require(try await User.query(on: env.database.db).filter(\.$email == "twice@example.com").first())
            let sealed = try #require(user.totpSecretSealed)
            let secret = try #require(SecretBox(secretKey: env.configuration.secretKey, previousKeys: []).open(sealed))
            let confirmed = try await post(
                client, "/api/auth/2fa/confirm", ["password": strongPassword, "totp_code": String(format: "%06d", TOTP(secret: secret).compute(date: env.clock.now))],
                headers: bearer(tokens))
            let recovery = try #require(try json(confirmed)["recovery_codes"] as? [String])
            func signIn(_ code: String) async throws -> TestResponse {
                try await post(client, "/api/auth/login", ["email": "twice@example.com", "password": strongPassword, "recovery_code": code])
            }
            // Six at once: one signs in, the others are the same code sent again (one may find the address busy with
            // the five counted before any was checked: a 429 then, as for any burst, but nothing that lasts).
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for _ in 0..<6 { group.addTask { try await signIn(recovery[0]).status } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == .ok }.count == 1, "\(statuses)")
            #expect(statuses.allSatisfy { [.ok, .unauthorized, .tooManyRequests].contains($0) }, "\(statuses)")
            // And again, one by one, after it signed in.
            for _ in 0..<5 { #expect(try await signIn(recovery[0]).status == .unauthorized) }
            #expect(try await signIn(recovery[1]).status == .ok, "the owner's address is not paused")
            // A minute on, a spent code is a wrong one, and counted.
            env.clock.advance(by: 61)
            for _ in 0..<5 { #expect(try await signIn(recovery[0]).status == .unauthorized) }
            #expect(try await signIn(recovery[2]).status == .tooManyRequests)
        }
    }

    @Test("TOTP: enrol, confirm, login needs the code, recovery codes work once, disable needs password and code", arguments: TestDatabaseKind.all)
    func totp(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "twofa@example.com")
            let enrolled = try json(try await client.execute(uri: "/api/auth/2fa/enroll", method: .post, headers: bearer(tokens)))
            let uri = try #require(enrolled["otpauth_uri"] as? String)
            #expect(uri.hasPrefix("otpauth://totp/Folio:twofa@example.com?secret="))
            // An address with "+" keeps it (some apps read a bare "+" as a space); a code may be typed as apps show it.
            #expect(IdentityServices.authenticatorEntry(secret: "12345678901234567890", email: "a+b@example.com").uri.hasPrefix("otpauth://totp/Folio:a%2Bb@example.com?secret="))
            let now = env.clock.now, someCode = String(format: "%06d", TOTP(secret: "12345678901234567890").compute(date: now))
            #expect(IdentityServices.totpStep(code: someCode.prefix(3) + " " + someCode.dropFirst(3), secret: "12345678901234567890", at: now) != nil)
            #expect(IdentityServices.totpStep(code: someCode.prefix(3) + "-" + someCode.dropFirst(3), secret: "12345678901234567890", at: now) != nil)
            let drawn = try #require(enrolled["qr_code_svg"] as? String)
            #expect(drawn.hasPrefix("<svg ") && drawn == QRCode.authenticatorSVG(uri: uri), "the code an app scans holds the same URI")
            let user = try #require(try await User.query(on: env.database.db).filter(\.$email == "twofa@example.com").first())
            let sealed = try #require(user.totpSecretSealed)
            let secret = try #require(SecretBox(secretKey: env.configuration.secretKey, previousKeys: []).open(sealed))
            #expect(!(user.totpSecretSealed ?? "").contains(secret))
            func code() -> String { String(format: "%06d", TOTP(secret: secret).compute(date: env.clock.now)) }

            let wrongConfirm = try await post(client, "/api/auth/2fa/confirm", ["password": strongPassword, "totp_code": "000000"], headers: bearer(tokens))
            #expect(wrongConfirm.status == .unprocessableContent || code() == "000000")
            let noPassword = try await post(client, "/api/auth/2fa/confirm", ["password": "not my password", "totp_code": code()], headers: bearer(tokens))
            #expect(noPassword.status == .unprocessableContent)
            #expect(try problem(noPassword).errors?.first?.field == "password")
            let confirmed = try await post(client, "/api/auth/2fa/confirm", ["password": strongPassword, "totp_code": code()], headers: bearer(tokens))
            #expect(confirmed.status == .ok)
            let recovery = try #require(try json(confirmed)["recovery_codes"] as? [String])
            #expect(recovery.count == 10)
            #expect(Set(recovery).count == 10)
            #expect(recovery.allSatisfy { $0.count == 19 })
            #expect(try await env.outbox(kind: "two_factor_enabled").count == 1)
            let stored = try await RecoveryCode.query(on: env.database.db).all().map(\.codeHash)
            #expect(!stored.contains { $0.contains(IdentityServices.canonicalRecoveryCode(recovery[0])) })

            let withoutCode = try await post(client, "/api/auth/login", ["email": "twofa@example.com", "password": strongPassword])
            #expect(withoutCode.status == .unauthorized)
            #expect(try problem(withoutCode).code == "two_factor_required")
            // The code that confirmed enrolment is spent; the next step's code signs in, once.
            let replayedConfirmation = try await post(client, "/api/auth/login", ["email": "twofa@example.com", "password": strongPassword, "totp_code": code()])
            #expect(replayedConfirmation.status == .unauthorized)
            #expect(try problem(replayedConfirmation).code == "invalid_two_factor_code")
            env.clock.advance(by: 30)
            #expect(try await post(client, "/api/auth/login", ["email": "twofa@example.com", "password": strongPassword, "totp_code": code()]).status == .ok)
            let replayed = try await post(client, "/api/auth/login", ["email": "twofa@example.com", "password": strongPassword, "totp_code": code()])
            #expect(replayed.status == .unauthorized, "a code accepted once is refused for the rest of its window")
            #expect(try problem(replayed).code == "invalid_two_factor_code")
            #expect(try problem(replayed).detail == SecondFactorRefusal.codeAlreadyUsed.message, "a code typed twice is told apart from a wrong one")
            let wrongCode = try await post(client, "/api/auth/login", ["email": "twofa@example.com", "password": strongPassword, "totp_code": code() == "123456" ? "654321" : "123456"])
            #expect(try problem(wrongCode).detail == SecondFactorRefusal.wrongCode.message)
            #expect(try await post(client, "/api/auth/login", ["email": "twofa@example.com", "password": strongPassword, "recovery_code": recovery[0]]).status == .ok)
            let reused = try await post(client, "/api/auth/login", ["email": "twofa@example.com", "password": strongPassword, "recovery_code": recovery[0]])
            #expect(reused.status == .unauthorized)
            #expect(try problem(reused).code == "invalid_two_factor_code")
            #expect(try problem(reused).detail == SecondFactorRefusal.wrongRecoveryCode.message)

            #expect(try await post(client, "/api/auth/2fa/disable", ["password": "wrong password!!", "totp_code": code()], headers: bearer(tokens)).status == .unprocessableContent)
            #expect(try await post(client, "/api/auth/2fa/disable", ["password": strongPassword, "recovery_code": recovery[1].uppercased()], headers: bearer(tokens)).status == .noContent)
            let signedIn = try await post(client, "/api/auth/login", ["email": "twofa@example.com", "password": strongPassword])
            #expect(signedIn.status == .ok)

            // Enrolling again at once, in the time step last spent: that step was the old secret's, so the new secret's code counts.
            #expect(try await client.execute(uri: "/api/auth/2fa/enroll", method: .post, headers: bearer(try json(signedIn))).status == .ok)
            let reloaded = try #require(try await User.query(on: env.database.db).filter(\.$email == "twofa@example.com").first())
            let resealed = try #require(reloaded.totpSecretSealed)
            let newSecret = try #require(SecretBox(secretKey: env.configuration.secretKey, previousKeys: []).open(resealed))
            #expect(newSecret != secret)
            let newCode = String(format: "%06d", TOTP(secret: newSecret).compute(date: env.clock.now))
            let reconfirmed = try await post(client, "/api/auth/2fa/confirm", ["password": strongPassword, "totp_code": newCode], headers: bearer(try json(signedIn)))
            #expect(reconfirmed.status == .ok, "\(String(buffer: reconfirmed.body))")
        }
    }
}
