import Foundation
import HTTPTypes
import Hummingbird

/// The first CSRF line: an unsafe request that a browser marks cross-site, or
/// whose `Origin` is neither an allowed origin nor Folio's own, is refused
/// before any handler runs.
struct OriginGuardMiddleware: RouterMiddleware {
    typealias Context = FolioRequestContext
    let allowedOrigins: Set<String>
    let security: SecurityEvents
    /// Where Folio's pages are (`PUBLIC_URL`): a page opened at another address of the same server
    /// (localhost for 127.0.0.1, the bare domain for www) is told to open Folio there.
    let ownOrigin: String?

    static let fetchSite = HTTPField.Name("Sec-Fetch-Site")!

    init(configuration: AppConfiguration, security: SecurityEvents) {
        var origins = Set(configuration.allowedOrigins.map(Self.normalized))
        let own = Self.ownOrigin(configuration)
        if let own { origins.insert(own) }
        self.allowedOrigins = origins
        self.ownOrigin = own
        self.security = security
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // Webhooks come from vendors' servers, not browsers, and are verified by signature. A mail's one-click
        // unsubscribe may come from a webmail page on another site; its signed link is the whole authority, and it
        // can only turn mail off.
        guard !request.method.isSafe, !request.uri.path.hasPrefix("/webhooks/"), context.endpointPath != UnsubscribeLinks.path else {
            return try await next(request, context)
        }
        if request.headers[Self.fetchSite]?.lowercased() == "cross-site" {
            await security.record("csrf_failed", details: ["reason": "cross_site"], origin: context.origin)
            throw AppError(.forbidden, code: "csrf_failed", detail: "Cross-site requests may not change anything.")
        }
        if let origin = request.headers[.origin], !allowedOrigins.contains(Self.normalized(origin)) {
            await security.record("csrf_failed", details: ["reason": "foreign_origin", "origin": String(origin.prefix(200))], origin: context.origin)
            // The page's address is the field at fault, not its age: reloading it would not help.
            let remedy = ownOrigin.map { "Open Folio at \($0), then send it again from there." } ?? "Open Folio at its own address, then send it again from there."
            throw AppError(
                .forbidden, code: "csrf_failed", detail: "Requests from this origin may not change anything.",
                errors: [.init(field: "Origin", code: "foreign_origin", message: "This page is not at Folio's own address. \(remedy)")])
        }
        return try await next(request, context)
    }

    /// Folio's own origin (from `PUBLIC_URL`), normalized: its pages' requests are same-origin.
    static func ownOrigin(_ configuration: AppConfiguration) -> String? {
        guard let own = URLComponents(string: configuration.publicURL), let scheme = own.scheme, let host = own.host else { return nil }
        return normalized("\(scheme)://\(host)\(own.port.map { ":\($0)" } ?? "")")
    }

    /// Lower-cased, without a trailing slash or the scheme's default port (browsers never send those).
    static func normalized(_ origin: String) -> String {
        var text = origin.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "/ "))
        if text.hasPrefix("https://"), text.hasSuffix(":443") { text.removeLast(4) }
        if text.hasPrefix("http://"), text.hasSuffix(":80") { text.removeLast(3) }
        return text
    }
}
