import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// The outermost middleware, what every answer passes through last: it works
/// out the client's address (see `ClientAddress`), gives every request an id
/// (a valid incoming `X-Request-ID` or a new UUID) that goes on every log line
/// of the request and on the response, turns an error that got this far into
/// its problem answer, adds the security headers (`SecurityHeaders`), counts
/// the request in the metrics, and writes one access line with the route
/// pattern, never the raw path. One frame instead of three: on `/health` each
/// async middleware frame showed in profiles.
struct EdgeMiddleware: RouterMiddleware {
    typealias Context = FolioRequestContext

    static let header = HTTPField.Name("X-Request-ID")!
    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!
    let trustedProxies: TrustedProxies
    let production: Bool
    /// Nil when request metrics are off (`METRICS_ENABLED=false`).
    let metrics: FolioMetrics?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var context = context
        let requestID: String, loggedID: PlainLogValue
        if let incoming = request.headers[Self.header], let accepted = PlainLogValue.requestID(incoming) {
            (requestID, loggedID) = (incoming, accepted)
        } else {
            // Made here, so it needs no check.
            requestID = UUID.random().lowercasedString
            loggedID = .generatedRequestID(requestID)
        }
        context.requestID = requestID
        context.logger[metadataKey: "hb.request.id"] = nil
        context.logger[metadataKey: "request_id"] = .stringConvertible(loggedID)
        context.clientIP = ClientAddress.resolve(
            peer: context.peerAddress, forwardedFor: request.headers[Self.forwardedFor], trustedProxies: trustedProxies)

        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            // ProblemMiddleware turns errors into responses; this is the last guard.
            response = ProblemMiddleware.response(for: error, request: request, context: context)
        }
        SecurityHeaders.apply(to: &response.headers, path: request.uri.path, production: production)
        // A form's inner request (FormBridge) has set it already: replace, never repeat.
        response.headers.set(HTTPField(name: Self.header, value: requestID))
        let elapsed = ContinuousClock.now - start
        metrics?.recordRequest(route: context.endpointPath, method: request.method.rawValue, status: Int(response.status.code), duration: elapsed)
        Self.logAccess(
            to: context.logger, method: .method(request.method), route: .route(Self.routePattern(context.endpointPath)),
            status: .status(response.status.code), duration: .milliseconds(elapsed))
        return response
    }

    /// A client's id is kept only in the shapes proxies and tracing systems
    /// make: a UUID, or 16 to 64 hexadecimal digits (nginx's `$request_id`, a
    /// W3C trace id). Anything else, however plain, gets a new id: an id can
    /// neither forge log lines nor carry a password into the logs (it is
    /// logged and echoed without the redactor).
    static func acceptable(_ id: String) -> String? {
        let bytes = id.utf8
        func isHex(_ byte: UInt8) -> Bool { (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 70) || (byte >= 97 && byte <= 102) }
        if (16...64).contains(bytes.count), bytes.allSatisfy(isHex) { return id }
        if bytes.count == 36, UUID(uuidString: id) != nil { return id }
        return nil
    }

    /// Folio's own handler writes the line directly (`FolioLogHandler.logAccess`);
    /// any other handler gets the same fields through `info`.
    static func logAccess(to logger: Logger, method: PlainLogValue, route: PlainLogValue, status: PlainLogValue, duration: PlainLogValue) {
        if let folio = logger.handler as? FolioLogHandler {
            folio.logAccess(method: method, route: route, status: status, duration: duration)
            return
        }
        logger.info(
            "request",
            metadata: [
                "method": .stringConvertible(method), "route": .stringConvertible(route),
                "status": .stringConvertible(status), "duration_ms": .stringConvertible(duration),
            ])
    }

    static func routePattern(_ endpointPath: String?) -> String {
        guard let endpointPath, endpointPath != "NotFound" else { return "unmatched" }
        return endpointPath
    }
}
