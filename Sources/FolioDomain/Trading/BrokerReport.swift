import Foundation

/// What a broker says about an order.
public enum BrokerReport: Sendable, Equatable {
    case accepted
    /// Open at the broker, and its stop price was reached: from now on the
    /// order is a market (stop) or limit (stop-limit) order. The paper broker
    /// says so; a broker that holds orders keeps the trigger itself.
    case triggered
    /// Fills, and the broker says the order is done filling: an order of a
    /// quantity is filled when its fills reach it, a notional order with its last fill.
    case filled([BrokerFill])
    /// Fills, and the broker says more may come (a notional order stays open).
    case partiallyFilled([BrokerFill])
    /// Fills, then the rest is canceled (an IOC order that could only partly fill).
    case filledThenCanceled([BrokerFill], reason: String)
    case canceled(reason: String)
    case rejected(reason: String)
    case expired

    /// The report ends the order (filled, canceled, rejected or expired).
    public var isEnd: Bool {
        switch self {
        case .accepted, .triggered, .partiallyFilled: false
        default: true
        }
    }

    /// The fills the report carries.
    public var fills: [BrokerFill] {
        switch self {
        case .filled(let fills), .partiallyFilled(let fills), .filledThenCanceled(let fills, _): fills
        default: []
        }
    }
}

extension Books {
    /// Applies a broker's report on one of this account's orders through the
    /// trading rules. A fill already applied (the same broker fill id, from
    /// the database or earlier in this batch) changes nothing.
    /// `heldAtBroker`: the broker holds the order, so its fills already happened (see `TradingRules.fill`).
    public mutating func apply(_ report: BrokerReport, to orderID: OrderID, heldAtBroker: Bool = false, ids: IDSource, now: Date) throws(TradingError) {
        guard orders[orderID] != nil else { return }
        func current() -> OrderState { orders[orderID]! }
        func end(_ status: OrderStatus, _ reason: String?) {
            // A cancel the user asked for ends for that reason, whatever words the broker's report of it used.
            let reason = status == .canceled && current().cancelRequestedAt != nil ? OrderState.canceledByUser : reason
            if let posting = TradingRules.end(current(), as: status, reason: reason, account: account, holding: holding(current().symbol), now: now) {
                record(posting)
            }
        }
        switch report {
        case .accepted:
            if let posting = TradingRules.accept(current(), now: now) { record(posting) }
        case .triggered:
            if let posting = TradingRules.accept(current(), now: now) { record(posting) }
            if let posting = TradingRules.trigger(current(), now: now) { record(posting) }
        case .filled(let fills):
            try applyFills(fills, to: orderID, done: true, heldAtBroker: heldAtBroker, ids: ids, now: now)
        case .partiallyFilled(let fills):
            try applyFills(fills, to: orderID, done: false, heldAtBroker: heldAtBroker, ids: ids, now: now)
        case .filledThenCanceled(let fills, let reason):
            try applyFills(fills, to: orderID, done: false, heldAtBroker: heldAtBroker, ids: ids, now: now)
            end(.canceled, reason)
        case .canceled(let reason):
            end(.canceled, reason)
        case .rejected(let reason):
            end(.rejected, reason)
        case .expired:
            end(.expired, "day order past the close")
        }
    }

    /// `done`: the broker says these fills finish the order (what ends a notional order).
    mutating func applyFills(_ fills: [BrokerFill], to orderID: OrderID, done: Bool, heldAtBroker: Bool, ids: IDSource, now: Date) throws(TradingError) {
        let fresh = fills.filter { !appliedFills.contains($0.id) }
        // A notional order the broker says is done, whose last fill was applied before (as a partial fill): it ends now.
        if done, fresh.isEmpty, let order = orders[orderID], order.quantity == nil, order.status == .partiallyFilled,
           let posting = TradingRules.end(order, as: .filled, reason: nil, account: account, holding: holding(order.symbol), now: now)
        {
            record(posting)
            return
        }
        for (index, fill) in fresh.enumerated() {
            let order = orders[orderID]!
            if let posting = try TradingRules.fill(
                fill, order: order, account: account, holding: holding(order.symbol), finishesOrder: done && index == fresh.count - 1,
                heldAtBroker: heldAtBroker, filledValue: filledValues[orderID] ?? .zero, fillID: ids.next(), entryID: ids.next(), now: now) {
                record(posting)
            }
        }
    }
}
