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

    /// What one fill of an order costs when `before` is the exact value of
    /// its earlier fills: the order's running total rounded up to the cent,
    /// less the earlier total rounded up. An order filled in parts then costs
    /// what it would in one fill (three fills of 1 @ 0.3333 cost 1.00 in all,
    /// not 0.34 each), so its reservation covers it. Never less than a cent: a
    /// buy is a debit (no share is free), so a part whose change of the total
    /// rounds to nothing costs a cent, as it did rounded on its own.
    public static func cost(quantity: Quantity, price: Price, after before: FillValue) throws(MoneyError) -> Cash {
        let after = try before.adding(quantity, price)
        return Cash.max(try after.cents(rounding: .up) - before.cents(rounding: .up), oneCent)
    }

    static let oneCent = Cash(uncheckedUnits: Int128(Cash.one) / 100)

    /// What one fill of a sale pays after fills worth `before`: the running
    /// total rounded down to the cent, less the earlier total rounded down. A
    /// sale filled in parts pays what it would in one (5 @ 0.0033 in parts of
    /// 3, 1 and 1 pays 0.01 in all, not nothing).
    public static func proceeds(quantity: Quantity, price: Price, after before: FillValue) throws(MoneyError) -> Cash {
        let after = try before.adding(quantity, price)
        return try after.cents(rounding: .down) - before.cents(rounding: .down)
    }
}

/// The exact value of an order's fills so far, Σ quantity × price at 17
/// places (quantity's 9 and price's 8) in 256 bits: what the running totals
/// of `Money.cost` and `Money.proceeds` are rounded from.
public struct FillValue: Equatable, Sendable {
    var high: UInt128
    var low: UInt128

    public static let zero = FillValue(high: 0, low: 0)

    public func adding(_ quantity: Quantity, _ price: Price) throws(MoneyError) -> FillValue {
        guard !quantity.isNegative, !price.isNegative else { throw .overflow }
        let product = FixedMath.multiply(quantity.units.magnitude, price.units.magnitude)
        let (low, carry) = low.addingReportingOverflow(product.low)
        let (partial, overflowHigh) = high.addingReportingOverflow(product.high)
        let (high, overflowCarry) = partial.addingReportingOverflow(carry ? 1 : 0)
        guard !overflowHigh, !overflowCarry else { throw .overflow }
        return FillValue(high: high, low: low)
    }

    /// The price these fills averaged over `quantity` (all of them), 8 places, half to even.
    public func average(over quantity: Quantity) -> Price {
        // 17 places over a quantity's 9 leave a price's 8.
        let units = (try? FixedMath.divide(high: high, low: low, by: quantity.units.magnitude, negative: false, rule: .halfEven)) ?? 0
        return Price(uncheckedUnits: Int128(units))
    }

    /// The value in cents, rounded by `rule`, as cash.
    public func cents(rounding rule: RoundingRule) throws(MoneyError) -> Cash {
        let places = QuantityScale.fractionDigits + PriceScale.fractionDigits - Cash.centPlaces
        let cents = try FixedMath.divide(high: high, low: low, by: FixedMath.powerOfTen(places), negative: false, rule: rule)
        return try Cash(magnitude: cents, places: Cash.centPlaces, negative: false)
    }
}
