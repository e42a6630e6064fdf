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
        /// What the recorded value is checked against.
        public var source = "the ledger"

        public var description: String {
            "account \(accountID.uuidString.lowercased()): \(what) is \(ExactDecimal.format(recorded)) but \(source) sums to \(ExactDecimal.format(ledger))"
        }
    }

    /// Every difference found; empty when the books balance. Also returns how many accounts were checked.
    /// Reads one consistent snapshot (REPEATABLE READ on PostgreSQL; SQLite's single connection).
    public func verify() async throws -> (accounts: Int, differences: [Difference]) {
        try await database.db.transaction { db in
            if database.kind == .postgres {
                try await database.sqlDatabase(db).raw("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").run()
            }
            return try await verify(on: db)
        }
    }

    func verify(on db: any Database) async throws -> (accounts: Int, differences: [Difference]) {
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
            // Reservations equal what the open orders hold.
            let open = try await Order.query(on: db).filter(\.$accountID == account.id!)
                .filter(\.$status ~~ OrderStatus.allCases.filter(\.isOpen).map(\.rawValue)).all()
            let reservedCash = open.reduce(Decimal(0)) { $0 + $1.reservedCash.value }
            if reservedCash != account.reservedCash.value {
                differences.append(.init(accountID: account.id!, what: "reserved cash", recorded: account.reservedCash.value, ledger: reservedCash, source: "open orders"))
            }
            for holding in holdings {
                let reserved = open.filter { $0.symbol == holding.symbol }.reduce(Decimal(0)) { $0 + $1.reservedQuantity.value }
                if reserved != holding.reservedQuantity.value {
                    differences.append(.init(accountID: account.id!, what: "\(holding.symbol) reserved quantity", recorded: holding.reservedQuantity.value, ledger: reserved, source: "open orders"))
                }
            }
        }
        return (accounts.count, differences)
    }
}
