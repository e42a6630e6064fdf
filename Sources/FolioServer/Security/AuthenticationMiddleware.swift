import Foundation
import HTTPTypes
import Hummingbird

/// Finds who is calling: a bearer access token, or the session cookie. A
/// bearer token that does not verify is refused (401). A cookie-borne unsafe
/// request must carry the session's CSRF token (403 otherwise); bearer
/// requests are not sent by browsers on their own and need none.
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = FolioRequestContext
    let services: IdentityServices

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        // Vendors' webhooks prove themselves by signature: credentials there are neither read nor refused.
        if request.uri.path.hasPrefix("/webhooks/") { return try await next(request, context) }
        // Health checks answer everyone; credentials there only unlock detail, never refuse. Metrics take the operators' token, which is no access token.
        let lenient = request.uri.path.hasPrefix("/health") || request.uri.path == "/metrics"
        if let authorization = request.headers[.authorization] {
            let (identity, expired) = try await bearerIdentity(authorization)
            guard let identity else {
                if lenient { return try await next(request, context) }
                // A genuine token past its 15 minutes is every client's routine, not an attack: it is
                // counted apart, so that FolioFailedAuthenticationBurst counts only tokens that never were valid.
                await services.security.record(
                    expired ? "token_expired" : "token_rejected", details: ["route": context.endpointPath ?? "unmatched"], origin: context.origin)
                throw AppError(
                    .unauthorized, code: "invalid_token", detail: "The access token is invalid, expired or revoked.",
                    headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""])
            }
            context.identity = identity
        } else if !Self.ignoresCookie(context.endpointPath), let cookie = request.cookies[AuthController.cookieName]?.value, !cookie.isEmpty,
                  let identity = try await services.sessions.identity(cookieToken: cookie) {
            if services.configuration.csrfProtectionEnabled, !request.method.isSafe {
                guard let token = request.headers[AuthController.csrfHeader], services.csrf.isValid(token, for: identity.sessionID.uuid) else {
                    await services.security.record(
                        "csrf_failed", userID: identity.userID.uuid, details: ["reason": "missing_or_wrong_token"], origin: context.origin,
                        audited: true)
                    throw AppError(.forbidden, code: "csrf_failed", detail: "This request needs the X-CSRF-Token header of your session.")
                }
            }
            context.identity = identity
        }
        if let identity = context.identity { context.facts.identity = identity }
        return try await next(request, context)
    }

    /// Routes that act on what the body says, never on who is signed in: a stale
    /// session cookie must not make them demand a CSRF token (the origin guard
    /// still protects them).
    static let cookieFreeRoutes: Set<String> = [
        "/api/auth/login", "/api/auth/register", "/api/auth/verify-email", "/api/auth/resend-verification",
        "/api/auth/password-reset/request", "/api/auth/password-reset/confirm",
        // The form bridge only forwards: the request it makes carries the cookie and the form's token, and is checked here.
        FormBridge.path,
        // The link's token is the whole authority (a mail app's one-click POST has no cookie; the page's button may).
        UnsubscribeLinks.path,
    ]

    static func ignoresCookie(_ route: String?) -> Bool {
        route.map { cookieFreeRoutes.contains($0) } ?? false
    }

    /// The credential of an `Authorization: Bearer …` header; the scheme is case-insensitive (RFC 9110 §11.1).
    static func bearerCredential(_ authorization: String) -> String? {
        guard authorization.count > 7, authorization.prefix(7).lowercased() == "bearer " else { return nil }
        return String(authorization.dropFirst(7)).trimmingCharacters(in: .whitespaces)
    }

    /// Whether the request presents the operators' OPS_TOKEN as its bearer token (compared in constant time).
    static func presentsOpsToken(_ request: Request, _ opsToken: String) -> Bool {
        guard let credential = request.headers[.authorization].flatMap(bearerCredential) else { return false }
        return ConstantTime.equals(credential, opsToken)
    }

    /// The identity behind a bearer token; nil when the token does not verify.
    /// A database failure is thrown (a 500), not mistaken for a bad token.
    /// `expired` tells a genuine token past its lifetime from any other refusal.
    func bearerIdentity(_ authorization: String) async throws -> (identity: Identity?, expired: Bool) {
        guard let token = Self.bearerCredential(authorization) else { return (nil, false) }
        switch await services.tokens.check(token) {
        case .valid(let userID, let sessionID):
            return (try await services.sessions.identity(userID: userID, sessionID: sessionID, credential: .bearer), false)
        case .expired: return (nil, true)
        case .invalid: return (nil, false)
        }
    }
}
extension HTTPRequest.Method {
    /// Methods that must not change state (RFC 9110 §9.2.1).
    var isSafe: Bool { self == .get || self == .head || self == .options || self == .trace }
}
