import FolioDomain
import Foundation
import SQLKit

/// Checks the ledger's invariant for every account: cash equals the sum of its
/// cash movements, each holding's quantity equals the sum of its share
/// movements, and what is reserved equals what the open orders hold. Sums
/// are taken in Swift on the integer units, exactly, on both databases.
public struct LedgerVerifier: Sendable {
    let store: TradingStore

    public init(services: FolioServices) {
        self.store = services.store
    }

    init(store: TradingStore) {
        self.store = store
    }

    public struct Difference: Sendable, CustomStringConvertible {
        public var accountID: AccountID
        public var what: String
        public var recorded: String
        public var ledger: String
        /// What the recorded value is checked against.
        public var source = "the ledger"

        public var description: String {
            "account \(accountID): \(what) is \(recorded) but \(source) sums to \(ledger)"
        }
    }

    /// Every difference found; empty when the books balance. Also returns how many accounts were checked.
    /// Reads one consistent snapshot (REPEATABLE READ on PostgreSQL; SQLite's single writer).
    public func verify() async throws -> (accounts: Int, differences: [Difference]) {
        let store = self.store
        return try await store.database.readTransaction { db in
            if store.database.kind == .postgres {
                try await db.raw("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").run()
            }
            return try await Self.verify(store: store, on: db)
        }
    }

    static func verify(store: TradingStore, on db: any SQLDatabase) async throws -> (accounts: Int, differences: [Difference]) {
        var differences: [Difference] = []
        let accounts = try await store.allAccounts(on: db)
        for account in accounts {
            let entries = try await store.entries(of: account.id, on: db).map(\.line)
            let holdings = try await store.holdings(of: account.id, on: db)
            let open = try await store.openOrders(of: account.id, on: db)
            differences += compare(account, entries: entries, holdings: holdings, open: open)
        }
        return (accounts.count, differences)
    }

    /// The sums, taken synchronously on raw units: a running sum in another
    /// order than the ledger's may pass a column's limit on the way.
    static func compare(_ account: AccountRecord, entries: [LedgerLine], holdings: [HoldingState], open: [OrderState]) -> [Difference] {
        var differences: [Difference] = []
        let cash = entries.reduce(Int128(0)) { $0 + $1.amount.units }
        if cash != account.cash.units {
            differences.append(.init(accountID: account.id, what: "cash", recorded: account.cash.description, ledger: Cash(uncheckedUnits: cash).description))
        }
        var shares: [String: Int128] = [:]
        for entry in entries {
            if let symbol = entry.symbol, let quantity = entry.quantity { shares[symbol, default: 0] += quantity.units }
        }
        for holding in holdings {
            let sum = shares.removeValue(forKey: holding.symbol) ?? 0
            if sum != holding.quantity.units {
                differences.append(.init(
                    accountID: account.id, what: "\(holding.symbol) quantity", recorded: holding.quantity.description,
                    ledger: Quantity(uncheckedUnits: sum).description))
            }
        }
        for (symbol, sum) in shares.sorted(by: { $0.key < $1.key }) where sum != 0 {
            differences.append(.init(accountID: account.id, what: "\(symbol) quantity", recorded: "0", ledger: Quantity(uncheckedUnits: sum).description))
        }
        // Reservations equal what the open orders hold.
        let reservedCash = open.reduce(Int128(0)) { $0 + $1.reservedCash.units }
        if reservedCash != account.reservedCash.units {
            differences.append(.init(
                accountID: account.id, what: "reserved cash", recorded: account.reservedCash.description,
                ledger: Cash(uncheckedUnits: reservedCash).description, source: "open orders"))
        }
        for holding in holdings {
            let reserved = open.filter { $0.symbol == holding.symbol }.reduce(Int128(0)) { $0 + $1.reservedQuantity.units }
            if reserved != holding.reservedQuantity.units {
                differences.append(.init(
                    accountID: account.id, what: "\(holding.symbol) reserved quantity", recorded: holding.reservedQuantity.description,
                    ledger: Quantity(uncheckedUnits: reserved).description, source: "open orders"))
            }
        }
        return differences
    }
}
