/// Why a trading or ledger request cannot be done. No HTTP here: the server
/// maps each case to its problem once, and the command line to its text.
public enum TradingError: Error, Equatable, Sendable {
    /// Fields that are wrong, each named.
    case invalid([FieldIssue])
    /// A withdrawal or fee beyond the cash not reserved by open orders.
    case insufficientFunds(available: Cash)
    /// `field`: what the order asked for, `quantity` or (a market buy by amount) `notional`.
    case insufficientBuyingPower(needed: Cash, available: Cash, field: String = "quantity")
    /// `reserved`: the shares held for the owner's open sells, which are not free to sell again.
    case insufficientShares(symbol: String, available: Quantity, reserved: Quantity = .zero)
    /// The result would exceed what a balance column holds (`field` is the request's field).
    case balanceLimitExceeded(field: String)
    case accountNotFound
    /// An `account_id` in a request body that names no account of the user.
    case unknownAccount
    case orderNotFound
    case unknownSymbol(String)
    case duplicateClientOrderID
    case orderNotCancelable(OrderStatus)
    /// The account has as many open orders as one may (`TradingRules.maximumOpenOrders`).
    case tooManyOpenOrders(limit: Int)
    /// A broker reported more than the order has left; refused whole.
    case overfill(orderID: OrderID, remaining: Quantity, fill: Quantity)
    case impossibleTransition(from: OrderStatus, to: OrderStatus)
    /// A broker reported a fill of nothing or at no price: it cannot be applied, and is not dropped silently.
    case unusableFill(orderID: OrderID, fill: String)
    /// A market or stop buy at a broker with only a stale quote to set its cash aside by.
    case stalePrice(symbol: String)

    public static func invalid(field: String, code: String, message: String) -> TradingError {
        .invalid([FieldIssue(field: field, code: code, message: message)])
    }
}

extension TradingError {
    /// What a refusal says of symbols the market data does not know: "No quotes for XYZZ: the market data does not know this symbol."
    public static func unknownSymbolsMessage(_ symbols: [String]) -> String {
        symbols.count == 1
            ? "No quotes for \(symbols[0]): the market data does not know this symbol."
            : "No quotes for \(symbols.joined(separator: ", ")): the market data does not know these symbols."
    }
}
