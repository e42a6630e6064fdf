import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// Works out the client's address (see `ClientAddress`), gives every request an id (a valid incoming `X-Request-ID` or a new UUID),
/// puts it on every log line of the request and on the response, and writes
/// one access line per request with the route pattern, never the raw path.
struct RequestLoggingMiddleware: RouterMiddleware {
    typealias Context = FolioRequestContext

    static let header = HTTPField.Name("X-Request-ID")!
    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!
    let trustedProxies: Set<String>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var context = context
        let requestID = request.headers[Self.header].flatMap(Self.acceptable) ?? UUID.random().lowercasedString
        context.requestID = requestID
        context.logger[metadataKey: "hb.request.id"] = nil
        context.logger[metadataKey: "request_id"] = PlainLogValue.requestID(requestID).map { .stringConvertible($0) } ?? .string(requestID)
        context.clientIP = ClientAddress.resolve(
            peer: context.peerAddress, forwardedFor: request.headers[Self.forwardedFor], trustedProxies: trustedProxies)

        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            // ProblemMiddleware turns errors into responses; this is the last guard.
            response = ProblemMiddleware.response(for: error, request: request, context: context)
        }
        response.headers[Self.header] = requestID
        let elapsed = ContinuousClock.now - start
        context.logger.info(
            "request",
            metadata: [
                "method": .stringConvertible(PlainLogValue.method(request.method)),
                "route": .stringConvertible(PlainLogValue.route(Self.routePattern(context.endpointPath))),
                "status": .stringConvertible(PlainLogValue.status(response.status.code)),
                "duration_ms": .stringConvertible(PlainLogValue.milliseconds(elapsed)),
            ])
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

    static func routePattern(_ endpointPath: String?) -> String {
        guard let endpointPath, endpointPath != "NotFound" else { return "unmatched" }
        return endpointPath
    }
}
