import Foundation

/// Shares of one symbol held in one account, with their cost basis.
///
/// The cost basis is kept as the exact cash paid, not as an average times a
/// quantity, so it never drifts; the average cost is derived for display.
public struct Position: Equatable, Sendable {
    public var quantity: Quantity
    public var costBasis: Cash

    public static let empty = Position(quantity: .zero, costBasis: .zero)

    public init(quantity: Quantity, costBasis: Cash) {
        self.quantity = quantity
        self.costBasis = costBasis
    }

    /// Cost per share, to 8 places (half to even); zero for an empty position.
    public var averageCost: Price {
        guard quantity.isPositive else { return .zero }
        return (try? Price.quotient(costBasis, quantity, rounding: .halfEven)) ?? .zero
    }

    /// After buying `quantity` shares for `amount` in cash (fees included);
    /// `MoneyError.overflow` when the holding would outgrow its columns.
    public func buying(_ quantity: Quantity, for amount: Cash) throws(MoneyError) -> Position {
        Position(quantity: try self.quantity + quantity, costBasis: try costBasis + amount)
    }

    /// After selling `quantity` shares: the position and the cost basis that
    /// left with them. Selling everything takes the whole basis, so nothing is
    /// left behind by rounding. Returns nil when there are not enough shares.
    public func selling(_ quantity: Quantity) -> (position: Position, costSold: Cash)? {
        guard quantity.isPositive, quantity <= self.quantity else { return nil }
        if quantity == self.quantity { return (.empty, costBasis) }
        // The share of the basis, half to even to the cent; never more than the basis.
        guard let costSold = try? costBasis.scaled(by: quantity, over: self.quantity, places: Cash.centPlaces, rounding: .halfEven)
        else { return nil }
        return (Position(quantity: Quantity(uncheckedUnits: self.quantity.units - quantity.units), costBasis: Cash(uncheckedUnits: costBasis.units - costSold.units)), costSold)
    }
}

/// Rules for cash amounts of trades.
public enum Money {
    /// The value of `quantity` shares at `price`, in cents, rounded half to
    /// even: for showing a value, never for moving cash.
    public static func value(quantity: Quantity, price: Price) throws(MoneyError) -> Cash {
        try Cash.product(quantity, price, places: Cash.centPlaces, rounding: .halfEven)
    }

    /// What a buy costs: rounded up to the cent, so no fill is ever free.
    public static func cost(quantity: Quantity, price: Price) throws(MoneyError) -> Cash {
        try Cash.product(quantity, price, places: Cash.centPlaces, rounding: .up)
    }

    /// What a sale pays: rounded down to the cent, so rounding never creates cash.
    public static func proceeds(quantity: Quantity, price: Price) throws(MoneyError) -> Cash {
        try Cash.product(quantity, price, places: Cash.centPlaces, rounding: .down)
    }
}
