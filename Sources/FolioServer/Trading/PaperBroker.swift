import FolioDomain
import Foundation

/// An order as a broker sees it. Folio's order id is the broker's client order
/// id, so submitting twice after a crash can never create a second order.
struct BrokerOrder: Sendable {
    var id: UUID
    var symbol: String
    var side: OrderSide
    var type: OrderType
    var timeInForce: TimeInForce
    var quantity: Decimal?
    var notional: Decimal?
    var limitPrice: Decimal?
    var stopPrice: Decimal?
    var createdAt: Date
    /// Filled so far (partial fills).
    var filledQuantity: Decimal = 0

    /// What is left to fill, for an order of a quantity.
    var remainingQuantity: Decimal? {
        quantity.map { $0 - filledQuantity }
    }
}

struct BrokerFill: Sendable, Equatable {
    var id: String
    var quantity: Decimal
    var price: Decimal
}

/// What a broker says about an order.
enum BrokerReport: Sendable, Equatable {
    case accepted
    /// Fills; the order is filled when they reach its quantity, partially filled otherwise.
    case filled([BrokerFill])
    /// Fills, then the rest is canceled (an IOC order that could only partly fill).
    case filledThenCanceled([BrokerFill], reason: String)
    case canceled(reason: String)
    case rejected(reason: String)
    case expired
}

/// Executes orders. The paper broker is built in; Alpaca comes later behind the same protocol.
protocol Broker: Sendable {
    func submit(_ order: BrokerOrder) async throws -> BrokerReport
    /// Looks again at a resting order: it may fill, expire, or keep resting (nil).
    func recheck(_ order: BrokerOrder) async throws -> BrokerReport?
    /// Asks the broker to cancel a resting order. It answers `.canceled` when
    /// it did, or what happened instead (a fill that beat the cancel).
    func cancel(_ order: BrokerOrder) async throws -> BrokerReport
}

/// Fills at the market's price: market orders at once (plus slippage), limit
/// and stop orders when the price crosses; IOC and FOK are canceled when they
/// cannot fill at once; DAY orders expire at 16:00 New York time. With
/// partial fills on, each match fills half of what remains (whole shares,
/// rounded up), so an order fills over several passes; FOK and notional
/// orders always fill whole, and an IOC order cancels what it could not fill.
struct PaperBroker: Broker {
    let quotes: QuoteService
    let clock: AppClock
    /// Adverse slippage on market fills, in basis points.
    let slippageBasisPoints: Decimal
    var partialFills: Bool = false

    func submit(_ order: BrokerOrder) async throws -> BrokerReport {
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
        return .accepted
    }

    func recheck(_ order: BrokerOrder) async throws -> BrokerReport? {
        if order.timeInForce == .day, clock.now() >= Self.dayEnd(for: order.createdAt) { return .expired }
        guard let quote = try? await quotes.quote(for: order.symbol), !quote.isStale else { return nil }
        return fill(order, at: quote.price).map { .filled([$0]) }
    }

    /// Resting paper orders live only in Folio's database: nothing to beat the cancel.
    func cancel(_ order: BrokerOrder) async throws -> BrokerReport {
        .canceled(reason: "canceled by user")
    }

    /// The fill this order gets at `price`, if it would execute now.
    func fill(_ order: BrokerOrder, at price: Decimal) -> BrokerFill? {
        let buying = order.side == .buy
        let executionPrice: Decimal
        switch order.type {
        case .market:
            executionPrice = slipped(price, buying: buying)
        case .limit:
            guard let limit = order.limitPrice, buying ? price <= limit : price >= limit else { return nil }
            executionPrice = buying ? min(price, limit) : max(price, limit)
        case .stop:
            guard let stop = order.stopPrice, buying ? price >= stop : price <= stop else { return nil }
            executionPrice = slipped(price, buying: buying)
        case .stopLimit:
            guard let stop = order.stopPrice, let limit = order.limitPrice, buying ? price >= stop : price <= stop,
                  buying ? price <= limit : price >= limit
            else { return nil }
            executionPrice = buying ? min(price, limit) : max(price, limit)
        }
        let quantity: Decimal
        if let remaining = order.remainingQuantity {
            guard remaining > 0 else { return nil }
            quantity = partialFills && order.timeInForce != .fillOrKill ? Self.partialQuantity(of: remaining) : remaining
        } else if let notional = order.notional {
            quantity = ExactDecimal.rounded(notional / executionPrice, scale: OrderDraft.quantityScale, mode: .down)
            guard quantity > 0 else { return nil }
        } else {
            return nil
        }
        // Named by what was filled before it, so the same fill reported twice has one id.
        return BrokerFill(id: "\(order.id.uuidString.lowercased())-\(ExactDecimal.format(order.filledQuantity))", quantity: quantity, price: executionPrice)
    }

    /// Half of what remains, in whole shares rounded up; a fraction under one share fills whole.
    static func partialQuantity(of remaining: Decimal) -> Decimal {
        guard remaining > 1 else { return remaining }
        return min(remaining, ExactDecimal.rounded(remaining / 2, scale: 0, mode: .up))
    }

    func slipped(_ price: Decimal, buying: Bool) -> Decimal {
        let factor = slippageBasisPoints / 10_000
        return ExactDecimal.rounded(price * (buying ? 1 + factor : 1 - factor), scale: 2, mode: buying ? .up : .down)
    }

    /// 16:00 in New York on the order's trading day (the next day when placed after the close).
    static func dayEnd(for date: Date) -> Date {
        let day = TradingDay(date)
        return day.close > date ? day.close : day.adding(days: 1).close
    }
}
