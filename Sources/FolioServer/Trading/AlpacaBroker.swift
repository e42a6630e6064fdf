import AsyncHTTPClient
import FolioDomain
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// Why the broker could not be asked: the job that asked fails and is retried.
enum BrokerError: Error, Sendable, CustomStringConvertible {
    /// No answer, a 5xx, a 429, or a body that is not the documented shape.
    case unavailable(String)

    var description: String {
        switch self {
        case .unavailable(let reason): "the broker is unavailable: \(reason)"
        }
    }
}

/// Orders executed at Alpaca (https://docs.alpaca.markets, Trading API v2):
/// `POST /v2/orders` with Folio's order id as `client_order_id`, so a retried
/// submission finds the order instead of placing a second one;
/// `GET /v2/orders:by_client_order_id` to look again; `DELETE /v2/orders/{id}`
/// to cancel; fills from `GET /v2/account/activities/FILL`, each with its own
/// id, so a fill reported twice is applied once. Quantities and prices arrive
/// as JSON strings and are parsed exactly. The key and secret travel only in
/// the `APCA-API-KEY-ID` and `APCA-API-SECRET-KEY` headers, never in a URL or a log.
struct AlpacaBroker: Broker {
    let settings: AppConfiguration.AlpacaSettings
    var httpClient: HTTPClient = .vendors
    let logger: Logger
    var timeout: TimeAmount = .seconds(10)
    /// Each call by endpoint (ids folded into `{id}`), result and latency.
    var metrics: FolioMetrics? = nil

    var holdsOrders: Bool { true }

    /// An order as Alpaca describes it (the fields Folio reads).
    struct RemoteOrder: Sendable {
        var id: String
        var clientOrderID: String
        var status: String
        var filledQuantity: Quantity
        var createdAt: String?
        /// `filled_avg_price` and `filled_at`, when Alpaca gives them: shown to an operator who books fills by hand.
        var averagePrice: Price?
        var filledAt: Date?
        /// `updated_at`: when a canceled or expired order that filled in part last changed (it has no `filled_at`).
        var updatedAt: Date?

        init(_ json: JSONValue) throws {
            guard case .object(let fields) = json, case .string(let id)? = fields["id"], case .string(let status)? = fields["status"] else {
                throw BrokerError.unavailable("an order without id or status")
            }
            self.id = id
            // Compared with Alpaca's known statuses, and named in audit details and the operator's output as it is.
            self.status = UserText.fromVendor(status, limit: 40) ?? ""
            if case .string(let client)? = fields["client_order_id"] { clientOrderID = client } else { clientOrderID = "" }
            // Read as nothing filled, a canceled order's fills would never be booked and its reservation freed: ask again instead.
            guard let filled = AlpacaBroker.quantity(fields["filled_qty"]) else { throw BrokerError.unavailable("an order without a readable filled_qty") }
            filledQuantity = filled
            if case .string(let created)? = fields["created_at"] { createdAt = created }
            averagePrice = AlpacaBroker.price(fields["filled_avg_price"])
            filledAt = AlpacaBroker.date(fields["filled_at"])
            updatedAt = AlpacaBroker.date(fields["updated_at"])
        }
    }

    /// The account the keys belong to, as `GET /v2/account` describes it.
    struct RemoteAccount: Sendable, Equatable {
        var accountNumber: String
        var status: String
        var currency: String
        /// Parsed exactly from Alpaca's string; negative on a margin account that borrowed.
        var cash: Cash
        var tradingBlocked: Bool
    }

    /// What `GET /v2/account` said.
    enum AccountAnswer: Sendable, Equatable {
        case account(RemoteAccount)
        /// 401 or 403: the key id and secret do not open an account.
        case refused
        /// An account Folio cannot mirror, and why (a cash figure with more places than Folio keeps, a field missing).
        case unreadable(String)
    }

    /// Reads the account the keys open (`GET /v2/account`); throws when Alpaca cannot be asked.
    func account() async throws -> AccountAnswer {
        let answer = try await call(.GET, "/v2/account")
        switch answer.status {
        case 200:
            guard case .object(let fields) = answer.json, case .string(let number)? = fields["account_number"], !number.isEmpty else {
                return .unreadable("Alpaca answered an account without a number")
            }
            // Named in the account's name, mail and the audit trail: letters, digits and dashes, as Alpaca's are.
            guard number.utf8.count <= 40, number.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) else {
                return .unreadable("Alpaca answered an account number that is not letters and digits")
            }
            guard case .string(let status)? = fields["status"], case .string(let currency)? = fields["currency"] else {
                return .unreadable("Alpaca answered an account without a status or currency")
            }
            guard case .string(let cash)? = fields["cash"], let amount = try? Cash(parsing: cash) else {
                return .unreadable("Alpaca's cash figure is not an amount Folio can hold exactly (at most 4 decimal places)")
            }
            var blocked = false
            for flag in ["trading_blocked", "account_blocked", "trade_suspended_by_user"] {
                if case .bool(true)? = fields[flag] { blocked = true }
            }
            return .account(RemoteAccount(
                accountNumber: number, status: UserText.fromVendor(status, limit: 40) ?? "", currency: UserText.fromVendor(currency, limit: 10) ?? "",
                cash: amount, tradingBlocked: blocked))
        case 401, 403:
            return .refused
        default:
            throw BrokerError.unavailable("GET /v2/account answered HTTP \(answer.status)")
        }
    }

    /// Alpaca holds a position in a symbol Folio's books cannot hold (an option, a symbol that is not a ticker):
    /// not a failure to ask, and not one that passes by itself.
    struct UnholdablePosition: Error, Sendable {
        /// Made safe to show.
        var symbol: String
    }

    /// The account's positions (`GET /v2/positions`); a short position comes with a negative quantity.
    func positions() async throws -> [BrokerPosition] {
        let answer = try await call(.GET, "/v2/positions")
        guard answer.status == 200, case .array(let list) = answer.json else {
            throw BrokerError.unavailable("GET /v2/positions answered HTTP \(answer.status)")
        }
        return try list.map { item in
            guard case .object(let fields) = item, case .string(let symbol)? = fields["symbol"], var quantity = Self.quantity(fields["qty"]) else {
                throw BrokerError.unavailable("GET /v2/positions answered a position without a symbol or quantity")
            }
            if case .string("short")? = fields["side"], quantity.isPositive { quantity = Quantity(uncheckedUnits: -quantity.units) }
            // A symbol Folio's books cannot hold (an option, say) is not mirrored as something else: the account is not reconciled.
            guard let ticker = OrderDraft.normalizedSymbol(symbol) else { throw UnholdablePosition(symbol: UserText.fromVendor(symbol, limit: 30) ?? "no symbol") }
            return BrokerPosition(symbol: ticker, quantity: quantity, averageEntryPrice: Self.price(fields["avg_entry_price"]))
        }
    }

    /// The exchange's sessions from `start` to `end` (`GET /v2/calendar`): each day's date and its New York open and close.
    func calendar(from start: TradingDay, to end: TradingDay) async throws -> [MarketCalendar.Session] {
        let answer = try await call(.GET, "/v2/calendar?start=\(start)&end=\(end)")
        guard answer.status == 200, case .array(let days) = answer.json else { throw BrokerError.unavailable("GET /v2/calendar answered HTTP \(answer.status)") }
        return try days.map { item in
            guard case .object(let fields) = item, case .string(let date)? = fields["date"], let day = TradingDay(date),
                  case .string(let open)? = fields["open"], let opens = Self.time(open), case .string(let close)? = fields["close"], let closes = Self.time(close)
            else { throw BrokerError.unavailable("GET /v2/calendar answered a day without a date, open or close") }
            return MarketCalendar.session(day: day, open: opens, close: closes)
        }
    }

    /// "09:30" (or "0930").
    static func time(_ text: String) -> (hour: Int, minute: Int)? {
        let digits = text.filter(\.isNumber)
        guard digits.count == 4, let hour = Int(digits.prefix(2)), let minute = Int(digits.suffix(2)), hour < 24, minute < 60 else { return nil }
        return (hour, minute)
    }

    /// Whether the market is open now, and its next open and close (`GET /v2/clock`).
    func clock(now: Date) async throws -> ExchangeCalendar.Clock {
        let answer = try await call(.GET, "/v2/clock")
        guard answer.status == 200, case .object(let fields) = answer.json, case .bool(let open)? = fields["is_open"],
              case .string(let nextOpen)? = fields["next_open"], let opens = try? Date(nextOpen, strategy: .iso8601),
              case .string(let nextClose)? = fields["next_close"], let closes = try? Date(nextClose, strategy: .iso8601)
        else { throw BrokerError.unavailable("GET /v2/clock answered HTTP \(answer.status) or an unreadable clock") }
        return ExchangeCalendar.Clock(isOpen: open, nextOpen: opens, nextClose: closes, readAt: now)
    }

    // MARK: - Broker

    /// A submission is of an order Folio has booked no fill of: whatever filled at Alpaca is reported.
    func submit(_ order: BrokerOrder) async throws -> BrokerReport {
        // A retry after a crash asks first, so the order reaches Alpaca once
        // (and a second POST would be refused for its client_order_id anyway).
        if order.retried, let existing = try await find(order.id) { return try await report(existing, booked: Booked(quantity: .zero)) }
        let answer = try await call(.POST, "/v2/orders", body: Self.orderBody(order))
        switch answer.status {
        case 200, 201:
            return try await report(RemoteOrder(answer.json), booked: Booked(quantity: .zero))
        case 403:
            // Alpaca's own checks refused it (buying power, a short sale it will not allow). Unless this was a repeat of
            // a POST that may have made the order (a 5xx, a lost answer): the first copy then holds the buying power or
            // the shares the repeat is refused for, and the order lives at Alpaca. Rejecting it here would free its cash
            // while it can still fill. Found, it is followed; not found yet (a look-up that lags), asked again later.
            if answer.repeated || order.retried {
                if let existing = try await find(order.id) { return try await report(existing, booked: Booked(quantity: .zero)) }
                throw BrokerError.unavailable("POST /v2/orders was sent again and refused (\(answer.message)), but the order is not found under its id yet")
            }
            return .rejected(reason: "Alpaca refused the order: \(answer.message)")
        case 422:
            // Sent before (the answer was lost): the order is there under our id.
            if let existing = try await find(order.id) { return try await report(existing, booked: Booked(quantity: .zero)) }
            // A repeat of a POST that failed (in this call, or in an earlier attempt of the job) may be refused as a
            // duplicate of the order it made, whose look-up lags: not known to be refused, so the job asks again
            // later rather than free the cash (an order whose job dies of it is looked for once more, then rejected).
            // A 422 about the order itself (a quantity the asset does not take, a price) refused the first POST too.
            if answer.repeated || order.retried, answer.message.lowercased().contains("client_order_id") {
                throw BrokerError.unavailable("POST /v2/orders was sent again and refused (\(answer.message)), but the order is not found under its id yet")
            }
            return .rejected(reason: "Alpaca refused the order: \(answer.message)")
        default:
            throw BrokerError.unavailable("POST /v2/orders answered HTTP \(answer.status)")
        }
    }

    func recheck(_ order: BrokerOrder) async throws -> BrokerReport? {
        guard let existing = try await find(order.id) else { return nil }
        let report = try await report(existing, booked: Booked(order))
        return report == .accepted ? nil : report
    }

    /// Cancels at Alpaca. Alpaca confirms a cancel asynchronously: an order
    /// in `pending_cancel` is still open (it may yet fill), so the answer is
    /// then "still open" and Folio asks again later rather than freeing its
    /// reservation early.
    func cancel(_ order: BrokerOrder) async throws -> BrokerReport {
        guard let existing = try await find(order.id) else {
            // Not listed: known never to have reached Alpaca only when nothing sent it. After an attempt whose answer
            // was lost (a timeout: the POST may still land) or once Alpaca took it, the look-up lags: asked again
            // later, the reservation kept (the order of a submit job that dies of it is looked for once more, then ended).
            if order.retried || order.reachedBroker {
                throw BrokerError.unavailable("the order is not listed at Alpaca yet, though it may have been sent; looked for again")
            }
            return .canceled(reason: Self.neverReached)
        }
        if Self.openStatuses.contains(existing.status) && existing.status != "pending_cancel" {
            try await delete(existing)
            return try await report(try await remoteOrder(existing.id), booked: Booked(order), canceledBy: OrderState.canceledByUser)
        }
        return try await report(existing, booked: Booked(order), canceledBy: OrderState.canceledByUser)
    }

    /// Cancels what is left of an order whose fills the books no longer follow (it ended here), and says
    /// whether it has ended at Alpaca: its status alone decides, so no fills are read. Only a status Alpaca
    /// documents as final counts as ended; any other (one added later too) is sent a DELETE, unless a cancel
    /// is already pending.
    func cancelRest(_ order: BrokerOrder) async throws -> Bool {
        guard let existing = try await find(order.id) else {
            // It reached Alpaca (a fill came from there): not listed is a look-up that lags, asked again.
            if order.reachedBroker || order.retried { throw BrokerError.unavailable("the order is not listed at Alpaca yet; looked for again") }
            return true
        }
        guard !Self.endedStatuses.contains(existing.status) else { return true }
        if existing.status != "pending_cancel" { try await delete(existing) }
        return Self.endedStatuses.contains(try await remoteOrder(existing.id).status)
    }

    /// Asks Alpaca to cancel the order. 422 (no longer cancelable: it filled first) and 404 are answers too:
    /// what the order is now says what happened.
    private func delete(_ existing: RemoteOrder) async throws {
        let answer = try await call(.DELETE, "/v2/orders/\(existing.id)")
        switch answer.status {
        case 200, 204, 404, 422: break
        default: throw BrokerError.unavailable("DELETE /v2/orders answered HTTP \(answer.status)")
        }
    }

    // MARK: - Reading orders and fills

    func find(_ id: OrderID) async throws -> RemoteOrder? {
        let answer = try await call(.GET, "/v2/orders:by_client_order_id?client_order_id=\(id)")
        switch answer.status {
        case 200: return try RemoteOrder(answer.json)
        case 404: return nil
        default: throw BrokerError.unavailable("GET /v2/orders:by_client_order_id answered HTTP \(answer.status)")
        }
    }

    func remoteOrder(_ remoteID: String) async throws -> RemoteOrder {
        let answer = try await call(.GET, "/v2/orders/\(remoteID)")
        guard answer.status == 200 else { throw BrokerError.unavailable("GET /v2/orders/{id} answered HTTP \(answer.status)") }
        return try RemoteOrder(answer.json)
    }

    /// The reason of a cancel of an order Alpaca never had.
    static let neverReached = "canceled before it reached the broker"

    /// Alpaca's statuses of an order that may still fill: Folio keeps it open.
    /// `done_for_day` is open too (it takes no more fills today, but a GTC
    /// order goes on tomorrow), as are `stopped` and `suspended`, which Alpaca
    /// may still execute or resume.
    static let openStatuses: Set<String> = [
        "new", "accepted", "pending_new", "accepted_for_bidding", "partially_filled", "done_for_day", "pending_cancel", "pending_replace",
        "stopped", "suspended", "calculated", "held",
    ]

    /// What the order's state means for Folio. Every one of Alpaca's
    /// statuses is mapped: the ended ones (`filled`, `canceled`, `expired`,
    /// `replaced`, `rejected`) end Folio's order with its fills; the others
    /// keep it open with what filled so far. A status Alpaca adds later is
    /// taken as open, never as an end. `booked`: what Folio has of the order's fills; only the ones
    /// after it are read.
    func report(_ order: RemoteOrder, booked: Booked, canceledBy reason: String = "canceled at the broker") async throws -> BrokerReport {
        let walk = try await unappliedFills(of: [(order, booked)], since: order.createdAt)
        // Alpaca's record of this order could not be read back to what Folio has: refuse rather than book the later fills alone.
        guard walk.unreached.isEmpty else { throw BrokerError.unavailable(Self.unreachedReason) }
        if !order.status.isEmpty, !Self.openStatuses.contains(order.status), !Self.endedStatuses.contains(order.status) {
            logger.warning("an Alpaca order status Folio does not know; the order is kept open", metadata: ["status": "\(order.status)"])
        }
        return Self.report(order, fills: walk.fills[order.id] ?? [], applied: booked.quantity, canceledBy: reason)
    }

    static let endedStatuses: Set<String> = ["filled", "canceled", "replaced", "expired", "rejected"]

    /// `applied`: what Folio has already recorded of the order's fills (the
    /// trade stream's event about an order whose fills are all in, when `fills` is empty).
    static func report(
        _ order: RemoteOrder, fills: [BrokerFill], applied: Quantity = .zero, canceledBy reason: String = "canceled at the broker"
    ) -> BrokerReport {
        // Alpaca's record of the fills lags its order status, or was cut short: the order stays open until
        // every share it says filled has a fill to apply (ending it now would lose the rest for good).
        let recorded = fills.reduce(applied.units) { $0 + $1.quantity.units }
        if recorded < order.filledQuantity.units {
            return fills.isEmpty ? .accepted : .partiallyFilled(fills)
        }
        // Part of it filled (now, or before): what ends it ends the rest, and what filled stands.
        let none = fills.isEmpty && applied.isZero
        switch order.status {
        case "filled":
            return .filled(fills)
        case "canceled":
            return none ? .canceled(reason: reason) : .filledThenCanceled(fills, reason: reason)
        case "replaced":
            // Replaced at Alpaca by another order Folio did not place: this one ends here.
            return none ? .canceled(reason: "replaced at the broker") : .filledThenCanceled(fills, reason: "replaced at the broker")
        case "expired":
            return none ? .expired : .filledThenCanceled(fills, reason: "expired at the broker")
        case "rejected":
            return none ? .rejected(reason: "the broker rejected the order") : .filledThenCanceled(fills, reason: "the broker rejected the rest")
        default:
            return fills.isEmpty ? .accepted : .partiallyFilled(fills)
        }
    }

    /// What Folio knows of an order whose fills are read: what it has booked, and when the last of that was executed.
    struct Booked: Sendable {
        var quantity: Quantity
        var lastFillAt: Date?

        init(_ order: BrokerOrder) {
            quantity = order.filledQuantity
            lastFillAt = order.lastFillAt
        }

        init(quantity: Quantity, lastFillAt: Date? = nil) {
            self.quantity = quantity
            self.lastFillAt = lastFillAt
        }
    }

    /// A FILL activity of an order, with the quantity filled up to and including it.
    struct Activity: Sendable {
        var fill: BrokerFill
        var cumulative: Quantity
    }

    /// The fills of some orders that Folio has not booked yet: for each order, the fills that follow what
    /// Folio has, oldest first. Each fill's id is the order's and the quantity filled up to and including
    /// it (`alpaca:<order>:<cum_qty>`), which the trade stream's events carry too: a fill is the same fill
    /// whichever way it arrives, and is applied once.
    ///
    /// Only orders whose `filled_qty` is ahead of what Folio booked are read. The account's FILL activities
    /// are read newest first (since `since`, an RFC 3339 time) and only as far back as what Folio has: the
    /// walk stops once every order's record reaches back to it, so an old resting order costs a look at its
    /// recent fills, not at every fill of the account since it was placed. An order the walk does not reach
    /// within 5,000 activities (its fills were missed long ago, on a busy account) is read a second time,
    /// oldest first from its last booked fill (or from when it was made); whatever run of fills that walk
    /// finds is handed back, and the next look goes on from it. `unreached`: orders for which neither walk
    /// found a single fill to book within its 5,000 activities.
    ///
    /// Only an unbroken run of fills is handed back: the first starts where Folio's booked quantity ends and
    /// each next one where the one before ends. A fill missing from Alpaca's record (lagging, or unreadable)
    /// stops the run there, so a later fill is never booked across the gap.
    func unappliedFills(of orders: [(order: RemoteOrder, booked: Booked)], since: String?) async throws -> (
        fills: [String: [BrokerFill]], unreached: Set<String>
    ) {
        var booked: [String: Booked] = [:], remote: [String: RemoteOrder] = [:]
        for (order, known) in orders where order.filledQuantity > known.quantity {
            booked[order.id] = known
            remote[order.id] = order
        }
        guard !booked.isEmpty else { return ([:], []) }
        // Newest first, back to what Folio has.
        var found: [String: [Activity]] = [:]
        var reachedBack: Set<String> = []
        var exhausted = false
        var pageToken: String?
        for _ in 0..<Self.pagesPerWalk {
            let page = try await activities(ascending: false, after: since, pageToken: pageToken)
            pageToken = page.lastID ?? pageToken
            for (orderID, activity) in page.activities {
                // Read on past the fill that reaches back, too: fills of one millisecond come in no set order.
                guard let known = booked[orderID] else { continue }
                if activity.cumulative > known.quantity { found[orderID, default: []].append(activity) }
                // This fill began at or before what Folio has: everything older is booked already.
                if let start = try? activity.cumulative - activity.fill.quantity, start <= known.quantity { reachedBack.insert(orderID) }
            }
            if page.isLast { exhausted = true }
            if page.isLast || reachedBack.count == booked.count { break }
        }
        var unreached = exhausted ? [] : Set(booked.keys).subtracting(reachedBack)
        if !unreached.isEmpty {
            // Oldest first, from the earliest of their last booked fills (or of their creation). The slack is wide:
            // a booked fill's time is the broker's, but never earlier than when Folio made the order.
            let starts = unreached.compactMap { id in
                booked[id]?.lastFillAt ?? remote[id]?.createdAt.flatMap { StrictDate.time($0) }
            }
            let from = starts.count == unreached.count ? starts.min().map { Self.timestamp($0.addingTimeInterval(-Self.secondWalkSlack)) } : since
            var oldestFirst: [String: [Activity]] = [:]
            pageToken = nil
            var ended = false
            for _ in 0..<Self.pagesPerWalk {
                let page = try await activities(ascending: true, after: from, pageToken: pageToken)
                pageToken = page.lastID ?? pageToken
                for (orderID, activity) in page.activities where unreached.contains(orderID) {
                    guard let known = booked[orderID], activity.cumulative > known.quantity else { continue }
                    oldestFirst[orderID, default: []].append(activity)
                }
                // Done once every order has a run that reaches what Alpaca says it filled.
                let done = unreached.allSatisfy { id in
                    guard let known = booked[id], let order = remote[id] else { return true }
                    return Self.unbroken(oldestFirst[id] ?? [], after: known.quantity).last.map { $0.cumulative >= order.filledQuantity } ?? false
                }
                if page.isLast || done {
                    ended = page.isLast
                    break
                }
            }
            // Each order's run stands on its own: one that starts at what Folio booked is safe to hand back even when
            // it does not reach the end yet (the next look goes on from it). Only an order with no run at all, in a walk
            // that stopped at its cap, is left unreached.
            for id in unreached {
                guard let known = booked[id] else { continue }
                let run = Self.unbroken(oldestFirst[id] ?? [], after: known.quantity)
                if !run.isEmpty || ended {
                    found[id] = run.reversed()
                    unreached.remove(id)
                }
                if run.isEmpty, ended {
                    logger.warning("an order's next fill is not in Alpaca's record after its last booked one; it is looked for again", metadata: ["alpaca_order_id": "\(id)"])
                }
            }
        }
        var fills: [String: [BrokerFill]] = [:]
        for (id, known) in booked where !unreached.contains(id) {
            let run = Self.unbroken(found[id] ?? [], after: known.quantity)
            if !run.isEmpty { fills[id] = run.map(\.fill) }
        }
        return (fills, unreached)
    }

    /// The fills, oldest first, that follow `booked` without a gap: the first starts at `booked`, each next one
    /// where the one before ends; a repeated one is dropped. The run stops at the first fill that does not follow.
    /// Taken in the order of the quantity filled up to each, not as listed: Alpaca's activity ids are the time to
    /// the millisecond and then a random part, so two executions of one millisecond may be listed either way round.
    static func unbroken(_ activities: [Activity], after booked: Quantity) -> [Activity] {
        var run: [Activity] = []
        var end = booked
        for activity in activities.sorted(by: { $0.cumulative < $1.cumulative }) {
            if activity.cumulative <= end { continue }  // booked already, or seen already
            guard let start = try? activity.cumulative - activity.fill.quantity, start == end else { break }
            run.append(activity)
            end = activity.cumulative
        }
        return run
    }

    /// How far before an order's last booked fill (or its creation) the second walk starts.
    static let secondWalkSlack: TimeInterval = 900

    /// Fifty pages of a hundred: the most one walk reads.
    static let pagesPerWalk = 50

    static let unreachedReason = "the order's fills lie more than 5,000 FILL activities past what Folio has, either way"

    /// One page of FILL activities: each with its order's id, in the order asked for.
    struct ActivityPage {
        var activities: [(orderID: String, activity: Activity)]
        var lastID: String?
        /// Fewer than a page: nothing more to read.
        var isLast: Bool
    }

    private func activities(ascending: Bool, after: String?, pageToken: String?) async throws -> ActivityPage {
        var path = "/v2/account/activities/FILL?direction=\(ascending ? "asc" : "desc")&page_size=100"
        if let after { path += "&after=\(Self.encode(after))" }
        if let pageToken { path += "&page_token=\(Self.encode(pageToken))" }
        let answer = try await call(.GET, path)
        guard answer.status == 200, case .array(let list) = answer.json else {
            throw BrokerError.unavailable("GET /v2/account/activities/FILL answered HTTP \(answer.status)")
        }
        var page = ActivityPage(activities: [], lastID: nil, isLast: list.count < 100)
        for activity in list {
            guard case .object(let fields) = activity, case .string(let id)? = fields["id"] else { continue }
            page.lastID = id
            guard case .string(let orderID)? = fields["order_id"], let quantity = Self.quantity(fields["qty"]), let executed = Self.fillPrice(fields["price"], side: fields["side"])
            else {
                // Its order, if Folio's, stays open until a readable record of the fill comes (FolioOrdersOverdue says so).
                logger.warning("a FILL activity without order_id, qty or price was skipped", metadata: ["activity_id": "\(id)"])
                continue
            }
            // The key is the quantity filled up to this fill, as Alpaca states it; never guessed from a window of activities.
            guard let total = Self.quantity(fields["cum_qty"]) else {
                logger.warning("a FILL activity without cum_qty was skipped", metadata: ["activity_id": "\(id)"])
                continue
            }
            let fill = BrokerFill(id: Self.fillID(order: orderID, cumulative: total), quantity: quantity, price: executed, executedAt: Self.date(fields["transaction_time"]))
            page.activities.append((orderID, Activity(fill: fill, cumulative: total)))
        }
        return page
    }

    /// What Alpaca says now about some of an account's orders: two calls for
    /// any number of them (`GET /v2/orders?status=all` since the oldest, and
    /// the FILL activities since then), plus one look-up per order the list
    /// did not hold. The polling that catches up when the stream was down.
    struct Look: Sendable {
        var status: String
        var filledQuantity: Quantity
        var report: BrokerReport
    }

    /// What one look found: each listed order's state, and the orders Alpaca lists nowhere (neither among its
    /// orders since the oldest nor under their own id).
    struct Looks: Sendable {
        var byOrder: [OrderID: Look] = [:]
        var unlisted: Set<OrderID> = []
    }

    func look(at orders: [BrokerOrder]) async throws -> Looks {
        guard let oldest = orders.map(\.createdAt).min() else { return Looks() }
        // Folio's order is made before it reaches Alpaca: two minutes' slack covers the clocks' difference.
        let since = Self.timestamp(oldest.addingTimeInterval(-120))
        var remote: [String: RemoteOrder] = [:]
        var after = since
        for _ in 0..<20 {
            let answer = try await call(.GET, "/v2/orders?status=all&direction=asc&limit=500&after=\(Self.encode(after))")
            guard answer.status == 200, case .array(let list) = answer.json else {
                throw BrokerError.unavailable("GET /v2/orders answered HTTP \(answer.status)")
            }
            let page = try list.map(RemoteOrder.init)
            for order in page where !order.clientOrderID.isEmpty { remote[order.clientOrderID] = order }
            guard page.count == 500, let last = page.last?.createdAt, last != after else { break }
            after = last
        }
        var found: [(order: BrokerOrder, remote: RemoteOrder)] = []
        var unlisted: Set<OrderID> = []
        for order in orders {
            if let known = remote[order.id.description] {
                found.append((order, known))
            } else if let looked = try await find(order.id) {
                found.append((order, looked))
            } else {
                unlisted.insert(order.id)
            }
        }
        // The fills are read back only as far as the oldest order with something new to book.
        let filling = found.filter { $0.remote.filledQuantity > $0.order.filledQuantity }.map(\.order.createdAt).min()
        let walk = try await unappliedFills(
            of: found.map { ($0.remote, Booked($0.order)) }, since: Self.timestamp((filling ?? oldest).addingTimeInterval(-120)))
        var looks = Looks(unlisted: unlisted)
        for (order, remote) in found {
            guard !walk.unreached.contains(remote.id) else {
                // The others go on; this one waits for a later look.
                logger.warning("an order's fills could not be read", metadata: ["order_id": "\(order.id)", "reason": "\(Self.unreachedReason)"])
                continue
            }
            looks.byOrder[order.id] = Look(
                status: remote.status, filledQuantity: remote.filledQuantity,
                report: Self.report(remote, fills: walk.fills[remote.id] ?? [], applied: order.filledQuantity))
        }
        return looks
    }

    /// An RFC 3339 time Alpaca sends (`2026-11-24T15:59:59.123456Z`), to whole milliseconds as the
    /// books record every time (a row must read back from either database as its audit digest has it);
    /// nil when absent or not one.
    static func date(_ value: JSONValue?) -> Date? {
        guard case .string(let text)? = value else { return nil }
        return StrictDate.time(text).map(AuditChain.recordedTime)
    }

    static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601)  // 2026-11-24T15:30:00Z
    }

    static func fillID(order: String, cumulative: Quantity) -> String {
        "alpaca:\(order):\(cumulative)"
    }

    /// A quantity Alpaca sends as a string (or, defensively, a JSON number's exact text).
    static func quantity(_ value: JSONValue?) -> Quantity? {
        switch value {
        case .string(let text)?, .number(let text)?: try? Quantity(parsing: text)
        default: nil
        }
    }

    /// A fill's price. One with more places than Folio keeps is rounded against the account (a buy's up, a
    /// sale's down), as every amount a trade moves is: rounding never books more than the broker paid.
    static func fillPrice(_ value: JSONValue?, side: JSONValue?) -> Price? {
        let rounding: RoundingRule = switch side {
        case .string("buy")?: .up
        case .string(let sale)? where sale.hasPrefix("sell"): .down
        default: .halfEven
        }
        return switch value {
        case .string(let text)?, .number(let text)?: try? Price(parsing: text, rounding: rounding)
        default: nil
        }
    }

    /// A price that moves no money (a position's average entry price); Alpaca may send more places than
    /// Folio keeps, rounded half-even to the tick Folio stores.
    static func price(_ value: JSONValue?) -> Price? {
        switch value {
        case .string(let text)?, .number(let text)?: try? Price(parsing: text, rounding: .halfEven)
        default: nil
        }
    }

    // MARK: - Wire

    static func orderBody(_ order: BrokerOrder) -> String {
        let type = switch order.type {
        case .market: "market"
        case .limit: "limit"
        case .stop: "stop"
        case .stopLimit: "stop_limit"
        }
        let timeInForce = switch order.timeInForce {
        case .day: "day"
        case .goodTillCanceled: "gtc"
        case .immediateOrCancel: "ioc"
        case .fillOrKill: "fok"
        }
        var fields: [String: String] = [
            "symbol": order.symbol, "side": order.side == .buy ? "buy" : "sell", "client_order_id": order.id.description,
            "type": type, "time_in_force": timeInForce,
        ]
        if let quantity = order.quantity { fields["qty"] = quantity.description }
        if let notional = order.notional { fields["notional"] = notional.description }
        if let limit = order.limitPrice { fields["limit_price"] = limit.description }
        if let stop = order.stopPrice { fields["stop_price"] = stop.description }
        return "{" + fields.keys.sorted().map { JSONText.quote($0) + ":" + JSONText.quote(fields[$0]!) }.joined(separator: ",") + "}"
    }

    struct Answer {
        var status: Int
        var json: JSONValue
        /// The call was sent again after a 5xx (an earlier try may have done its work). Not after a 429 alone:
        /// a call refused for its rate was not acted on, so a refusal of the repeat is a refusal of the call.
        var repeated = false
        /// Alpaca's error `message`, when there is one: kept on the order and put in mail, so no control or
        /// text-direction character (a forged line, a reversed name) and at most 300 characters.
        var message: String {
            if case .object(let fields) = json, case .string(let message)? = fields["message"], let shown = UserText.fromVendor(message) { return shown }
            return "HTTP \(status)"
        }
    }

    /// How often a call is tried when Alpaca answers 429 or 5xx, and how long
    /// to wait before each retry (a `Retry-After` of up to `longestWait` is
    /// honoured): all well within a job's 60-second lease. No answer at all
    /// (the client already waited out its timeout) is not tried again here:
    /// the job is, later.
    static let attempts = 3
    static let backOff: [Duration] = [.milliseconds(250), .seconds(1)]
    static let longestWait = 5

    private func call(_ method: HTTPMethod, _ path: String, body: String? = nil) async throws -> Answer {
        var attempt = 0
        var earlierMayHaveActed = false
        while true {
            attempt += 1
            do {
                var answer = try await callOnce(method, path, body: body)
                answer.repeated = earlierMayHaveActed
                return answer
            } catch let failure as RetryableFailure {
                earlierMayHaveActed = earlierMayHaveActed || failure.mayHaveActed
                guard attempt < Self.attempts, failure.answered else { throw BrokerError.unavailable(failure.reason) }
                var wait = Self.backOff[min(attempt - 1, Self.backOff.count - 1)]
                if let seconds = failure.retryAfter, seconds <= Self.longestWait { wait = max(wait, .seconds(seconds)) }
                try await Task.sleep(for: wait)
            }
        }
    }

    struct RetryableFailure: Error {
        var reason: String
        /// Alpaca answered (429 or 5xx), rather than not at all.
        var answered = true
        var retryAfter: Int?
        /// A 5xx: the call may have been carried out before the answer failed. A 429 was refused before anything.
        var mayHaveActed = true
    }

    private func callOnce(_ method: HTTPMethod, _ path: String, body: String?) async throws -> Answer {
        var request = HTTPClientRequest(url: settings.baseURL.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + path)
        request.method = method
        request.headers.add(name: "APCA-API-KEY-ID", value: settings.keyID)
        request.headers.add(name: "APCA-API-SECRET-KEY", value: settings.secretKey)
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "Folio/\(FolioVersion.current)")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let route = "\(method.rawValue) \(path.prefix { $0 != "?" })"
        let status: Int
        let bytes: ByteBuffer
        let retryAfter: Int?
        let endpoint = "\(method.rawValue) \(Self.endpoint(path))", start = ContinuousClock.now
        do {
            let (response, body) = try await httpClient.executeWhole(request, timeout: timeout, upTo: 8 << 20)
            status = Int(response.status.code)
            retryAfter = response.headers.first(name: "Retry-After").flatMap { Int($0) }
            bytes = body
            metrics?.vendorCall(vendor: "alpaca", endpoint: endpoint, result: status < 400 ? "ok" : "error", duration: ContinuousClock.now - start)
        } catch {
            metrics?.vendorCall(vendor: "alpaca", endpoint: endpoint, result: "unreachable", duration: ContinuousClock.now - start)
            // The error names its type only: a URL or header never reaches the log.
            logger.warning("broker call failed", metadata: ["broker": "alpaca", "method": "\(method.rawValue)", "error": "\(type(of: error))"])
            throw RetryableFailure(reason: "\(route): \(type(of: error))", answered: false)
        }
        if status == 429 || status >= 500 {
            logger.warning("broker call refused for now", metadata: ["broker": "alpaca", "method": "\(method.rawValue)", "status": "\(status)"])
            throw RetryableFailure(reason: "\(route) answered HTTP \(status)", retryAfter: retryAfter, mayHaveActed: status != 429)
        }
        let json = bytes.readableBytes == 0 ? JSONValue.null : ((try? bytes.withUnsafeReadableBytes { try JSONValue.parse($0) }) ?? .null)
        return Answer(status: status, json: json)
    }

    /// A path as a metric label: no query, and ids and symbols folded, so the label set stays small.
    static func endpoint(_ path: String) -> String {
        let segments = path.prefix { $0 != "?" }.split(separator: "/", omittingEmptySubsequences: false)
        var folded: [String] = []
        for (index, segment) in segments.enumerated() {
            let previous = index > 0 ? segments[index - 1] : ""
            if previous == "positions" || previous == "assets" {
                folded.append("{symbol}")
            } else if previous == "orders" && !segment.contains(":") {
                folded.append("{id}")
            } else if segment.contains(":") {
                folded.append(String(segment.prefix { $0 != ":" }) + ":" + String(segment.split(separator: ":").last ?? ""))
            } else {
                folded.append(String(segment))
            }
        }
        return folded.joined(separator: "/")
    }

    static func encode(_ text: String) -> String {
        var unreserved = CharacterSet.alphanumerics
        unreserved.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? ""
    }
}
