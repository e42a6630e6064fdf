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
        let user = context.identity.user
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

    struct CodeRequest: Decodable {
        var code: String
    }

    struct RecoveryCodesResponse: ResponseEncodable {
        var recoveryCodes: [String]
        enum CodingKeys: String, CodingKey { case recoveryCodes = "recovery_codes" }
    }

    @Sendable func confirm(_ request: Request, context: AuthenticatedContext) async throws -> RecoveryCodesResponse {
        let body = try await request.decodeBody(as: CodeRequest.self, context: context)
        let user = context.identity.user
        guard !user.hasTwoFactor, let sealed = user.totpSecretSealed, let secret = services.secretBox.open(sealed) else {
            throw AppError(.conflict, code: "two_factor_not_enrolling", detail: "Start enrolment first.")
        }
        guard Self.matches(code: body.code, secret: secret, at: services.clock.now()) else {
            throw AppError.validation(field: "code", code: "invalid_code", message: "The code does not match; check your device's clock.")
        }
        let now = services.clock.now()
        let codes = (0..<Self.recoveryCodeCount).map { _ in Self.newRecoveryCode() }
        try await services.database.db.transaction { db in
            user.totpEnabledAt = now
            user.updatedAt = now
            try await user.save(on: db)
            try await RecoveryCode.query(on: db).filter(\.$userID == user.id!).delete()
            for code in codes {
                try await RecoveryCode(userID: user.id!, codeHash: SecureToken.hash(Self.canonical(code)), now: now).create(on: db)
            }
            try await services.audit.record(
                .init(action: "user.two_factor_enabled", actorID: user.id, subjectType: "user", subjectID: user.id?.uuidString, userID: user.id),
                context: context.parent, on: db)
        }
        return RecoveryCodesResponse(recoveryCodes: codes)
    }

    struct DisableRequest: Decodable {
        var password: String
        var code: String
    }

    @Sendable func disable(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let body = try await request.decodeBody(as: DisableRequest.self, context: context)
        let user = context.identity.user
        guard user.hasTwoFactor else {
            throw AppError(.conflict, code: "two_factor_not_enabled", detail: "Two-factor authentication is not on.")
        }
        guard try await services.hasher.verify(body.password, hash: user.passwordHash) else {
            throw AppError.validation(field: "password", code: "incorrect", message: "The password is wrong.")
        }
        let db = services.database.db
        guard try await acceptsSecondFactor(user: user, totpCode: body.code, recoveryCode: body.code, on: db) else {
            throw AppError.validation(field: "code", code: "invalid_code", message: "The code is wrong.")
        }
        try await db.transaction { db in
            user.totpEnabledAt = nil
            user.totpSecretSealed = nil
            user.updatedAt = services.clock.now()
            try await user.save(on: db)
            try await RecoveryCode.query(on: db).filter(\.$userID == user.id!).delete()
            try await services.audit.record(
                .init(action: "user.two_factor_disabled", actorID: user.id, subjectType: "user", subjectID: user.id?.uuidString, userID: user.id),
                context: context.parent, on: db)
        }
        return Response(status: .noContent)
    }

    /// A current TOTP code (one step of clock drift either way) or an unused
    /// recovery code, which is spent.
    func acceptsSecondFactor(user: User, totpCode: String?, recoveryCode: String?, on db: any Database) async throws -> Bool {
        if let totpCode, let sealed = user.totpSecretSealed, let secret = services.secretBox.open(sealed),
           Self.matches(code: totpCode, secret: secret, at: services.clock.now()) {
            return true
        }
        guard let recoveryCode else { return false }
        let spent = try await (db as! any SQLDatabase).raw("""
            UPDATE recovery_codes SET used_at = \(bind: services.clock.now())
            WHERE user_id = \(bind: user.id!) AND code_hash = \(bind: SecureToken.hash(Self.canonical(recoveryCode))) AND used_at IS NULL
            RETURNING id
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

    static func newRecoveryCode() -> String {
        let alphabet = Array("abcdefghjkmnpqrstuvwxyz23456789")
        var generator = SystemRandomNumberGenerator()
        let characters = (0..<10).map { _ in alphabet.randomElement(using: &generator)! }
        return String(characters[0..<5]) + "-" + String(characters[5..<10])
    }

    static func canonical(_ code: String) -> String {
        code.lowercased().filter { $0.isLetter || $0.isNumber }
    }
}
