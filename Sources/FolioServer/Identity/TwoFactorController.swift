import Foundation
import Hummingbird

/// Optional TOTP two-factor authentication: `/api/auth/2fa/*`
/// (the flows are `IdentityServices`' in TwoFactor.swift).
struct TwoFactorController: Sendable {
    let services: IdentityServices

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let group = router.group("/api/auth/2fa", context: AuthenticatedContext.self)
        group.get(use: status)
        group.post("/enroll", use: enroll)
        group.post("/recovery-codes", use: replaceRecoveryCodes)
        group.post("/confirm", use: confirm)
        group.post("/disable", use: disable)
    }

    struct StatusResponse: ResponseEncodable {
        var enabled: Bool
        /// Unused recovery codes; absent while two-factor is off.
        var recoveryCodesLeft: Int?
    }

    @Sendable func status(_ request: Request, context: AuthenticatedContext) async throws -> StatusResponse {
        StatusResponse(enabled: context.identity.twoFactorEnabled, recoveryCodesLeft: try await services.recoveryCodesLeft(context.identity))
    }

    struct EnrollResponse: ResponseEncodable {
        var secret: String
        var otpauthURI: String
        /// The URI as a QR code (an SVG image), for the app to scan.
        var qrCodeSVG: String?
    }

    @Sendable func enroll(_ request: Request, context: AuthenticatedContext) async throws -> EnrollResponse {
        let enrolment = try await services.enrollTwoFactor(context.identity)
        return EnrollResponse(secret: enrolment.secret, otpauthURI: enrolment.uri, qrCodeSVG: QRCode.authenticatorSVG(uri: enrolment.uri))
    }

    struct ConfirmRequest: Decodable {
        var password: String
        var totpCode: String
    }

    struct RecoveryCodesResponse: ResponseEncodable {
        var recoveryCodes: [String]
    }

    @Sendable func confirm(_ request: Request, context: AuthenticatedContext) async throws -> RecoveryCodesResponse {
        let body = try await request.decodeBody(as: ConfirmRequest.self, context: context)
        let codes = try await services.confirmTwoFactor(context.identity, password: body.password, totpCode: body.totpCode, origin: context.origin)
        return RecoveryCodesResponse(recoveryCodes: codes)
    }

    /// The password and a current code, or one of the old recovery codes.
    struct ReauthenticationRequest: Decodable {
        var password: String
        var totpCode: String?
        var recoveryCode: String?
    }

    @Sendable func replaceRecoveryCodes(_ request: Request, context: AuthenticatedContext) async throws -> RecoveryCodesResponse {
        let body = try await request.decodeBody(as: ReauthenticationRequest.self, context: context)
        let codes = try await services.replaceRecoveryCodes(
            context.identity, password: body.password, totpCode: body.totpCode, recoveryCode: body.recoveryCode, origin: context.origin)
        return RecoveryCodesResponse(recoveryCodes: codes)
    }

    @Sendable func disable(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let body = try await request.decodeBody(as: ReauthenticationRequest.self, context: context)
        try await services.disableTwoFactor(
            context.identity, password: body.password, totpCode: body.totpCode, recoveryCode: body.recoveryCode, origin: context.origin)
        return Response(status: .noContent)
    }
}
