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

    /// Client-chosen ids are kept only when short and plain, so they cannot
    /// forge log lines or carry data.
    static func acceptable(_ id: String) -> String? {
        guard (8...128).contains(id.utf8.count),
              id.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 || $0 == 46 })
        else { return nil }
        return id
    }

    static func routePattern(_ endpointPath: String?) -> String {
        guard let endpointPath, endpointPath != "NotFound" else { return "unmatched" }
        return endpointPath
    }
}
