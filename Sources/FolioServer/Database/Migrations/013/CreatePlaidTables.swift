import FluentKit
import SQLKit

/// 013: items linked through Plaid and what Folio keeps of them: the
/// accounts with their balances, the transactions, the investment holdings,
/// and the webhooks received. These are the user's records at other
/// institutions, kept apart from Folio's ledger: nothing here moves Folio
/// cash. Deleting an item deletes all of it (cascade).
struct CreatePlaidTables: AsyncMigration {
    var name: String { "013_create_plaid_tables" }

    func prepare(on database: any Database) async throws {
        let cash = CreateAccountsAndLedger.cash.dataType(on: database)
        let quantity = CreateAccountsAndLedger.quantity.dataType(on: database)
        let price = CreateAccountsAndLedger.price.dataType(on: database)

        try await database.schema("plaid_items")
            .id()
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("plaid_item_id", .string, .required)
            .field("institution_id", .string)
            .field("institution_name", .string)
            // The access token, sealed by `SecretBox`; never returned or logged.
            .field("sealed_access_token", .string, .required)
            .field("status", .string, .required)
            // Plaid's error_code and display_message of the last failure, cleared by a good sync.
            .field("error_code", .string)
            .field("error_message", .string)
            // /transactions/sync's cursor, saved with the page it follows.
            .field("sync_cursor", .string)
            .field("last_synced_at", .datetime)
            .field("holdings_refreshed_at", .datetime)
            // One sync or refresh of an item at a time: a lease, like a job's, free once it runs out
            // or once the instance holding it stops heartbeating (it was killed).
            .field("locked_by", .string)
            .field("locked_instance", .string)
            .field("locked_until", .datetime)
            .field("created_at", .datetime, .required)
            .field("updated_at", .datetime, .required)
            .unique(on: "plaid_item_id", name: "plaid_items_plaid_item_id_key")
            .constraint(.sql(unsafeRaw: """
                CONSTRAINT plaid_items_status_check CHECK (status IN ('active', 'login_required', 'pending_expiration', 'error'))
                """))
            .create()

        try await database.schema("linked_accounts")
            .id()
            .field("item_id", .uuid, .required, .references("plaid_items", "id", onDelete: .cascade))
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("plaid_account_id", .string, .required)
            .field("name", .string, .required)
            .field("official_name", .string)
            .field("mask", .string)
            .field("type", .string, .required)
            .field("subtype", .string)
            .field("current_balance", cash)
            .field("available_balance", cash)
            .field("credit_limit", cash)
            // iso_currency_code, or Plaid's unofficial code (crypto) when there is no ISO one.
            .field("currency", .string)
            .field("updated_at", .datetime, .required)
            .unique(on: "item_id", "plaid_account_id", name: "linked_accounts_item_id_plaid_account_id_key")
            .create()

        try await database.schema("linked_transactions")
            .id()
            .field("item_id", .uuid, .required, .references("plaid_items", "id", onDelete: .cascade))
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("plaid_transaction_id", .string, .required)
            .field("plaid_account_id", .string, .required)
            // Folio's sign: positive is money into the account (Plaid's is the reverse).
            .field("amount", cash, .required)
            .field("currency", .string)
            .field("date", .string, .required)
            .field("authorized_date", .string)
            // The date at midnight UTC: what lists sort and page by.
            .field("occurred_at", .datetime, .required)
            .field("name", .string, .required)
            .field("merchant_name", .string)
            .field("category", .string)
            .field("pending", .bool, .required)
            .field("updated_at", .datetime, .required)
            .unique(on: "item_id", "plaid_transaction_id", name: "linked_transactions_item_id_plaid_transaction_id_key")
            .create()

        try await database.schema("linked_holdings")
            .id()
            .field("item_id", .uuid, .required, .references("plaid_items", "id", onDelete: .cascade))
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("plaid_account_id", .string, .required)
            .field("security_id", .string, .required)
            .field("ticker", .string)
            .field("security_name", .string)
            .field("security_type", .string)
            .field("quantity", quantity, .required)
            .field("cost_basis", cash)
            .field("institution_price", price, .required)
            .field("institution_price_as_of", .string)
            .field("institution_value", cash, .required)
            .field("currency", .string)
            .field("updated_at", .datetime, .required)
            .unique(on: "item_id", "plaid_account_id", "security_id", name: "linked_holdings_item_account_security_key")
            .create()

        // Verified webhooks, by the SHA-256 of their body: one delivered twice within the verification window is processed once.
        try await database.schema("plaid_webhooks")
            .id()
            .field("body_sha256", .string, .required)
            .field("plaid_item_id", .string)
            .field("webhook_type", .string, .required)
            .field("webhook_code", .string, .required)
            .field("received_at", .datetime, .required)
            .unique(on: "body_sha256", name: "plaid_webhooks_body_sha256_key")
            .create()

        let sql = database as! any SQLDatabase
        try await sql.raw("CREATE INDEX plaid_items_user_id_idx ON plaid_items (user_id)").run()
        try await sql.raw("CREATE INDEX linked_accounts_user_id_idx ON linked_accounts (user_id)").run()
        try await sql.raw("CREATE INDEX linked_transactions_user_id_occurred_at_idx ON linked_transactions (user_id, occurred_at)").run()
        try await sql.raw("CREATE INDEX linked_holdings_user_id_idx ON linked_holdings (user_id)").run()
        try await sql.raw("CREATE INDEX plaid_webhooks_received_at_idx ON plaid_webhooks (received_at)").run()
    }

    func revert(on database: any Database) async throws {
        for table in ["plaid_webhooks", "linked_holdings", "linked_transactions", "linked_accounts", "plaid_items"] {
            try await database.schema(table).delete()
        }
    }
}
