import FluentKit
import Foundation
import Hummingbird
import HummingbirdOTP
import SQLKit

/// Optional TOTP two-factor authentication (RFC 6238): enrol, confirm with a
/// code (which turns it on and hands out ten single-use recovery codes),
/// disable with password and code. `/api/auth/2fa/*`.
struct TwoFactorController: Sendable {
    let services: IdentityServices

    static let recoveryCodeCount = 10
    static let issuer = "Folio"

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let group = router.group("/api/auth/2fa", context: AuthenticatedContext.self)
        group.post("/enroll", use: enroll)
        group.post("/confirm", use: confirm)
        group.post("/disable", use: disable)
    }

    struct EnrollResponse: ResponseEncodable {
        var secret: String
        var otpauthURI: String
        enum CodingKeys: String, CodingKey {
            case secret
            case otpauthURI = "otpauth_uri"
        }
    }

    @Sendable func enroll(_ request: Request, context: AuthenticatedContext) async throws -> EnrollResponse {
        let user = try await currentUser(context)
        if user.hasTwoFactor {
            throw AppError(.conflict, code: "two_factor_already_enabled", detail: "Two-factor authentication is already on; disable it first to enrol again.")
        }
        // 32 characters from a 32-letter alphabet: 160 bits, the RFC 4226 recommendation.
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        var generator = SystemRandomNumberGenerator()
        let secret = String((0..<32).map { _ in alphabet.randomElement(using: &generator)! })
        user.totpSecretSealed = try services.secretBox.seal(secret)
        user.updatedAt = services.clock.now()
        try await user.save(on: services.database.db)
        let totp = TOTP(secret: secret)
        let uri = totp.createAuthenticatorURL(label: "\(Self.issuer):\(user.email)", issuer: Self.issuer)
        let base32 = uri.components(separatedBy: "secret=").last?.components(separatedBy: "&").first ?? ""
        return EnrollResponse(secret: base32, otpauthURI: uri)
    }

    struct ConfirmRequest: Decodable {
        var password: String
        var totpCode: String
        enum CodingKeys: String, CodingKey {
            case password
            case totpCode = "totp_code"
        }
    }

    struct RecoveryCodesResponse: ResponseEncodable {
        var recoveryCodes: [String]
        enum CodingKeys: String, CodingKey { case recoveryCodes = "recovery_codes" }
    }

    @Sendable func confirm(_ request: Request, context: AuthenticatedContext) async throws -> RecoveryCodesResponse {
        let body = try await request.decodeBody(as: ConfirmRequest.self, context: context)
        let user = try await currentUser(context)
        guard !user.hasTwoFactor, let sealed = user.totpSecretSealed, let secret = services.secretBox.open(sealed) else {
            throw AppError(.conflict, code: "two_factor_not_enrolling", detail: "Start enrolment first.")
        }
        // A stolen session alone must not be able to put a second factor between the owner and the account.
        guard try await services.hasher.verify(body.password, hash: user.passwordHash) else {
            throw AppError.validation(field: "password", code: "incorrect", message: "The password is wrong.")
        }
        guard Self.matches(code: body.totpCode, secret: secret, at: services.clock.now()) else {
            throw AppError.validation(field: "totp_code", code: "invalid_code", message: "The code does not match; check your device's clock.")
        }
        let now = services.clock.now()
        let codes = (0..<Self.recoveryCodeCount).map { _ in Self.newRecoveryCode() }
        try await services.database.db.transaction { db in
            user.totpEnabledAt = now
            user.updatedAt = now
            try await user.save(on: db)
            try await RecoveryCode.query(on: db).filter(\.$userID == user.id!).delete()
            for code in codes {
                try await RecoveryCode(userID: user.id!, codeHash: SecretBox.saltedHash(Self.canonical(code)), now: now).create(on: db)
            }
            try await endOtherSessions(context: context, on: db)
            try await services.audit.record(
                .init(action: "user.two_factor_enabled", actorID: user.id, subjectType: "user", subjectID: user.id?.uuidString.lowercased(), userID: user.id),
                context: context.parent, on: db)
            try await notify(user, enabled: true, context: context, on: db)
        }
        return RecoveryCodesResponse(recoveryCodes: codes)
    }

    struct DisableRequest: Decodable {
        var password: String
        var totpCode: String?
        var recoveryCode: String?
        enum CodingKeys: String, CodingKey {
            case password
            case totpCode = "totp_code"
            case recoveryCode = "recovery_code"
        }
    }

    @Sendable func disable(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let body = try await request.decodeBody(as: DisableRequest.self, context: context)
        let user = try await currentUser(context)
        guard user.hasTwoFactor else {
            throw AppError(.conflict, code: "two_factor_not_enabled", detail: "Two-factor authentication is not on.")
        }
        guard try await services.hasher.verify(body.password, hash: user.passwordHash) else {
            throw AppError.validation(field: "password", code: "incorrect", message: "The password is wrong.")
        }
        let db = services.database.db
        guard try await acceptsSecondFactor(user: user, totpCode: body.totpCode, recoveryCode: body.recoveryCode, on: db) else {
            throw AppError.validation(field: "totp_code", code: "invalid_code", message: "The code is wrong.")
        }
        try await db.transaction { db in
            user.totpEnabledAt = nil
            user.totpSecretSealed = nil
            user.updatedAt = services.clock.now()
            try await user.save(on: db)
            try await RecoveryCode.query(on: db).filter(\.$userID == user.id!).delete()
            try await endOtherSessions(context: context, on: db)
            try await services.audit.record(
                .init(action: "user.two_factor_disabled", actorID: user.id, subjectType: "user", subjectID: user.id?.uuidString.lowercased(), userID: user.id),
                context: context.parent, on: db)
            try await notify(user, enabled: false, context: context, on: db)
        }
        return Response(status: .noContent)
    }

    /// Ends every session of the user but the current one: a change of second factor is a change of who can get in.
    func endOtherSessions(context: AuthenticatedContext, on db: any Database) async throws {
        try await services.sessions.revokeAll(
            userID: context.identity.userID.uuid, except: context.identity.sessionID.uuid, reason: "two_factor_changed", on: db)
    }

    func notify(_ user: User, enabled: Bool, context: AuthenticatedContext, on db: any Database) async throws {
        try await services.mailer.send(
            MailMessage(
                userID: user.id, recipient: user.email,
                subject: enabled ? "Two-factor authentication is on" : "Two-factor authentication is off",
                body: "Two-factor authentication was turned \(enabled ? "on" : "off") for your Folio account. If this was not you, reset your password now and contact support.",
                kind: enabled ? "two_factor_enabled" : "two_factor_disabled"),
            on: db, logger: context.logger)
    }

    /// A current TOTP code (one step of clock drift either way) or an unused
    /// recovery code, which is spent.
    func acceptsSecondFactor(user: User, totpCode: String?, recoveryCode: String?, on db: any Database) async throws -> Bool {
        if let totpCode, let sealed = user.totpSecretSealed, let (secret, old) = services.secretBox.openReportingKey(sealed),
           Self.matches(code: totpCode, secret: secret, at: services.clock.now()) {
            if old {
                // Sealed under a key that is being rotated out: seal it under the current one.
                try await User.query(on: db).filter(\.$id == user.id!).set(\.$totpSecretSealed, to: try services.secretBox.seal(secret)).update()
            }
            return true
        }
        guard let recoveryCode else { return false }
        let canonical = Self.canonical(recoveryCode)
        let unused = try await RecoveryCode.query(on: db).filter(\.$userID == user.id!).filter(\.$usedAt == nil).all()
        guard let match = unused.first(where: { SecretBox.matches(canonical, saltedHash: $0.codeHash) }) else { return false }
        let spent = try await (db as! any SQLDatabase).raw("""
            UPDATE recovery_codes SET used_at = \(bind: services.clock.now()) WHERE id = \(bind: match.id!) AND used_at IS NULL RETURNING id
            """).all()
        return !spent.isEmpty
    }

    static func matches(code: String, secret: String, at date: Date) -> Bool {
        let digits = code.filter { !$0.isWhitespace }
        guard digits.count == 6, digits.allSatisfy(\.isNumber) else { return false }
        let totp = TOTP(secret: secret)
        return [-30.0, 0, 30].contains { offset in
            String(format: "%06d", totp.compute(date: date.addingTimeInterval(offset))) == digits
        }
    }

    /// 16 characters from a 31-letter alphabet: 79 bits, stored salted (ASVS 2.6.2).
    static func newRecoveryCode() -> String {
        let alphabet = Array("abcdefghjkmnpqrstuvwxyz23456789")
        var generator = SystemRandomNumberGenerator()
        let characters = (0..<16).map { _ in alphabet.randomElement(using: &generator)! }
        return stride(from: 0, to: 16, by: 4).map { String(characters[$0..<$0 + 4]) }.joined(separator: "-")
    }

    static func canonical(_ code: String) -> String {
        code.lowercased().filter { $0.isLetter || $0.isNumber }
    }

    /// The signed-in user, loaded whole: these routes change it.
    func currentUser(_ context: AuthenticatedContext) async throws -> User {
        guard let user = try await User.find(context.identity.userID.uuid, on: services.database.db) else { throw AppError.notFound("user") }
        return user
    }
}
