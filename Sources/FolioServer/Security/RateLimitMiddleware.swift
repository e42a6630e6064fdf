import Foundation
import HTTPTypes
import Hummingbird

/// Throttles per client address (with a much tighter bucket on /api/auth/*)
/// and, once the caller is known, per signed-in user. Over the limit: 429 with
/// `Retry-After` and the IETF `RateLimit` / `RateLimit-Policy` headers
/// (draft-ietf-httpapi-ratelimit-headers).
///
/// The client scope sits outside the problem middleware and answers for
/// itself, so its headers reach every response, errors included; the user
/// scope sits after authentication.
///
/// The auth bucket is kept in the database (`SharedRateLimiter`), shared by
/// every instance, since it guards sign-in, registration and the mail they
/// send; the others are throttles kept in each instance's memory. When the
/// shared bucket cannot be read, the request is refused, not let through.
/// Every bucket counts a client by `ClientAddress.key` (an IPv6 /64 as one).
struct RateLimitMiddleware: RouterMiddleware {
    typealias Context = FolioRequestContext

    enum Scope {
        case client, user
    }

    let scope: Scope
    let settings: AppConfiguration.RateLimitSettings
    let limiter: RateLimiter
    let shared: SharedRateLimiter
    let security: SecurityEvents
    /// The web app's refusal page, for a browser's request outside `/api/` (as `ProblemMiddleware` answers those).
    /// A browser's refusal as a page: the problem, and whether a form was sent (a POST).
    var refusalPage: (@Sendable (AppError, Bool) -> Response)? = nil

    static let policyHeader = HTTPField.Name("RateLimit-Policy")!
    static let stateHeader = HTTPField.Name("RateLimit")!

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard settings.enabled else { return try await next(request, context) }
        var checks: [(policy: String, key: String, perMinute: Int, shared: Bool)] = []
        switch scope {
        case .client:
            // An IPv6 client is one /64: a host that can pick any address in it gets no more buckets.
            let client = ClientAddress.key(context.clientIP)
            if request.uri.path.hasPrefix("/webhooks/") {
                // Webhooks keep a bucket of their own: a vendor's burst does not starve the API, nor a flood of forgeries the vendor.
                checks.append(("webhook", "webhook:" + client, settings.webhookRequestsPerMinute, false))
                break
            }
            // A form's API request: the form was counted already (one request of the person's, not two).
            if !context.forwardedFromForm { checks.append(("ip", "ip:" + client, settings.requestsPerMinute, false)) }
            // The route pattern, not the raw path: `/api//auth/login` reaches the same route. Reads of the
            // signed-in person (`GET /api/auth/me`, its sessions, its CSRF token) check no credential and send no
            // mail: they do not spend the sign-in allowance of everyone behind the address.
            let route = context.endpointPath ?? request.uri.path
            if route.hasPrefix("/api/auth/") || request.uri.path.contains("/auth/"), request.method != .get, request.method != .head {
                checks.append(("auth", "auth:" + client, settings.authRequestsPerMinute, true))
            }
        case .user:
            guard let userID = context.identity?.userID else { return try await next(request, context) }
            checks.append(("user", "user:" + userID.description, settings.requestsPerMinute, false))
        }

        // The tightest bucket speaks for the request.
        var tightest: (policy: String, decision: RateLimiter.Decision)?
        for check in checks {
            let decision: RateLimiter.Decision
            if check.shared {
                // This instance's own count goes first: what it refuses the shared bucket would refuse
                // too (it counts every instance's requests), and a flood is turned away without a write.
                let local = limiter.take(check.key, perMinute: check.perMinute)
                do {
                    decision = local.allowed ? try await shared.take(check.key, perMinute: check.perMinute) : local
                } catch {
                    // A limit that cannot be checked denies (503 when the database is busy or away).
                    context.logger.error("shared rate limit unavailable", metadata: ["error": .string(DatabaseErrorText.forLog(error))])
                    return ProblemMiddleware.response(for: Self.unavailable(error), request: request, context: context)
                }
            } else {
                decision = limiter.take(check.key, perMinute: check.perMinute)
            }
            if !decision.allowed {
                await security.record("rate_limited", userID: context.identity?.userID.uuid, byUser: true, details: ["policy": check.policy], origin: context.origin)
                var headers = Self.headers(policy: check.policy, decision: decision)
                headers[.retryAfter] = String(max(1, decision.retryAfter))
                let error = AppError(
                    .tooManyRequests, code: "rate_limited",
                    detail: "Too many requests; try again in \(max(1, decision.retryAfter)) seconds.", headers: headers)
                if scope == .user { throw error }
                return refuse(error, request, context)
            }
            if tightest == nil || decision.remaining < tightest!.decision.remaining { tightest = (check.policy, decision) }
        }
        var response = try await next(request, context)
        // The user scope inside has said its own; the client's bucket speaks instead when it has fewer left.
        if let tightest, response.headers[Self.stateHeader].flatMap(Self.remaining).map({ tightest.decision.remaining < $0 }) ?? true {
            for field in Self.headers(policy: tightest.policy, decision: tightest.decision) { response.headers[field.name] = field.value }
        }
        return response
    }

    /// The `r` of a `RateLimit` field: what its bucket has left.
    static func remaining(_ state: String) -> Int? {
        state.split(separator: ";").first { $0.hasPrefix("r=") }.flatMap { Int($0.dropFirst(2)) }
    }

    /// A refusal answered here (outside the problem middleware): the refusal page for a browser's
    /// page, problem JSON otherwise; the rate-limit headers either way.
    private func refuse(_ error: AppError, _ request: Request, _ context: Context) -> Response {
        guard let refusalPage, ProblemMiddleware.isBrowserPage(request) else { return ProblemMiddleware.response(for: error, context: context) }
        var page = refusalPage(error, request.method == .post)
        for field in error.headers where page.headers[field.name] == nil { page.headers.append(field) }
        return page
    }

    /// The answer when the shared bucket cannot be read: the database's own
    /// answer when it has one (busy), otherwise 503 rather than a bare 500.
    static func unavailable(_ error: any Error) -> any Error {
        if FolioDatabase.isBusy(error) { return error }
        return AppError(
            .serviceUnavailable, code: "rate_limit_unavailable",
            detail: "The request could not be checked against its rate limit; try again in a moment.", headers: [.retryAfter: "1"])
    }

    static func headers(policy: String, decision: RateLimiter.Decision) -> HTTPFields {
        [
            policyHeader: "\"\(policy)\";q=\(decision.limit);w=60",
            stateHeader: "\"\(policy)\";r=\(decision.remaining);t=\(decision.reset)",
        ]
    }
}
