import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird

/// `GET /api/me/export` (everything Folio holds about the caller, as a JSON
/// download) and `DELETE /api/me` (erasure, after the password and second factor).
struct PrivacyController: Sendable {
    let export: PersonalDataExport
    let erasure: PersonalDataErasure

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let me = router.group("/api/me", context: AuthenticatedContext.self)
        me.get("/export", use: exportData)
        me.delete("", use: erase)
    }

    @Sendable func exportData(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let userID = context.identity.userID, export = self.export
        let snapshot = try await export.snapshot(of: userID)
        let day = String(LogTimestamp.format(milliseconds: Int64(export.clock.now().timeIntervalSince1970 * 1000)).prefix(10))
        let body = ResponseBody { writer in
            try await snapshot.copy { bytes in try await writer.write(ByteBuffer(bytes: bytes)) }
            try await writer.finish(nil)
        }
        return Response(
            status: .ok,
            headers: [
                .contentType: "application/json; charset=utf-8", .contentDisposition: "attachment; filename=\"folio-export-\(day).json\"",
                .cacheControl: "no-store",
            ],
            body: body)
    }

    struct EraseRequest: Decodable {
        var password: String
        var totpCode: String?
        var recoveryCode: String?
    }

    @Sendable func erase(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let body = try await request.decodeBody(as: EraseRequest.self, context: context)
        try await erasure.confirm(context.identity, password: body.password, totpCode: body.totpCode, recoveryCode: body.recoveryCode, origin: context.origin)
        _ = try await erasure.erase(context.identity.userID, actor: context.identity.userID, origin: context.origin)
        var response = Response(status: .noContent)
        response.setCookie(AuthController.sessionCookie("", maxAge: 0))
        return response
    }
}
