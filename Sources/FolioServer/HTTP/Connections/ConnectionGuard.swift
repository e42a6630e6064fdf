import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTPTypes

/// Every open HTTP connection, and which of them are waiting for a request.
/// Past the limit, a new connection makes room by closing the connection
/// that has waited longest for a request head; when every connection is busy
/// with a request, the new one is closed instead. So a flood of half-open
/// connections (each sends part of a request, then nothing) can neither keep
/// fresh clients out nor use up the process's file descriptors.
final class ConnectionRegistry: Sendable {
    let limit: Int
    private let state = NIOLockedValueBox(State())

    private struct State {
        var connections: [ObjectIdentifier: Entry] = [:]
        var sequence: UInt64 = 0
    }

    private struct Entry {
        let channel: any Channel
        /// When (in `sequence` order) it began to wait for a request; nil while it has one in flight.
        var waitingSince: UInt64?
    }

    enum Admission {
        case admitted(closing: [any Channel])
        case refused
    }

    init(limit: Int) {
        self.limit = limit
    }

    /// Connections open, and those with a request in flight.
    var counts: (open: Int, busy: Int) {
        state.withLockedValue { state in (state.connections.count, state.connections.values.filter { $0.waitingSince == nil }.count) }
    }

    func opened(_ channel: any Channel) -> Admission {
        state.withLockedValue { state in
            var closing: [any Channel] = []
            while state.connections.count >= limit {
                let oldest = state.connections.filter { $0.value.waitingSince != nil }.min { $0.value.waitingSince! < $1.value.waitingSince! }
                guard let oldest else { break }
                state.connections[oldest.key] = nil
                closing.append(oldest.value.channel)
            }
            guard state.connections.count < limit else { return .refused }
            state.sequence += 1
            state.connections[ObjectIdentifier(channel)] = Entry(channel: channel, waitingSince: state.sequence)
            return .admitted(closing: closing)
        }
    }

    func waiting(_ channel: any Channel) {
        state.withLockedValue { state in
            state.sequence += 1
            state.connections[ObjectIdentifier(channel)]?.waitingSince = state.sequence
        }
    }

    func busy(_ channel: any Channel) {
        state.withLockedValue { $0.connections[ObjectIdentifier(channel)]?.waitingSince = nil }
    }

    func closed(_ channel: any Channel) {
        state.withLockedValue { _ = $0.connections.removeValue(forKey: ObjectIdentifier(channel)) }
    }
}

/// One per connection, after the HTTP decoder: registers the connection and
/// closes it when a deadline passes: the request head must arrive within the
/// header timeout, the body within the body timeout from the head, and a
/// kept-alive connection with nothing in flight is closed after the idle
/// timeout. The time a handler takes to answer is not limited here.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let registry: ConnectionRegistry
    let limits: AppConfiguration.ConnectionLimits
    let logger: Logger
    private var registered = false
    private var deadline: Scheduled<Void>?
    /// Requests whose head has arrived and whose response has not ended.
    private var inFlight = 0

    init(registry: ConnectionRegistry, limits: AppConfiguration.ConnectionLimits, logger: Logger) {
        self.registry = registry
        self.limits = limits
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { register(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        register(context)
        context.fireChannelActive()
    }

    private func register(_ context: ChannelHandlerContext) {
        guard !registered else { return }
        registered = true
        switch registry.opened(context.channel) {
        case .refused:
            logger.warning("connection refused: every connection is busy", metadata: ["limit": .stringConvertible(registry.limit)])
            context.close(promise: nil)
        case .admitted(let closing):
            if !closing.isEmpty {
                logger.notice("connections waiting for a request closed to make room", metadata: [
                    "closed": .stringConvertible(closing.count), "limit": .stringConvertible(registry.limit),
                ])
            }
            for channel in closing { channel.close(promise: nil) }
            arm(context, after: limits.headerTimeout, waitingFor: "a request head")
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            inFlight += 1
            registry.busy(context.channel)
            arm(context, after: limits.bodyTimeout, waitingFor: "the request body")
        case .body:
            break
        case .end:
            disarm()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            inFlight = max(inFlight - 1, 0)
            if inFlight == 0 {
                registry.waiting(context.channel)
                arm(context, after: limits.idleTimeout, waitingFor: "another request")
            }
        }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        unregister(context)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        unregister(context)
    }

    private func unregister(_ context: ChannelHandlerContext) {
        disarm()
        if registered { registry.closed(context.channel) }
        registered = false
    }

    private func arm(_ context: ChannelHandlerContext, after seconds: Double, waitingFor what: String) {
        disarm()
        let logger = self.logger
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(seconds * 1000))) {
            logger.debug("connection closed: it took too long to send \(what)")
            context.close(promise: nil)
        }
    }

    private func disarm() {
        deadline?.cancel()
        deadline = nil
    }
}
