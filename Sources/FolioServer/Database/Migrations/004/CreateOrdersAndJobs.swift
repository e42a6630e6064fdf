import FluentKit
import SQLKit

/// 004: orders, the fills applied to them, and the durable job queue that
/// submits orders to the broker.
struct CreateOrdersAndJobs: AsyncMigration {
    var name: String { "004_create_orders_and_jobs" }

    func prepare(on database: any Database) async throws {
        func n(_ column: String) -> String { MoneyColumn.numeric(column, on: database) }
        let cash = CreateAccountsAndLedger.cash.dataType(on: database)
        let quantity = CreateAccountsAndLedger.quantity.dataType(on: database)
        let price = CreateAccountsAndLedger.price.dataType(on: database)

        try await database.schema("orders")
            .id()
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("account_id", .uuid, .required, .references("accounts", "id", onDelete: .cascade))
            .field("client_order_id", .string)
            .field("symbol", .string, .required)
            .field("side", .string, .required)
            .field("type", .string, .required)
            .field("time_in_force", .string, .required)
            .field("quantity", quantity)
            .field("notional", cash)
            .field("limit_price", price)
            .field("stop_price", price)
            .field("status", .string, .required)
            .field("filled_quantity", quantity, .required)
            .field("average_fill_price", price)
            .field("reserved_cash", cash, .required)
            .field("reserved_quantity", quantity, .required)
            .field("reject_reason", .string)
            .field("created_at", .datetime, .required)
            .field("updated_at", .datetime, .required)
            .unique(on: "user_id", "client_order_id", name: "orders_user_id_client_order_id_key")
            .constraint(.sql(unsafeRaw: "CONSTRAINT orders_side_check CHECK (side IN ('BUY', 'SELL'))"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT orders_type_check CHECK (type IN ('MARKET', 'LIMIT', 'STOP', 'STOP_LIMIT'))"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT orders_time_in_force_check CHECK (time_in_force IN ('DAY', 'GTC', 'IOC', 'FOK'))"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT orders_status_check CHECK (status IN ('new', 'accepted', 'partially_filled', 'filled', 'canceled', 'rejected', 'expired'))"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT orders_quantity_check CHECK (quantity IS NULL OR \(n("quantity")) > 0)"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT orders_notional_check CHECK (notional IS NULL OR \(n("notional")) > 0)"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT orders_amount_check CHECK (quantity IS NOT NULL OR notional IS NOT NULL)"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT orders_limit_price_check CHECK (limit_price IS NULL OR \(n("limit_price")) > 0)"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT orders_stop_price_check CHECK (stop_price IS NULL OR \(n("stop_price")) > 0)"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT orders_filled_quantity_check CHECK (\(n("filled_quantity")) >= 0)"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT orders_reserved_check CHECK (\(n("reserved_cash")) >= 0 AND \(n("reserved_quantity")) >= 0)"))
            .create()
        try await sql(database).raw("CREATE INDEX orders_user_id_idx ON orders (user_id, created_at)").run()
        try await sql(database).raw("CREATE INDEX orders_status_idx ON orders (status)").run()

        try await database.schema("fills")
            .id()
            .field("order_id", .uuid, .required, .references("orders", "id", onDelete: .cascade))
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("broker_fill_id", .string, .required)
            .field("quantity", quantity, .required)
            .field("price", price, .required)
            .field("occurred_at", .datetime, .required)
            .unique(on: "broker_fill_id", name: "fills_broker_fill_id_key")
            .constraint(.sql(unsafeRaw: "CONSTRAINT fills_quantity_check CHECK (\(n("quantity")) > 0)"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT fills_price_check CHECK (\(n("price")) > 0)"))
            .create()
        try await sql(database).raw("CREATE INDEX fills_order_id_idx ON fills (order_id)").run()
        try await sql(database).raw("CREATE INDEX fills_user_id_idx ON fills (user_id)").run()

        try await database.schema("jobs")
            .id()
            .field("kind", .string, .required)
            .field("payload", .string, .required)
            .field("status", .string, .required)
            .field("attempts", .int, .required)
            .field("max_attempts", .int, .required)
            .field("run_at", .datetime, .required)
            .field("locked_by", .string)
            .field("locked_until", .datetime)
            .field("last_error", .string)
            .field("created_at", .datetime, .required)
            .field("updated_at", .datetime, .required)
            .constraint(.sql(unsafeRaw: "CONSTRAINT jobs_status_check CHECK (status IN ('queued', 'running', 'done', 'dead'))"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT jobs_attempts_check CHECK (attempts >= 0 AND max_attempts > 0)"))
            .create()
        try await sql(database).raw("CREATE INDEX jobs_claim_idx ON jobs (status, run_at)").run()
    }

    func revert(on database: any Database) async throws {
        for table in ["jobs", "fills", "orders"] {
            try await database.schema(table).delete()
        }
    }

    private func sql(_ database: any Database) -> any SQLDatabase {
        database as! any SQLDatabase
    }
}
