/// Open buy orders as a rebalance plan counts them, so that it neither buys
/// twice what is already on its way nor counts as bought what may never be.
public enum PendingBuys {
    /// Each open buy counts as the shares its reserved cash buys at today's
    /// price, no more than it still asks for (a market buy: all of them; a limit
    /// far below the market: next to none), and that value is taken out of
    /// `cash`, so the account's total stays what it is. A stop buy whose stop
    /// is above today's price buys only if the price rises to it, and a buy of
    /// a symbol without a price cannot be valued: both count as the cash they hold.
    public static func counted(
        _ buys: [OrderState], holdings: [PricedHolding], cash: Cash, prices: [String: PriceQuote]
    ) throws -> (holdings: [PricedHolding], cash: Cash) {
        var held = holdings
        var cash = cash
        for order in buys where order.side == .buy && order.status.isOpen && order.reservedCash.isPositive {
            guard let price = prices[order.symbol]?.price, price.isPositive else { continue }
            if let stop = order.stopPrice, stop > price { continue }
            let affordable = try Quantity.quotient(order.reservedCash, price, rounding: .down)
            let wanted = try order.quantity.map { try $0 - order.filledQuantity } ?? affordable
            let shares = Quantity.min(affordable, wanted)
            guard shares.isPositive else { continue }
            // Cash goes down by exactly what the holding's value (in cents, as the plan values it) goes up, so
            // the total stays what it is to the cent; the shares' exact cost would leave fractions of a cent.
            if !held.contains(where: { $0.symbol == order.symbol }) {
                held.append(PricedHolding(symbol: order.symbol, quantity: .zero, availableQuantity: .zero, costBasis: .zero))
            }
            let index = held.firstIndex { $0.symbol == order.symbol }!
            let before = try Money.value(quantity: held[index].quantity, price: price)
            held[index].quantity = try held[index].quantity + shares
            cash = try cash - (Money.value(quantity: held[index].quantity, price: price) - before)
        }
        return (held, cash)
    }
}

/// Open sell orders as a rebalance plan counts them: a sell the market would
/// fill now (a market sell, a limit at or below today's price, a stop at or
/// above it) is on its way out, so its reserved shares count as the cash their
/// sale brings at today's price (rounded down) and the total stays what it is;
/// the plan neither sells them a second time nor finds the holding over its
/// target for shares that are leaving. A sell that waits (a limit above the
/// market, a stop below it) keeps its shares, as does a symbol without a price.
/// Count them before `PendingBuys`.
public enum PendingSells {
    public static func counted(
        _ sells: [OrderState], holdings: [PricedHolding], cash: Cash, prices: [String: PriceQuote]
    ) throws -> (holdings: [PricedHolding], cash: Cash) {
        var held = holdings
        var cash = cash
        for order in sells where order.side == .sell && order.status.isOpen && order.reservedQuantity.isPositive {
            guard let price = prices[order.symbol]?.price, price.isPositive,
                  let index = held.firstIndex(where: { $0.symbol == order.symbol }) else { continue }
            if let limit = order.limitPrice, limit > price { continue }
            if let stop = order.stopPrice, stop < price { continue }
            let shares = Quantity.min(order.reservedQuantity, held[index].quantity)
            guard shares.isPositive else { continue }
            cash = try cash + Money.proceeds(quantity: shares, price: price)
            held[index].quantity = try held[index].quantity - shares
        }
        return (held, cash)
    }
}
