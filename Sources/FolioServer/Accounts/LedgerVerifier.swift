import FluentKit
import FolioDomain
import Foundation

/// Checks the ledger's invariant for every account: cash equals the sum of its
/// cash movements, and each holding's quantity equals the sum of its share
/// movements. Sums are taken in Swift, exactly, on both databases.
public struct LedgerVerifier: Sendable {
    let database: FolioDatabase

    public init(database: FolioDatabase) {
        self.database = database
    }

    public struct Difference: Sendable, CustomStringConvertible {
        public var accountID: UUID
        public var what: String
        public var recorded: Decimal
        public var ledger: Decimal

        public var description: String {
            "account \(accountID.uuidString.lowercased()): \(what) is \(ExactDecimal.format(recorded)) but the ledger sums to \(ExactDecimal.format(ledger))"
        }
    }

    /// Every difference found; empty when the books balance. Also returns how many accounts were checked.
    public func verify() async throws -> (accounts: Int, differences: [Difference]) {
        let db = database.db
        var differences: [Difference] = []
        let accounts = try await Account.query(on: db).all()
        for account in accounts {
            let entries = try await LedgerEntry.query(on: db).filter(\.$accountID == account.id!).all()
            let cash = entries.reduce(Decimal(0)) { $0 + $1.amount.value }
            if cash != account.cash.value {
                differences.append(.init(accountID: account.id!, what: "cash", recorded: account.cash.value, ledger: cash))
            }
            var shares: [String: Decimal] = [:]
            for entry in entries {
                if let symbol = entry.symbol, let quantity = entry.quantity { shares[symbol, default: 0] += quantity.value }
            }
            let holdings = try await Holding.query(on: db).filter(\.$accountID == account.id!).all()
            for holding in holdings {
                let sum = shares.removeValue(forKey: holding.symbol) ?? 0
                if sum != holding.quantity.value {
                    differences.append(.init(accountID: account.id!, what: "\(holding.symbol) quantity", recorded: holding.quantity.value, ledger: sum))
                }
            }
            for (symbol, sum) in shares where sum != 0 {
                differences.append(.init(accountID: account.id!, what: "\(symbol) quantity", recorded: 0, ledger: sum))
            }
        }
        return (accounts.count, differences)
    }
}
