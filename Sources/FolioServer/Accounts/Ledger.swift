import FluentKit
import FolioDomain
import Foundation
import SQLKit

/// Every change to cash or shares goes through here: the ledger row, the
/// account's balance and the audit event are written in one database
/// transaction, with the account row locked, so concurrent requests can never
/// overdraw it.
struct Ledger: Sendable {
    let database: FolioDatabase
    let clock: AppClock
    let audit: AuditLog
    let startingCash: Decimal

    static let maximumMovement = Decimal(string: "1000000000000")!

    /// Opens the paper account every user gets, funded with the starting cash.
    @discardableResult
    func openPaperAccount(for user: User, on db: any Database, ip: String?, requestID: String?) async throws -> Account {
        let now = clock.now()
        let account = Account(userID: user.id!, name: "Paper brokerage", kind: .paper, now: now)
        try await account.create(on: db)
        try await audit.record(
            .init(action: "account.opened", actorID: user.id, subjectType: "account", subjectID: account.id?.uuidString, userID: user.id, details: ["kind": "paper"]),
            ip: ip, requestID: requestID, on: db)
        if startingCash > 0 {
            _ = try await move(account: account, kind: .deposit, amount: startingCash, description: "Starting paper cash", actorID: user.id, ip: ip, requestID: requestID, on: db)
        }
        return account
    }

    /// The user's account, locked for the rest of the transaction; nil when it is not theirs.
    func lockedAccount(_ id: UUID, userID: UUID, on db: any Database) async throws -> Account? {
        try await database.lockedAccount(id, userID: userID, on: db)
    }

    enum MovementError: Error {
        case insufficientFunds(available: Decimal)
    }

    /// Moves cash in or out of a locked account and writes the ledger row.
    /// `amount` is positive; the direction comes from the kind.
    func move(
        account: Account, kind: LedgerEntry.Kind, amount: Decimal, description: String?, actorID: UUID?,
        ip: String?, requestID: String?, symbol: String? = nil, on db: any Database
    ) async throws -> LedgerEntry {
        let signed: Decimal
        switch kind {
        case .deposit, .dividend: signed = amount
        case .withdrawal, .fee: signed = -amount
        case .buy, .sell, .correction: preconditionFailure("\(kind) moves go through the trading code")
        }
        let newCash = account.cash.value + signed
        if newCash < account.reservedCash.value {
            throw MovementError.insufficientFunds(available: account.availableCash)
        }
        let now = clock.now()
        account.cash = StoredDecimal(newCash)
        account.updatedAt = now
        try await account.save(on: db)
        let entry = LedgerEntry(account: account, kind: kind, amount: signed, description: description, now: now)
        entry.symbol = symbol
        try await entry.create(on: db)
        try await audit.record(
            .init(
                action: "ledger.\(kind.rawValue)", actorID: actorID, subjectType: "account", subjectID: account.id?.uuidString, userID: account.userID,
                details: ["amount": ExactDecimal.format(signed), "cash_after": ExactDecimal.format(newCash), "transaction_id": entry.id!.uuidString]),
            ip: ip, requestID: requestID, on: db)
        return entry
    }
}
