import FolioDomain
import Foundation
import SQLKit

/// Everything Folio holds about one user, as JSON (GDPR article 15 and 20):
/// each section is one query over a table the user owns, written row by row
/// and page by page so a long history never sits in memory. Secrets (the
/// password hash, the TOTP secret, Plaid access tokens, broker keys, token
/// hashes) are never in it: the columns are listed here, not selected with `*`.
struct PersonalDataExport: Sendable {
    let database: FolioDatabase
    let clock: AppClock

    static let format = "folio-export-v2"  // v2: stored JSON (plans, event details) as JSON, not as strings of it
    static let pageSize = 500

    enum Kind: Sendable {
        case text, uuid, date, integer, boolean, cash, quantity, price
        /// A percentage as the API writes one ("5", "33.3333").
        case percent
        /// JSON Folio stored as text (a plan, an event's details): written as JSON, not as a string of it.
        case json
    }

    struct Column: Sendable {
        var name: String
        var kind: Kind
    }

    struct Section: Sendable {
        var name: String
        /// What the section is, for the reader of the file.
        var about: String
        var table: String
        var columns: [Column]
        /// Rows of the user: a condition on `?user` (bound), over `table` aliased `t`.
        var owned: @Sendable (UUID) -> SQLQueryString = { "t.user_id = \(bind: $0)" }
        /// Read page by page by `id`; false reads the section at once (small tables without an id).
        var paged = true
        /// Columns computed rather than read as they are (over `t`, given the user's id).
        var select: [String: @Sendable (UUID) -> SQLQueryString] = [:]
    }

    /// `"name:kind"` with `text` the default: the lists below read like the tables.
    static func columns(_ specs: String) -> [Column] {
        specs.split(separator: ",").map { spec in
            let parts = spec.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":").map(String.init)
            let kind: Kind = switch parts.count > 1 ? parts[1] : "text" {
            case "uuid": .uuid
            case "date": .date
            case "int": .integer
            case "bool": .boolean
            case "cash": .cash
            case "quantity": .quantity
            case "price": .price
            case "percent": .percent
            case "json": .json
            default: .text
            }
            return Column(name: parts[0], kind: kind)
        }
    }

    static let sections: [Section] = [
        Section(
            name: "sessions", about: "Sign-ins: when, from which address and browser, and how each ended.", table: "sessions",
            columns: columns("id:uuid, kind, created_at:date, last_used_at:date, expires_at:date, revoked_at:date, revoke_reason, ip, user_agent")),
        Section(
            name: "session_renewals", about: "Each renewal of a sign-in by its refresh token: when it was issued and used (never the tokens).",
            table: "refresh_tokens", columns: columns("id:uuid, session_id:uuid, created_at:date, used_at:date")),
        Section(
            name: "email_links", about: "Links Folio mailed you to confirm your address or reset your password: what for, when made, used and expiring (never the links).",
            table: "email_tokens", columns: columns("id:uuid, purpose, created_at:date, expires_at:date, used_at:date")),
        Section(
            name: "recovery_codes", about: "Your two-factor recovery codes: when each was made and used (never the codes).",
            table: "recovery_codes", columns: columns("id:uuid, created_at:date, used_at:date")),
        Section(
            name: "accounts", about: "Your accounts and their balances.", table: "accounts",
            columns: columns("id:uuid, name, kind, currency, cash:cash, reserved_cash:cash, created_at:date, updated_at:date")),
        Section(
            name: "holdings", about: "What each account holds now.", table: "holdings",
            columns: columns("id:uuid, account_id:uuid, symbol, quantity:quantity, reserved_quantity:quantity, cost_basis:cash, created_at:date, updated_at:date")),
        Section(
            name: "ledger", about: "Every movement of cash and securities (the ledger).", table: "transactions",
            columns: columns("""
                id:uuid, account_id:uuid, type, symbol, quantity:quantity, price:price, amount:cash, order_id:uuid, description, occurred_at:date,
                created_at:date
                """)),
        Section(
            name: "orders", about: "Every order you placed, and what became of it.", table: "orders",
            columns: columns("""
                id:uuid, account_id:uuid, client_order_id, symbol, side, type, time_in_force, quantity:quantity, notional:cash, limit_price:price,
                stop_price:price, status, filled_quantity:quantity, average_fill_price:price, reserved_cash:cash, reserved_quantity:quantity,
                keep_cash:cash, reject_reason, triggered_at:date, sent_at:date, cancel_requested_at:date, created_at:date, updated_at:date
                """)),
        Section(
            name: "fills", about: "Each execution of your orders.", table: "fills",
            columns: columns("id:uuid, order_id:uuid, broker_fill_id, quantity:quantity, price:price, occurred_at:date")),
        Section(
            name: "portfolio_history", about: "Each account's value at each day's close.", table: "portfolio_snapshots",
            columns: columns("id:uuid, account_id:uuid, day, cash:cash, market_value:cash, total_value:cash, source, created_at:date")),
        Section(
            name: "target_allocations", about: "Your target allocations, every version.", table: "target_allocations",
            columns: columns("""
                id:uuid, account_id:uuid, version:int, cash_percent:percent, drift_absolute_points:percent, drift_relative_percent:percent,
                created_by:uuid, created_at:date
                """)),
        Section(
            name: "target_weights", about: "The symbols' weights in each target allocation.", table: "target_weights",
            columns: columns("allocation_id:uuid, symbol, percent:percent"),
            owned: { "t.allocation_id IN (SELECT id FROM target_allocations WHERE user_id = \(bind: $0))" }, paged: false),
        Section(
            name: "target_class_weights", about: "The asset classes' weights in each target allocation.", table: "target_class_weights",
            columns: columns("allocation_id:uuid, asset_class, percent:percent"),
            owned: { "t.allocation_id IN (SELECT id FROM target_allocations WHERE user_id = \(bind: $0))" }, paged: false),
        Section(
            name: "rebalances", about: "Rebalance runs: the plan, the orders' rounds and how each run ended.", table: "rebalance_runs",
            columns: columns("id:uuid, account_id:uuid, mode, status, options:json, plan:json, reasons:json, notes:json, buy_rounds:int, created_at:date, finished_at:date")),
        Section(
            name: "rebalance_orders", about: "The orders each rebalance run placed: its sells, then its buys in rounds.", table: "rebalance_orders",
            columns: columns("run_id:uuid, order_id:uuid, phase, round:int"),
            owned: { "t.run_id IN (SELECT id FROM rebalance_runs WHERE user_id = \(bind: $0))" }, paged: false),
        Section(
            name: "brokerage_links", about: "Brokerage accounts you linked (the keys themselves are never exported).", table: "brokerage_links",
            columns: columns("id:uuid, account_id:uuid, broker, environment, remote_account, key_hint, status, origin, created_at:date, removed_at:date")),
        Section(
            name: "linked_items", about: "Banks and brokerages linked through Plaid (never their access tokens).", table: "plaid_items",
            columns: columns("""
                id:uuid, plaid_item_id, institution_id, institution_name, status, error_code, error_message, last_synced_at:date,
                holdings_refreshed_at:date, created_at:date
                """)),
        Section(
            name: "linked_accounts", about: "The accounts at those institutions and their balances.", table: "linked_accounts",
            columns: columns("""
                id:uuid, item_id:uuid, name, official_name, mask, type, subtype, current_balance:cash, available_balance:cash, credit_limit:cash,
                currency, updated_at:date
                """)),
        Section(
            name: "linked_holdings", about: "Investment holdings at those institutions.", table: "linked_holdings",
            columns: columns("""
                id:uuid, item_id:uuid, plaid_account_id, ticker, security_name, security_type, quantity:quantity, cost_basis:cash,
                institution_price:price, institution_value:cash, currency, updated_at:date
                """)),
        Section(
            name: "linked_transactions", about: "Transactions at those institutions.", table: "linked_transactions",
            columns: columns("""
                id:uuid, item_id:uuid, plaid_account_id, amount:cash, currency, date, authorized_date, name, merchant_name, category,
                pending:bool, updated_at:date
                """)),
        Section(
            name: "notifications", about: "What Folio told you in the app.", table: "notifications",
            columns: columns("id:uuid, kind, category, title, body, data:json, created_at:date, read_at:date")),
        Section(
            name: "notification_preferences", about: "Which notices you asked to get by email.", table: "notification_preferences",
            columns: columns("category, email:bool, updated_at:date"), paged: false),
        Section(
            name: "mail", about: "Mail Folio sent you, or tried to.", table: "mail_messages",
            columns: columns("id:uuid, template, recipient, status, attempts:int, last_error, created_at:date, updated_at:date, sent_at:date")),
        Section(
            name: "outbox", about: "Mail kept in the local outbox instead of being sent (a server without a mail provider): to whom, what and when. Not its text: it may hold sign-in links.",
            table: "outbox_messages", columns: columns("id:uuid, kind, recipient, subject, created_at:date"),
            // Kept without a person (a notice to an address) it is the address's; another person's copy never is.
            owned: { "(t.user_id = \(bind: $0) OR (t.user_id IS NULL AND t.recipient = (SELECT email FROM users WHERE id = \(bind: $0))))" }),
        Section(
            name: "mail_suppression", about: "Whether mail to your address is stopped, and why (it bounced, or was reported as spam).",
            table: "mail_suppressions", columns: columns("email, reason, detail, created_at:date"),
            owned: { "t.email = (SELECT email FROM users WHERE id = \(bind: $0))" }, paged: false),
        Section(
            name: "sign_in_failures", about: "Failed sign-ins to your account, counted per address they came from (shown only for addresses you have signed in from: the others may be anyone's).",
            table: "sign_in_failures", columns: columns("client, failures:int, locked_until:date, succeeded_at:date, updated_at:date"),
            paged: false, select: ["client": { _ in "CASE WHEN t.succeeded_at IS NOT NULL THEN t.client END" }]),
        Section(
            name: "idempotency_keys", about: "Requests sent with an Idempotency-Key, and the answer kept to repeat it to a retry (24 hours).",
            table: "idempotency_keys", columns: columns("id:uuid, key, status, response_status:int, response_location, response_body:json, created_at:date, expires_at:date")),
        Section(
            name: "audit_events",
            about: "The audit trail's events about you and your accounts, and what you did as an administrator (without the details of an event about someone else).",
            table: "audit_events",
            // The address only where the user acted themselves: an administrator's address on an event about someone else is
            // the administrator's, and a failed sign-in's may be an attacker's (events recorded before sign-in attempts had no
            // actor named the user: left out by their action). The same events as an erasure clears the address of.
            columns: columns("id:uuid, occurred_at:date, action, subject_type, subject_id, details:json, ip, request_id"),
            owned: { "(t.user_id = \(bind: $0) OR t.actor_id = \(bind: $0))" },
            select: [
                "ip": { """
                    CASE WHEN t.actor_id = \(bind: $0) AND t.action NOT IN ('security.login_failed', 'security.login_lockout', 'security.login_locked', \
                    'security.login_refused', 'security.refresh_token_reuse') THEN t.ip END
                    """ },
                "details": { "CASE WHEN t.user_id = \(bind: $0) THEN t.details END" },
            ]),
    ]

    /// The export as one snapshot of the database: read in one transaction
    /// (REPEATABLE READ, read only, on PostgreSQL; SQLite's one connection
    /// sees no other writer meanwhile) into a temporary file, and handed out
    /// from there. So the cash it shows is the sum of the ledger rows it
    /// shows, whatever was written meanwhile, and a slow download never holds
    /// a transaction open. The file has no name once opened: a crash leaves no
    /// one's personal data on disk. A missing user is an error before anything
    /// is written, not a 200 cut short.
    func snapshot(of userID: UserID) async throws -> Snapshot {
        let postgres = database.kind == .postgres
        return try await database.transaction { sql in
            if postgres { try await sql.raw("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").run() }
            let profile = try await profile(of: userID, on: sql)
            let file = try Snapshot.unnamedFile()
            try await write(userID: userID, profile: profile, on: sql) { bytes in try file.write(contentsOf: bytes) }
            try file.seek(toOffset: 0)
            return Snapshot(file: file)
        }
    }

    /// A finished export in a file of its own, read out once.
    struct Snapshot: @unchecked Sendable {  // one reader: whoever the snapshot is handed to
        let file: FileHandle

        static func unnamedFile() throws -> FileHandle {
            var template = Array((FileManager.default.temporaryDirectory.path + "/folio-export-XXXXXX").utf8CString)
            let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            guard descriptor >= 0 else { throw CocoaError(.fileWriteUnknown) }
            unlink(String(cString: template))
            return FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        }

        func copy(to write: (ArraySlice<UInt8>) async throws -> Void) async throws {
            while let chunk = try file.read(upToCount: 64 * 1024), !chunk.isEmpty {
                try await write(Array(chunk)[...])
            }
        }
    }

    /// The user's profile row.
    func profile(of userID: UserID, on sql: any SQLDatabase) async throws -> any SQLRow {
        guard let user = try await sql.raw("""
            SELECT id, email, role, email_verified_at, disabled_at, totp_enabled_at, password_changed_at, last_sign_in_at, failed_login_count,
                locked_until, created_at, updated_at
            FROM users WHERE id = \(bind: userID.uuid)
            """).first()
        else { throw IdentityError.userNotFound }
        return user
    }

    /// The export, written to `write` in pieces as it is read, on `sql`. It ends with
    /// `"complete": true`: a file without it was cut short.
    func write(userID: UserID, profile user: any SQLRow, on sql: any SQLDatabase, to write: (ArraySlice<UInt8>) async throws -> Void) async throws {
        var json = JSONWriter()
        json.beginObject()
        json.key("format")
        json.string(Self.format)
        json.key("generated_at")
        json.date(clock.now())
        json.key("profile")
        try Self.writeRow(
            user, columns: Self.columns("""
                id:uuid, email, role, email_verified_at:date, disabled_at:date, totp_enabled_at:date, password_changed_at:date,
                last_sign_in_at:date, failed_login_count:int, locked_until:date, created_at:date, updated_at:date
                """), to: &json)
        json.key("sections")
        json.beginObject()
        for section in Self.sections {
            json.key(named: section.name)
            json.beginObject()
            json.key("about")
            json.string(section.about)
            json.key("rows")
            json.beginArray()
            var after: UUID?
            repeat {
                let rows = try await page(section, userID: userID, after: after, on: sql)
                for row in rows { try Self.writeRow(row, columns: section.columns, to: &json) }
                try await write(json.bytes[...])
                json.removeAll()
                after = section.paged && rows.count == Self.pageSize ? try rows.last!.decode(column: "page_key", as: UUID.self) : nil
            } while after != nil
            json.endArray()
            json.endObject()
        }
        json.endObject()
        json.key("complete")
        json.bool(true)
        json.endObject()
        try await write(json.bytes[...])
    }

    private func page(_ section: Section, userID: UserID, after: UUID?, on sql: any SQLDatabase) async throws -> [any SQLRow] {
        let list = section.columns.map { column -> SQLQueryString in
            section.select[column.name].map { "\($0(userID.uuid)) AS \(ident: column.name)" } ?? "t.\(ident: column.name)"
        }.joined(separator: ", ")
        guard section.paged else {
            return try await sql.raw("SELECT \(list) FROM \(ident: section.table) t WHERE \(section.owned(userID.uuid))").all()
        }
        let cursor: SQLQueryString = after.map { " AND t.id > \(bind: $0)" } ?? ""
        return try await sql.raw("""
            SELECT \(list), t.id AS page_key FROM \(ident: section.table) t
            WHERE \(section.owned(userID.uuid))\(cursor) ORDER BY t.id LIMIT \(literal: Self.pageSize)
            """).all()
    }

    static func writeRow(_ row: any SQLRow, columns: [Column], to json: inout JSONWriter) throws {
        json.beginObject()
        for column in columns {
            json.key(named: column.name)
            switch column.kind {
            case .text: try row.decode(column: column.name, as: String?.self).map { json.string($0) } ?? json.null()
            case .json:
                // Text that is not JSON (never written so, but a file must not break on it) stays text.
                if let text = try row.decode(column: column.name, as: String?.self) {
                    if let parsed = try? JSONValue.parse(Array(text.utf8)) { json.value(parsed) } else { json.string(text) }
                } else {
                    json.null()
                }
            case .uuid: try row.decode(column: column.name, as: UUID?.self).map { json.string($0.lowercasedString) } ?? json.null()
            case .date: try row.decode(column: column.name, as: Date?.self).map { json.date($0) } ?? json.null()
            case .integer: try row.decode(column: column.name, as: Int64?.self).map { json.integer($0) } ?? json.null()
            case .boolean: try row.decode(column: column.name, as: Bool?.self).map { json.bool($0) } ?? json.null()
            case .cash: try row.decode(column: column.name, as: Cash?.self).map { json.string($0.description) } ?? json.null()
            case .quantity: try row.decode(column: column.name, as: Quantity?.self).map { json.string($0.description) } ?? json.null()
            case .price: try row.decode(column: column.name, as: Price?.self).map { json.string($0.description) } ?? json.null()
            case .percent: try row.decode(column: column.name, as: Ratio?.self).map { json.string($0.description) } ?? json.null()
            }
        }
        json.endObject()
    }
}
