import Foundation

/// Shares of one symbol held in one account, with their cost basis.
///
/// The cost basis is kept as the exact cash paid, not as an average times a
/// quantity, so it never drifts; the average cost is derived for display.
public struct Position: Equatable, Sendable {
    public var quantity: Decimal
    public var costBasis: Decimal

    public static let empty = Position(quantity: 0, costBasis: 0)

    public init(quantity: Decimal, costBasis: Decimal) {
        self.quantity = quantity
        self.costBasis = costBasis
    }

    /// Cost per share, to 8 places; zero for an empty position.
    public var averageCost: Decimal {
        quantity == 0 ? 0 : ExactDecimal.rounded(costBasis / quantity, scale: OrderDraft.priceScale)
    }

    /// After buying `quantity` shares for `amount` in cash (fees included).
    public func buying(_ quantity: Decimal, for amount: Decimal) -> Position {
        Position(quantity: self.quantity + quantity, costBasis: costBasis + amount)
    }

    /// After selling `quantity` shares: the position and the cost basis that
    /// left with them. Selling everything takes the whole basis, so nothing is
    /// left behind by rounding. Returns nil when there are not enough shares.
    public func selling(_ quantity: Decimal) -> (position: Position, costSold: Decimal)? {
        guard quantity > 0, quantity <= self.quantity else { return nil }
        if quantity == self.quantity { return (.empty, costBasis) }
        let costSold = ExactDecimal.rounded(costBasis * quantity / self.quantity, scale: Money.cashScale)
        return (Position(quantity: self.quantity - quantity, costBasis: costBasis - costSold), costSold)
    }
}

/// Rules for cash amounts.
public enum Money {
    /// Cash moves in cents; the columns keep 4 places for fees and interest.
    public static let cashScale = 2

    /// The value of `quantity` shares at `price`, in cents, rounded half to
    /// even: for showing a value, never for moving cash.
    public static func amount(quantity: Decimal, price: Decimal) -> Decimal {
        ExactDecimal.rounded(quantity * price, scale: cashScale, mode: .bankers)
    }

    /// What a buy costs: rounded up to the cent, so no fill is ever free.
    public static func cost(quantity: Decimal, price: Decimal) -> Decimal {
        ExactDecimal.rounded(quantity * price, scale: cashScale, mode: .up)
    }

    /// What a sale pays: rounded down to the cent, so rounding never creates cash.
    public static func proceeds(quantity: Decimal, price: Decimal) -> Decimal {
        ExactDecimal.rounded(quantity * price, scale: cashScale, mode: .down)
    }
}
