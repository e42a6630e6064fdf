import FluentKit
import SQLKit

/// 003: brokerage accounts, their holdings, and the ledger of every movement
/// of cash or shares.
///
/// Precision (docs/ARCHITECTURE.md): cash NUMERIC(20,4), quantities
/// NUMERIC(28,9) (fractional shares to 9 places), prices NUMERIC(20,8).
struct CreateAccountsAndLedger: AsyncMigration {
    var name: String { "003_create_accounts_and_ledger" }

    static let cash = MoneyColumn(precision: 20, scale: 4)
    static let quantity = MoneyColumn(precision: 28, scale: 9)
    static let price = MoneyColumn(precision: 20, scale: 8)

    func prepare(on database: any Database) async throws {
        func n(_ column: String) -> String { MoneyColumn.numeric(column, on: database) }

        try await database.schema("accounts")
            .id()
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("name", .string, .required)
            .field("kind", .string, .required)
            .field("currency", .string, .required)
            .field("cash", Self.cash.dataType(on: database), .required)
            .field("reserved_cash", Self.cash.dataType(on: database), .required)
            .field("created_at", .datetime, .required)
            .field("updated_at", .datetime, .required)
            .constraint(.sql(unsafeRaw: "CONSTRAINT accounts_kind_check CHECK (kind IN ('paper', 'brokerage'))"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT accounts_currency_check CHECK (currency = 'USD')"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT accounts_cash_check CHECK (\(n("cash")) >= 0)"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT accounts_reserved_cash_check CHECK (\(n("reserved_cash")) >= 0 AND \(n("reserved_cash")) <= \(n("cash")))"))
            .create()
        try await sql(database).raw("CREATE INDEX accounts_user_id_idx ON accounts (user_id)").run()

        try await database.schema("holdings")
            .id()
            .field("account_id", .uuid, .required, .references("accounts", "id", onDelete: .cascade))
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("symbol", .string, .required)
            .field("quantity", Self.quantity.dataType(on: database), .required)
            .field("reserved_quantity", Self.quantity.dataType(on: database), .required)
            .field("cost_basis", Self.cash.dataType(on: database), .required)
            .field("created_at", .datetime, .required)
            .field("updated_at", .datetime, .required)
            .unique(on: "account_id", "symbol", name: "holdings_account_id_symbol_key")
            .constraint(.sql(unsafeRaw: "CONSTRAINT holdings_symbol_check CHECK (length(symbol) BETWEEN 1 AND 10)"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT holdings_quantity_check CHECK (\(n("quantity")) >= 0)"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT holdings_reserved_quantity_check CHECK (\(n("reserved_quantity")) >= 0 AND \(n("reserved_quantity")) <= \(n("quantity")))"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT holdings_cost_basis_check CHECK (\(n("cost_basis")) >= 0)"))
            .create()
        try await sql(database).raw("CREATE INDEX holdings_user_id_idx ON holdings (user_id)").run()

        try await database.schema("transactions")
            .id()
            .field("account_id", .uuid, .required, .references("accounts", "id", onDelete: .cascade))
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("type", .string, .required)
            .field("symbol", .string)
            // Signed: shares in (+) or out (-); cash in (+) or out (-).
            .field("quantity", Self.quantity.dataType(on: database))
            .field("price", Self.price.dataType(on: database))
            .field("amount", Self.cash.dataType(on: database), .required)
            .field("order_id", .uuid)
            .field("description", .string)
            .field("occurred_at", .datetime, .required)
            .field("created_at", .datetime, .required)
            .constraint(.sql(unsafeRaw: "CONSTRAINT transactions_type_check CHECK (type IN ('deposit', 'withdrawal', 'buy', 'sell', 'dividend', 'fee', 'correction'))"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT transactions_price_check CHECK (price IS NULL OR \(n("price")) > 0)"))
            .constraint(.sql(unsafeRaw: """
                CONSTRAINT transactions_shape_check CHECK (
                    (type = 'deposit' AND \(n("amount")) > 0 AND quantity IS NULL)
                    OR (type = 'withdrawal' AND \(n("amount")) < 0 AND quantity IS NULL)
                    OR (type = 'buy' AND symbol IS NOT NULL AND \(n("quantity")) > 0 AND \(n("amount")) < 0)
                    OR (type = 'sell' AND symbol IS NOT NULL AND \(n("quantity")) < 0 AND \(n("amount")) >= 0)
                    OR (type = 'dividend' AND \(n("amount")) > 0 AND quantity IS NULL)
                    OR (type = 'fee' AND \(n("amount")) < 0 AND quantity IS NULL)
                    OR (type = 'correction'))
                """))
            .create()
        try await sql(database).raw("CREATE INDEX transactions_user_id_idx ON transactions (user_id)").run()
        try await sql(database).raw("CREATE INDEX transactions_account_occurred_idx ON transactions (account_id, occurred_at, id)").run()
    }

    func revert(on database: any Database) async throws {
        for table in ["transactions", "holdings", "accounts"] {
            try await database.schema(table).delete()
        }
    }

    private func sql(_ database: any Database) -> any SQLDatabase {
        database as! any SQLDatabase
    }
}
