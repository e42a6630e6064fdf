import FolioDomain
import Foundation
import SQLKit

/// An account as the API shows it.
struct AccountRecord: Sendable {
    var id: AccountID
    var userID: UserID
    var name: String
    var kind: String
    var currency: String
    var cash: Cash
    var reservedCash: Cash
    var createdAt: Date

    var state: AccountState { AccountState(id: id, userID: userID, cash: cash, reservedCash: reservedCash) }
}

/// A ledger row with the account it belongs to.
struct EntryRecord: Sendable {
    var accountID: AccountID
    var line: LedgerLine
}

/// An account locked for the rest of a transaction, with the head of its audit chain.
struct LockedAccount: Sendable {
    var state: AccountState
    /// `paper`, or `brokerage` for an account held at an outside broker.
    var kind: String
    var chainHead: AuditChain.Head?
    /// The head's signature (`audit_mac`), checked before anything is appended after it.
    var chainMAC: String? = nil
    /// How many of its orders are open, when the lock was asked to count them (a placement).
    var openOrders: Int? = nil
    /// Closed: its owner was erased (or is being erased).
    var closed = false
}

/// The only code that reads or writes accounts, holdings, orders, fills and
/// ledger rows. Every query is written by hand (SQLKit with bound values):
/// no reflection per row, one statement per question. Money columns are read
/// and written as `Fixed` values directly (see FixedColumns.swift).
struct TradingStore: Sendable {
    let database: FolioDatabase

    // MARK: - Accounts

    static let accountColumns = "id, user_id, name, kind, currency, cash, reserved_cash, created_at"

    func createAccount(_ record: AccountRecord, now: Date, on db: any SQLDatabase) async throws {
        try await db.raw("""
            INSERT INTO accounts (id, user_id, name, kind, currency, cash, reserved_cash, created_at, updated_at)
            VALUES (\(bind: record.id), \(bind: record.userID), \(bind: record.name), \(bind: record.kind), \(bind: record.currency),
                    \(bind: record.cash), \(bind: record.reservedCash), \(bind: now), \(bind: now))
            """).run()
    }

    /// The user's default account: the one opened first.
    func defaultAccountID(of userID: UserID, on db: (any SQLDatabase)? = nil) async throws -> AccountID? {
        try await (db ?? database.sql).raw("""
            SELECT id FROM accounts WHERE user_id = \(bind: userID) ORDER BY created_at, id LIMIT 1
            """).first()?.decode(column: "id", as: AccountID.self)
    }

    func accounts(of userID: UserID) async throws -> [AccountRecord] {
        try await database.sql.raw("""
            SELECT \(unsafeRaw: Self.accountColumns) FROM accounts WHERE user_id = \(bind: userID) ORDER BY created_at, id
            """).all().map(Self.account)
    }

    /// The account if it is the user's.
    func account(_ id: AccountID, of userID: UserID) async throws -> AccountRecord? {
        try await database.sql.raw("""
            SELECT \(unsafeRaw: Self.accountColumns) FROM accounts WHERE id = \(bind: id) AND user_id = \(bind: userID)
            """).first().map(Self.account)
    }

    /// Every account, for checks that walk the whole ledger.
    func allAccounts(on db: any SQLDatabase) async throws -> [AccountRecord] {
        try await db.raw("SELECT \(unsafeRaw: Self.accountColumns) FROM accounts ORDER BY created_at, id").all().map(Self.account)
    }

    /// Accounts in id order after `after`, for jobs that walk them all in batches.
    func accounts(after: AccountID?, limit: Int) async throws -> [AccountRecord] {
        var query: SQLQueryString = "SELECT \(unsafeRaw: Self.accountColumns) FROM accounts"
        if let after { query = query + " WHERE id > \(bind: after)" }
        return try await database.sql.raw(query + " ORDER BY id LIMIT \(literal: limit)").all().map(Self.account)
    }

    static func account(_ row: any SQLRow) throws -> AccountRecord {
        AccountRecord(
            id: try row.decode(column: "id", as: AccountID.self), userID: try row.decode(column: "user_id", as: UserID.self),
            name: try row.decode(column: "name", as: String.self), kind: try row.decode(column: "kind", as: String.self),
            currency: try row.decode(column: "currency", as: String.self), cash: try row.decode(column: "cash", as: Cash.self),
            reservedCash: try row.decode(column: "reserved_cash", as: Cash.self), createdAt: try row.decode(column: "created_at", as: Date.self))
    }

    /// The sequence of the account's audit chain head: it moves with every change to the account's books.
    func auditSequence(of id: AccountID) async throws -> Int64? {
        try await database.sql.raw("SELECT audit_sequence FROM accounts WHERE id = \(bind: id)").first()?.decode(column: "audit_sequence", as: Int64?.self)
    }

    /// Locks the account for the rest of the transaction `db` and returns it
    /// with the head of its audit chain, which lives on the same row: one
    /// statement, `SELECT … FOR UPDATE` on PostgreSQL (whose re-check after
    /// waiting reads the row as the previous holder left it); SQLite's single
    /// writer already serializes. With `owner`, nil unless it is that user's
    /// and open: an erasure closes the accounts in the same commit, so a
    /// request that waited for the lock meanwhile finds no account.
    /// `countingOpenOrders`: the same statement also counts the account's open orders (a placement's limit).
    func lockAccount(_ id: AccountID, owner: UserID?, countingOpenOrders: Bool = false, on db: any SQLDatabase) async throws -> LockedAccount? {
        let ownerCondition: SQLQueryString = owner.map { " AND user_id = \(bind: $0) AND closed_at IS NULL" } ?? ""
        let postgres = database.kind == .postgres
        let lock = postgres ? Self.waitLimits + " FOR UPDATE" : ""
        var count = countingOpenOrders ? ", (SELECT COUNT(*) FROM orders o WHERE o.account_id = accounts.id AND o.status IN \(Self.openStatuses)) AS open_orders" : ""
        // PostgreSQL counts in the snapshot the statement took before it waited for the lock: a placement
        // another process committed meanwhile is not in it. Every change to an account's orders writes the
        // account's row, so a row newer than that snapshot's (another xmin) means: count again, after the lock.
        if countingOpenOrders, postgres { count += ", (SELECT a.xmin FROM accounts a WHERE a.id = accounts.id) <> accounts.xmin AS changed_while_waiting" }
        guard let row = try await db.raw("""
            SELECT \(unsafeRaw: Self.lockedColumns)\(unsafeRaw: count) FROM accounts
            WHERE id = \(bind: id)\(ownerCondition)\(unsafeRaw: lock)
            """).first()
        else { return nil }
        var locked = try Self.locked(row)
        guard countingOpenOrders else { return locked }
        locked.openOrders = try row.decode(column: "open_orders", as: Int.self)
        if postgres, try row.decode(column: "changed_while_waiting", as: Bool.self) {
            locked.openOrders = try await db.raw("""
                SELECT COUNT(*) AS open_orders FROM orders o WHERE o.account_id = \(bind: id) AND o.status IN \(unsafeRaw: Self.openStatuses)
                """).first()?.decode(column: "open_orders", as: Int.self)
        }
        return locked
    }

    /// Closes every account of `userID` (its owner is being erased): their
    /// books stay, but the owner's requests no longer lock them.
    func closeAccounts(of userID: UserID, now: Date, on db: any SQLDatabase) async throws {
        try await db.raw("""
            UPDATE accounts SET closed_at = COALESCE(closed_at, \(bind: now)), updated_at = \(bind: now) WHERE user_id = \(bind: userID)
            """).run()
    }

    /// Clears the `client_order_id`s the person gave their orders (free text that may name them; no
    /// audit event or ledger digest holds it, so the books still verify). For an erasure.
    func forgetClientOrderIDs(of userID: UserID, on db: any SQLDatabase) async throws {
        try await db.raw("""
            UPDATE orders SET client_order_id = NULL
            WHERE client_order_id IS NOT NULL AND account_id IN (SELECT id FROM accounts WHERE user_id = \(bind: userID))
            """).run()
    }

    /// Opens again the accounts of `userID` that `closeAccounts` closed at `closedAt` (an erasure that did not
    /// go through); an account closed at another time, or of a person erased meanwhile, stays closed.
    func reopenAccounts(of userID: UserID, closedAt: Date, now: Date) async throws {
        try await database.sql.raw("""
            UPDATE accounts SET closed_at = NULL, updated_at = \(bind: now) WHERE user_id = \(bind: userID) AND closed_at = \(bind: closedAt)
                AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = accounts.user_id AND u.erased_at IS NOT NULL)
            """).run()
    }

    /// Opens again every account closed before `cutoff` whose owner is not erased (an erasure that
    /// stopped half-way); returns how many.
    func reopenAccounts(closedBefore cutoff: Date, now: Date) async throws -> Int {
        try await database.sql.raw("""
            UPDATE accounts SET closed_at = NULL, updated_at = \(bind: now)
            WHERE closed_at IS NOT NULL AND closed_at < \(bind: cutoff)
                AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = accounts.user_id AND u.erased_at IS NOT NULL)
            RETURNING 1 AS one
            """).all().count
    }

    /// Locks several accounts in one statement, in the order of their ids
    /// (PostgreSQL locks the rows in the order it returns them), so two
    /// batches that share accounts never wait on each other in a cycle.
    func lockAccounts(_ ids: [AccountID], on db: any SQLDatabase) async throws -> [LockedAccount] {
        guard !ids.isEmpty else { return [] }
        let lock = database.kind == .postgres ? " FOR UPDATE" : ""
        let limits = database.kind == .postgres ? Self.waitLimits : ""
        return try await db.raw("""
            SELECT \(unsafeRaw: Self.lockedColumns) FROM accounts WHERE id IN (\(binds: ids))\(unsafeRaw: limits) ORDER BY id\(unsafeRaw: lock)
            """).all().map(Self.locked)
    }

    /// PostgreSQL settings for the rest of the transaction that locks accounts, made by the lock statement
    /// itself (its condition runs before the row is locked; no round trip of its own). Another process that
    /// holds an account and stalls (frozen, paused, cut off) would otherwise keep every request for it waiting,
    /// each holding a pooled connection, until no one's requests are served: a wait for an account ends after
    /// `lockTimeout` (a 503 `database_busy`, nothing written), and the server ends a transaction that holds
    /// accounts and sits idle past `idleTimeout`, letting them go.
    static let lockTimeout = "10s", idleTimeout = "60s"
    static let waitLimits = """
         AND set_config('lock_timeout', '\(lockTimeout)', true) IS NOT NULL \
        AND set_config('idle_in_transaction_session_timeout', '\(idleTimeout)', true) IS NOT NULL
        """

    /// The account's name when its owner has other open accounts, so a message can say which; nil when it is their only one.
    func nameAmongSeveral(_ id: AccountID, of userID: UserID, on db: any SQLDatabase) async throws -> String? {
        guard let row = try await db.raw("""
            SELECT name, (SELECT COUNT(*) FROM accounts o WHERE o.user_id = \(bind: userID) AND o.closed_at IS NULL) AS open_accounts
            FROM accounts WHERE id = \(bind: id)
            """).first()
        else { return nil }
        return try row.decode(column: "open_accounts", as: Int.self) > 1 ? row.decode(column: "name", as: String.self) : nil
    }

    /// The account as `lockAccount` returns it, read without the lock (nil: no such account).
    func peekAccount(_ id: AccountID) async throws -> LockedAccount? {
        try await database.sql.raw("SELECT \(unsafeRaw: Self.lockedColumns) FROM accounts WHERE id = \(bind: id)").first().map(Self.locked)
    }

    static let lockedColumns = "id, user_id, kind, cash, reserved_cash, audit_sequence, audit_hash, audit_mac, closed_at"

    static func locked(_ row: any SQLRow) throws -> LockedAccount {
        let state = AccountState(
            id: try row.decode(column: "id", as: AccountID.self), userID: try row.decode(column: "user_id", as: UserID.self),
            cash: try row.decode(column: "cash", as: Cash.self), reservedCash: try row.decode(column: "reserved_cash", as: Cash.self))
        var head: AuditChain.Head?
        if let sequence = try row.decode(column: "audit_sequence", as: Int64?.self) {
            head = AuditChain.Head(sequence: sequence, hash: try row.decode(column: "audit_hash", as: String.self))
        }
        return LockedAccount(
            state: state, kind: try row.decode(column: "kind", as: String.self), chainHead: head, chainMAC: try row.decode(column: "audit_mac", as: String?.self),
            closed: try row.decode(column: "closed_at", as: Date?.self) != nil)
    }

    /// Writes a locked account's balances and the new head of its audit chain, with the head's signature.
    func writeAccount(_ account: AccountState, head: AuditChain.Head, mac: String, now: Date, into writes: inout WriteBatch) {
        writes.add("""
            UPDATE accounts SET cash = \(bind: account.cash), reserved_cash = \(bind: account.reservedCash), updated_at = \(bind: now),
                audit_sequence = \(bind: head.sequence), audit_hash = \(bind: head.hash), audit_mac = \(bind: mac)
            WHERE id = \(bind: account.id)
            """)
    }

    func writeBalances(_ account: AccountState, now: Date, into writes: inout WriteBatch) {
        writes.add("""
            UPDATE accounts SET cash = \(bind: account.cash), reserved_cash = \(bind: account.reservedCash), updated_at = \(bind: now)
            WHERE id = \(bind: account.id)
            """)
    }

    // MARK: - Holdings

    /// An account's cash and holdings in one query, for the portfolio read;
    /// nil when the account is not the user's.
    func portfolio(of accountID: AccountID, owner: UserID) async throws -> (account: AccountState, holdings: [HoldingState])? {
        let rows = try await database.sql.raw("""
            SELECT a.cash, a.reserved_cash, h.symbol, h.quantity, h.reserved_quantity, h.cost_basis
            FROM accounts a LEFT JOIN holdings h ON h.account_id = a.id
            WHERE a.id = \(bind: accountID) AND a.user_id = \(bind: owner)
            """).all()
        guard let first = rows.first else { return nil }
        return (try Self.account(first, id: accountID, owner: owner), try rows.filter { try !$0.decodeNil(column: "symbol") }.map(Self.holding))
    }

    /// The same, with each symbol's buys and sells from `since` on netted (the day's change), still in one query:
    /// the ledger's rows ride along with the account's (`part` 1 a trade, 2 shares corrected without one).
    func portfolio(
        of accountID: AccountID, owner: UserID, tradesSince since: Date
    ) async throws -> (account: AccountState, holdings: [HoldingState], dayTrades: [String: DayTrades])? {
        let rows = try await database.sql.raw("""
            SELECT 0 AS part, a.cash, a.reserved_cash, h.symbol, h.quantity, h.reserved_quantity, h.cost_basis
            FROM accounts a LEFT JOIN holdings h ON h.account_id = a.id
            WHERE a.id = \(bind: accountID) AND a.user_id = \(bind: owner)
            UNION ALL
            SELECT CASE WHEN t.type = 'correction' THEN 2 ELSE 1 END, NULL, NULL, t.symbol, t.quantity, NULL, t.amount
            FROM transactions t
            WHERE t.account_id = \(bind: accountID) AND t.user_id = \(bind: owner) AND t.occurred_at >= \(bind: since)
                AND t.type IN ('buy', 'sell', 'correction') AND t.symbol IS NOT NULL AND t.quantity IS NOT NULL
            """).all()
        var account: AccountState?
        var holdings: [HoldingState] = []
        holdings.reserveCapacity(rows.count)
        var dayTrades: [String: DayTrades] = [:]
        for row in rows {
            let part = try row.decode(column: "part", as: Int.self)
            if part == 0 {
                if account == nil { account = try Self.account(row, id: accountID, owner: owner) }
                if try !row.decodeNil(column: "symbol") { holdings.append(try Self.holding(row)) }
            } else {
                // A trade: shares in (+) or out (-), and its cash (in the cost basis column); or a correction of shares.
                let symbol = try row.decode(column: "symbol", as: String.self)
                var sum = dayTrades[symbol] ?? DayTrades(quantity: .zero, cash: .zero)
                if part == 2 {
                    sum.corrected = true
                } else {
                    sum.quantity = try sum.quantity + row.decode(column: "quantity", as: Quantity.self)
                    sum.cash = try sum.cash + row.decode(column: "cost_basis", as: Cash.self)
                }
                dayTrades[symbol] = sum
            }
        }
        guard let account else { return nil }
        return (account, holdings, dayTrades)
    }

    private static func account(_ row: any SQLRow, id: AccountID, owner: UserID) throws -> AccountState {
        AccountState(
            id: id, userID: owner, cash: try row.decode(column: "cash", as: Cash.self),
            reservedCash: try row.decode(column: "reserved_cash", as: Cash.self))
    }

    /// The account's holdings, or only those of `symbols`.
    func holdings(of accountID: AccountID, symbols: [String]? = nil, on db: (any SQLDatabase)? = nil) async throws -> [HoldingState] {
        try await holdings(ofAccounts: [accountID], symbols: symbols, on: db)[accountID] ?? []
    }

    /// The holdings of several accounts in one query, or only those of `symbols`.
    func holdings(ofAccounts ids: [AccountID], symbols: [String]? = nil, on db: (any SQLDatabase)? = nil) async throws -> [AccountID: [HoldingState]] {
        guard !ids.isEmpty else { return [:] }
        if let symbols, symbols.isEmpty { return [:] }
        var query: SQLQueryString = "SELECT account_id, symbol, quantity, reserved_quantity, cost_basis FROM holdings WHERE account_id IN (\(binds: ids))"
        if let symbols { query = query + " AND symbol IN (\(binds: Array(Set(symbols))))" }
        var result: [AccountID: [HoldingState]] = [:]
        for row in try await (db ?? database.sql).raw(query + " ORDER BY symbol").all() {
            result[try row.decode(column: "account_id", as: AccountID.self), default: []].append(try Self.holding(row))
        }
        return result
    }

    /// Several accounts' cash and holdings in one statement: a snapshot of them all as they stood at one
    /// moment (two reads could take the cash before a fill and the shares after it).
    func books(ofAccounts accounts: [AccountRecord]) async throws -> [AccountID: (account: AccountState, holdings: [HoldingState])] {
        guard !accounts.isEmpty else { return [:] }
        let owners = Dictionary(accounts.map { ($0.id, $0.userID) }) { first, _ in first }
        let rows = try await database.sql.raw("""
            SELECT a.id, a.cash, a.reserved_cash, h.symbol, h.quantity, h.reserved_quantity, h.cost_basis
            FROM accounts a LEFT JOIN holdings h ON h.account_id = a.id
            WHERE a.id IN (\(binds: accounts.map(\.id))) ORDER BY a.id, h.symbol
            """).all()
        var result: [AccountID: (account: AccountState, holdings: [HoldingState])] = [:]
        for row in rows {
            let id = try row.decode(column: "id", as: AccountID.self)
            guard let owner = owners[id] else { continue }
            if result[id] == nil { result[id] = (try Self.account(row, id: id, owner: owner), []) }
            if try !row.decodeNil(column: "symbol") { result[id]!.holdings.append(try Self.holding(row)) }
        }
        return result
    }

    static func holding(_ row: any SQLRow) throws -> HoldingState {
        HoldingState(
            symbol: try row.decode(column: "symbol", as: String.self), quantity: try row.decode(column: "quantity", as: Quantity.self),
            reservedQuantity: try row.decode(column: "reserved_quantity", as: Quantity.self),
            costBasis: try row.decode(column: "cost_basis", as: Cash.self))
    }

    /// Inserts or updates holdings in one statement.
    func upsertHoldings(_ holdings: [HoldingState], account: AccountState, ids: IDSource, now: Date, into writes: inout WriteBatch) {
        guard !holdings.isEmpty else { return }
        var values: [SQLQueryString] = []
        for holding in holdings {
            let id = ids.uuid()
            values.append("""
                (\(bind: id), \(bind: account.id), \(bind: account.userID), \(bind: holding.symbol), \(bind: holding.quantity),
                 \(bind: holding.reservedQuantity), \(bind: holding.costBasis), \(bind: now), \(bind: now))
                """)
        }
        writes.add("""
            INSERT INTO holdings (id, account_id, user_id, symbol, quantity, reserved_quantity, cost_basis, created_at, updated_at)
            VALUES \(values.joined(separator: ", "))
            ON CONFLICT (account_id, symbol) DO UPDATE SET quantity = excluded.quantity, reserved_quantity = excluded.reserved_quantity,
                cost_basis = excluded.cost_basis, updated_at = excluded.updated_at
            """)
    }

    // MARK: - Orders

    /// Open DAY orders placed before `close`: each should have ended by it (expired, or its fills applied).
    func openDayOrders(placedBefore close: Date) async throws -> Int {
        try await database.sql.raw("""
            SELECT COUNT(*) AS n FROM orders
            WHERE time_in_force = \(bind: TimeInForce.day.rawValue) AND status IN \(unsafeRaw: Self.openStatuses) AND created_at < \(bind: close)
            """).first()?.decode(column: "n", as: Int.self) ?? 0
    }

    /// The statuses of an order that still reserves cash or shares, as an SQL list: `('new', 'accepted', 'partially_filled')`.
    static let openStatuses = "(" + OrderStatus.allCases.filter(\.isOpen).map { "'\($0.rawValue)'" }.joined(separator: ", ") + ")"

    static let orderColumns = """
        id, account_id, user_id, client_order_id, symbol, side, type, time_in_force, quantity, notional, limit_price, stop_price, \
        status, filled_quantity, average_fill_price, reserved_cash, reserved_quantity, reject_reason, cancel_requested_at, triggered_at, \
        keep_cash, created_at, updated_at
        """

    static func order(_ row: any SQLRow) throws -> OrderState {
        func decodeEnum<E: RawRepresentable>(_ column: String, as: E.Type) throws -> E where E.RawValue == String {
            let raw = try row.decode(column: column, as: String.self)
            guard let value = E(rawValue: raw) else { throw StoreError.corrupt("orders.\(column) is \(raw)") }
            return value
        }
        return OrderState(
            id: try row.decode(column: "id", as: OrderID.self), accountID: try row.decode(column: "account_id", as: AccountID.self),
            userID: try row.decode(column: "user_id", as: UserID.self), clientOrderID: try row.decode(column: "client_order_id", as: String?.self),
            symbol: try row.decode(column: "symbol", as: String.self), side: try decodeEnum("side", as: OrderSide.self),
            type: try decodeEnum("type", as: OrderType.self), timeInForce: try decodeEnum("time_in_force", as: TimeInForce.self),
            quantity: try row.decode(column: "quantity", as: Quantity?.self), notional: try row.decode(column: "notional", as: Cash?.self),
            limitPrice: try row.decode(column: "limit_price", as: Price?.self), stopPrice: try row.decode(column: "stop_price", as: Price?.self),
            status: try decodeEnum("status", as: OrderStatus.self), filledQuantity: try row.decode(column: "filled_quantity", as: Quantity.self),
            averageFillPrice: try row.decode(column: "average_fill_price", as: Price?.self),
            reservedCash: try row.decode(column: "reserved_cash", as: Cash.self),
            reservedQuantity: try row.decode(column: "reserved_quantity", as: Quantity.self),
            rejectReason: try row.decode(column: "reject_reason", as: String?.self),
            cancelRequestedAt: try row.decode(column: "cancel_requested_at", as: Date?.self),
            triggeredAt: try row.decode(column: "triggered_at", as: Date?.self),
            keepingCash: try row.decode(column: "keep_cash", as: Cash?.self) ?? .zero, createdAt: try row.decode(column: "created_at", as: Date.self),
            updatedAt: try row.decode(column: "updated_at", as: Date.self))
    }

    /// The order; with `owner`, nil unless it is that user's.
    func order(_ id: OrderID, owner: UserID? = nil, on db: (any SQLDatabase)? = nil) async throws -> OrderState? {
        let ownerCondition: SQLQueryString = owner.map { " AND user_id = \(bind: $0)" } ?? ""
        return try await (db ?? database.sql).raw("""
            SELECT \(unsafeRaw: Self.orderColumns) FROM orders WHERE id = \(bind: id)\(ownerCondition)
            """).first().map(Self.order)
    }

    func orders(_ ids: [OrderID], on db: any SQLDatabase) async throws -> [OrderState] {
        guard !ids.isEmpty else { return [] }
        return try await db.raw("SELECT \(unsafeRaw: Self.orderColumns) FROM orders WHERE id IN (\(binds: ids))").all().map(Self.order)
    }

    /// Open orders of one account (for the reservation check).
    func openOrders(of accountID: AccountID, on db: any SQLDatabase) async throws -> [OrderState] {
        try await db.raw("""
            SELECT \(unsafeRaw: Self.orderColumns) FROM orders WHERE account_id = \(bind: accountID) AND status IN \(unsafeRaw: Self.openStatuses)
            ORDER BY created_at, id
            """).all().map(Self.order)
    }

    /// The user's open orders (of one account, or one symbol, when named), oldest first.
    func openOrders(of userID: UserID, accountID: AccountID?, symbol: String?) async throws -> [OrderState] {
        var query: SQLQueryString = "SELECT \(unsafeRaw: Self.orderColumns) FROM orders WHERE user_id = \(bind: userID) AND status IN \(unsafeRaw: Self.openStatuses)"
        if let accountID { query = query + " AND account_id = \(bind: accountID)" }
        if let symbol { query = query + " AND symbol = \(bind: symbol)" }
        return try await database.sql.raw(query + " ORDER BY created_at, id").all().map(Self.order)
    }

    /// Every order resting at the broker, oldest first, read a page at a time
    /// (each page after the last row of the one before, so none is read twice or skipped).
    func restingOrders(pageSize: Int = 1000) async throws -> [OrderState] {
        var all: [OrderState] = []
        while true {
            let after: SQLQueryString = all.last.map {
                " AND " + Pagination.after($0.id.uuid, table: "orders", timeColumn: "created_at", descending: false)
            } ?? ""
            let page = try await database.sql.raw("""
                SELECT \(unsafeRaw: Self.orderColumns) FROM orders WHERE status IN ('accepted', 'partially_filled')\(after)
                ORDER BY created_at, id LIMIT \(literal: pageSize)
                """).all().map(Self.order)
            all += page
            if page.count < pageSize { return all }
        }
    }

    /// `new` orders whose submit job died: they would hold their reservation forever.
    /// Orders still `new` whose submit job died, with the job's last error.
    /// Whether the order may have been sent to its broker (`sent_at`, migration 021).
    func mayHaveBeenSent(_ id: OrderID) async throws -> Bool {
        try await database.sql.raw("SELECT sent_at FROM orders WHERE id = \(bind: id)").first()?.decode(column: "sent_at", as: Date?.self) != nil
    }

    /// Records, before the order is first sent to a broker that holds orders, that it may have been.
    func markSent(_ id: OrderID, at now: Date) async throws {
        try await database.sql.raw("UPDATE orders SET sent_at = \(bind: now) WHERE id = \(bind: id) AND sent_at IS NULL").run()
    }

    func ordersOfDeadSubmitJobs(limit: Int = 1000) async throws -> [(id: OrderID, lastError: String?, diedAt: Date)] {
        try await database.sql.raw("""
            SELECT o.id, j.last_error, j.updated_at FROM orders o JOIN jobs j ON j.order_id = o.id
            WHERE o.status = 'new' AND j.kind = \(bind: JobPayload.Kind.submitOrder.rawValue) AND j.status = 'dead' ORDER BY o.created_at, o.id LIMIT \(literal: limit)
            """).all().map {
            (try $0.decode(column: "id", as: OrderID.self), try $0.decode(column: "last_error", as: String?.self), try $0.decode(column: "updated_at", as: Date.self))
        }
    }

    struct OrderFilter: Sendable {
        var status: ListedStatus?
        var symbol: String?
        var accountID: AccountID?
    }

    /// What `status=` on the order list matches: a status as the user sees it
    /// (`accepted` leaves out the accepted orders shown as `pending_cancel`),
    /// or every order still `open` or already `closed`.
    enum ListedStatus: Sendable {
        case shown(OrderStatus)
        case pendingCancel
        case open
        case closed

        static let names = OrderStatus.allCases.map(\.rawValue) + ["pending_cancel", "open", "closed"]

        init?(_ name: String) {
            switch name {
            case "pending_cancel": self = .pendingCancel
            case "open": self = .open
            case "closed": self = .closed
            default:
                guard let status = OrderStatus(rawValue: name) else { return nil }
                self = .shown(status)
            }
        }

        var condition: SQLQueryString {
            func among(_ statuses: [OrderStatus]) -> SQLQueryString {
                "status IN (\(binds: statuses.map(\.rawValue)))"
            }
            let open = OrderStatus.allCases.filter(\.isOpen), closed = OrderStatus.allCases.filter(\.isTerminal)
            switch self {
            case .shown(let status) where status.isOpen: return "status = \(bind: status.rawValue) AND cancel_requested_at IS NULL"
            case .shown(let status): return "status = \(bind: status.rawValue)"
            case .pendingCancel: return among(open) + " AND cancel_requested_at IS NOT NULL"
            case .open: return among(open)
            case .closed: return among(closed)
            }
        }
    }

    /// One page of the user's orders, newest first, after the cursor's order.
    func orders(of userID: UserID, filter: OrderFilter, after cursor: UUID?, limit: Int) async throws -> [OrderState] {
        var query: SQLQueryString = "SELECT \(unsafeRaw: Self.orderColumns) FROM orders WHERE user_id = \(bind: userID)"
        if let status = filter.status { query = query + " AND " + status.condition }
        if let symbol = filter.symbol { query = query + " AND symbol = \(bind: symbol)" }
        if let accountID = filter.accountID { query = query + " AND account_id = \(bind: accountID)" }
        if let cursor { query = query + " AND " + Pagination.after(cursor, table: "orders", timeColumn: "created_at", owner: userID.uuid) }
        let rows = try await database.sql.raw(query + " ORDER BY created_at DESC, id DESC LIMIT \(literal: limit)").all().map(Self.order)
        return try await Pagination.checkAnchor(rows, cursor: cursor, table: "orders", owner: userID.uuid, on: database.sql)
    }

    func clientOrderIDExists(_ clientOrderID: String, userID: UserID, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw("""
            SELECT 1 AS found FROM orders WHERE user_id = \(bind: userID) AND client_order_id = \(bind: clientOrderID)
            """).first() != nil
    }

    func insertOrders(_ orders: [OrderState], into writes: inout WriteBatch) {
        for order in orders {
            writes.add("""
                INSERT INTO orders (\(unsafeRaw: Self.orderColumns)) VALUES (
                    \(bind: order.id), \(bind: order.accountID), \(bind: order.userID), \(bind: order.clientOrderID), \(bind: order.symbol),
                    \(bind: order.side.rawValue), \(bind: order.type.rawValue), \(bind: order.timeInForce.rawValue), \(bind: order.quantity),
                    \(bind: order.notional), \(bind: order.limitPrice), \(bind: order.stopPrice), \(bind: order.status.rawValue),
                    \(bind: order.filledQuantity), \(bind: order.averageFillPrice), \(bind: order.reservedCash), \(bind: order.reservedQuantity),
                    \(bind: order.rejectReason), \(bind: order.cancelRequestedAt), \(bind: order.triggeredAt),
                    \(bind: order.keepingCash.isZero ? nil : order.keepingCash), \(bind: order.createdAt),
                    \(bind: order.updatedAt))
                """)
        }
    }

    /// Writes the orders' changing columns in one statement, however many
    /// (a worker's batch fills many orders of an account under its lock).
    func updateOrders(_ orders: [OrderState], into writes: inout WriteBatch) {
        guard !orders.isEmpty else { return }
        let rows: [SQLQueryString] = orders.enumerated().map { [writes] index, order in
            func typed(_ type: String) -> SQLQueryString { writes.cast(type, row: index) }
            return """
                (\(bind: order.id)\(typed("uuid")), \(bind: order.status.rawValue)\(typed("text")), \(bind: order.filledQuantity)\(typed("numeric")), \
                \(bind: order.averageFillPrice)\(typed("numeric")), \(bind: order.reservedCash)\(typed("numeric")), \
                \(bind: order.reservedQuantity)\(typed("numeric")), \(bind: order.rejectReason)\(typed("text")), \
                \(bind: order.cancelRequestedAt)\(typed("timestamptz")), \(bind: order.updatedAt)\(typed("timestamptz")), \
                \(bind: order.triggeredAt)\(typed("timestamptz")))
                """
        }
        // VALUES names its columns column1, column2… on both databases.
        writes.add("""
            UPDATE orders SET status = v.column2, filled_quantity = v.column3, average_fill_price = v.column4, reserved_cash = v.column5,
                reserved_quantity = v.column6, reject_reason = v.column7, cancel_requested_at = v.column8, updated_at = v.column9,
                triggered_at = v.column10
            FROM (VALUES \(rows.joined(separator: ", "))) AS v
            WHERE orders.id = v.column1
            """)
    }

    // MARK: - Fills

    /// Which of these broker fill ids are already applied.
    func appliedFills(_ brokerFillIDs: [String], on db: any SQLDatabase) async throws -> Set<String> {
        guard !brokerFillIDs.isEmpty else { return [] }
        return Set(try await db.raw("SELECT broker_fill_id FROM fills WHERE broker_fill_id IN (\(binds: brokerFillIDs))").all()
            .map { try $0.decode(column: "broker_fill_id", as: String.self) })
    }

    /// The exact value of each of these orders' fills (Σ quantity × price,
    /// summed here: neither database's arithmetic is trusted with it).
    /// Only orders already partly filled need it, so most fills skip the query.
    func filledValues(of orders: [OrderState], on db: any SQLDatabase) async throws -> [OrderID: FillValue] {
        let partly = orders.filter { $0.filledQuantity.isPositive }.map(\.id)
        guard !partly.isEmpty else { return [:] }
        var values: [OrderID: FillValue] = [:]
        for row in try await db.raw("SELECT order_id, quantity, price FROM fills WHERE order_id IN (\(binds: partly))").all() {
            let id = try row.decode(column: "order_id", as: OrderID.self)
            values[id] = try (values[id] ?? .zero).adding(try row.decode(column: "quantity", as: Quantity.self), try row.decode(column: "price", as: Price.self))
        }
        return values
    }

    func insertFills(_ fills: [FillLine], userID: UserID, into writes: inout WriteBatch) {
        guard !fills.isEmpty else { return }
        let values: [SQLQueryString] = fills.map { fill in
            "(\(bind: fill.id), \(bind: fill.orderID), \(bind: userID), \(bind: fill.brokerFillID), \(bind: fill.quantity), \(bind: fill.price), \(bind: fill.occurredAt))"
        }
        writes.add("""
            INSERT INTO fills (id, order_id, user_id, broker_fill_id, quantity, price, occurred_at) VALUES \(values.joined(separator: ", "))
            """)
    }

    /// When each order's last booked fill was executed (orders with no fill are left out).
    func lastFillTimes(_ ids: [OrderID]) async throws -> [OrderID: Date] {
        guard !ids.isEmpty else { return [:] }
        var times: [OrderID: Date] = [:]
        for row in try await database.sql.raw("SELECT order_id, MAX(occurred_at) AS last FROM fills WHERE order_id IN (\(binds: ids)) GROUP BY order_id").all() {
            times[try row.decode(column: "order_id", as: OrderID.self)] = try row.decode(column: "last", as: Date.self)
        }
        return times
    }

    /// The orders as a broker sees them, each with when its last booked fill was executed when part of it filled.
    func brokerOrders(_ orders: [OrderState]) async throws -> [BrokerOrder] {
        let lastFills = try await lastFillTimes(orders.filter { $0.filledQuantity.isPositive }.map(\.id))
        return orders.map { order in
            var brokerOrder = BrokerOrder(order)
            brokerOrder.lastFillAt = lastFills[order.id]
            return brokerOrder
        }
    }

    func brokerOrder(_ order: OrderState) async throws -> BrokerOrder {
        try await brokerOrders([order])[0]
    }

    func fills(of orderID: OrderID) async throws -> [FillLine] {
        try await database.sql.raw("""
            SELECT id, order_id, broker_fill_id, quantity, price, occurred_at FROM fills WHERE order_id = \(bind: orderID) ORDER BY occurred_at, id
            """).all().map { row in
            FillLine(
                id: try row.decode(column: "id", as: FillID.self), orderID: try row.decode(column: "order_id", as: OrderID.self),
                brokerFillID: try row.decode(column: "broker_fill_id", as: String.self), quantity: try row.decode(column: "quantity", as: Quantity.self),
                price: try row.decode(column: "price", as: Price.self), occurredAt: try row.decode(column: "occurred_at", as: Date.self))
        }
    }

    // MARK: - Ledger rows

    func insertEntries(_ entries: [LedgerLine], account: AccountState, now: Date, into writes: inout WriteBatch) {
        guard !entries.isEmpty else { return }
        let values: [SQLQueryString] = entries.map { entry in
            """
            (\(bind: entry.id), \(bind: account.id), \(bind: account.userID), \(bind: entry.kind.rawValue), \(bind: entry.symbol), \(bind: entry.quantity),
             \(bind: entry.price), \(bind: entry.amount), \(bind: entry.orderID), \(bind: entry.description), \(bind: entry.occurredAt), \(bind: now))
            """
        }
        writes.add("""
            INSERT INTO transactions (id, account_id, user_id, type, symbol, quantity, price, amount, order_id, description, occurred_at, created_at)
            VALUES \(values.joined(separator: ", "))
            """)
    }

    static let entryColumns = "id, account_id, type, symbol, quantity, price, amount, order_id, description, occurred_at"

    static func entry(_ row: any SQLRow) throws -> EntryRecord {
        let raw = try row.decode(column: "type", as: String.self)
        guard let kind = LedgerKind(rawValue: raw) else { throw StoreError.corrupt("transactions.type is \(raw)") }
        return EntryRecord(
            accountID: try row.decode(column: "account_id", as: AccountID.self),
            line: LedgerLine(
                id: try row.decode(column: "id", as: EntryID.self), kind: kind, amount: try row.decode(column: "amount", as: Cash.self),
                symbol: try row.decode(column: "symbol", as: String?.self), quantity: try row.decode(column: "quantity", as: Quantity?.self),
                price: try row.decode(column: "price", as: Price?.self), orderID: try row.decode(column: "order_id", as: OrderID?.self),
                description: try row.decode(column: "description", as: String?.self), occurredAt: try row.decode(column: "occurred_at", as: Date.self)))
    }

    struct EntryFilter: Sendable {
        var accountID: AccountID?
        var symbol: String?
        var kind: LedgerKind?
        var from: Date?
        var to: Date?
    }

    /// One page of the user's ledger, newest first, after the cursor's row.
    func entries(of userID: UserID, filter: EntryFilter, after cursor: UUID?, limit: Int) async throws -> [EntryRecord] {
        var query: SQLQueryString = "SELECT \(unsafeRaw: Self.entryColumns) FROM transactions WHERE user_id = \(bind: userID)"
        if let accountID = filter.accountID { query = query + " AND account_id = \(bind: accountID)" }
        if let symbol = filter.symbol { query = query + " AND symbol = \(bind: symbol)" }
        if let kind = filter.kind { query = query + " AND type = \(bind: kind.rawValue)" }
        if let from = filter.from { query = query + " AND occurred_at >= \(bind: from)" }
        if let to = filter.to { query = query + " AND occurred_at < \(bind: to)" }
        if let cursor { query = query + " AND " + Pagination.after(cursor, table: "transactions", timeColumn: "occurred_at", owner: userID.uuid) }
        let rows = try await database.sql.raw(query + " ORDER BY occurred_at DESC, id DESC LIMIT \(literal: limit)").all().map(Self.entry)
        return try await Pagination.checkAnchor(rows, cursor: cursor, table: "transactions", owner: userID.uuid, on: database.sql)
    }

    /// Every row of one account, oldest first (history replay, verification).
    func entries(of accountID: AccountID, through: Date? = nil, on db: (any SQLDatabase)? = nil) async throws -> [EntryRecord] {
        var query: SQLQueryString = "SELECT \(unsafeRaw: Self.entryColumns) FROM transactions WHERE account_id = \(bind: accountID)"
        if let through { query = query + " AND occurred_at <= \(bind: through)" }
        return try await (db ?? database.sql).raw(query + " ORDER BY occurred_at, id").all().map(Self.entry)
    }

    /// The account's rows of `kind` since `time`, newest first (an operator's posting checked against one just made).
    func entries(of accountID: AccountID, kind: LedgerKind, since time: Date, on db: any SQLDatabase) async throws -> [EntryRecord] {
        try await db.raw("""
            SELECT \(unsafeRaw: Self.entryColumns) FROM transactions
            WHERE account_id = \(bind: accountID) AND type = \(bind: kind.rawValue) AND created_at >= \(bind: time)
            ORDER BY occurred_at DESC, id DESC
            """).all().map(Self.entry)
    }

    enum StoreError: Error, CustomStringConvertible {
        case corrupt(String)
        var description: String {
            switch self {
            case .corrupt(let what): "stored data is not what Folio writes: \(what)"
            }
        }
    }
}
