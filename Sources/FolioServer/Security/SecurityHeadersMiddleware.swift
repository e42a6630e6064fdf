import Foundation
import HTTPTypes
import Hummingbird

/// Headers on every response: a locked-down CSP for a JSON API, no sniffing,
/// no referrer, no framing, no powerful features, no caching of API answers,
/// and HSTS in production.
struct SecurityHeadersMiddleware: RouterMiddleware {
    typealias Context = FolioRequestContext
    let production: Bool

    static let permissionsPolicy = HTTPField.Name("Permissions-Policy")!
    static let contentTypeOptions = HTTPField.Name("X-Content-Type-Options")!
    static let frameOptions = HTTPField.Name("X-Frame-Options")!
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!
    static let strictTransportSecurity = HTTPField.Name("Strict-Transport-Security")!

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        Self.apply(to: &response.headers, path: request.uri.path, production: production)
        return response
    }

    static func apply(to headers: inout HTTPFields, path: String, production: Bool) {
        // The web app's pages set their own (PageRenderer); everything else is locked down.
        if headers[.contentSecurityPolicy] == nil { headers[.contentSecurityPolicy] = "default-src 'none'; frame-ancestors 'none'" }
        headers[contentTypeOptions] = "nosniff"
        // Pages send their own (same-origin): a form they post must carry its Origin, which no-referrer turns into "null".
        if headers[referrerPolicy] == nil { headers[referrerPolicy] = "no-referrer" }
        headers[frameOptions] = "DENY"
        headers[permissionsPolicy] = "accelerometer=(), camera=(), geolocation=(), gyroscope=(), microphone=(), payment=(), usb=()"
        if path.hasPrefix("/api") || path.hasPrefix("/health/detailed") {
            headers[.cacheControl] = "no-store"
        }
        if production {
            headers[strictTransportSecurity] = "max-age=63072000; includeSubDomains"
        }
        headers[.server] = nil
    }
}
