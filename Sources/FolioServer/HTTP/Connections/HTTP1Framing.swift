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

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        guard case .head(var head) = unwrapInboundIn(data) else { return context.fireChannelRead(data) }
        let hosts = head.headers["host"]
        let http11 = (head.version.major, head.version.minor) >= (1, 1)
        if hosts.count > 1 || (hosts.isEmpty && http11) || !hosts.allSatisfy(Self.isHost) {
            refused = true
            context.fireErrorCaught(HTTPParserError.invalidHost)
            return
        }
        let connection = Set(head.headers["connection"].flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces).lowercased() })
        let tunnel = head.method == .CONNECT || head.headers.contains(name: "upgrade")
        let ending: Ending = if !http11 { .closedHTTP10 } else if tunnel || connection.contains("close") { .closed } else { .keptAlive }
        // Hummingbird ends the connection after the answer only when it reads exactly `close`.
        if ending != .keptAlive { head.headers.replaceOrAdd(name: "connection", value: "close") }
        // (Not while an earlier pipelined request awaits or receives its answer: the 100 would read as that one's.)
        if http11, endings.isEmpty, !answering, head.headers["expect"].contains(where: { $0.trimmingCharacters(in: .whitespaces).lowercased() == "100-continue" }) {
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
        }
        endings.append(ending)
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let part = unwrapOutboundIn(data)
        if case .end = part { answering = false }
        // A final answer (not 1xx) belongs to the oldest request not yet answered.
        guard case .head(var response) = part, response.status.code >= 200, let ending = endings.popFirst() else {
            return context.write(data, promise: promise)
        }
        answering = true
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

    /// A Host value: empty, or a name or address with an optional port, nothing else (no space, comma, path or user).
    static func isHost(_ value: String) -> Bool {
        value.unicodeScalars.allSatisfy { scalar in
            scalar.value > 0x20 && scalar.value < 0x7F && !",/\\@?#\"<>{}|^`".unicodeScalars.contains(scalar)
        }
    }
}

/// Hummingbird's HTTP/1.1 channel with `HTTP1Framing` between the decoder
/// and the conversion to HTTP types.
struct FramedHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = HTTP1Channel.Value
    let base: HTTP1Channel

    var responder: Responder { base.responder }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(HTTP1Framing(), position: .after(decoder))
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}
