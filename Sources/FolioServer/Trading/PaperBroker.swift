import FolioDomain
import Foundation

/// An order as a broker sees it. Folio's order id is the broker's client order
/// id, so submitting twice after a crash can never create a second order.
struct BrokerOrder: Sendable {
    var id: OrderID
    var symbol: String
    var side: OrderSide
    var type: OrderType
    var timeInForce: TimeInForce
    var quantity: Quantity?
    var notional: Cash?
    var limitPrice: Price?
    var stopPrice: Price?
    var createdAt: Date
    /// Filled so far (partial fills).
    var filledQuantity: Quantity = .zero
    /// A stop order whose stop price was reached before (`triggered_at`), or that filled in part: it no longer waits for the stop.
    var triggered = false
    /// When the last fill booked was executed (set where a broker reads fills that follow it): a read
    /// of the fills that follow can start there.
    var lastFillAt: Date?
    /// A submission that may have been sent before (at a broker that holds
    /// orders, the order's `sent_at`; its answer lost, or the process died):
    /// a remote broker looks first, and an order it does not list is not yet
    /// known never to have arrived.
    var retried = false
    /// The broker took the order (it is open there, or was): not finding it there now is a look-up that lags.
    var reachedBroker: Bool

    init(_ order: OrderState) {
        reachedBroker = order.status != .new
        id = order.id
        symbol = order.symbol
        side = order.side
        type = order.type
        timeInForce = order.timeInForce
        quantity = order.quantity
        notional = order.notional
        limitPrice = order.limitPrice
        stopPrice = order.stopPrice
        createdAt = order.createdAt
        filledQuantity = order.filledQuantity
        triggered = order.triggeredAt != nil || order.filledQuantity.isPositive
    }

    /// What is left to fill, for an order of a quantity.
    var remainingQuantity: Quantity? {
        quantity.map { Quantity(uncheckedUnits: $0.units - filledQuantity.units) }
    }
}

/// Executes orders. The paper broker is built in; Alpaca comes later behind the same protocol.
protocol Broker: Sendable {
    /// Whether orders live at the broker (a remote broker) rather than only in
    /// Folio's database: then a cancel must reach the broker, even for an
    /// order whose submission may still be on its way.
    var holdsOrders: Bool { get }
    func submit(_ order: BrokerOrder) async throws -> BrokerReport
    /// Looks again at a resting order: it may fill, expire, or keep resting (nil).
    func recheck(_ order: BrokerOrder) async throws -> BrokerReport?
    /// Asks the broker to cancel a resting order. It answers `.canceled` when
    /// it did, or what happened instead (a fill that beat the cancel).
    func cancel(_ order: BrokerOrder) async throws -> BrokerReport
    /// Whether an order placed now waits for the market to open: the exchange is closed and the broker keeps its hours.
    func waitsForOpen() -> Bool
}

extension Broker {
    func waitsForOpen() -> Bool { false }
}

/// Fills at the market's price: market orders at once (plus slippage), limit
/// and stop orders when the price crosses; IOC and FOK are canceled when they
/// cannot fill at once; DAY orders expire at the session's close (13:00 on
/// early-close days). With market hours on, nothing fills while the exchange
/// is closed: orders wait for the open. With
/// partial fills on, each match fills half of what remains (whole shares,
/// rounded up), so an order fills over several passes; FOK and notional
/// orders always fill whole, and an IOC order cancels what it could not fill.
struct PaperBroker: Broker {
    let quotes: QuoteService
    let clock: AppClock
    /// Adverse slippage on market fills, in basis points.
    let slippageBasisPoints: Ratio
    var partialFills: Bool = false
    /// Keep the exchange's sessions: nothing fills while the market is closed.
    var marketHours: Bool = false
    /// The exchange's calendar as Folio knows it now (rules, or Alpaca's published calendar).
    var calendar: @Sendable () -> MarketCalendar = { .nyse }
    var holdsOrders: Bool { false }

    func waitsForOpen() -> Bool {
        marketHours && !calendar().isOpen(at: clock.now())
    }

    func submit(_ order: BrokerOrder) async throws -> BrokerReport {
        // Closed: an order waits for the open (as Alpaca accepts a DAY order after hours); IOC and FOK cannot wait.
        if waitsForOpen() {
            if order.timeInForce == .immediateOrCancel || order.timeInForce == .fillOrKill { return .canceled(reason: "the market is closed") }
            return .accepted
        }
        // No fresh price: the submit job fails and is retried later rather than filling at an old price.
        guard let quote = try await quotes.quote(for: order.symbol) else { return .rejected(reason: "no price for \(order.symbol)") }
        guard !quote.isStale else { throw MarketDataError.unreachable("only a stale quote for \(order.symbol)") }
        if let fill = fill(order, at: quote.price) {
            if order.timeInForce == .immediateOrCancel, let remaining = order.remainingQuantity, fill.quantity < remaining {
                return .filledThenCanceled([fill], reason: "the rest was not marketable at once")
            }
            return .filled([fill])
        }
        if order.timeInForce == .immediateOrCancel || order.timeInForce == .fillOrKill {
            return .canceled(reason: "not marketable at once")
        }
        return triggers(order, at: quote.price) ? .triggered : .accepted
    }

    func recheck(_ order: BrokerOrder) async throws -> BrokerReport? {
        let calendar = calendar()
        if order.timeInForce == .day, clock.now() >= calendar.dayEnd(for: order.createdAt) { return .expired }
        if marketHours, !calendar.isOpen(at: clock.now()) { return nil }
        guard let quote = try? await quotes.quote(for: order.symbol), !quote.isStale else { return nil }
        if let fill = fill(order, at: quote.price) { return .filled([fill]) }
        return triggers(order, at: quote.price) ? .triggered : nil
    }

    /// Whether `price` reaches the stop of a stop order not yet triggered (one that does not fill now: a
    /// stop-limit outside its limit). Remembered, it stays a limit order when the price moves back past the stop.
    func triggers(_ order: BrokerOrder, at price: Price) -> Bool {
        guard !order.triggered, order.type.needsStopPrice, let stop = order.stopPrice else { return false }
        return order.side == .buy ? price >= stop : price <= stop
    }

    /// Resting paper orders live only in Folio's database: nothing to beat the cancel.
    func cancel(_ order: BrokerOrder) async throws -> BrokerReport {
        .canceled(reason: OrderState.canceledByUser)
    }

    /// The fill this order gets at `price`, if it would execute now.
    func fill(_ order: BrokerOrder, at price: Price) -> BrokerFill? {
        let buying = order.side == .buy
        // A stop whose price was reached (recorded, or seen in a part filled) is a market (or limit) order from then
        // on, as at a broker, not a stop that waits for the price to cross again.
        let triggered = order.triggered
        let executionPrice: Price
        switch order.type {
        case .market:
            guard let slipped = slipped(price, buying: buying) else { return nil }
            executionPrice = slipped
        case .limit:
            guard let limit = order.limitPrice, buying ? price <= limit : price >= limit else { return nil }
            executionPrice = buying ? Price.min(price, limit) : Price.max(price, limit)
        case .stop:
            guard let stop = order.stopPrice, triggered || (buying ? price >= stop : price <= stop), let slipped = slipped(price, buying: buying) else { return nil }
            executionPrice = slipped
        case .stopLimit:
            guard let stop = order.stopPrice, let limit = order.limitPrice, triggered || (buying ? price >= stop : price <= stop),
                  buying ? price <= limit : price >= limit
            else { return nil }
            executionPrice = buying ? Price.min(price, limit) : Price.max(price, limit)
        }
        let quantity: Quantity
        if let remaining = order.remainingQuantity {
            guard remaining.isPositive else { return nil }
            quantity = partialFills && order.timeInForce != .fillOrKill ? Self.partialQuantity(of: remaining) : remaining
        } else if let notional = order.notional {
            guard let shares = try? Quantity.quotient(notional, executionPrice, rounding: .down), shares.isPositive else { return nil }
            quantity = shares
        } else {
            return nil
        }
        // Named by what was filled before it, so the same fill reported twice has one id.
        return BrokerFill(id: "\(order.id)-\(order.filledQuantity)", quantity: quantity, price: executionPrice)
    }

    /// Half of what remains, in whole shares rounded up; a fraction under one share fills whole.
    static func partialQuantity(of remaining: Quantity) -> Quantity {
        guard remaining > 1, let half = try? Quantity.quotient(remaining, Quantity(2), places: 0, rounding: .up) else { return remaining }
        return Quantity.min(remaining, half)
    }

    /// The price moved against the customer by the slippage, at the market's
    /// tick: the cent from a dollar up, a hundredth of a cent below (as US
    /// quoting rules allow); up for buys, down for sales.
    func slipped(_ price: Price, buying: Bool) -> Price? {
        guard let wide = try? Fixed<WideScale>(slippageBasisPoints, rounding: .down) else { return nil }
        // basis points ÷ 10,000 is exact at 18 places.
        let fraction = Fixed<WideScale>(uncheckedUnits: wide.units / 10_000)
        guard let factor = try? (buying ? Fixed<WideScale>(1) + fraction : Fixed<WideScale>(1) - fraction) else { return nil }
        let places = price < 1 ? 4 : 2
        guard let moved = try? Price.product(price, factor, places: places, rounding: buying ? .up : .down) else { return nil }
        // A sale of a stock under a tick rounds to nothing: a fill at no price is no fill, and the order would
        // never fill. The slippage cannot move the price below a tick; the market's price stands.
        return moved.isPositive ? moved : price
    }
}
