import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import SQLKit

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

    /// An existing email gets the same answer as a new one, after the same
    /// bcrypt work, so the endpoint does not reveal who has an account; the
    /// owner of the address is told by email instead (docs/SECURITY.md).
    @Sendable func register(_ request: Request, context: FolioRequestContext) async throws -> EditedResponse<Accepted> {
        let body = try await request.decodeBody(as: RegisterRequest.self, context: context)
        let email = IdentityServices.normalizedEmail(body.email)
        guard IdentityServices.isPlausibleEmail(email) else {
            throw AppError.validation(field: "email", code: "invalid", message: "Enter a valid email address.")
        }
        let problems = services.passwordPolicy.problems(password: body.password, email: email)
        if !problems.isEmpty { throw AppError.validation(problems, detail: problems[0].message) }

        let hash = try await services.hasher.hash(body.password)
        let db = services.database.db
        let now = services.clock.now()
        if let existing = try await services.findUser(email: email, on: db) {
            try await services.mailer.send(
                MailMessage(
                    userID: existing.id, recipient: existing.email, subject: "Someone tried to register with your email",
                    body: "Someone tried to create a Folio account with this address, which already has one. If it was you, sign in or reset your password at \(services.configuration.publicURL)/reset-password.",
                    kind: "duplicate_registration"),
                on: db, logger: context.logger)
        } else {
            let user = User(email: email, passwordHash: hash, now: now)
            do {
                try await db.transaction { db in
                    try await user.create(on: db)
                    try await services.audit.record(
                        .init(action: "user.registered", actorID: user.id, subjectType: "user", subjectID: user.id?.uuidString.lowercased(), userID: user.id),
                        context: context, on: db)
                    try await services.ledger.openPaperAccount(
                        for: UserID(user.id!), startingCash: services.configuration.startingCash,
                        context: AuditContext(ip: context.clientIP, requestID: context.requestID.isEmpty ? nil : context.requestID),
                        on: db as! any SQLDatabase)
                    try await sendVerification(to: user, context: context, on: db)
                }
            } catch where DatabaseConstraint(error)?.kind == .unique {
                // A concurrent registration of the same address won; answer the same way.
                context.logger.info("registration raced on a duplicate email")
            }
        }
        return EditedResponse(
            status: .created,
            response: Accepted(status: "verification_sent", message: "Check your email to verify your address, then sign in."))
    }

    func sendVerification(to user: User, context: FolioRequestContext, on db: any Database) async throws {
        let token = try await services.createEmailToken(for: user, purpose: .verifyEmail, lifetime: IdentityServices.emailTokenLifetime, on: db)
        try await services.mailer.send(
            MailMessage(
                userID: user.id, recipient: user.email, subject: "Verify your email for Folio",
                body: "Confirm your address within 24 hours: \(services.configuration.publicURL)/verify-email?token=\(token)",
                kind: "verify_email"),
            on: db, logger: context.logger)
    }

    struct TokenRequest: Decodable {
        var token: String
    }

    struct StatusResponse: ResponseEncodable {
        var status: String
    }

    @Sendable func verifyEmail(_ request: Request, context: FolioRequestContext) async throws -> StatusResponse {
        let body = try await request.decodeBody(as: TokenRequest.self, context: context)
        try await services.database.db.transaction { db in
            guard let user = try await services.consumeEmailToken(body.token, purpose: .verifyEmail, on: db) else {
                throw AppError.validation(field: "token", code: "invalid_token", message: "This verification link is invalid, used or expired.")
            }
            if user.emailVerifiedAt == nil {
                user.emailVerifiedAt = services.clock.now()
                user.updatedAt = services.clock.now()
                try await user.save(on: db)
            }
            try await services.audit.record(
                .init(action: "user.email_verified", actorID: user.id, subjectType: "user", subjectID: user.id?.uuidString.lowercased(), userID: user.id),
                context: context, on: db)
        }
        return StatusResponse(status: "verified")
    }

    struct EmailRequest: Decodable {
        var email: String
    }

    @Sendable func resendVerification(_ request: Request, context: FolioRequestContext) async throws -> EditedResponse<Accepted> {
        let body = try await request.decodeBody(as: EmailRequest.self, context: context)
        let db = services.database.db
        if let user = try await services.findUser(email: body.email, on: db), user.emailVerifiedAt == nil, !user.isDisabled {
            try await sendVerification(to: user, context: context, on: db)
        }
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

        enum CodingKeys: String, CodingKey {
            case email, password, session
            case totpCode = "totp_code"
            case recoveryCode = "recovery_code"
        }
    }

    struct TokenResponse: ResponseEncodable {
        var accessToken: String
        var tokenType = "bearer"
        var expiresIn: Int
        var refreshToken: String?
        var csrfToken: String?

        enum CodingKeys: String, CodingKey {
            case accessToken = "access_token"
            case tokenType = "token_type"
            case expiresIn = "expires_in"
            case refreshToken = "refresh_token"
            case csrfToken = "csrf_token"
        }
    }

    static let invalidCredentials = AppError(.unauthorized, code: "invalid_credentials", detail: "The email or password is wrong.")

    @Sendable func login(_ request: Request, context: FolioRequestContext) async throws -> Response {
        let body = try await request.decodeBody(as: LoginRequest.self, context: context)
        let kind: Session.Kind
        switch body.session {
        case nil, "bearer": kind = .bearer
        case "cookie": kind = .cookie
        default: throw AppError.validation(field: "session", code: "invalid", message: "session must be \"bearer\" or \"cookie\".")
        }
        let db = services.database.db
        // bcrypt reads a C string of at most 72 bytes: never let a NUL or an overlong tail count.
        let passwordUsable = PasswordPolicy.isHashable(body.password)

        guard let user = try await services.findUser(email: body.email, on: db) else {
            if case .locked(let wait) = services.loginThrottle.claimUnknown(email: IdentityServices.normalizedEmail(body.email)) {
                throw Self.tooManyAttempts(wait)
            }
            try await services.hasher.verifyAgainstDummy(body.password)
            await services.security.record("login_failed", details: ["reason": "unknown_email"], context: context, database: db)
            throw Self.invalidCredentials
        }
        let attempt: Int
        switch try await services.loginThrottle.claim(userID: user.id!, on: db) {
        case .locked(let wait):
            await services.security.record("login_locked", userID: user.id, context: context, database: db)
            throw Self.tooManyAttempts(wait)
        case .allowed(let number):
            attempt = number
        }
        let passwordMatches = try await services.hasher.verify(body.password, hash: user.passwordHash)
        guard passwordUsable, passwordMatches else {
            try await recordFailure(user: user, attempt: attempt, reason: "wrong_password", context: context)
            throw Self.invalidCredentials
        }
        if user.isDisabled {
            await services.security.record("login_refused", userID: user.id, details: ["reason": "disabled"], context: context, database: db)
            throw AppError(.forbidden, code: "account_disabled", detail: "This account is disabled.")
        }
        if user.hasTwoFactor {
            if body.totpCode == nil && body.recoveryCode == nil {
                // The attempt stays counted: otherwise asking without a code would reset the count between code guesses.
                throw AppError(.unauthorized, code: "two_factor_required", detail: "Enter the code from your authenticator app or a recovery code.")
            }
            guard try await TwoFactorController(services: services).acceptsSecondFactor(user: user, totpCode: body.totpCode, recoveryCode: body.recoveryCode, on: db) else {
                try await recordFailure(user: user, attempt: attempt, reason: "wrong_second_factor", context: context)
                throw AppError(.unauthorized, code: "invalid_two_factor_code", detail: "The authentication code is wrong.")
            }
        }
        try await services.loginThrottle.succeeded(userID: user.id!, on: db)
        if services.configuration.requireEmailVerification, user.emailVerifiedAt == nil {
            throw AppError(.forbidden, code: "email_not_verified", detail: "Verify your email address first; a new link can be requested.")
        }

        let (session, refreshToken) = try await db.transaction { db in
            let started = try await services.sessions.start(
                user: user, kind: kind, ip: context.clientIP, userAgent: request.headers[.userAgent], on: db)
            try await services.audit.record(
                .init(action: "security.login_succeeded", actorID: user.id, subjectType: "session", subjectID: started.0.id?.uuidString.lowercased(), userID: user.id,
                      details: ["session": kind.rawValue]),
                context: context, on: db)
            return started
        }
        return try await tokenResponse(user: user, session: session, refreshToken: refreshToken, kind: kind, request: request, context: context)
    }

    static func tooManyAttempts(_ wait: Int) -> AppError {
        AppError(
            .tooManyRequests, code: "too_many_attempts", detail: "Too many failed sign-ins. Try again in \(wait) seconds, or reset your password.",
            headers: [.retryAfter: String(wait)])
    }

    /// Records a failed attempt already counted by the throttle, and the wait it imposes.
    func recordFailure(user: User, attempt: Int, reason: String, context: FolioRequestContext) async throws {
        let db = services.database.db
        if let delay = try await services.loginThrottle.failed(userID: user.id!, attempt: attempt, on: db) {
            await services.security.record("login_lockout", userID: user.id, details: ["failures": String(attempt), "seconds": String(Int(delay))], context: context, database: db)
        }
        await services.security.record("login_failed", userID: user.id, details: ["reason": reason, "failures": String(attempt)], context: context, database: db)
    }

    func tokenResponse(user: User, session: Session, refreshToken: String, kind: Session.Kind, request: Request, context: FolioRequestContext) async throws -> Response {
        let accessToken = try await services.tokens.issue(userID: user.id!, sessionID: session.id!)
        let expiresIn = Int(services.configuration.accessTokenLifetime)
        var response: Response
        switch kind {
        case .bearer:
            response = try TokenResponse(accessToken: accessToken, expiresIn: expiresIn, refreshToken: refreshToken).response(from: request, context: context)
        case .cookie:
            response = try TokenResponse(accessToken: accessToken, expiresIn: expiresIn, csrfToken: services.csrf.token(for: session.id!))
                .response(from: request, context: context)
            response.setCookie(Self.sessionCookie(refreshToken, maxAge: Int(session.expiresAt.timeIntervalSince(services.clock.now()))))
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
        enum CodingKeys: String, CodingKey { case refreshToken = "refresh_token" }
    }

    @Sendable func refresh(_ request: Request, context: FolioRequestContext) async throws -> Response {
        let fromCookie = request.cookies[Self.cookieName]?.value
        var fromBody: String?
        if request.headers[.contentLength].flatMap(Int.init) ?? 0 > 0 || request.headers[.contentType] != nil {
            fromBody = try await request.decodeBody(as: RefreshRequest.self, context: context).refreshToken
        }
        guard let token = fromBody ?? fromCookie else {
            throw AppError.validation(field: "refresh_token", code: "required", message: "refresh_token is required.")
        }
        let kind: Session.Kind = fromBody == nil ? .cookie : .bearer
        switch try await services.sessions.refresh(token: token) {
        case .rotated(let user, let session, let next):
            return try await tokenResponse(user: user, session: session, refreshToken: next, kind: kind, request: request, context: context)
        case .reused(let userID):
            await services.security.record("refresh_token_reuse", userID: userID, context: context, database: services.database.db)
            throw AppError(.unauthorized, code: "invalid_refresh_token", detail: "The refresh token is invalid; sign in again.")
        case .invalid:
            await services.security.record("refresh_token_rejected", context: context)
            throw AppError(.unauthorized, code: "invalid_refresh_token", detail: "The refresh token is invalid; sign in again.")
        }
    }

    @Sendable func me(_ request: Request, context: AuthenticatedContext) async throws -> UserResponse {
        UserResponse(context.identity)
    }

    struct CSRFResponse: ResponseEncodable {
        var csrfToken: String
        enum CodingKeys: String, CodingKey { case csrfToken = "csrf_token" }
    }

    /// The session's CSRF token again, for a page that was reloaded: a safe GET,
    /// readable only by the origin (CORS), so it does not help another site.
    @Sendable func csrfToken(_ request: Request, context: AuthenticatedContext) async throws -> CSRFResponse {
        CSRFResponse(csrfToken: services.csrf.token(for: context.identity.sessionID.uuid))
    }

    @Sendable func logout(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await services.sessions.revoke(sessionID: context.identity.sessionID.uuid, reason: "logout", on: services.database.db)
        var response = Response(status: .noContent)
        response.setCookie(Self.sessionCookie("", maxAge: 0))
        return response
    }

    @Sendable func logoutAll(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        try await services.sessions.revokeAll(userID: context.identity.userID.uuid, reason: "logout_all", on: services.database.db)
        var response = Response(status: .noContent)
        response.setCookie(Self.sessionCookie("", maxAge: 0))
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
        enum CodingKeys: String, CodingKey {
            case id, kind, ip, current
            case createdAt = "created_at"
            case lastUsedAt = "last_used_at"
            case expiresAt = "expires_at"
            case userAgent = "user_agent"
        }
    }

    struct SessionList: ResponseEncodable {
        var data: [SessionItem]
    }

    /// The signed-in user's active sessions, newest first ("your devices").
    @Sendable func listSessions(_ request: Request, context: AuthenticatedContext) async throws -> SessionList {
        let now = services.clock.now()
        let sessions = try await Session.query(on: services.database.db)
            .filter(\.$userID == context.identity.userID.uuid).filter(\.$revokedAt == nil).filter(\.$expiresAt > now)
            .sort(\.$createdAt, .descending).limit(100).all()
        return SessionList(data: sessions.filter { $0.isActive(at: now, idleTimeout: services.configuration.sessionIdleTimeout) }.map {
            SessionItem(id: SessionID($0.id!), kind: $0.kind, createdAt: $0.createdAt, lastUsedAt: $0.lastUsedAt, expiresAt: $0.expiresAt,
                        ip: $0.ip, userAgent: $0.userAgent, current: $0.id == context.identity.sessionID.uuid)
        })
    }

    /// Ends one of the user's own sessions; another user's session is 404.
    @Sendable func revokeSession(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let id = try context.parameters.require("id", as: UUID.self)
        let db = services.database.db
        guard let session = try await Session.query(on: db).filter(\.$id == id).filter(\.$userID == context.identity.userID.uuid).first() else {
            throw AppError.notFound("session")
        }
        try await services.sessions.revoke(sessionID: session.id!, reason: "revoked_by_user", on: db)
        return Response(status: .noContent)
    }

    // MARK: - Passwords

    struct ChangePasswordRequest: Decodable {
        var currentPassword: String
        var newPassword: String
        enum CodingKeys: String, CodingKey {
            case currentPassword = "current_password"
            case newPassword = "new_password"
        }
    }

    @Sendable func changePassword(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let body = try await request.decodeBody(as: ChangePasswordRequest.self, context: context)
        guard let user = try await User.find(context.identity.userID.uuid, on: services.database.db) else { throw AppError.notFound("user") }
        guard try await services.hasher.verify(body.currentPassword, hash: user.passwordHash) else {
            throw AppError.validation(field: "current_password", code: "incorrect", message: "The current password is wrong.")
        }
        try await setPassword(user: user, to: body.newPassword, field: "new_password", reason: "password_changed", context: context.parent)
        var response = Response(status: .noContent)
        response.setCookie(Self.sessionCookie("", maxAge: 0))
        return response
    }

    @Sendable func requestPasswordReset(_ request: Request, context: FolioRequestContext) async throws -> EditedResponse<Accepted> {
        let body = try await request.decodeBody(as: EmailRequest.self, context: context)
        let db = services.database.db
        if let user = try await services.findUser(email: body.email, on: db), !user.isDisabled {
            let token = try await services.createEmailToken(for: user, purpose: .resetPassword, lifetime: IdentityServices.resetTokenLifetime, on: db)
            try await services.mailer.send(
                MailMessage(
                    userID: user.id, recipient: user.email, subject: "Reset your Folio password",
                    body: "Choose a new password within an hour: \(services.configuration.publicURL)/reset-password?token=\(token)\nIf you did not ask for this, ignore this message.",
                    kind: "reset_password"),
                on: db, logger: context.logger)
        }
        return EditedResponse(status: .accepted, response: Accepted(status: "accepted", message: "If an account uses that address, a reset link is on its way."))
    }

    struct ResetPasswordRequest: Decodable {
        var token: String
        var newPassword: String
        enum CodingKeys: String, CodingKey {
            case token
            case newPassword = "new_password"
        }
    }

    @Sendable func confirmPasswordReset(_ request: Request, context: FolioRequestContext) async throws -> Response {
        let body = try await request.decodeBody(as: ResetPasswordRequest.self, context: context)
        // The link is spent only together with a password the policy accepts.
        guard let (token, user) = try await services.findEmailToken(body.token, purpose: .resetPassword, on: services.database.db) else {
            throw Self.invalidResetLink
        }
        try await setPassword(user: user, to: body.newPassword, field: "new_password", reason: "password_reset", spending: token, context: context)
        return Response(status: .noContent)
    }

    /// Sets a new password, ends every session of the user (ASVS 2.2.3 / 3.3.3)
    /// and tells them by email.
    static let invalidResetLink = AppError.validation(field: "token", code: "invalid_token", message: "This reset link is invalid, used or expired.")

    func setPassword(
        user: User, to password: String, field: String, reason: String, spending resetToken: EmailToken? = nil, context: FolioRequestContext
    ) async throws {
        let problems = services.passwordPolicy.problems(password: password, email: user.email, field: field)
        if !problems.isEmpty { throw AppError.validation(problems, detail: problems[0].message) }
        let hash = try await services.hasher.hash(password)
        let now = services.clock.now()
        try await services.database.db.transaction { db in
            if let resetToken, !(try await services.spend(resetToken, on: db)) { throw Self.invalidResetLink }
            // Any other reset link dies with the old password.
            try await EmailToken.query(on: db).filter(\.$userID == user.id!).filter(\.$purpose == EmailToken.Purpose.resetPassword.rawValue)
                .filter(\.$usedAt == nil).set(\.$usedAt, to: now).update()
            user.passwordHash = hash
            user.passwordChangedAt = now
            user.updatedAt = now
            user.failedLoginCount = 0
            user.lockedUntil = nil
            // Following a reset link proves the address too.
            if reason == "password_reset", user.emailVerifiedAt == nil { user.emailVerifiedAt = now }
            try await user.save(on: db)
            try await services.sessions.revokeAll(userID: user.id!, reason: reason, on: db)
            try await services.audit.record(
                .init(action: "user." + reason, actorID: user.id, subjectType: "user", subjectID: user.id?.uuidString.lowercased(), userID: user.id),
                context: context, on: db)
            try await services.mailer.send(
                MailMessage(
                    userID: user.id, recipient: user.email, subject: "Your Folio password was changed",
                    body: "Your password was changed and every session was signed out. If this was not you, reset your password now and contact support.",
                    kind: "password_changed"),
                on: db, logger: context.logger)
        }
    }
}
