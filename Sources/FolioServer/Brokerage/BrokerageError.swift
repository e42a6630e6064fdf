import FolioDomain

/// Why a brokerage link could not be made, used or removed.
enum BrokerageError: Error, Equatable, Sendable {
    /// The broker said the key id and secret open no account (401 or 403).
    case keysRefused
    /// The broker could not be asked (no answer, 5xx, 429, an unreadable body).
    case brokerUnavailable
    /// The account at the broker is one Folio cannot mirror (another currency, cash borrowed on margin, blocked).
    case unsupportedAccount(String)
    /// The Alpaca account is already linked: to this Folio account of the user's (by its id and name), or (nil) to someone else's.
    case alreadyLinked(AccountID?, name: String)
    case linkNotFound
    /// Unlinking would strand orders still open at the broker.
    case openOrders(Int)
    /// Deposits and withdrawals of a brokerage account happen at the broker; Folio mirrors them.
    case cashMovesAtBroker
    /// The account's link was removed: it takes no more orders.
    case unlinked
    /// New keys open another account at the broker than the one the link mirrors.
    case keysForAnotherAccount
}
