import FluentKit
import FolioDomain
import Foundation

/// Dividends and fees posted by an operator (`folio ledger post`): cash in or
/// out of one account through the same `Ledger.move` as deposits, with its
/// ledger row and audit event. A broker's own activity feed will post them the
/// same way.
public enum OperatorPosting {
    public enum Kind: String, CaseIterable, Sendable {
        case dividend, fee
    }

    public enum Failure: Error, CustomStringConvertible {
        case noSuchAccount
        case invalidAmount
        case invalidSymbol
        case insufficientFunds(available: Decimal)

        public var description: String {
            switch self {
            case .noSuchAccount: "no account has that id"
            case .invalidAmount: "the amount must be positive with at most 2 decimal places"
            case .invalidSymbol: "the symbol must be a ticker such as AAPL"
            case .insufficientFunds(let available): "the fee exceeds the account's available cash (\(ExactDecimal.format(available, minimumScale: 2)))"
            }
        }
    }

    /// Posts one movement; returns the ledger row's id and the cash after it.
    public static func post(
        _ kind: Kind, accountID: UUID, amount: Decimal, symbol: String?, description: String,
        database: FolioDatabase, clock: AppClock = .system
    ) async throws -> (entryID: UUID, cashAfter: Decimal) {
        guard amount > 0, ExactDecimal.scale(of: amount) <= Money.cashScale, amount <= Ledger.maximumMovement else { throw Failure.invalidAmount }
        let ticker = try symbol.map { raw -> String in
            guard let ticker = OrderDraft.normalizedSymbol(raw) else { throw Failure.invalidSymbol }
            return ticker
        }
        let ledger = Ledger(database: database, clock: clock, audit: AuditLog(clock: clock), startingCash: 0)
        return try await database.db.transaction { db in
            guard let owner = try await Account.find(accountID, on: db)?.userID,
                  let account = try await database.lockedAccount(accountID, userID: owner, on: db)
            else { throw Failure.noSuchAccount }
            do {
                let entry = try await ledger.move(
                    account: account, kind: kind == .dividend ? .dividend : .fee, amount: amount, description: description,
                    actorID: nil, ip: nil, requestID: nil, symbol: ticker, on: db)
                return (entry.id!, account.cash.value)
            } catch Ledger.MovementError.insufficientFunds(let available) {
                throw Failure.insufficientFunds(available: available)
            }
        }
    }
}
