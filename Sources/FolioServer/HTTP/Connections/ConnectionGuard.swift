import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTPTypes
import Synchronization

/// Every open HTTP connection, and which of them are waiting on their client
/// (for a request head, or for the rest of a request's body). Past the limit,
/// a new connection makes room by closing the connection that has waited
/// longest on its client; when every connection is busy with a request the
/// server is answering, the new one is closed instead. So a flood of
/// half-open connections (each sends part of a request's head or body, then
/// nothing) can neither keep fresh clients out nor use up the process's file
/// descriptors. A request whose body is not in yet has done nothing: the body
/// middleware reads a POST's, PUT's, PATCH's or DELETE's whole body before any
/// handler runs. A connection chosen to make room is marked claimed
/// atomically, and from then on its reads go no further: a request whose end
/// arrives while it is being closed never reaches a handler.
///
/// The lock is taken when a connection opens or closes, not per request: a
/// request only stores into its connection's atomic `waitingSince`.
final class ConnectionRegistry: Sendable {
    let limit: Int
    private let connections = NIOLockedValueBox<[ObjectIdentifier: TrackedConnection]>([:])
    /// Orders "began waiting" moments; atomic, so requests never take the lock.
    private let clock = Atomic<UInt64>(0)

    /// One connection as the registry sees it.
    final class TrackedConnection: Sendable {
        let channel: any Channel
        /// When (in the registry's order) it began to wait on its client; 0 while the server answers a request;
        /// `claimed` once it was chosen to be closed to make room.
        let waitingSince = Atomic<UInt64>(0)
        static let claimed = UInt64.max

        var isClaimed: Bool { waitingSince.load(ordering: .relaxed) == Self.claimed }

        init(channel: any Channel) {
            self.channel = channel
        }
    }

    enum Admission {
        case admitted(TrackedConnection, closing: [any Channel])
        case refused
    }

    init(limit: Int) {
        self.limit = limit
    }

    /// Connections open, and those with a request in flight.
    var counts: (open: Int, busy: Int) {
        connections.withLockedValue { open in (open.count, open.values.filter { $0.waitingSince.load(ordering: .relaxed) == 0 }.count) }
    }

    func opened(_ channel: any Channel) -> Admission {
        let connection = TrackedConnection(channel: channel)
        connection.waitingSince.store(tick(), ordering: .relaxed)
        return connections.withLockedValue { open in
            var closing: [any Channel] = []
            while open.count >= limit {
                var oldest: (key: ObjectIdentifier, since: UInt64)?
                for (key, other) in open {
                    let since = other.waitingSince.load(ordering: .relaxed)
                    if since != 0, since != TrackedConnection.claimed, since < oldest?.since ?? .max { oldest = (key, since) }
                }
                guard let oldest, let candidate = open[oldest.key] else { break }
                open[oldest.key] = nil
                // Claimed only if still waiting: a head that arrived since the scan (on its own event loop) keeps its connection.
                if candidate.waitingSince.compareExchange(expected: oldest.since, desired: TrackedConnection.claimed, ordering: .relaxed).exchanged {
                    closing.append(candidate.channel)
                } else {
                    open[oldest.key] = candidate
                    continue
                }
            }
            guard open.count < limit else { return .refused }
            open[ObjectIdentifier(channel)] = connection
            return .admitted(connection, closing: closing)
        }
    }

    func waiting(_ connection: TrackedConnection) {
        let now = tick()
        var seen = connection.waitingSince.load(ordering: .relaxed)
        while seen != TrackedConnection.claimed {
            let (exchanged, actual) = connection.waitingSince.compareExchange(expected: seen, desired: now, ordering: .relaxed)
            if exchanged { return }
            seen = actual
        }
    }

    /// Marks the connection busy; false when it was already claimed to make room (its request must go no further).
    func busy(_ connection: TrackedConnection) -> Bool {
        var seen = connection.waitingSince.load(ordering: .relaxed)
        while seen != TrackedConnection.claimed {
            let (exchanged, actual) = connection.waitingSince.compareExchange(expected: seen, desired: 0, ordering: .relaxed)
            if exchanged { return true }
            seen = actual
        }
        return false
    }

    func closed(_ channel: any Channel) {
        connections.withLockedValue { _ = $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    private func tick() -> UInt64 {
        clock.wrappingAdd(1, ordering: .relaxed).newValue
    }
}

/// One per connection, after the HTTP decoder: registers the connection and
/// closes it when a deadline passes: the request head must arrive within the
/// header timeout, the body within the body timeout from the head, a
/// kept-alive connection with nothing in flight is closed after the idle
/// timeout, and a client that stops reading its answers (the socket stays
/// unwritable) is closed after the idle timeout too, so it cannot hold a
/// connection "busy" for ever. The time a handler takes to answer is not
/// limited here.
///
/// A request only moves the deadline; one timer per connection checks it when
/// it fires and sets itself again for a deadline that moved, so a busy
/// connection does not schedule and cancel timers for every request.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let registry: ConnectionRegistry
    let limits: AppConfiguration.ConnectionLimits
    let logger: Logger
    private var tracked: ConnectionRegistry.TrackedConnection?
    private var registered = false
    /// When the connection is closed unless something moves it; nil while a handler answers.
    private var deadline: NIODeadline?
    private var waitingFor = "a request head"
    /// Set while the socket cannot take more of the answer: the client is not reading.
    private var writeDeadline: NIODeadline?
    private var timer: Scheduled<Void>?
    private var timerFiresAt: NIODeadline?
    /// Requests whose head has arrived and whose response has not ended.
    private var inFlight = 0
    /// The latest request's head has arrived and its end has not.
    private var bodyPending = false

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
        case .admitted(let connection, let closing):
            tracked = connection
            if !closing.isEmpty {
                logger.notice("connections waiting for a request closed to make room", metadata: [
                    "closed": .stringConvertible(closing.count), "limit": .stringConvertible(registry.limit),
                ])
            }
            for channel in closing { channel.close(promise: nil) }
            move(context, deadlineIn: limits.headerTimeout, waitingFor: "a request head")
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Chosen to make room: it is being closed, and what it sends now goes no further.
        if let tracked, tracked.isClaimed { return }
        switch unwrapInboundIn(data) {
        case .head:
            inFlight += 1
            bodyPending = true
            // Still waiting on the client for the body: a connection may be closed to make room, unless an
            // earlier request on it (pipelined) is being answered.
            if inFlight > 1, let tracked, !registry.busy(tracked) { return }
            // The body's time starts now, or when the earlier answer has ended: a client may wait for that answer
            // (or for its 100 Continue, sent after it) before it sends this body.
            if inFlight == 1 { move(context, deadlineIn: limits.bodyTimeout, waitingFor: "the request body") }
        case .body:
            break
        case .end:
            bodyPending = false
            // The handler is answering: no deadline until it has, and the connection is not closed to make room.
            // (After an early answer, say a 413 before the body was read, the idle deadline the answer set stays.)
            if inFlight > 0 {
                deadline = nil
                if let tracked, !registry.busy(tracked) { return }
            }
        }
        context.fireChannelRead(data)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            writeDeadline = nil
        } else if writeDeadline == nil {
            let stalled = NIODeadline.now() + .milliseconds(Int64(limits.idleTimeout * 1000))
            writeDeadline = stalled
            arm(context, at: stalled)
        }
        context.fireChannelWritabilityChanged()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            inFlight = max(inFlight - 1, 0)
            if inFlight == 0 {
                if let tracked { registry.waiting(tracked) }
                move(context, deadlineIn: limits.idleTimeout, waitingFor: "another request")
            } else if bodyPending {
                // A pipelined request's body is what the connection now waits for.
                if let tracked { registry.waiting(tracked) }
                move(context, deadlineIn: limits.bodyTimeout, waitingFor: "the request body")
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
        timer?.cancel()
        timer = nil
        timerFiresAt = nil
        deadline = nil
        writeDeadline = nil
        if registered { registry.closed(context.channel) }
        registered = false
    }

    private func move(_ context: ChannelHandlerContext, deadlineIn seconds: Double, waitingFor what: String) {
        let moved = NIODeadline.now() + .milliseconds(Int64(seconds * 1000))
        deadline = moved
        waitingFor = what
        arm(context, at: moved)
    }

    /// Makes sure the timer fires by `when`: a later deadline is found when the
    /// timer fires and sets itself again; an earlier one reschedules it now.
    private func arm(_ context: ChannelHandlerContext, at when: NIODeadline) {
        if let firesAt = timerFiresAt, firesAt <= when { return }
        timer?.cancel()
        schedule(context, at: when)
    }

    private func schedule(_ context: ChannelHandlerContext, at when: NIODeadline) {
        timerFiresAt = when
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: when) { [self] in
            timer = nil
            timerFiresAt = nil
            guard registered else { return }
            let now = NIODeadline.now()
            if let writeDeadline, writeDeadline <= now {
                logger.debug("connection closed: the client stopped reading its answer")
                context.close(promise: nil)
            } else if let deadline, deadline <= now {
                logger.debug("connection closed: it took too long to send \(waitingFor)")
                context.close(promise: nil)
            } else if let next = [deadline, writeDeadline].compactMap({ $0 }).min() {
                schedule(context, at: next)
            }
        }
    }
}
