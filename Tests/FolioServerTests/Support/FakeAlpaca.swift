import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import HummingbirdWebSocket
import Logging
import NIOConcurrencyHelpers

@testable import FolioServer

/// A local Alpaca on loopback that answers the Trading API v2 calls Folio
/// makes the way https://docs.alpaca.markets shows them: orders keyed by a
/// unique `client_order_id` (a second POST with one is 422), statuses,
/// `filled_qty` and `filled_avg_price` as strings, `DELETE` answering 204 or
/// 422 once filled, and FILL activities with ids of the form
/// `<time>::<uuid>`. Orders either fill at once or rest until the test fills
/// them, in parts if it likes, so a crash can land while one rests.
final class FakeAlpaca: Sendable {
    static let keyID = "PKFAKEKEYID0001"
    static let secretKey = "fake-secret-key-0123456789abcdefghij"

    enum Mode: Sendable {
        /// Market orders fill at once at `price`; others rest.
        case fillMarketOrders
        /// Every order rests until `fill` is called.
        case rest
    }

    struct Order: Sendable {
        var id: String
        var clientOrderID: String
        var symbol: String
        var side: String
        var type: String
        var quantity: String
        var status: String
        var filled: Quantity
        var createdAt: String
    }

    struct Activity: Sendable {
        var id: String
        var orderID: String
        var quantity: Quantity
        var price: Price
        var side: String
        var symbol: String
        var cumulative: Quantity
        var leaves: Quantity
        /// `transaction_time`: when it executed.
        var executedAt: String
    }

    private struct State {
        var mode: Mode = .fillMarketOrders
        var price: Price = 100
        var orders: [String: Order] = [:]
        var activities: [Activity] = []
        var posts: [String: Int] = [:]
        var sequence = 0
        var cash: Cash = 25_000
        var currency = "USD"
        var revokeKeys = false
        /// Statuses to answer the next calls with instead of serving them (429, 500…).
        var failures: [Int] = []
        var calls = 0
        /// Orders are refused with 403 for buying power.
        var refuseBuyingPower = false
        /// The `message` of that refusal.
        var refusalMessage = "insufficient buying power"
        /// Symbols that trade in whole shares only: a fractional quantity is refused with 422, as Alpaca does.
        var wholeSharesOnly: Set<String> = []
        /// A DELETE leaves the order `pending_cancel` until `confirmCancels`.
        var slowCancels = false
        /// A DELETE is answered 503, as by an Alpaca that is down, until this is set back.
        var refuseCancels = false
        /// Positions held, by symbol.
        var positions: [String: Quantity] = [:]
        /// Each position's `avg_entry_price`, by symbol ("100" when not set).
        var averageEntryPrices: [String: String] = [:]
        /// `cash` as written in the account, when a test wants text a `Cash` cannot hold.
        var cashText: String?
        var tradingBlocked = false
        var liveCalls = 0
        var listCalls = 0
        var activityCalls = 0
        /// Listening `trade_updates` connections, and how many connections were ever authorized.
        var subscribers: [UUID: AsyncStream<String>.Continuation] = [:]
        var streamConnections = 0
        /// Every event is sent twice.
        var duplicateEvents = false
        /// FILL activities are held back (Alpaca's record lagging its order status).
        var withholdActivities = false
        /// The next POSTs of orders are carried out, but answered 500 (the answer lost on its way back).
        var loseAnswers = 0
        /// Look-ups by client order id that answer 404 though the order exists (Alpaca's look-up lagging).
        var laggingLookups = 0
        /// While closed, market orders are accepted and wait for the open.
        var marketOpen = true
        /// When the next fills execute, as Alpaca writes it (RFC 3339); nil: as they happen, by this machine's clock.
        var executionTime: String?
        var executedNow: String {
            executionTime ?? Date.ISO8601FormatStyle(includingFractionalSeconds: true).format(Date())
        }
        /// Closes Alpaca publishes beyond the rules (an unscheduled early close), New York time.
        var publishedCloses: [TradingDay: String] = [:]
        var paperCalls = 0
        /// The keys that open the account now (new ones made at Alpaca replace them), and the account they open.
        var keys = (id: FakeAlpaca.keyID, secret: FakeAlpaca.secretKey)
        var accountNumber = FakeAlpaca.accountNumber
    }

    static let accountNumber = "PA3FAKE7781"

    private let state = NIOLockedValueBox(State())
    let baseURL: String
    /// Awaited when an order is posted, before it is taken (given its client_order_id): a test acts while a submission is on its way.
    let beforeOrderPost = NIOLockedValueBox<(@Sendable (String) async -> Void)?>(nil)
    /// Runs once, before the next `GET /v2/positions` is answered (something that happens at Alpaca meanwhile).
    let beforeNextPositions = NIOLockedValueBox<(@Sendable () -> Void)?>(nil)

    init(baseURL: String) {
        self.baseURL = baseURL
    }

    var mode: Mode {
        get { state.withLockedValue { $0.mode } }
        set { state.withLockedValue { $0.mode = newValue } }
    }

    var price: Price {
        get { state.withLockedValue { $0.price } }
        set { state.withLockedValue { $0.price = newValue } }
    }

    /// The account's cash at Alpaca; fills move it.
    var cash: Cash {
        get { state.withLockedValue { $0.cash } }
        set { state.withLockedValue { $0.cash = newValue } }
    }

    /// The next `statuses.count` calls are answered with these statuses and nothing else.
    func failNext(_ statuses: [Int]) {
        state.withLockedValue { $0.failures += statuses }
    }

    var cashText: String? {
        get { state.withLockedValue { $0.cashText } }
        set { state.withLockedValue { $0.cashText = newValue } }
    }

    var tradingBlocked: Bool {
        get { state.withLockedValue { $0.tradingBlocked } }
        set { state.withLockedValue { $0.tradingBlocked = newValue } }
    }

    /// Calls that came to the live URL (`/live/…`) and to the paper one.
    var liveCalls: Int { state.withLockedValue { $0.liveCalls } }
    var paperCalls: Int { state.withLockedValue { $0.paperCalls } }
    /// `GET /v2/orders` lists served: the polling of whole accounts.
    var listCalls: Int { state.withLockedValue { $0.listCalls } }
    /// Pages of FILL activities served.
    var activityCalls: Int { state.withLockedValue { $0.activityCalls } }

    var withholdActivities: Bool {
        get { state.withLockedValue { $0.withholdActivities } }
        set { state.withLockedValue { $0.withholdActivities = newValue } }
    }

    var laggingLookups: Int {
        get { state.withLockedValue { $0.laggingLookups } }
        set { state.withLockedValue { $0.laggingLookups = newValue } }
    }

    var loseAnswers: Int {
        get { state.withLockedValue { $0.loseAnswers } }
        set { state.withLockedValue { $0.loseAnswers = newValue } }
    }

    /// Calls answered so far (including the failed ones).
    var calls: Int { state.withLockedValue { $0.calls } }

    var refuseBuyingPower: Bool {
        get { state.withLockedValue { $0.refuseBuyingPower } }
        set { state.withLockedValue { $0.refuseBuyingPower = newValue } }
    }

    var refusalMessage: String {
        get { state.withLockedValue { $0.refusalMessage } }
        set { state.withLockedValue { $0.refusalMessage = newValue } }
    }

    var wholeSharesOnly: Set<String> {
        get { state.withLockedValue { $0.wholeSharesOnly } }
        set { state.withLockedValue { $0.wholeSharesOnly = newValue } }
    }

    var slowCancels: Bool {
        get { state.withLockedValue { $0.slowCancels } }
        set { state.withLockedValue { $0.slowCancels = newValue } }
    }

    /// Positions at the fake, which fills move and a test may change behind Folio's back.
    var positions: [String: Quantity] {
        get { state.withLockedValue { $0.positions } }
        set { state.withLockedValue { $0.positions = newValue } }
    }

    /// The average entry price Alpaca reports for a symbol's position (a split changes it, as the quantity).
    func setAverageEntryPrice(_ symbol: String, _ price: String) {
        state.withLockedValue { $0.averageEntryPrices[symbol] = price }
    }

    /// Alpaca processes the pending cancels.
    func confirmCancels() {
        state.withLockedValue { state in
            for (id, order) in state.orders where order.status == "pending_cancel" {
                state.orders[id]?.status = "canceled"
                Self.publish(&state, event: "canceled", orderID: id)
            }
        }
    }

    /// While set, every cancel (DELETE of an order) is answered 503.
    var refuseCancels: Bool {
        get { state.withLockedValue { $0.refuseCancels } }
        set { state.withLockedValue { $0.refuseCancels = newValue } }
    }

    /// The status Alpaca holds for the order Folio placed under `clientOrderID`.
    func status(clientOrderID: String) -> String? {
        state.withLockedValue { state in state.orders.values.first { $0.clientOrderID == clientOrderID }?.status }
    }

    /// Sets an order's status as Alpaca would (done_for_day, replaced, expired…), and streams the event.
    /// Deletes the order as a reset of a paper account does: Alpaca lists it nowhere from then on.
    func forget(clientOrderID: String) {
        state.withLockedValue { state in
            guard let id = state.orders.values.first(where: { $0.clientOrderID == clientOrderID })?.id else { return }
            state.orders[id] = nil
        }
    }

    /// Lists an order `forget` deleted again (a look-up that lagged).
    func restore(_ order: Order) {
        state.withLockedValue { $0.orders[order.id] = order }
    }

    func setStatus(clientOrderID: String, _ status: String) {
        state.withLockedValue { state in
            guard let id = state.orders.values.first(where: { $0.clientOrderID == clientOrderID })?.id else { return }
            state.orders[id]?.status = status
            Self.publish(&state, event: status, orderID: id)
        }
    }

    // MARK: - Market hours

    /// Closes the market: market orders wait for the open, and `/v2/clock` says closed.
    func closeMarket() {
        state.withLockedValue { $0.marketOpen = false }
    }

    /// Opens the market: the market orders that waited fill at `price`.
    func openMarket() {
        state.withLockedValue { state in
            state.marketOpen = true
            for order in state.orders.values where order.type == "market" && order.status == "accepted" {
                Self.fill(&state, order.id, quantity: nil, price: state.price)
            }
        }
    }

    /// Publishes a close for a day that the rules do not know ("13:00").
    func publishClose(_ day: TradingDay, at close: String) {
        state.withLockedValue { $0.publishedCloses[day] = close }
    }

    // MARK: - The trade_updates stream

    /// When the fills from now on execute, as Alpaca stamps them (`transaction_time`, and the stream's `timestamp`).
    var executionTime: String? {
        get { state.withLockedValue { $0.executionTime } }
        set { state.withLockedValue { $0.executionTime = newValue } }
    }

    var duplicateEvents: Bool {
        get { state.withLockedValue { $0.duplicateEvents } }
        set { state.withLockedValue { $0.duplicateEvents = newValue } }
    }

    /// Connections listening to `trade_updates` now, and authorized ever.
    var listeners: Int { state.withLockedValue { $0.subscribers.count } }
    var streamConnections: Int { state.withLockedValue { $0.streamConnections } }

    /// Closes every stream connection (events from now until the client reconnects are lost to it).
    func dropStream() {
        let ended = state.withLockedValue { state in
            defer { state.subscribers.removeAll() }
            return Array(state.subscribers.values)
        }
        for continuation in ended { continuation.finish() }
    }

    private static func publish(_ state: inout State, event: String, orderID: String, quantity: Quantity? = nil, price: Price? = nil) {
        guard let order = state.orders[orderID] else { return }
        var data = #""event":"\#(event)","order":\#(text(order, state)),"timestamp":"\#(state.executedNow)""#
        if let quantity, let price {
            data += #","execution_id":"\#(UUID().uuidString.lowercased())","qty":"\#(quantity)","price":"\#(price)","position_qty":"\#(state.positions[order.symbol] ?? .zero)""#
        }
        let message = #"{"stream":"trade_updates","data":{\#(data)}}"#
        for continuation in state.subscribers.values {
            continuation.yield(message)
            if state.duplicateEvents { continuation.yield(message) }
        }
    }

    /// One stream connection, as Alpaca's paper stream answers it: binary
    /// frames; `auth` (or the older `authenticate`) with the keys, then
    /// `listen` to `trade_updates`, then the events until the connection drops.
    func serveStream(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        func send(_ text: String) async throws { try await outbound.write(.binary(ByteBuffer(string: text))) }
        var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
        func nextJSON() async throws -> [String: Any]? {
            guard let message = try await messages.next() else { return nil }
            let data: Data = switch message {
            case .text(let text): Data(text.utf8)
            case .binary(let buffer): Data(buffer: buffer)
            }
            return try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        }
        guard let auth = try await nextJSON() else { return }
        let nested = auth["data"] as? [String: Any]
        let key = auth["key"] as? String ?? nested?["key_id"] as? String, secret = auth["secret"] as? String ?? nested?["secret_key"] as? String
        let keys = state.withLockedValue { $0.keys }
        guard key == keys.id, secret == keys.secret, !revokeKeys else {
            try await send(#"{"stream":"authorization","data":{"action":"authenticate","status":"unauthorized"}}"#)
            return
        }
        try await send(#"{"stream":"authorization","data":{"action":"authenticate","status":"authorized"}}"#)
        guard let listen = try await nextJSON(), listen["action"] as? String == "listen" else { return }
        let (events, continuation) = AsyncStream<String>.makeStream()
        let id = UUID()
        state.withLockedValue { state in
            state.subscribers[id] = continuation
            state.streamConnections += 1
        }
        defer { _ = state.withLockedValue { $0.subscribers.removeValue(forKey: id) } }
        try await send(#"{"stream":"listening","data":{"streams":["trade_updates"]}}"#)
        for await event in events { try await send(event) }
    }

    /// New keys made at Alpaca: from now on only these open the account, and the old ones get 401.
    func regenerateKeys(id: String, secret: String) {
        state.withLockedValue { $0.keys = (id, secret) }
    }

    /// The account the keys open (another one, to test keys of another account).
    var accountNumber: String {
        get { state.withLockedValue { $0.accountNumber } }
        set { state.withLockedValue { $0.accountNumber = newValue } }
    }

    /// The keys stop opening the account (revoked at Alpaca): every call is 401.
    var revokeKeys: Bool {
        get { state.withLockedValue { $0.revokeKeys } }
        set { state.withLockedValue { $0.revokeKeys = newValue } }
    }

    var currency: String {
        get { state.withLockedValue { $0.currency } }
        set { state.withLockedValue { $0.currency = newValue } }
    }

    /// Orders held, by client order id.
    var orders: [String: Order] { state.withLockedValue { state in Dictionary(uniqueKeysWithValues: state.orders.values.map { ($0.clientOrderID, $0) }) } }

    /// POSTs received per client order id (a duplicate is refused, but counted).
    var posts: [String: Int] { state.withLockedValue { $0.posts } }

    var settings: AppConfiguration.AlpacaSettings {
        AppConfiguration.AlpacaSettings(keyID: Self.keyID, secretKey: Self.secretKey, baseURL: baseURL)
    }

    /// The environment a child `folio` process needs to link accounts here.
    var environment: [String: String] {
        ["ALPACA_PAPER_URL": urls.paper, "ALPACA_LIVE_URL": urls.live]
    }

    /// Both of Alpaca's URLs pointed here: the live one under `/live`, so a test can tell them apart.
    var urls: AppConfiguration.AlpacaURLs { .init(paper: baseURL, live: baseURL + "/live") }

    /// The body that links this fake's account through Folio's API.
    static let linkBody = ["key_id": keyID, "secret_key": secretKey, "environment": "paper"]

    /// Fills `quantity` of a resting order (all of what is left when nil) at `price`.
    func fill(clientOrderID: String, quantity: Quantity? = nil, at price: Price? = nil) {
        state.withLockedValue { state in
            guard let id = state.orders.values.first(where: { $0.clientOrderID == clientOrderID })?.id else { return }
            Self.fill(&state, id, quantity: quantity, price: price ?? state.price)
        }
    }

    /// The last two FILL activities listed the other way round (ids too): two executions of one millisecond,
    /// whose ids (the time, then a random part) need not follow the order they filled in.
    func listLastTwoFillsSwapped() {
        state.withLockedValue { state in
            let count = state.activities.count
            guard count >= 2 else { return }
            let (older, newer) = (state.activities[count - 2], state.activities[count - 1])
            state.activities[count - 2] = newer
            state.activities[count - 2].id = older.id
            state.activities[count - 1] = older
            state.activities[count - 1].id = newer.id
        }
    }

    /// `count` fills of one order placed at Alpaca outside Folio (by another app on the same account): FILL activities Folio reads past.
    func recordOutsideFills(_ count: Int) {
        state.withLockedValue { state in
            let order = UUID().uuidString.lowercased()
            for index in 1...count {
                state.sequence += 1
                state.activities.append(Activity(
                    id: String(format: "20261124%09d::%@", state.sequence, UUID().uuidString.lowercased()), orderID: order, quantity: 1, price: state.price,
                    side: "buy", symbol: "SPY", cumulative: (try? Quantity(parsing: String(index))) ?? .zero, leaves: .zero,
                    executedAt: state.executedNow))
            }
        }
    }

    private static func fill(_ state: inout State, _ id: String, quantity: Quantity?, price: Price) {
        guard var order = state.orders[id], let total = try? Quantity(parsing: order.quantity) else { return }
        let left = (try? total - order.filled) ?? .zero
        let part = Quantity.min(quantity ?? left, left)
        guard part.isPositive else { return }
        order.filled = (try? order.filled + part) ?? order.filled
        if let amount = try? Cash.product(part, price, rounding: .halfEven) {
            state.cash = (try? (order.side == "buy" ? state.cash - amount : state.cash + amount)) ?? state.cash
        }
        let held = state.positions[order.symbol] ?? .zero
        state.positions[order.symbol] = (try? (order.side == "buy" ? held + part : held - part)) ?? held
        order.status = order.filled == total ? "filled" : "partially_filled"
        state.orders[id] = order
        state.sequence += 1
        state.activities.append(Activity(
            id: String(format: "20261124%09d::%@", state.sequence, UUID().uuidString.lowercased()), orderID: id, quantity: part, price: price,
            side: order.side, symbol: order.symbol, cumulative: order.filled, leaves: (try? total - order.filled) ?? .zero,
            executedAt: state.executedNow))
        publish(&state, event: order.status == "filled" ? "fill" : "partial_fill", orderID: id, quantity: part, price: price)
    }

    // MARK: - The API

    func answer(_ request: Request, path requested: String) async throws -> Response {
        let live = requested.hasPrefix("/live/")
        let path = live ? String(requested.dropFirst("/live".count)) : requested
        let failure: Int? = state.withLockedValue { state in
            state.calls += 1
            if live { state.liveCalls += 1 } else { state.paperCalls += 1 }
            return state.failures.isEmpty ? nil : state.failures.removeFirst()
        }
        if let failure {
            return Self.json(#"{"code":\#(failure)00000,"message":"try again later"}"#, status: .init(code: failure))
        }
        let keys = state.withLockedValue { $0.keys }
        guard request.headers[HTTPField.Name("APCA-API-KEY-ID")!] == keys.id,
              request.headers[HTTPField.Name("APCA-API-SECRET-KEY")!] == keys.secret, !revokeKeys
        else { return Self.json(#"{"code":40110000,"message":"request is not authorized"}"#, status: .unauthorized) }
        switch (request.method, path) {
        case (.get, "/v2/account"):
            return state.withLockedValue { state in
                Self.json("""
                    {"id":"e6fe16f3-64a4-4921-8928-cadf02f92f98","account_number":\(JSONText.quote(state.accountNumber)),"status":"ACTIVE","currency":"\(state.currency)",\
                    "cash":"\(state.cashText ?? state.cash.description)","buying_power":"\(state.cash)","trading_blocked":\(state.tradingBlocked),"account_blocked":false,"trade_suspended_by_user":false,\
                    "pattern_day_trader":false,"created_at":"2026-01-05T14:00:00Z"}
                    """)
            }
        case (.post, "/v2/orders"):
            let body = try await request.body.collect(upTo: 1 << 20)
            guard let fields = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any],
                  let client = fields["client_order_id"] as? String, let symbol = fields["symbol"] as? String,
                  let side = fields["side"] as? String, let type = fields["type"] as? String, let quantity = fields["qty"] as? String
            else { return Self.json(#"{"code":40010001,"message":"invalid order request"}"#, status: .unprocessableContent) }
            if let hook = beforeOrderPost.withLockedValue({ $0 }) { await hook(client) }
            return state.withLockedValue { state in
                state.posts[client, default: 0] += 1
                if state.loseAnswers > 0, state.orders.values.contains(where: { $0.clientOrderID == client }) {
                    state.loseAnswers -= 1
                    return Self.json(#"{"code":50000000,"message":"internal server error"}"#, status: .internalServerError)
                }
                if state.refuseBuyingPower {
                    return Self.json(#"{"code":40310000,"message":\#(JSONText.quote(state.refusalMessage))}"#, status: .forbidden)
                }
                if state.wholeSharesOnly.contains(symbol), quantity.contains(".") {
                    return Self.json(#"{"code":42210000,"message":"qty must be integer: asset is not fractionable"}"#, status: .unprocessableContent)
                }
                if state.orders.values.contains(where: { $0.clientOrderID == client }) {
                    return Self.json(#"{"code":40010001,"message":"client_order_id must be unique"}"#, status: .unprocessableContent)
                }
                let id = UUID().uuidString.lowercased()
                state.orders[id] = Order(
                    id: id, clientOrderID: client, symbol: symbol, side: side, type: type, quantity: quantity, status: "accepted", filled: .zero,
                    createdAt: "2026-11-24T15:30:00Z")
                if state.mode == .fillMarketOrders, type == "market", state.marketOpen { Self.fill(&state, id, quantity: nil, price: state.price) }
                if state.loseAnswers > 0 {
                    state.loseAnswers -= 1
                    return Self.json(#"{"code":50000000,"message":"internal server error"}"#, status: .internalServerError)
                }
                return Self.json(Self.text(state.orders[id]!, state))
            }
        case (.get, "/v2/orders"):
            // Every order (status=all), oldest first; `after` and `limit` are not needed at the fake's size.
            return state.withLockedValue { state in
                state.listCalls += 1
                let all = state.orders.values.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
                let wanted = request.uri.queryParameters["status"].map(String.init) ?? "open"
                let open: Set<String> = ["new", "accepted", "partially_filled", "pending_cancel", "done_for_day"]
                let chosen = wanted == "all" ? all : all.filter { open.contains($0.status) == (wanted == "open") }
                return Self.json("[" + chosen.map { Self.text($0, state) }.joined(separator: ",") + "]")
            }
        case (.get, "/v2/orders:by_client_order_id"):
            let client = request.uri.queryParameters["client_order_id"].map(String.init) ?? ""
            return state.withLockedValue { state in
                if state.laggingLookups > 0 {
                    state.laggingLookups -= 1
                    return Self.json(#"{"code":40410000,"message":"order not found"}"#, status: .notFound)
                }
                guard let order = state.orders.values.first(where: { $0.clientOrderID == client }) else {
                    return Self.json(#"{"code":40410000,"message":"order not found"}"#, status: .notFound)
                }
                return Self.json(Self.text(order, state))
            }
        case (.get, _) where path.hasPrefix("/v2/orders/"):
            let id = String(path.dropFirst("/v2/orders/".count))
            return state.withLockedValue { state in
                guard let order = state.orders[id] else { return Self.json(#"{"code":40410000,"message":"order not found"}"#, status: .notFound) }
                return Self.json(Self.text(order, state))
            }
        case (.delete, _) where path.hasPrefix("/v2/orders/"):
            let id = String(path.dropFirst("/v2/orders/".count))
            return state.withLockedValue { state in
                if state.refuseCancels { return Self.json(#"{"code":50300000,"message":"service unavailable"}"#, status: .serviceUnavailable) }
                guard var order = state.orders[id] else { return Self.json(#"{"code":40410000,"message":"order not found"}"#, status: .notFound) }
                guard ["accepted", "new", "partially_filled", "done_for_day"].contains(order.status) else {
                    return Self.json(#"{"code":42210000,"message":"order is not cancelable"}"#, status: .unprocessableContent)
                }
                order.status = state.slowCancels ? "pending_cancel" : "canceled"
                state.orders[id] = order
                Self.publish(&state, event: order.status, orderID: id)
                return Response(status: .noContent)
            }
        case (.get, "/v2/account/activities/FILL"):
            // Oldest first with `direction=asc`, else newest first (Alpaca's default); a page token is the last id
            // of the page before, and the next page goes on past it in the same direction. Only fills executed
            // after `after` (an RFC 3339 time), when it is given.
            let token = request.uri.queryParameters["page_token"].map(String.init)
            let ascending = request.uri.queryParameters["direction"].map(String.init) == "asc"
            let after = request.uri.queryParameters["after"].map(String.init)
            let since = after.flatMap(StrictDate.time)
            if after != nil, since == nil { return Self.json(#"{"code":40010001,"message":"invalid after"}"#, status: .unprocessableContent) }
            return state.withLockedValue { state in
                state.activityCalls += 1
                var list = state.withholdActivities ? [] : state.activities
                if let since { list = list.filter { StrictDate.time($0.executedAt).map { $0 > since } ?? true } }
                if !ascending { list.reverse() }
                if let token, let index = list.firstIndex(where: { $0.id == token }) { list = Array(list[(index + 1)...]) }
                let page = list.prefix(100).map { activity in
                    #"{"activity_type":"FILL","id":"\#(activity.id)","order_id":"\#(activity.orderID)","qty":"\#(activity.quantity)","price":"\#(activity.price)","side":"\#(activity.side)","symbol":"\#(activity.symbol)","cum_qty":"\#(activity.cumulative)","leaves_qty":"\#(activity.leaves)","type":"\#(activity.leaves.isPositive ? "partial_fill" : "fill")","transaction_time":"\#(activity.executedAt)"}"#
                }
                return Self.json("[" + page.joined(separator: ",") + "]")
            }
        case (.get, "/v2/clock"):
            return state.withLockedValue { state in
                Self.json(#"{"timestamp":"2026-11-24T10:30:00-05:00","is_open":\#(state.marketOpen),"next_open":"2026-11-25T09:30:00-05:00","next_close":"2026-11-24T16:00:00-05:00"}"#)
            }
        case (.get, "/v2/calendar"):
            // The NYSE's sessions by its rules, with what the test published on top.
            guard let start = request.uri.queryParameters["start"].flatMap({ TradingDay(String($0)) }),
                  let end = request.uri.queryParameters["end"].flatMap({ TradingDay(String($0)) }), start <= end
            else { return Self.json(#"{"code":42210000,"message":"start and end are required"}"#, status: .unprocessableContent) }
            let published = state.withLockedValue { $0.publishedCloses }
            var days: [String] = []
            var day = start
            while day <= end {
                if let session = MarketCalendar.nyse.session(on: day) {
                    let close = published[day] ?? (session.isEarlyClose ? "13:00" : "16:00")
                    days.append(#"{"date":"\#(day)","open":"09:30","close":"\#(close)","session_open":"0400","session_close":"2000","settlement_date":"\#(day)"}"#)
                }
                day = day.adding(days: 1)
            }
            return Self.json("[" + days.joined(separator: ",") + "]")
        case (.get, "/v2/positions"):
            if let hook = beforeNextPositions.withLockedValue({ hook in defer { hook = nil }; return hook }) { hook() }
            return state.withLockedValue { state in
                let held = state.positions.filter { $0.value != .zero }.sorted { $0.key < $1.key }.map { symbol, quantity in
                    #"{"asset_id":"904837e3-3b76-47ec-b432-046db621571b","symbol":\#(JSONText.quote(symbol)),"exchange":"NASDAQ","asset_class":"us_equity","qty":"\#(quantity)","side":"\#(quantity.isNegative ? "short" : "long")","avg_entry_price":"\#(state.averageEntryPrices[symbol] ?? "100")","market_value":"0","cost_basis":"0"}"#
                }
                return Self.json("[" + held.joined(separator: ",") + "]")
            }
        default:
            return Self.json(#"{"code":40410000,"message":"endpoint not found"}"#, status: .notFound)
        }
    }

    private static func text(_ order: Order, _ state: State) -> String {
        let fills = state.activities.filter { $0.orderID == order.id }
        var average = "null"
        if order.filled.isPositive {
            let value = fills.reduce(Cash.zero) { (try? $0 + Cash.product($1.quantity, $1.price, rounding: .halfEven)) ?? $0 }
            average = "\"\((try? Price.quotient(value, order.filled, rounding: .halfEven))?.description ?? "0")\""
        }
        let filledAt = order.status == "filled" ? fills.last.map { "\"\($0.executedAt)\"" } ?? "null" : "null"
        return """
            {"id":"\(order.id)","client_order_id":"\(order.clientOrderID)","created_at":"\(order.createdAt)","symbol":"\(order.symbol)","side":"\(order.side)",\
            "type":"\(order.type)","qty":"\(order.quantity)","filled_qty":"\(order.filled)","filled_avg_price":\(average),"filled_at":\(filledAt),"status":"\(order.status)","time_in_force":"day"}
            """
    }

    static func json(_ body: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// Runs a fake Alpaca on a free loopback port for the length of `body`.
func withFakeAlpaca<T: Sendable>(_ body: @escaping @Sendable (FakeAlpaca) async throws -> T) async throws -> T {
    let fake = NIOLockedValueBox<FakeAlpaca?>(nil)
    let router = Router()
    for method in [HTTPRequest.Method.get, .post, .delete] {
        router.on("**", method: method) { request, _ in try await fake.withLockedValue { $0! }.answer(request, path: request.uri.path) }
    }
    // The trade stream, at the paper and the live URL.
    let streams = Router(context: BasicWebSocketRequestContext.self)
    for path in ["/stream", "/live/stream"] {
        streams.ws(RouterPath(path)) { _, _ in .upgrade() } onUpgrade: { inbound, outbound, _ in
            try await fake.withLockedValue { $0! }.serveStream(inbound: inbound, outbound: outbound)
        }
    }
    var logger = Logger(label: "fake-alpaca")
    logger.logLevel = .critical
    let app = Application(
        router: router, server: .http1WebSocketUpgrade(webSocketRouter: streams), configuration: .init(address: .hostname("127.0.0.1", port: 0)),
        logger: logger)
    let result = NIOLockedValueBox<T?>(nil)
    try await app.test(.live) { client in
        let server = FakeAlpaca(baseURL: "http://127.0.0.1:\(client.port!)")
        fake.withLockedValue { $0 = server }
        defer { server.dropStream() }
        let value = try await body(server)
        result.withLockedValue { $0 = value }
    }
    return result.withLockedValue { $0! }
}
