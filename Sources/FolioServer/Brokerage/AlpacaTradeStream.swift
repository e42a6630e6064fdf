import FolioDomain
import Foundation
import HummingbirdWSClient
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// One event of Alpaca's `trade_updates` stream: what happened (`new`,
/// `fill`, `partial_fill`, `canceled`…), the order as it is after it, and for
/// a fill the execution's own quantity and price.
struct TradeUpdate: Sendable {
    var event: String
    var order: AlpacaBroker.RemoteOrder
    var quantity: Quantity?
    var price: Price?
    /// For a fill, when the shares filled.
    var timestamp: Date?

    init(_ data: JSONValue) throws {
        guard case .object(let fields) = data, case .string(let event)? = fields["event"], let order = fields["order"] else {
            throw BrokerError.unavailable("a trade update without an event or an order")
        }
        self.event = event
        self.order = try AlpacaBroker.RemoteOrder(order)
        quantity = AlpacaBroker.quantity(fields["qty"])
        guard case .object(let orderFields) = order else { throw BrokerError.unavailable("a trade update whose order is not an object") }
        price = AlpacaBroker.fillPrice(fields["price"], side: orderFields["side"])
        timestamp = AlpacaBroker.date(fields["timestamp"])
    }
}

/// Alpaca's `trade_updates` stream for every linked account, in the process
/// that runs the worker: connect (`wss://…/stream`), authenticate, listen,
/// and apply each event through the same postings as the poller. A fill is
/// keyed by its order and the quantity filled up to it, which the poller's
/// FILL activities carry too, so an event seen twice, or seen by the stream
/// and the poller both, is applied once. A dropped connection is retried
/// with back-off, and each (re)connection has the account polled at once,
/// so events missed while the stream was down are recovered. While a
/// stream is up the account's polls come twenty times less often.
final class TradeStreams: Service, Sendable {
    let store: BrokerageStore
    let trading: TradingStore
    let brokers: Brokers
    let orders: OrderService
    let pauses: PausePoints
    let logger: Logger
    /// How often the links are looked at again (a new link gets its stream, a removed one loses it).
    let refresh: Duration
    /// The first wait before reconnecting; it doubles up to a minute.
    let firstBackOff: Duration
    /// Each link's stream, with the sealed keys it signed in with.
    private let running = Mutex<[UUID: (sealed: String, task: Task<Void, Never>)]>([:])

    init(
        store: BrokerageStore, trading: TradingStore, brokers: Brokers, orders: OrderService, pauses: PausePoints, logger: Logger,
        refresh: Duration = .seconds(30), firstBackOff: Duration = .seconds(1)
    ) {
        self.store = store
        self.trading = trading
        self.brokers = brokers
        self.orders = orders
        self.pauses = pauses
        self.logger = logger
        self.refresh = refresh
        self.firstBackOff = firstBackOff
    }

    func run() async throws {
        // A shutdown ends the wait between refreshes at once, and the streams with it.
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.refreshStreams()
                try await Task.sleep(for: self.refresh)
            }
        }
        // Each stream's task ends before this service does: one still applying an event would otherwise
        // reach the database after the process closed it.
        for task in stopAll() { await task.value }
    }

    /// Starts a stream for each active link without one, stops those of
    /// removed links, and starts again those whose keys were replaced.
    func refreshStreams() async {
        let links: [BrokerageLink]
        do { links = try await store.activeLinks(on: store.database.sql) } catch {
            logger.warning("reading brokerage links for their streams failed", metadata: ["error": "\(error)"])
            return
        }
        let wanted = Dictionary(links.map { ($0.id, $0.sealedCredentials) }, uniquingKeysWith: { first, _ in first })
        running.withLock { running in
            for (id, stream) in running where wanted[id] != stream.sealed {
                stream.task.cancel()
                running[id] = nil
            }
            for link in links where running[link.id] == nil {
                running[link.id] = (link.sealedCredentials, Task { await self.keepStreaming(link) })
            }
        }
    }

    /// Cancels every stream; their tasks are returned, to be awaited.
    @discardableResult
    func stopAll() -> [Task<Void, Never>] {
        running.withLock { running in
            let tasks = running.values.map(\.task)
            for task in tasks { task.cancel() }
            running.removeAll()
            return tasks
        }
    }

    /// Connects, and reconnects with back-off, until cancelled.
    private func keepStreaming(_ link: BrokerageLink) async {
        var wait = firstBackOff
        while !Task.isCancelled {
            let started = ContinuousClock.now
            do {
                let alpaca = try brokers.alpaca(link)
                try await stream(link, alpaca)
                logger.info("the Alpaca trade stream closed; reconnecting", metadata: ["account_id": "\(link.accountID)"])
            } catch is CancellationError {
                break
            } catch {
                logger.warning("the Alpaca trade stream failed; reconnecting", metadata: ["account_id": "\(link.accountID)", "error": "\(error)"])
            }
            brokers.streamDown(link.accountID)
            // A connection that lived a while starts the back-off over.
            if ContinuousClock.now - started > .seconds(60) { wait = firstBackOff }
            try? await Task.sleep(for: wait)
            wait = min(wait * 2, .seconds(60))
        }
        brokers.streamDown(link.accountID)
    }

    struct Unauthorized: Error, CustomStringConvertible {
        var description: String { "Alpaca refused the stream's authentication" }
    }

    private func stream(_ link: BrokerageLink, _ alpaca: AlpacaBroker) async throws {
        let url = Self.streamURL(alpaca.settings.baseURL)
        let auth = #"{"action":"auth","key":"# + JSONText.quote(alpaca.settings.keyID) + #","secret":"# + JSONText.quote(alpaca.settings.secretKey) + "}"
        let listen = #"{"action":"listen","data":{"streams":["trade_updates"]}}"#
        // Pings every 30 s: a connection that went quiet without closing is found dead and reconnected.
        var configuration = WebSocketClientConfiguration()
        configuration.autoPing = .enabled(timePeriod: .seconds(30))
        try await WebSocketClient.connect(url: url, configuration: configuration, logger: logger) { inbound, outbound, _ in
            try await outbound.write(.text(auth))
            for try await message in inbound.messages(maxSize: 1 << 20) {
                // Alpaca's paper stream sends binary frames, the live one text: both carry JSON.
                let text = switch message {
                case .text(let text): text
                case .binary(let buffer): String(buffer: buffer)
                }
                guard case .object(let fields)? = try? JSONValue.parse(Array(text.utf8)), case .string(let stream)? = fields["stream"] else { continue }
                let data = fields["data"] ?? .null
                switch stream {
                case "authorization":
                    guard case .object(let result) = data, case .string("authorized")? = result["status"] else { throw Unauthorized() }
                    try await outbound.write(.text(listen))
                case "listening":
                    // Listening: whatever happened while no stream was up is fetched by a poll now.
                    self.brokers.streamUp(link.accountID)
                case "trade_updates":
                    do {
                        try await self.apply(try TradeUpdate(data), link: link, alpaca: alpaca)
                    } catch {
                        // The next look polls this account, whatever its stream's schedule.
                        self.brokers.pollSoon(link.accountID)
                        self.logger.warning("a trade update could not be applied; the next poll catches up", metadata: ["account_id": "\(link.accountID)", "error": "\(error)"])
                    }
                default:
                    continue
                }
            }
        }
    }

    /// `ws(s)://host/stream` for an `http(s)://host` base URL.
    static func streamURL(_ baseURL: String) -> String {
        var url = baseURL.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        if url.hasPrefix("https://") { url = "wss://" + url.dropFirst("https://".count) } else if url.hasPrefix("http://") { url = "ws://" + url.dropFirst("http://".count) }
        return url + "/stream"
    }

    /// Applies one event to the Folio order it names (by `client_order_id`).
    /// A fill that follows the fills Folio has is applied as the event tells
    /// it; when Folio is behind (events were missed), the order's fills come
    /// from Alpaca's record instead; an event that brings nothing new changes nothing.
    func apply(_ update: TradeUpdate, link: BrokerageLink, alpaca: AlpacaBroker) async throws {
        guard let id = OrderID(update.order.clientOrderID), let order = try await trading.order(id), order.accountID == link.accountID,
              order.status.isOpen
        else { return }
        let report: BrokerReport
        let filled = update.order.filledQuantity
        if update.event == "fill" || update.event == "partial_fill", let quantity = update.quantity, let price = update.price,
           (try? order.filledQuantity + quantity) == filled
        {
            let fill = BrokerFill(
                id: AlpacaBroker.fillID(order: update.order.id, cumulative: filled), quantity: quantity, price: price, executedAt: update.timestamp)
            report = update.order.status == "filled" ? .filled([fill]) : .partiallyFilled([fill])
        } else if filled == order.filledQuantity {
            // Nothing new filled: the event is about the status (a cancel or expiry of the rest, say).
            report = AlpacaBroker.report(update.order, fills: [], applied: order.filledQuantity)
        } else {
            report = try await alpaca.report(update.order, booked: AlpacaBroker.Booked(try await trading.brokerOrder(order)))
        }
        guard report != .accepted else { return }
        await pauses.reach(.afterStreamEvent)
        try await orders.apply([OrderService.Report(job: nil, order: order, report: report)], account: order.accountID)
    }
}
