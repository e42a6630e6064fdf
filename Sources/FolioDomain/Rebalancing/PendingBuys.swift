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
            cash = try cash - Cash.product(shares, price, rounding: .down)
            if let index = held.firstIndex(where: { $0.symbol == order.symbol }) {
                held[index].quantity = try held[index].quantity + shares
            } else {
                held.append(PricedHolding(symbol: order.symbol, quantity: shares, availableQuantity: .zero, costBasis: .zero))
            }
        }
        return (held, cash)
    }
}

/// Shares open sells hold, as a rebalance plan counts them: already on their
/// way out. Each holding's reserved shares count as the cash their sale brings
/// at today's price (rounded down), so the total stays what it is, and the plan
/// neither sells them a second time nor finds the holding over its target for
/// shares that are leaving. Count them before `PendingBuys`, whose shares are
/// on their way in and reserve nothing. A holding without a price keeps its shares.
public enum PendingSells {
    public static func counted(
        holdings: [PricedHolding], cash: Cash, prices: [String: PriceQuote]
    ) throws -> (holdings: [PricedHolding], cash: Cash) {
        var held = holdings
        var cash = cash
        for index in held.indices {
            let reserved = try held[index].quantity - held[index].availableQuantity
            guard reserved.isPositive, let price = prices[held[index].symbol]?.price, price.isPositive else { continue }
            cash = try cash + Money.proceeds(quantity: reserved, price: price)
            held[index].quantity = held[index].availableQuantity
        }
        return (held, cash)
    }
}
