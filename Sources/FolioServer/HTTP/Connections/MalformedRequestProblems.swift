import FolioDomain
import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes

/// When the HTTP decoder cannot read a request (a bad header name, CR or LF
/// in a value, headers too large or too many, a bad `Content-Length`, both
/// `Content-Length` and `Transfer-Encoding`, a bad chunk), Hummingbird answers
/// before any middleware runs, with an empty 400. This handler, next to the
/// decoder, turns that answer into the same problem+json every other error
/// gets: a stable code, a request id, the security headers, and
/// `Connection: close` (nothing after a broken request can be trusted).
final class MalformedRequestProblems: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let production: Bool
    let logger: Logger
    /// The decoder's error, once it has failed: the connection ends after it.
    private var parseError: HTTPParserError?
    /// Request heads read, and final answers begun: when they are equal, the
    /// latest request has its answer (pipelined requests each count).
    private var headsRead = 0
    private var answersBegun = 0
    /// A request's head has been read and its end not yet.
    private var requestOpen = false
    /// The decoder failed inside the body of the latest request (not in a new head).
    private var failedInBody = false
    private var replacement: ByteBuffer?
    private var dropping = false

    init(production: Bool, logger: Logger) {
        self.production = production
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            headsRead += 1
            requestOpen = true
        case .end:
            requestOpen = false
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? HTTPParserError, parseError == nil {
            parseError = error
            failedInBody = requestOpen
        }
        context.fireErrorCaught(error)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let response):
            if let parseError, response.status == .badRequest, response.headerFields[.contentType] == nil {
                // Hummingbird's own answer to the decoder's error.
                if failedInBody, answersBegun >= headsRead {
                    // The handler already answered this request (its body was the broken part): one answer is enough.
                    dropping = true
                    promise?.succeed()
                    return
                }
                let (head, body) = Self.problem(for: parseError, production: production, logger: logger)
                replacement = body
                answersBegun += 1
                context.write(wrapOutboundOut(.head(head)), promise: promise)
                return
            }
            if response.status.kind != .informational { answersBegun += 1 }
        case .body:
            if dropping {
                promise?.succeed()
                return
            }
        case .end:
            if dropping {
                dropping = false
                promise?.succeed()
                return
            }
            if let body = replacement {
                replacement = nil
                context.write(wrapOutboundOut(.body(body)), promise: nil)
            }
        }
        context.write(data, promise: promise)
    }

    static func problem(for error: HTTPParserError, production: Bool, logger: Logger) -> (HTTPResponse, ByteBuffer) {
        let requestID = UUID.random().lowercasedString
        let (status, code, detail) = describe(error)
        logger.info("malformed HTTP request", metadata: [
            "request_id": .string(requestID), "error": .string(String(describing: error)), "status": .stringConvertible(status.code),
        ])
        let problem = ProblemDetails(
            type: "urn:folio:problem:\(code)", title: status.reasonPhrase, status: status.code, detail: detail, code: code,
            errors: nil, requestID: requestID, checks: nil)
        let body = ByteBuffer(bytes: (try? FolioJSON.encode(problem)) ?? Data(#"{"status":400,"code":"malformed_request"}"#.utf8))
        var headers: HTTPFields = [
            .contentType: ProblemDetails.mediaType, .contentLength: String(body.readableBytes), .connection: "close",
            EdgeMiddleware.header: requestID,
        ]
        SecurityHeaders.apply(to: &headers, path: "/api", production: production)
        return (HTTPResponse(status: status, headerFields: headers), body)
    }

    /// The status, code and plain words for each way a request can be unreadable.
    static func describe(_ error: HTTPParserError) -> (HTTPResponse.Status, String, String) {
        switch error {
        case .headerOverflow:
            return (.requestHeaderFieldsTooLarge, "headers_too_large", "The request's headers are too large or too many.")
        case .invalidHeaderToken:
            return (.badRequest, "malformed_request", "A header name holds a character a header name may not.")
        case .lfExpected, .invalidConstant, .invalidCharactersUsed, .strictModeAssertion:
            return (.badRequest, "malformed_request", "A line of the request is not ended as HTTP requires, or a header value holds CR, LF or a control character.")
        case .invalidContentLength, .unexpectedContentLength:
            return (.badRequest, "malformed_request", "The Content-Length header is not a valid length, or comes with Transfer-Encoding.")
        case .invalidChunkSize:
            return (.badRequest, "malformed_request", "The chunked body has a chunk size that is not a hexadecimal number.")
        case .invalidHost:
            return (.badRequest, "malformed_request", "An HTTP/1.1 request must carry exactly one Host header, naming a host (and port) and nothing else; no request may carry two.")
        case .invalidMethod, .invalidURL, .invalidPath, .invalidQueryString, .invalidFragment, .invalidPort, .invalidVersion:
            return (.badRequest, "malformed_request", "The request line is not valid HTTP/1.1.")
        default:
            return (.badRequest, "malformed_request", "The request is not valid HTTP/1.1 (for example, Transfer-Encoding that cannot be read).")
        }
    }
}
