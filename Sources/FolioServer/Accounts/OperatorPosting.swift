import FolioDomain
import Foundation

/// Dividends and fees posted by an operator (`folio ledger post`): cash in or
/// out of one account through the same trading rule and `Ledger` as
/// deposits, with its ledger row and audit event. A broker's own activity
/// feed will post them the same way.
public enum OperatorPosting {
    public enum Kind: String, CaseIterable, Sendable {
        case dividend, fee

        var movement: TradingRules.CashMovement { self == .dividend ? .dividend : .fee }
        var ledgerKind: LedgerKind { self == .dividend ? .dividend : .fee }
    }

    /// An identical posting (kind, amount, symbol) was made to the account in the last `window`: a command run
    /// twice (shell history, a retry after a lost answer) would move the money twice.
    public struct Duplicate: CommandRefusal {
        public var entryID: EntryID
        public var postedAt: Date
        public var description: String {
            "an identical posting was made to this account at \(postedAt.formatted(.iso8601)) (\(entryID)); nothing was posted. "
                + "Check the account's transactions; to post it again, run the command with --again."
        }
    }

    /// How far back an identical posting stops another without `again`.
    public static let window: TimeInterval = 86_400

    /// Posts one movement; returns the ledger row's id and the cash after it. A dividend names a symbol
    /// the account holds or held. Throws `TradingError` for what the rules refuse.
    public static func post(
        _ kind: Kind, accountID: AccountID, amount: Cash, symbol: String?, description: String, again: Bool = false, services: FolioServices
    ) async throws -> (entryID: EntryID, cashAfter: Cash) {
        let ticker = try symbol.map { raw -> String in
            guard let ticker = OrderDraft.normalizedSymbol(raw) else {
                throw TradingError.invalid(field: "symbol", code: "invalid", message: "the symbol must be a ticker such as AAPL")
            }
            return ticker
        }
        if kind == .dividend, ticker == nil {
            throw TradingError.invalid(field: "symbol", code: "required", message: "a dividend needs the symbol it was paid on")
        }
        let accounts = services.accounts, store = services.store, since = services.clock.now().addingTimeInterval(-window)
        return try await services.database.transaction { db in
            // The account's lock first: two copies of the command run at once see each other's posting.
            guard try await store.lockAccount(accountID, owner: nil, on: db) != nil else { throw TradingError.accountNotFound }
            if !again, let same = try await store.entries(of: accountID, kind: kind.ledgerKind, since: since, on: db)
                .first(where: { $0.line.amount.magnitude == amount && $0.line.symbol == ticker }) {
                throw Duplicate(entryID: same.line.id, postedAt: same.line.occurredAt)
            }
            // A holding's row stays when it is sold out, so a row means the account holds or held the symbol:
            // a dividend on one it never held is a typo, not income.
            if kind == .dividend, let ticker, try await store.holdings(of: accountID, symbols: [ticker], on: db).isEmpty {
                throw TradingError.invalid(field: "symbol", code: "never_held", message: "the account never held \(ticker)")
            }
            let entry = try await accounts.move(
                kind.movement, amount: amount, description: description, symbol: ticker, account: accountID, owner: nil, actor: nil,
                context: AuditContext(ip: "cli"), on: db)
            guard let after = try await store.lockAccount(accountID, owner: nil, on: db) else { throw TradingError.accountNotFound }
            return (entry.line.id, after.state.cash)
        }
    }
}
