import Foundation

/// An order as a user asks for it, before anything is reserved. `validate`
/// names every field that is wrong, so one answer lists every problem.
public struct OrderDraft: Equatable, Sendable {
    public var symbol: String
    public var side: OrderSide
    public var type: OrderType
    public var timeInForce: TimeInForce
    public var quantity: Quantity?
    /// A cash amount instead of a quantity; market buys only.
    public var notional: Cash?
    public var limitPrice: Price?
    public var stopPrice: Price?

    public static let notionalPlaces = 2
    public static let maximumQuantity: Quantity = 1_000_000_000
    public static let maximumPrice: Price = 1_000_000_000
    public static let maximumNotional: Cash = 1_000_000_000

    public init(
        symbol: String, side: OrderSide, type: OrderType, timeInForce: TimeInForce = .day,
        quantity: Quantity? = nil, notional: Cash? = nil, limitPrice: Price? = nil, stopPrice: Price? = nil
    ) {
        self.symbol = symbol
        self.side = side
        self.type = type
        self.timeInForce = timeInForce
        self.quantity = quantity
        self.notional = notional
        self.limitPrice = limitPrice
        self.stopPrice = stopPrice
    }

    /// Upper-cased ticker: 1 to 10 letters, digits, dots or dashes, starting with a letter.
    public static func normalizedSymbol(_ symbol: String) -> String? {
        let trimmed = symbol.trimmingCharacters(in: .whitespaces)
        // ASCII before upper-casing: Unicode maps "ſ" to "S" and "ı" to "I", so "ſpy" would pass as SPY.
        guard trimmed.allSatisfy(\.isASCII) else { return nil }
        let upper = trimmed.uppercased()
        guard (1...10).contains(upper.count), upper.first!.isLetter,
              upper.allSatisfy({ ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "." || $0 == "-" })
        else { return nil }
        return upper
    }

    public func validate() -> [FieldIssue] {
        var issues: [FieldIssue] = []
        if Self.normalizedSymbol(symbol) == nil {
            issues.append(.init(field: "symbol", code: "invalid", message: "symbol must be a ticker such as AAPL."))
        }
        switch (quantity, notional) {
        case (nil, nil):
            issues.append(.init(field: "quantity", code: "required", message: "Give a quantity, or an amount in dollars (notional) for a market order."))
        case (.some, .some):
            issues.append(.init(field: "notional", code: "conflict", message: "Give a quantity or an amount in dollars (notional), not both."))
        case (.some(let quantity), nil):
            issues += AmountCheck.positive(quantity, field: "quantity", maximum: Self.maximumQuantity)
        case (nil, .some(let notional)):
            issues += AmountCheck.positive(notional, field: "notional", places: Self.notionalPlaces, maximum: Self.maximumNotional)
            if type != .market {
                issues.append(.init(field: "notional", code: "market_only", message: "notional is allowed on market orders only."))
            }
            if timeInForce == .fillOrKill {
                issues.append(.init(field: "time_in_force", code: "unsupported", message: "A notional order cannot be fill-or-kill."))
            }
        }
        if type.needsLimitPrice {
            if let limitPrice {
                issues += AmountCheck.positive(limitPrice, field: "limit_price", maximum: Self.maximumPrice)
            } else {
                issues.append(.init(field: "limit_price", code: "required", message: "A \(type.words) order needs a limit price."))
            }
        } else if limitPrice != nil {
            issues.append(.init(field: "limit_price", code: "not_allowed", message: "A \(type.words) order takes no limit price."))
        }
        if type.needsStopPrice {
            if let stopPrice {
                issues += AmountCheck.positive(stopPrice, field: "stop_price", maximum: Self.maximumPrice)
            } else {
                issues.append(.init(field: "stop_price", code: "required", message: "A \(type.words) order needs a stop price."))
            }
        } else if stopPrice != nil {
            issues.append(.init(field: "stop_price", code: "not_allowed", message: "A \(type.words) order takes no stop price."))
        }
        return issues + tickIssues(placesBelowADollar: nil)
    }

    /// Limit and stop prices off the market's tick. From a dollar up, whole cents: US stocks are
    /// not quoted in sub-pennies above a dollar (SEC Rule 612), and brokers refuse such an order
    /// (Alpaca: "sub-penny increment does not fulfill minimum pricing criteria"). Below a dollar,
    /// `placesBelowADollar` when a real broker asks it (four: a hundredth of a cent); the paper
    /// broker keeps finer prices (nil).
    public func tickIssues(placesBelowADollar: Int?) -> [FieldIssue] {
        [(type.needsLimitPrice ? limitPrice : nil, "limit_price"), (type.needsStopPrice ? stopPrice : nil, "stop_price")].compactMap { price, field in
            guard let price, price.isPositive else { return nil }
            if price >= 1 {
                guard price.places > 2 else { return nil }
                return FieldIssue(field: field, code: "sub_penny", message: "\(field) of $1.00 or more must be in whole cents.")
            }
            guard let places = placesBelowADollar, price.places > places else { return nil }
            return FieldIssue(field: field, code: "sub_penny", message: "\(field) below $1.00 must be in steps of $0.0001 at a broker.")
        }
    }
}

/// The check every entered amount passes: positive, not too large, not too precise.
public enum AmountCheck {
    public static func positive<S>(_ value: Fixed<S>, field: String, places: Int = S.fractionDigits, maximum: Fixed<S>) -> [FieldIssue] {
        if !value.isPositive {
            return [.init(field: field, code: "not_positive", message: "\(field) must be greater than zero.")]
        }
        if value > maximum {
            return [.init(field: field, code: "too_large", message: "\(field) must be at most \(grouped(maximum)).")]
        }
        if value.places > places {
            return [.init(field: field, code: "too_precise", message: "\(field) may have at most \(places) decimal places.")]
        }
        return []
    }

    /// A limit as people read it: the whole digits grouped in threes ("1,000,000,000.00").
    static func grouped<S>(_ value: Fixed<S>) -> String {
        let text = value.description
        return text.hasPrefix("-") ? "-" + FixedText.grouped(text.dropFirst()) : FixedText.grouped(Substring(text))
    }
}
