import Foundation
import HTTPTypes
import Hummingbird

/// CORS for the origins in ALLOWED_ORIGINS only, matched exactly. An allowed
/// origin is echoed (never `*`, since credentials are allowed); any other
/// origin, `null` included, gets no CORS headers, and its preflight is refused.
struct CORSMiddleware: RouterMiddleware {
    typealias Context = FolioRequestContext
    let allowedOrigins: Set<String>
    /// Folio's own origin: its pages send `Origin` on every POST, and a same-origin request is no CORS request.
    let ownOrigin: String?
    let security: SecurityEvents

    static let allowMethods = "GET, POST, PUT, PATCH, DELETE"
    static let allowHeaders = "Authorization, Content-Type, Idempotency-Key, X-CSRF-Token, X-Request-ID"
    /// What a page on an allowed origin may read of an answer: a CSV download's file name, and why a token was refused, too.
    static let exposeHeaders = "X-Request-ID, Retry-After, RateLimit, RateLimit-Policy, Location, Idempotent-Replayed, Content-Disposition, WWW-Authenticate"

    init(configuration: AppConfiguration, security: SecurityEvents) {
        self.allowedOrigins = Set(configuration.allowedOrigins.map(OriginGuardMiddleware.normalized))
        self.ownOrigin = OriginGuardMiddleware.ownOrigin(configuration)
        self.security = security
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // Every answer says it depends on Origin, with one or without: a shared cache must not hand the copy made
        // for a request without Origin (no CORS headers) to an allowed origin's fetch, or one origin's to another.
        guard let origin = request.headers[.origin] else { return Self.varyingOnOrigin(try await next(request, context)) }
        let normalized = OriginGuardMiddleware.normalized(origin)
        // The web app's own requests (its forms and fetches send Origin): nothing to allow, nothing refused.
        if normalized == ownOrigin, !allowedOrigins.contains(normalized) { return Self.varyingOnOrigin(try await next(request, context)) }
        let allowed = allowedOrigins.contains(normalized)

        if request.method == .options, request.headers[.accessControlRequestMethod] != nil {
            guard allowed else {
                await security.record("cors_refused", details: ["origin": String(origin.prefix(200)), "preflight": "true"], origin: context.origin)
                var response = ProblemMiddleware.response(
                    for: AppError(.forbidden, code: "cors_origin_refused", detail: "This origin may not call the API."), request: request, context: context)
                return Self.varyingOnOrigin(response)
            }
            var response = Response(status: .noContent)
            response.headers[.accessControlAllowOrigin] = origin
            response.headers[.accessControlAllowCredentials] = "true"
            response.headers[.accessControlAllowMethods] = Self.allowMethods
            response.headers[.accessControlAllowHeaders] = Self.allowHeaders
            response.headers[.accessControlMaxAge] = "600"
            return Self.varyingOnOrigin(response)
        }

        var response = Self.varyingOnOrigin(try await next(request, context))
        if allowed {
            response.headers[.accessControlAllowOrigin] = origin
            response.headers[.accessControlAllowCredentials] = "true"
            response.headers[.accessControlExposeHeaders] = Self.exposeHeaders
        } else {
            await security.record("cors_refused", details: ["origin": String(origin.prefix(200))], origin: context.origin)
        }
        return response
    }

    /// `Vary: Origin` added to what the response varies on already (never replacing it).
    static func varyingOnOrigin(_ response: Response) -> Response {
        var response = response
        let named = response.headers[values: .vary].flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        if !named.contains("origin"), !named.contains("*") { response.headers.append(HTTPField(name: .vary, value: "Origin")) }
        return response
    }
}
