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
}

struct BrokerFill: Sendable, Equatable {
    var id: String
    var quantity: Decimal
    var price: Decimal
}

/// What a broker says about an order.
enum BrokerReport: Sendable, Equatable {
    case accepted
    case filled([BrokerFill])
    case canceled(reason: String)
    case rejected(reason: String)
    case expired
}

/// Executes orders. The paper broker is built in; Alpaca comes later behind the same protocol.
protocol Broker: Sendable {
    func submit(_ order: BrokerOrder) async throws -> BrokerReport
    /// Looks again at a resting order: it may fill, expire, or keep resting (nil).
    func recheck(_ order: BrokerOrder) async throws -> BrokerReport?
}

/// Fills at the simulated market's price: market orders at once (plus
/// slippage), limit and stop orders when the price crosses; IOC and FOK are
/// canceled when they cannot fill at once; DAY orders expire at 16:00 New York time.
struct PaperBroker: Broker {
    let quotes: QuoteService
    let clock: AppClock
    /// Adverse slippage on market fills, in basis points.
    let slippageBasisPoints: Decimal

    func submit(_ order: BrokerOrder) async throws -> BrokerReport {
        // No fresh price: the submit job fails and is retried later rather than filling at an old price.
        guard let quote = try await quotes.quote(for: order.symbol) else { return .rejected(reason: "no price for \(order.symbol)") }
        guard !quote.isStale else { throw MarketDataError.unreachable("only a stale quote for \(order.symbol)") }
        if let fill = fill(order, at: quote.price) { return .filled([fill]) }
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
        if let ordered = order.quantity {
            quantity = ordered
        } else if let notional = order.notional {
            quantity = ExactDecimal.rounded(notional / executionPrice, scale: OrderDraft.quantityScale, mode: .down)
            guard quantity > 0 else { return nil }
        } else {
            return nil
        }
        return BrokerFill(id: "\(order.id.uuidString.lowercased())-1", quantity: quantity, price: executionPrice)
    }

    func slipped(_ price: Decimal, buying: Bool) -> Decimal {
        let factor = slippageBasisPoints / 10_000
        return ExactDecimal.rounded(price * (buying ? 1 + factor : 1 - factor), scale: 2, mode: buying ? .up : .down)
    }

    /// 16:00 in New York on the order's trading day (the next day when placed after the close).
    static func dayEnd(for date: Date) -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "America/New_York")!
        var close = calendar.date(bySettingHour: 16, minute: 0, second: 0, of: date)!
        if close <= date { close = calendar.date(byAdding: .day, value: 1, to: close)! }
        return close
    }
}
