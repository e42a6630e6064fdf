import FolioDomain
import Foundation
import SQLKit

/// An item linked through Plaid: one login at one institution.
struct PlaidItem: Sendable, Equatable {
    /// What the user can do about the item.
    enum Status: String, Sendable, Codable {
        /// Syncing as it should.
        case active
        /// The institution wants the user to sign in again (Link in update mode).
        case loginRequired = "login_required"
        /// The user's consent ends soon; signing in again through Link renews it.
        case pendingExpiration = "pending_expiration"
        /// Plaid cannot sync the item for a reason that signing in does not fix (see `errorCode`).
        case error
    }

    var id: UUID
    var userID: UserID
    var plaidItemID: String
    var institutionID: String?
    var institutionName: String?
    var sealedAccessToken: String
    var status: Status
    var errorCode: String?
    var errorMessage: String?
    var syncCursor: String?
    /// The cursor the pagination under way began from ("" for the item's first sync); nil when none is under way.
    var syncRunStart: String? = nil
    var lastSyncedAt: Date?
    var holdingsRefreshedAt: Date?
    var createdAt: Date
}

struct LinkedAccount: Sendable, Equatable {
    var id: UUID
    var itemID: UUID
    var account: PlaidAccount
}

struct LinkedTransaction: Sendable, Equatable {
    var id: UUID
    var itemID: UUID
    /// Folio's id of the linked account, when Plaid still lists it.
    var accountID: UUID?
    var transaction: PlaidTransaction
    var occurredAt: Date
}

struct LinkedHolding: Sendable, Equatable {
    var itemID: UUID
    var accountID: UUID?
    var holding: PlaidHolding
}

/// The only code that reads and writes the Plaid tables.
struct PlaidStore: Sendable {
    let database: FolioDatabase

    static let itemColumns = """
        id, user_id, plaid_item_id, institution_id, institution_name, sealed_access_token, status, error_code, error_message, sync_cursor,
        sync_run_start, last_synced_at, holdings_refreshed_at, created_at
        """

    // MARK: - Items

    func insert(_ item: PlaidItem, on db: any SQLDatabase) async throws {
        try await db.raw("""
            INSERT INTO plaid_items (id, user_id, plaid_item_id, institution_id, institution_name, sealed_access_token, status, created_at, updated_at)
            VALUES (\(bind: item.id), \(bind: item.userID), \(bind: item.plaidItemID), \(bind: item.institutionID), \(bind: item.institutionName),
                    \(bind: item.sealedAccessToken), \(bind: item.status.rawValue), \(bind: item.createdAt), \(bind: item.createdAt))
            """).run()
    }

    /// The user's working item at `institutionID` that holds an account like each of `accounts` that has a
    /// mask (same name, mask, type and subtype): the same bank login linked before, as Plaid's guide to duplicate
    /// items matches them. Not an item that lost its access (`error`: linking again is how it is mended), not
    /// the item itself (Link's update mode gives it back), and not a login that shares only some accounts
    /// (a joint account of two people's logins). Accounts without a mask tell nothing.
    func itemLinking(_ accounts: [PlaidAccount], at institutionID: String, of userID: UserID, besides plaidItemID: String, on db: any SQLDatabase) async throws -> UUID? {
        let masked = accounts.filter { $0.mask != nil }
        guard !masked.isEmpty else { return nil }
        let rows = try await db.raw("""
            SELECT a.item_id, a.name, a.mask, a.type, a.subtype FROM linked_accounts a JOIN plaid_items i ON i.id = a.item_id
            WHERE i.user_id = \(bind: userID) AND i.institution_id = \(bind: institutionID) AND i.plaid_item_id <> \(bind: plaidItemID)
                AND i.status <> \(bind: PlaidItem.Status.error.rawValue) AND a.mask IS NOT NULL
            """).all()
        var byItem: [UUID: [PlaidAccount]] = [:]
        for row in rows {
            byItem[try row.decode(column: "item_id", as: UUID.self), default: []].append(PlaidAccount(
                plaidAccountID: "", name: try row.decode(column: "name", as: String.self), mask: try row.decode(column: "mask", as: String?.self),
                type: try row.decode(column: "type", as: String.self), subtype: try row.decode(column: "subtype", as: String?.self)))
        }
        return byItem.first { _, held in
            masked.allSatisfy { new in held.contains { $0.name == new.name && $0.mask == new.mask && $0.type == new.type && $0.subtype == new.subtype } }
        }?.key
    }

    /// Holds the user's linking for the rest of the transaction `db`, so two links at once are checked against
    /// each other (PostgreSQL; SQLite's single writer runs them one after the other).
    func holdLinking(of userID: UserID, on db: any SQLDatabase) async throws {
        guard db.dialect.name == "postgresql" else { return }
        try await db.raw("SELECT pg_advisory_xact_lock(hashtextextended(\(bind: "folio-plaid-link:\(userID)"), 0))").run()
    }

    /// The item, if it is the user's (any user's when `owner` is nil).
    func item(_ id: UUID, owner: UserID?, on db: (any SQLDatabase)? = nil) async throws -> PlaidItem? {
        var query: SQLQueryString = "SELECT \(unsafeRaw: Self.itemColumns) FROM plaid_items WHERE id = \(bind: id)"
        if let owner { query = query + " AND user_id = \(bind: owner)" }
        return try await (db ?? database.sql).raw(query).first().map(Self.item)
    }

    func item(plaidItemID: String, on db: (any SQLDatabase)? = nil) async throws -> PlaidItem? {
        try await (db ?? database.sql).raw("SELECT \(unsafeRaw: Self.itemColumns) FROM plaid_items WHERE plaid_item_id = \(bind: plaidItemID)")
            .first().map(Self.item)
    }

    func items(of userID: UserID, on db: (any SQLDatabase)? = nil) async throws -> [PlaidItem] {
        try await (db ?? database.sql).raw("""
            SELECT \(unsafeRaw: Self.itemColumns) FROM plaid_items WHERE user_id = \(bind: userID) ORDER BY created_at, id
            """).all().map(Self.item)
    }

    /// Every item, for the daily backstop sync and key rotation.
    func allItems(on db: (any SQLDatabase)? = nil) async throws -> [PlaidItem] {
        try await (db ?? database.sql).raw("SELECT \(unsafeRaw: Self.itemColumns) FROM plaid_items ORDER BY created_at, id").all().map(Self.item)
    }

    /// Deletes the item and what was imported from it; false when it was gone already.
    @discardableResult
    func delete(_ id: UUID, on db: any SQLDatabase) async throws -> Bool {
        // The children first: SQLite enforces the cascade only with foreign keys on, and PostgreSQL does either way.
        for table in ["linked_holdings", "linked_transactions", "linked_accounts"] {
            try await db.raw("DELETE FROM \(ident: table) WHERE item_id = \(bind: id)").run()
        }
        return try await db.raw("DELETE FROM plaid_items WHERE id = \(bind: id) RETURNING id").first() != nil
    }

    func setStatus(_ id: UUID, _ status: PlaidItem.Status, errorCode: String?, errorMessage: String?, now: Date, on db: (any SQLDatabase)? = nil) async throws {
        try await (db ?? database.sql).raw("""
            UPDATE plaid_items SET status = \(bind: status.rawValue), error_code = \(bind: errorCode), error_message = \(bind: errorMessage),
                updated_at = \(bind: now)
            WHERE id = \(bind: id)
            """).run()
    }

    /// Statuses that wait for the user: no other failure's message replaces theirs.
    static let waitingForUser = "('login_required', 'pending_expiration')"

    /// A failure that leaves the status as it is (Plaid busy, the institution down): shown until a good sync clears it.
    func recordError(_ id: UUID, code: String?, message: String, now: Date) async throws {
        try await database.sql.raw("""
            UPDATE plaid_items SET error_code = \(bind: code), error_message = \(bind: String(message.prefix(500))), updated_at = \(bind: now)
            WHERE id = \(bind: id) AND status NOT IN \(unsafeRaw: Self.waitingForUser)
            """).run()
    }

    /// A failure signing in again does not fix: `error`, unless the item already waits for its user.
    func markError(_ id: UUID, code: String, message: String, now: Date) async throws {
        try await database.sql.raw("""
            UPDATE plaid_items SET status = 'error', error_code = \(bind: code), error_message = \(bind: String(message.prefix(500))), updated_at = \(bind: now)
            WHERE id = \(bind: id) AND status NOT IN \(unsafeRaw: Self.waitingForUser)
            """).run()
    }

    /// Sets `login_required` or `pending_expiration`; true only when this
    /// changed the status (so one mail goes per break). An item whose login is
    /// broken is not downgraded to merely expiring.
    func markNeedsLogin(_ id: UUID, _ status: PlaidItem.Status, errorCode: String, errorMessage: String, now: Date, on db: any SQLDatabase) async throws -> Bool {
        let outranked: SQLQueryString = status == .pendingExpiration ? " AND status <> 'login_required'" : ""
        return try await db.raw("""
            UPDATE plaid_items SET status = \(bind: status.rawValue), error_code = \(bind: errorCode), error_message = \(bind: errorMessage),
                updated_at = \(bind: now)
            WHERE id = \(bind: id) AND status <> \(bind: status.rawValue)\(outranked)
            RETURNING id
            """).first() != nil
    }

    /// From `login_required` to `status` (`active`, or `pending_expiration` with its
    /// code and text), if the item is still there; true when it was.
    func clearLoginRequired(_ id: UUID, to status: PlaidItem.Status = .active, errorCode: String? = nil, errorMessage: String? = nil,
                            now: Date, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw("""
            UPDATE plaid_items SET status = \(bind: status.rawValue), error_code = \(bind: errorCode), error_message = \(bind: errorMessage),
                updated_at = \(bind: now)
            WHERE id = \(bind: id) AND status = 'login_required'
            RETURNING id
            """).first() != nil
    }

    func setInstitution(_ id: UUID, institutionID: String?, name: String?, on db: any SQLDatabase) async throws {
        try await db.raw("""
            UPDATE plaid_items SET institution_id = COALESCE(\(bind: institutionID), institution_id),
                institution_name = COALESCE(\(bind: name), institution_name)
            WHERE id = \(bind: id)
            """).run()
    }

    func updateSealedAccessToken(_ id: UUID, old: String, new: String, on db: any SQLDatabase) async throws {
        try await db.raw("""
            UPDATE plaid_items SET sealed_access_token = \(bind: new) WHERE id = \(bind: id) AND sealed_access_token = \(bind: old)
            """).run()
    }

    // MARK: - One worker per item

    /// Takes the item's lease for `holder` (unique to this run) of `instance`
    /// until `until`; false while another run holds it. A lease is free once
    /// it runs out or once its instance has stopped heartbeating.
    func claim(_ id: UUID, holder: String, instance: String, until: Date, now: Date) async throws -> Bool {
        let deadline = now.addingTimeInterval(-Instances.deadAfter)
        return try await database.sql.raw("""
            UPDATE plaid_items SET locked_by = \(bind: holder), locked_instance = \(bind: instance), locked_until = \(bind: until)
            WHERE id = \(bind: id) AND (locked_by IS NULL OR locked_until < \(bind: now)
                   OR locked_instance IN (SELECT id FROM instances WHERE heartbeat_at < \(bind: deadline)))
            RETURNING id
            """).first() != nil
    }

    func release(_ id: UUID, holder: String) async throws {
        try await database.sql.raw("""
            UPDATE plaid_items SET locked_by = NULL, locked_instance = NULL, locked_until = NULL WHERE id = \(bind: id) AND locked_by = \(bind: holder)
            """).run()
    }

    /// Saves the sync cursor after a page, with where the pagination under way began (`runStart`; nil once
    /// it is complete), and renews the lease; false (and nothing saved: the caller rolls back) when the lease was lost.
    func advanceCursor(_ id: UUID, to cursor: String, runStart: String?, holder: String, until: Date, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw("""
            UPDATE plaid_items SET sync_cursor = \(bind: cursor), sync_run_start = \(bind: runStart), locked_until = \(bind: until)
            WHERE id = \(bind: id) AND locked_by = \(bind: holder)
            RETURNING id
            """).first() != nil
    }

    /// Notes what a page of an unfinished pagination listed. What it added is noted: a restarted run that
    /// no longer lists it drops it (`finishRun`). What it modified was held before the run, unless the run
    /// added it first: only a note already there is marked listed, so a transaction held before the run is
    /// never dropped for going unnamed.
    func noteListed(added: [String], modified: [String], item: UUID, on db: any SQLDatabase) async throws {
        // Each id once (one statement may not touch a row twice), in slices under every database's limit of bound values.
        let added = Set(added).sorted()
        for start in stride(from: 0, to: added.count, by: 500) {
            let rows = added[start..<min(start + 500, added.count)].map { id -> SQLQueryString in "(\(bind: item), \(bind: id), \(bind: true))" }
            try await db.raw("""
                INSERT INTO plaid_sync_listed (item_id, plaid_transaction_id, current) VALUES \(rows.joined(separator: ", "))
                ON CONFLICT (item_id, plaid_transaction_id) DO UPDATE SET current = excluded.current
                """).run()
        }
        let modified = Set(modified).subtracting(added).sorted()
        for start in stride(from: 0, to: modified.count, by: 500) {
            let ids = modified[start..<min(start + 500, modified.count)].map { id -> SQLQueryString in "\(bind: id)" }
            try await db.raw("""
                UPDATE plaid_sync_listed SET current = \(bind: true)
                WHERE item_id = \(bind: item) AND plaid_transaction_id IN (\(ids.joined(separator: ", ")))
                """).run()
        }
    }

    /// A mutation cut the pagination short: what it saved waits to be listed again by the new run, which
    /// starts from `runStart` (the cursor saved goes back to it, so a run cut short later starts there too).
    /// Only while this run holds the item (checked first, and the hold renewed): false, and nothing changed, once it
    /// is lost, so a run that lost the item never marks the notes of the run that took it over.
    func restartRun(_ id: UUID, at runStart: String, holder: String, until: Date, on db: any SQLDatabase) async throws -> Bool {
        guard try await db.raw("""
            UPDATE plaid_items SET sync_cursor = \(bind: runStart.isEmpty ? nil : runStart), sync_run_start = \(bind: runStart), locked_until = \(bind: until)
            WHERE id = \(bind: id) AND locked_by = \(bind: holder)
            RETURNING id
            """).first() != nil
        else { return false }
        try await db.raw("UPDATE plaid_sync_listed SET current = \(bind: false) WHERE item_id = \(bind: id)").run()
        return true
    }

    /// The pagination is complete: the transactions a cut-short run saved that the new run never listed
    /// (Plaid names them nowhere, as the run's first cursor never saw them), and the notes cleared.
    func finishRun(_ id: UUID, on db: any SQLDatabase) async throws -> [String] {
        let unlisted = try await db.raw("""
            SELECT plaid_transaction_id FROM plaid_sync_listed WHERE item_id = \(bind: id) AND current = \(bind: false) ORDER BY plaid_transaction_id
            """).all().map { try $0.decode(column: "plaid_transaction_id", as: String.self) }
        try await db.raw("DELETE FROM plaid_sync_listed WHERE item_id = \(bind: id)").run()
        return unlisted
    }

    /// A good sync clears a passing error and turns `error` back into `active`;
    /// `login_required` and `pending_expiration` stay until the user signs in again.
    /// Renews the run's hold on the item; false (the caller rolls back) when it was lost.
    func renewLease(_ id: UUID, holder: String, until: Date, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw("""
            UPDATE plaid_items SET locked_until = \(bind: until) WHERE id = \(bind: id) AND locked_by = \(bind: holder) RETURNING id
            """).first() != nil
    }

    func markSynced(_ id: UUID, now: Date) async throws {
        try await database.sql.raw("""
            UPDATE plaid_items SET last_synced_at = \(bind: now), updated_at = \(bind: now),
                status = CASE WHEN status = 'error' THEN 'active' ELSE status END,
                error_code = CASE WHEN status IN ('active', 'error') THEN NULL ELSE error_code END,
                error_message = CASE WHEN status IN ('active', 'error') THEN NULL ELSE error_message END
            WHERE id = \(bind: id)
            """).run()
    }

    // MARK: - Accounts

    static let accountColumns = """
        id, item_id, plaid_account_id, name, official_name, mask, type, subtype, current_balance, available_balance, credit_limit, currency
        """

    /// Inserts or updates the item's accounts by Plaid's account id.
    func saveAccounts(_ accounts: [PlaidAccount], item: PlaidItem, now: Date, on db: any SQLDatabase) async throws {
        for account in accounts {
            try await db.raw("""
                INSERT INTO linked_accounts (id, item_id, user_id, plaid_account_id, name, official_name, mask, type, subtype,
                                             current_balance, available_balance, credit_limit, currency, updated_at)
                VALUES (\(bind: UUID.random()), \(bind: item.id), \(bind: item.userID), \(bind: account.plaidAccountID), \(bind: account.name),
                        \(bind: account.officialName), \(bind: account.mask), \(bind: account.type), \(bind: account.subtype), \(bind: account.current),
                        \(bind: account.available), \(bind: account.limit), \(bind: account.currency), \(bind: now))
                ON CONFLICT (item_id, plaid_account_id) DO UPDATE SET
                    name = excluded.name, official_name = excluded.official_name, mask = excluded.mask, type = excluded.type,
                    subtype = excluded.subtype, current_balance = excluded.current_balance, available_balance = excluded.available_balance,
                    credit_limit = excluded.credit_limit, currency = excluded.currency, updated_at = excluded.updated_at
                """).run()
        }
    }

    /// Forgets the item's accounts Plaid no longer lists (closed, or unshared by the user), with their transactions and holdings.
    func removeAccounts(notIn kept: [String], item: UUID, on db: any SQLDatabase) async throws {
        guard !kept.isEmpty else { return }
        for table in ["linked_holdings", "linked_transactions", "linked_accounts"] {
            try await db.raw("""
                DELETE FROM \(ident: table) WHERE item_id = \(bind: item) AND plaid_account_id NOT IN (\(binds: kept))
                """).run()
        }
    }

    /// Saves the accounts Plaid lists now (a sync's or a holdings import's listing). Only the listed accounts'
    /// transactions are kept, so one new to the listing since the item last synced (selected again, back after a
    /// login was repaired) has its past behind the cursor: the item's transactions are then read again from the
    /// start. True when they are.
    @discardableResult
    func saveListing(_ accounts: [PlaidAccount], item: PlaidItem, now: Date, on db: any SQLDatabase) async throws -> Bool {
        let known = Set(try await db.raw("SELECT plaid_account_id FROM linked_accounts WHERE item_id = \(bind: item.id)")
            .all(decodingColumn: "plaid_account_id", as: String.self))
        try await saveAccounts(accounts, item: item, now: now, on: db)
        guard item.syncCursor != nil || item.syncRunStart != nil, !Set(accounts.map(\.plaidAccountID)).subtracting(known).isEmpty else { return false }
        try await startTransactionsOver(item.id, on: db)
        return true
    }

    /// The item's transactions are read again from the start: the cursor goes, and every transaction kept is noted
    /// as not yet listed, so what the run from the start does not list again (Plaid names no removal in it) goes
    /// when it completes.
    func startTransactionsOver(_ id: UUID, on db: any SQLDatabase) async throws {
        try await db.raw("UPDATE plaid_items SET sync_cursor = NULL, sync_run_start = NULL WHERE id = \(bind: id)").run()
        try await db.raw("""
            INSERT INTO plaid_sync_listed (item_id, plaid_transaction_id, current)
            SELECT item_id, plaid_transaction_id, \(bind: false) FROM linked_transactions WHERE item_id = \(bind: id)
            ON CONFLICT (item_id, plaid_transaction_id) DO UPDATE SET current = excluded.current
            """).run()
    }

    func accounts(of userID: UserID, item: UUID? = nil) async throws -> [LinkedAccount] {
        var query: SQLQueryString = "SELECT \(unsafeRaw: Self.accountColumns) FROM linked_accounts WHERE user_id = \(bind: userID)"
        if let item { query = query + " AND item_id = \(bind: item)" }
        return try await database.sql.raw(query + " ORDER BY name, id").all().map(Self.account)
    }

    func account(_ id: UUID, owner: UserID) async throws -> LinkedAccount? {
        try await database.sql.raw("""
            SELECT \(unsafeRaw: Self.accountColumns) FROM linked_accounts WHERE id = \(bind: id) AND user_id = \(bind: owner)
            """).first().map(Self.account)
    }

    // MARK: - Transactions

    /// Applies one sync page: added and modified are upserted by Plaid's
    /// transaction id, removed are deleted; applying a page twice changes nothing.
    func apply(_ page: PlaidSyncPage, item: PlaidItem, now: Date, on db: any SQLDatabase) async throws {
        for transaction in page.added + page.modified {
            // PlaidClient refuses any other date; this holds should a page come from elsewhere.
            guard let occurredAt = Self.midnight(transaction.date) else {
                throw PlaidError.unreadable("transaction \(transaction.transactionID) has date \(transaction.date), not YYYY-MM-DD")
            }
            try await db.raw("""
                INSERT INTO linked_transactions (id, item_id, user_id, plaid_transaction_id, plaid_account_id, amount, currency, date,
                                                 authorized_date, occurred_at, name, merchant_name, category, pending, updated_at)
                VALUES (\(bind: UUID.random()), \(bind: item.id), \(bind: item.userID), \(bind: transaction.transactionID),
                        \(bind: transaction.plaidAccountID), \(bind: transaction.amount), \(bind: transaction.currency), \(bind: transaction.date),
                        \(bind: transaction.authorizedDate), \(bind: occurredAt), \(bind: transaction.name),
                        \(bind: transaction.merchantName), \(bind: transaction.category), \(bind: transaction.pending), \(bind: now))
                ON CONFLICT (item_id, plaid_transaction_id) DO UPDATE SET
                    plaid_account_id = excluded.plaid_account_id, amount = excluded.amount, currency = excluded.currency, date = excluded.date,
                    authorized_date = excluded.authorized_date, occurred_at = excluded.occurred_at, name = excluded.name,
                    merchant_name = excluded.merchant_name, category = excluded.category, pending = excluded.pending, updated_at = excluded.updated_at
                """).run()
        }
        if !page.removed.isEmpty {
            try await db.raw("""
                DELETE FROM linked_transactions WHERE item_id = \(bind: item.id) AND plaid_transaction_id IN (\(binds: page.removed))
                """).run()
        }
    }

    /// A `YYYY-MM-DD` date at midnight UTC: whole seconds, so it pages exactly (`PlaidClient` refuses any other date).
    /// The day's start, for a day that exists as written: `2026-02-30` (which the parser rolls over to March) and
    /// days before 1900 (the parser shifts those before the Gregorian calendar) are not days Plaid sends.
    static func midnight(_ date: String) -> Date? {
        guard let year = Int(date.prefix(4)), year >= 1900, let parsed = try? Date(date + "T00:00:00Z", strategy: .iso8601),
              parsed.formatted(Date.ISO8601FormatStyle(timeZone: TimeZone(identifier: "UTC")!).year().month().day()) == date
        else { return nil }
        return parsed
    }

    struct TransactionFilter: Sendable {
        var accountID: UUID?
        var from: Date?
        var to: Date?
        var pending: Bool?
        /// Money into the account (`true`) or out of it (`false`).
        var inflow: Bool?
    }

    static let transactionColumns = """
        t.id, t.item_id, a.id AS account_id, t.plaid_transaction_id, t.plaid_account_id, t.amount, t.currency, t.date, t.authorized_date,
        t.occurred_at, t.name, t.merchant_name, t.category, t.pending
        """

    /// One page of the user's linked transactions, newest first, after the cursor's row.
    /// Where a page of linked transactions ended: the last row's time and id.
    /// Both travel in the cursor, so a row removed by a sync meanwhile does not end the list.
    struct TransactionCursor: Sendable, Equatable {
        var occurredAt: Date
        var id: UUID

        var text: String { SecureToken.base64URL(Data("\(Int64(occurredAt.timeIntervalSince1970)):\(id.lowercasedString)".utf8)) }

        /// 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
        static let seconds: ClosedRange<Int64> = -62_135_596_800...253_402_300_799

        init(occurredAt: Date, id: UUID) {
            self.occurredAt = occurredAt
            self.id = id
        }

        init?(_ text: some StringProtocol) {
            guard let data = SecureToken.decodeBase64URL(text) else { return nil }
            let parts = String(decoding: data, as: UTF8.self).split(separator: ":")
            // Only a time a row can have (years 1 to 9999): a forged one past that stopped the process
            // where the time is written as an integer (for the database, or the next cursor).
            guard parts.count == 2, let seconds = Int64(parts[0]), Self.seconds.contains(seconds),
                  let id = UUID(uuidString: String(parts[1])) else { return nil }
            self.init(occurredAt: Date(timeIntervalSince1970: TimeInterval(seconds)), id: id)
        }
    }

    func transactions(of userID: UserID, filter: TransactionFilter, after cursor: TransactionCursor?, limit: Int) async throws -> [LinkedTransaction] {
        var query: SQLQueryString = """
            SELECT \(unsafeRaw: Self.transactionColumns) FROM linked_transactions t
            LEFT JOIN linked_accounts a ON a.item_id = t.item_id AND a.plaid_account_id = t.plaid_account_id
            WHERE t.user_id = \(bind: userID)
            """
        if let accountID = filter.accountID { query = query + " AND a.id = \(bind: accountID)" }
        if let from = filter.from { query = query + " AND t.occurred_at >= \(bind: from)" }
        if let to = filter.to { query = query + " AND t.occurred_at < \(bind: to)" }
        if let pending = filter.pending { query = query + " AND t.pending = \(bind: pending)" }
        if let inflow = filter.inflow {
            // The sign alone: SQLite's TEXT amounts compare as numbers through REAL, which keeps every sign exact.
            let amount = database.kind == .postgres ? "t.amount" : "CAST(t.amount AS REAL)"
            query = query + " AND \(unsafeRaw: amount) \(unsafeRaw: inflow ? ">" : "<") 0"
        }
        if let cursor {
            // Rows are dated at whole seconds (midnight UTC), so the time compares exactly on both databases.
            query = query + " AND (t.occurred_at < \(bind: cursor.occurredAt) OR (t.occurred_at = \(bind: cursor.occurredAt) AND t.id < \(bind: cursor.id)))"
        }
        return try await database.sql.raw(query + " ORDER BY t.occurred_at DESC, t.id DESC LIMIT \(literal: limit)").all().map { row in
            LinkedTransaction(
                id: try row.decode(column: "id", as: UUID.self), itemID: try row.decode(column: "item_id", as: UUID.self),
                accountID: try row.decode(column: "account_id", as: UUID?.self),
                transaction: PlaidTransaction(
                    transactionID: try row.decode(column: "plaid_transaction_id", as: String.self),
                    plaidAccountID: try row.decode(column: "plaid_account_id", as: String.self), amount: try row.decode(column: "amount", as: Cash.self),
                    currency: try row.decode(column: "currency", as: String?.self), date: try row.decode(column: "date", as: String.self),
                    authorizedDate: try row.decode(column: "authorized_date", as: String?.self), name: try row.decode(column: "name", as: String.self),
                    merchantName: try row.decode(column: "merchant_name", as: String?.self), category: try row.decode(column: "category", as: String?.self),
                    pending: try row.decode(column: "pending", as: Bool.self)),
                occurredAt: try row.decode(column: "occurred_at", as: Date.self))
        }
    }

    // MARK: - Holdings

    /// Replaces the item's holdings with Plaid's current list.
    func replaceHoldings(_ holdings: [PlaidHolding], item: PlaidItem, now: Date, on db: any SQLDatabase) async throws {
        try await db.raw("DELETE FROM linked_holdings WHERE item_id = \(bind: item.id)").run()
        for holding in holdings {
            try await db.raw("""
                INSERT INTO linked_holdings (id, item_id, user_id, plaid_account_id, security_id, ticker, security_name, security_type, quantity,
                                             cost_basis, institution_price, institution_price_as_of, institution_value, currency, updated_at)
                VALUES (\(bind: UUID.random()), \(bind: item.id), \(bind: item.userID), \(bind: holding.plaidAccountID), \(bind: holding.securityID),
                        \(bind: holding.ticker), \(bind: holding.securityName), \(bind: holding.securityType), \(bind: holding.quantity),
                        \(bind: holding.costBasis), \(bind: holding.institutionPrice), \(bind: holding.institutionPriceAsOf),
                        \(bind: holding.institutionValue), \(bind: holding.currency), \(bind: now))
                """).run()
        }
        try await db.raw("UPDATE plaid_items SET holdings_refreshed_at = \(bind: now) WHERE id = \(bind: item.id)").run()
    }

    func holdings(of userID: UserID) async throws -> [LinkedHolding] {
        try await database.sql.raw("""
            SELECT h.item_id, a.id AS account_id, h.plaid_account_id, h.security_id, h.ticker, h.security_name, h.security_type, h.quantity,
                   h.cost_basis, h.institution_price, h.institution_price_as_of, h.institution_value, h.currency
            FROM linked_holdings h
            LEFT JOIN linked_accounts a ON a.item_id = h.item_id AND a.plaid_account_id = h.plaid_account_id
            WHERE h.user_id = \(bind: userID)
            ORDER BY h.ticker, h.security_id, h.plaid_account_id
            """).all().map { row in
            LinkedHolding(
                itemID: try row.decode(column: "item_id", as: UUID.self), accountID: try row.decode(column: "account_id", as: UUID?.self),
                holding: PlaidHolding(
                    plaidAccountID: try row.decode(column: "plaid_account_id", as: String.self),
                    securityID: try row.decode(column: "security_id", as: String.self), ticker: try row.decode(column: "ticker", as: String?.self),
                    securityName: try row.decode(column: "security_name", as: String?.self),
                    securityType: try row.decode(column: "security_type", as: String?.self),
                    quantity: try row.decode(column: "quantity", as: Quantity.self), costBasis: try row.decode(column: "cost_basis", as: Cash?.self),
                    institutionPrice: try row.decode(column: "institution_price", as: Price.self),
                    institutionPriceAsOf: try row.decode(column: "institution_price_as_of", as: String?.self),
                    institutionValue: try row.decode(column: "institution_value", as: Cash.self),
                    currency: try row.decode(column: "currency", as: String?.self)))
        }
    }

    // MARK: - Webhooks

    /// Records a verified webhook; false when the same body was recorded
    /// within `window` (a replay, or Plaid's retry of one already taken).
    /// Identical bodies further apart are new deliveries (Plaid sends the same
    /// `SYNC_UPDATES_AVAILABLE` body each time there is news).
    func recordWebhook(bodySHA256: String, itemID: String?, type: String, code: String, now: Date, window: TimeInterval, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw("""
            INSERT INTO plaid_webhooks (id, body_sha256, plaid_item_id, webhook_type, webhook_code, received_at)
            VALUES (\(bind: UUID.random()), \(bind: bodySHA256), \(bind: itemID), \(bind: type), \(bind: code), \(bind: now))
            ON CONFLICT (body_sha256) DO UPDATE SET received_at = excluded.received_at
            WHERE plaid_webhooks.received_at < \(bind: now.addingTimeInterval(-window))
            RETURNING id
            """).first() != nil
    }

    // MARK: - Rows

    static func item(_ row: any SQLRow) throws -> PlaidItem {
        let raw = try row.decode(column: "status", as: String.self)
        guard let status = PlaidItem.Status(rawValue: raw) else { throw TradingStore.StoreError.corrupt("plaid_items.status is \(raw)") }
        return PlaidItem(
            id: try row.decode(column: "id", as: UUID.self), userID: try row.decode(column: "user_id", as: UserID.self),
            plaidItemID: try row.decode(column: "plaid_item_id", as: String.self),
            institutionID: try row.decode(column: "institution_id", as: String?.self),
            institutionName: try row.decode(column: "institution_name", as: String?.self),
            sealedAccessToken: try row.decode(column: "sealed_access_token", as: String.self), status: status,
            errorCode: try row.decode(column: "error_code", as: String?.self), errorMessage: try row.decode(column: "error_message", as: String?.self),
            syncCursor: try row.decode(column: "sync_cursor", as: String?.self),
            syncRunStart: try row.decode(column: "sync_run_start", as: String?.self), lastSyncedAt: try row.decode(column: "last_synced_at", as: Date?.self),
            holdingsRefreshedAt: try row.decode(column: "holdings_refreshed_at", as: Date?.self),
            createdAt: try row.decode(column: "created_at", as: Date.self))
    }

    static func account(_ row: any SQLRow) throws -> LinkedAccount {
        LinkedAccount(
            id: try row.decode(column: "id", as: UUID.self), itemID: try row.decode(column: "item_id", as: UUID.self),
            account: PlaidAccount(
                plaidAccountID: try row.decode(column: "plaid_account_id", as: String.self), name: try row.decode(column: "name", as: String.self),
                officialName: try row.decode(column: "official_name", as: String?.self), mask: try row.decode(column: "mask", as: String?.self),
                type: try row.decode(column: "type", as: String.self), subtype: try row.decode(column: "subtype", as: String?.self),
                current: try row.decode(column: "current_balance", as: Cash?.self),
                available: try row.decode(column: "available_balance", as: Cash?.self),
                limit: try row.decode(column: "credit_limit", as: Cash?.self), currency: try row.decode(column: "currency", as: String?.self)))
    }
}
