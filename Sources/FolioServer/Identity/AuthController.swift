import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird

/// Registration, email verification, login, token refresh, logout, password
/// change and reset: `/api/auth/*`.
struct AuthController: Sendable {
    let services: IdentityServices

    static let cookieName = "__Host-folio_session"
    static let csrfHeader = HTTPField.Name("X-CSRF-Token")!

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let auth = router.group("/api/auth")
        auth.post("/register", use: register)
        auth.post("/verify-email", use: verifyEmail)
        auth.post("/resend-verification", use: resendVerification)
        auth.post("/login", use: login)
        auth.post("/refresh", use: refresh)
        auth.post("/password-reset/request", use: requestPasswordReset)
        auth.post("/password-reset/confirm", use: confirmPasswordReset)
        let signedIn = auth.group(context: AuthenticatedContext.self)
        signedIn.get("/me", use: me)
        signedIn.get("/csrf", use: csrfToken)
        signedIn.post("/logout", use: logout)
        signedIn.post("/logout-all", use: logoutAll)
        signedIn.post("/password", use: changePassword)
        signedIn.get("/sessions", use: listSessions)
        signedIn.delete("/sessions/:id", use: revokeSession)
    }

    // MARK: - Registration and verification

    struct RegisterRequest: Decodable {
        var email: String
        var password: String
    }

    struct Accepted: ResponseEncodable {
        var status: String
        var message: String
    }

    /// An existing email gets the same answer as a new one (`IdentityServices.register`).
    @Sendable func register(_ request: Request, context: FolioRequestContext) async throws -> EditedResponse<Accepted> {
        let body = try await request.decodeBody(as: RegisterRequest.self, context: context)
        try await services.register(email: body.email, password: body.password, origin: context.origin)
        return EditedResponse(
            status: .created,
            response: Accepted(
                status: "verification_sent",
                message: services.configuration.requireEmailVerification
                    ? "Check your email to verify your address, then sign in."
                    : "You can sign in now; Folio also sent a link to verify your address."))
    }

    struct TokenRequest: Decodable {
        var token: String
    }

    struct StatusResponse: ResponseEncodable {
        var status: String
    }

    @Sendable func verifyEmail(_ request: Request, context: FolioRequestContext) async throws -> StatusResponse {
        let body = try await request.decodeBody(as: TokenRequest.self, context: context)
        try await services.verifyEmail(token: body.token, origin: context.origin)
        return StatusResponse(status: "verified")
    }

    struct EmailRequest: Decodable {
        var email: String
    }

    @Sendable func resendVerification(_ request: Request, context: FolioRequestContext) async throws -> EditedResponse<Accepted> {
        let body = try await request.decodeBody(as: EmailRequest.self, context: context)
        try await services.resendVerification(email: body.email, origin: context.origin)
        return EditedResponse(status: .accepted, response: Accepted(status: "accepted", message: "If the address needs verifying, a new link is on its way."))
    }

    // MARK: - Login and tokens

    struct LoginRequest: Decodable {
        var email: String
        var password: String
        var totpCode: String?
        var recoveryCode: String?
        /// "cookie" for browsers: the refresh credential goes in an HttpOnly cookie.
        var session: String?
    }

    struct TokenResponse: ResponseEncodable {
        var accessToken: String
        var tokenType = "bearer"
        var expiresIn: Int
        var refreshToken: String?
        var csrfToken: String?
    }

    @Sendable func login(_ request: Request, context: FolioRequestContext) async throws -> Response {
        let body = try await request.decodeBody(as: LoginRequest.self, context: context)
        let kind: Session.Kind
        switch body.session {
        case nil, "bearer": kind = .bearer
        case "cookie": kind = .cookie
        default: throw FieldIssue(field: "session", code: "invalid", message: "session must be \"bearer\" or \"cookie\".")
        }
        let signedIn = try await services.signIn(
            email: body.email, password: body.password, totpCode: body.totpCode, recoveryCode: body.recoveryCode, kind: kind,
            userAgent: request.headers[.userAgent], origin: context.origin)
        return try await tokenResponse(signedIn, kind: kind, request: request, context: context)
    }

    func tokenResponse(_ signedIn: IdentityServices.SignedIn, kind: Session.Kind, request: Request, context: FolioRequestContext) async throws -> Response {
        let session = signedIn.session, refreshToken = signedIn.refreshToken
        let accessToken = try await services.tokens.issue(userID: signedIn.user.id!, sessionID: session.id!)
        let expiresIn = Int(services.configuration.accessTokenLifetime)
        var response: Response
        switch kind {
        case .bearer:
            response = try TokenResponse(accessToken: accessToken, expiresIn: expiresIn, refreshToken: refreshToken).response(from: request, context: context)
        case .cookie:
            response = try TokenResponse(accessToken: accessToken, expiresIn: expiresIn, csrfToken: services.csrf.token(for: session.id!))
                .response(from: request, context: context)
            response.setCookie(Self.sessionCookie(refreshToken, maxAge: Int(session.expiresAt.timeIntervalSince(services.clock.now()))))
            // A confirmation left unsaid belongs to whoever was here before.
            response.headers.append(PageRenderer.confirmationHeader(nil))
        }
        return response
    }

    /// `__Host-` cookies must be Secure, host-only and on `/`; browsers treat
    /// http://localhost as secure, so development works too.
    static func sessionCookie(_ value: String, maxAge: Int) -> Cookie {
        Cookie(name: cookieName, value: value, maxAge: max(0, maxAge), path: "/", secure: true, httpOnly: true, sameSite: .strict)
    }

    struct RefreshRequest: Decodable {
        var refreshToken: String?
    }

    @Sendable func refresh(_ request: Request, context: FolioRequestContext) async throws -> Response {
        let fromCookie = request.cookies[Self.cookieName]?.value
        var fromBody: String?
        if request.headers[.contentLength].flatMap(Int.init) ?? 0 > 0 || request.headers[.contentType] != nil {
            fromBody = try await request.decodeBody(as: RefreshRequest.self, context: context).refreshToken
        }
        guard let token = fromBody ?? fromCookie else {
            throw FieldIssue(field: "refresh_token", code: "required", message: "refresh_token is required.")
        }
        let kind: Session.Kind = fromBody == nil ? .cookie : .bearer
        let signedIn: IdentityServices.SignedIn
        do {
            signedIn = try await services.refresh(token: token, kind: kind, origin: context.origin)
        } catch IdentityError.invalidRefreshToken where kind == .cookie {
            // The cookie names no live session: the browser is told to drop it rather than send it on every request.
            // (Not for a race between tabs, `refreshRaced`: the browser's cookie is already the next one.)
            guard var problem = ProblemMapping.appError(for: IdentityError.invalidRefreshToken) else { throw IdentityError.invalidRefreshToken }
            problem.headers.append(HTTPField(name: .setCookie, value: Self.sessionCookie("", maxAge: 0).description))
            throw problem
        }
        return try await tokenResponse(signedIn, kind: kind, request: request, context: context)
    }

    @Sendable func me(_ request: Request, context: AuthenticatedContext) async throws -> UserResponse {
        UserResponse(context.identity)
    }

    struct CSRFResponse: ResponseEncodable {
        var csrfToken: String
    }

    /// The session's CSRF token again, for a page that was reloaded: a safe GET,
    /// readable only by the origin (CORS), so it does not help another site.
    @Sendable func csrfToken(_ request: Request, context: AuthenticatedContext) async throws -> CSRFResponse {
        CSRFResponse(csrfToken: services.csrf.token(for: context.identity.sessionID.uuid))
    }

    @Sendable func logout(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await services.signOut(context.identity)
        var response = Response(status: .noContent)
        response.setCookie(Self.sessionCookie("", maxAge: 0))
        response.headers.append(PageRenderer.confirmationHeader(nil))
        return response
    }

    @Sendable func logoutAll(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await services.signOutEverywhere(context.identity)
        var response = Response(status: .noContent)
        response.setCookie(Self.sessionCookie("", maxAge: 0))
        response.headers.append(PageRenderer.confirmationHeader(nil))
        return response
    }

    struct SessionItem: Encodable, Sendable {
        var id: SessionID
        var kind: String
        var createdAt: Date
        var lastUsedAt: Date
        var expiresAt: Date
        var ip: String?
        var userAgent: String?
        var current: Bool
    }

    struct SessionList: ResponseEncodable {
        var data: [SessionItem]
    }

    /// The signed-in user's active sessions, newest first ("your devices").
    @Sendable func listSessions(_ request: Request, context: AuthenticatedContext) async throws -> SessionList {
        let sessions = try await services.activeSessions(of: context.identity)
        return SessionList(data: sessions.map {
            SessionItem(id: SessionID($0.id!), kind: $0.kind, createdAt: $0.createdAt, lastUsedAt: $0.lastUsedAt, expiresAt: $0.expiresAt,
                        ip: $0.ip, userAgent: $0.userAgent, current: $0.id == context.identity.sessionID.uuid)
        })
    }

    /// Ends one of the user's own sessions; another user's session is 404.
    @Sendable func revokeSession(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        guard let id = context.parameters.get("id").flatMap(UUID.init(uuidString:)) else { throw IdentityError.sessionNotFound }
        try await services.revokeSession(id, of: context.identity)
        return Response(status: .noContent)
    }

    // MARK: - Passwords

    struct ChangePasswordRequest: Decodable {
        var currentPassword: String
        var newPassword: String
    }

    @Sendable func changePassword(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let body = try await request.decodeBody(as: ChangePasswordRequest.self, context: context)
        try await services.changePassword(of: context.identity, current: body.currentPassword, new: body.newPassword, origin: context.parent.origin)
        var response = Response(status: .noContent)
        response.setCookie(Self.sessionCookie("", maxAge: 0))
        return response
    }

    @Sendable func requestPasswordReset(_ request: Request, context: FolioRequestContext) async throws -> EditedResponse<Accepted> {
        let body = try await request.decodeBody(as: EmailRequest.self, context: context)
        try await services.requestPasswordReset(email: body.email, origin: context.origin)
        return EditedResponse(status: .accepted, response: Accepted(status: "accepted", message: "If an account uses that address, a reset link is on its way."))
    }

    struct ResetPasswordRequest: Decodable {
        var token: String
        var newPassword: String
    }

    @Sendable func confirmPasswordReset(_ request: Request, context: FolioRequestContext) async throws -> Response {
        let body = try await request.decodeBody(as: ResetPasswordRequest.self, context: context)
        try await services.confirmPasswordReset(token: body.token, newPassword: body.newPassword, origin: context.origin)
        return Response(status: .noContent)
    }
}
