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
    }

    /// Posts one movement; returns the ledger row's id and the cash after it. A dividend names a symbol
    /// the account holds or held. Throws `TradingError` for what the rules refuse.
    public static func post(
        _ kind: Kind, accountID: AccountID, amount: Cash, symbol: String?, description: String, services: FolioServices
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
        let accounts = services.accounts, store = services.store
        return try await services.database.transaction { db in
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
