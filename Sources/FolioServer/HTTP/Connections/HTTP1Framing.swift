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
///   more than one (RFC 9112 §3.2): otherwise 400 and the connection closes,
///   so two readers (a proxy and Folio) never see different hosts.
/// - A connection ends after the answer when the request asked for it in any
///   spelling (`Connection: Close`, `close, te`), and after an HTTP/1.0
///   request unless it asked to be kept alive: Hummingbird keeps a connection
///   open unless the header is exactly `close`, and an HTTP/1.0 client waiting
///   for the end of the connection waited for the idle timeout instead.
/// - CONNECT and upgrade requests (Folio tunnels and upgrades nothing) get
///   their answer and the connection closes: after one, the decoder reads
///   nothing more, and the connection sat open and dead.
///
/// The answer says which: `Connection: close`, or `keep-alive` to an
/// HTTP/1.0 client whose connection stays open.
final class HTTP1Framing: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum Ending { case keptAlive, keptAliveHTTP10, closed }
    /// How each request read and not yet answered ends its connection, in order (pipelining).
    private var endings = CircularBuffer<Ending>()
    /// A request was refused for its Host: nothing after it is read.
    private var refused = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        guard case .head(var head) = unwrapInboundIn(data) else { return context.fireChannelRead(data) }
        let hosts = head.headers["host"].count
        let atLeast11 = (head.version.major, head.version.minor) >= (1, 1)
        if hosts > 1 || (hosts == 0 && atLeast11) {
            refused = true
            context.fireErrorCaught(HTTPParserError.invalidHost)
            return
        }
        let tunnel = head.method == .CONNECT || head.headers.contains(name: "upgrade")
        let ending: Ending = if tunnel || !head.isKeepAlive { .closed } else if !atLeast11 { .keptAliveHTTP10 } else { .keptAlive }
        // Hummingbird ends the connection after the answer only when it reads exactly `close`.
        if ending == .closed { head.headers.replaceOrAdd(name: "connection", value: "close") }
        endings.append(ending)
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // A final answer (not 1xx) belongs to the oldest request not yet answered.
        guard case .head(var response) = unwrapOutboundIn(data), response.status.code >= 200, let ending = endings.popFirst() else {
            return context.write(data, promise: promise)
        }
        switch ending {
        case .closed: response.headers.replaceOrAdd(name: "connection", value: "close")
        case .keptAliveHTTP10: response.headers.replaceOrAdd(name: "connection", value: "keep-alive")
        case .keptAlive: break
        }
        context.write(wrapOutboundOut(.head(response)), promise: promise)
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
