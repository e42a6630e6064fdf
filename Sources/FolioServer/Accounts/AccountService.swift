import FolioDomain
import Foundation
import SQLKit

/// Cash in and out of paper accounts: deposits and withdrawals from the API,
/// dividends and fees posted by an operator. Each is one trading rule's
/// posting applied by the `Ledger`.
struct AccountService: Sendable {
    let store: TradingStore
    let ledger: Ledger
    let clock: AppClock
    let ids: IDSource

    /// Moves cash in or out of an account of `owner` (any account when nil)
    /// inside the transaction `db`; returns the ledger row.
    func move(
        _ movement: TradingRules.CashMovement, amount: Cash, description: String?, symbol: String? = nil,
        account: AccountID, owner: UserID?, actor: UserID?, context: AuditContext, on db: any SQLDatabase
    ) async throws -> EntryRecord {
        guard var open = try await ledger.open(account: account, owner: owner, on: db) else { throw TradingError.accountNotFound }
        // A brokerage account's money moves at the broker; Folio mirrors it (reconciliation), never the other way round.
        guard open.kind == "paper" else { throw BrokerageError.cashMovesAtBroker }
        let posting = try TradingRules.move(
            movement, amount: amount, account: open.books.account, description: description, symbol: symbol, actor: actor,
            entryID: ids.next(EntryID.self), now: ledger.now())
        open.books.record(posting)
        try await ledger.commit(open, context: context, on: db)
        return EntryRecord(accountID: account, line: posting.entries[0])
    }
}
