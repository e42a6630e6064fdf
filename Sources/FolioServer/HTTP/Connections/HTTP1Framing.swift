import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// The rules of HTTP/1.x that Hummingbird leaves to the application, applied
/// where the HTTP version is still known (the decoder's own parts, before they
/// become version-less HTTP types):
///
/// - An HTTP/1.1 request must carry exactly one Host header, and no request
///   more than one, and a Host is a host name or address with an optional
///   port (RFC 9112 §3.2): otherwise 400 and the connection closes, so two
///   readers (a proxy and Folio) never see different hosts.
/// - A connection ends after the answer when the request's Connection header
///   names `close` in any spelling (`Close`, `te, close`, a tab after it):
///   Hummingbird closes only on exactly `close`.
/// - An HTTP/1.0 request is answered as HTTP/1.0 and the connection ends
///   after it, keep-alive or not: an HTTP/1.1 answer's chunked body is one an
///   HTTP/1.0 client cannot read, and a chunked HTTP/1.0 request has faulty
///   framing (RFC 9112 §6.1).
/// - CONNECT and upgrade requests (Folio tunnels and upgrades nothing) get
///   their answer and the connection closes: after one, the decoder reads
///   nothing more, and the connection sat open and dead.
/// - `Expect: 100-continue` gets its `100 Continue` at once: the client
///   waits for it (curl a second) before it sends the body.
///
/// The answer of a connection that ends says `Connection: close`.
final class HTTP1Framing: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum Ending { case keptAlive, closed, closedHTTP10 }
    /// How each request read and not yet answered ends its connection, in order (pipelining).
    private var endings = CircularBuffer<Ending>()
    /// A request was refused for its Host: nothing after it is read.
    private var refused = false
    /// An answer's head is written and its end is not.
    private var answering = false
    /// The latest request asked for 100 Continue while an earlier one was being answered, and nothing of its
    /// body has come: it is sent when that answer ends.
    private var continueOwed = false
    /// The body size past which a request is refused (413) from its Content-Length: such a request gets no 100.
    let maxBodySize: Int

    init(maxBodySize: Int) {
        self.maxBodySize = maxBodySize
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        guard case .head(var head) = unwrapInboundIn(data) else {
            // The body is coming (or there is none): no 100 is owed.
            continueOwed = false
            return context.fireChannelRead(data)
        }
        let hosts = head.headers["host"]
        let http11 = (head.version.major, head.version.minor) >= (1, 1)
        if hosts.count > 1 || (hosts.isEmpty && http11) || !hosts.allSatisfy(Self.isHost) {
            refused = true
            context.fireErrorCaught(HTTPParserError.invalidHost)
            return
        }
        let tunnel = head.method == .CONNECT || head.headers.contains(name: "upgrade")
        let ending: Ending = if !http11 { .closedHTTP10 } else if tunnel || Self.asksToClose(head.headers) { .closed } else { .keptAlive }
        // Hummingbird ends the connection after the answer only when it reads exactly `close`.
        if ending != .keptAlive { head.headers.replaceOrAdd(name: "connection", value: "close") }
        if http11, head.headers["expect"].contains(where: { $0.trimmingCharacters(in: .whitespaces).lowercased() == "100-continue" }),
           head.headers["content-length"].first.flatMap(Int.init).map({ $0 <= allowance(head.uri) }) ?? true {
            // Not while an earlier pipelined request awaits or receives its answer (the 100 would read as that one's):
            // then when that answer ends. A body too large gets its 413 instead, without being sent.
            if endings.isEmpty, !answering { sendContinue(context) } else { continueOwed = true }
        }
        endings.append(ending)
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let part = unwrapOutboundIn(data)
        if case .end = part {
            answering = false
            context.write(data, promise: promise)
            // The request that waits for its 100 is the one left to answer.
            if continueOwed, endings.count == 1 {
                continueOwed = false
                sendContinue(context)
            }
            return
        }
        // A final answer (not 1xx) belongs to the oldest request not yet answered.
        guard case .head(var response) = part, response.status.code >= 200, let ending = endings.popFirst() else {
            return context.write(data, promise: promise)
        }
        answering = true
        // Answered before its body was asked for (a 401, say): no 100 is owed any more.
        if endings.isEmpty { continueOwed = false }
        switch ending {
        case .keptAlive: return context.write(data, promise: promise)
        case .closed: break
        case .closedHTTP10:
            // Without a length the body runs to the connection's end, which comes after it: never chunked.
            response.version = .http1_0
            response.headers.remove(name: "transfer-encoding")
        }
        response.headers.replaceOrAdd(name: "connection", value: "close")
        context.write(wrapOutboundOut(.head(response)), promise: promise)
    }

    /// Whether a Connection header names `close`, in any case, among other options, with spaces or tabs around it.
    static func asksToClose(_ headers: HTTPHeaders) -> Bool {
        headers["connection"].contains { value in
            value.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces).caseInsensitiveCompare("close") == .orderedSame }
        }
    }

    private func sendContinue(_ context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
    }

    /// The largest body `target`'s route takes (`RequestBodyMiddleware`'s rule).
    private func allowance(_ target: String) -> Int {
        let path = String(target.prefix { $0 != "?" })
        return SendGridWebhookController.isPath(path) ? max(maxBodySize, SendGridWebhookController.bodyLimit) : maxBodySize
    }

    /// A Host value (spaces and tabs around it are not part of it): empty, or a host name (letters, digits,
    /// `-`, `.`, `_`, `~`) or a bracketed IPv6 address, with an optional port up to 65535. Nothing else: no
    /// space, comma, path, user or second colon.
    static func isHost(_ raw: String) -> Bool {
        let value = raw.trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
        guard !value.isEmpty else { return true }
        guard value.utf8.count <= 261 else { return false }
        var port: Substring?
        if value.hasPrefix("[") {
            guard let close = value.firstIndex(of: "]") else { return false }
            let address = value[value.index(after: value.startIndex)..<close]
            guard !address.isEmpty, address.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return false }
            let rest = value[value.index(after: close)...]
            if !rest.isEmpty {
                guard rest.first == ":" else { return false }
                port = rest.dropFirst()
            }
        } else {
            let parts = value.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2, let name = parts.first, !name.isEmpty,
                  name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-._~".contains($0)) })
            else { return false }
            port = parts.count == 2 ? parts[1] : nil
        }
        if let port {
            guard port.count <= 5, port.allSatisfy({ $0.isASCII && $0.isNumber }), Int(port).map({ $0 <= 65_535 }) ?? true else { return false }
        }
        return true
    }
}

/// Hummingbird's HTTP/1.1 channel with `HTTP1Framing` between the decoder
/// and the conversion to HTTP types.
struct FramedHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = HTTP1Channel.Value
    let base: HTTP1Channel
    /// `MAX_BODY_SIZE`: a request whose Content-Length passes it gets no 100 Continue.
    let maxBodySize: Int

    var responder: Responder { base.responder }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(HTTP1Framing(maxBodySize: maxBodySize), position: .after(decoder))
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}
