import FluentKit
import SQLKit

/// 011: target allocations by symbol or by asset class, kept as numbered
/// versions (a change adds a version; none is edited or deleted), each
/// symbol's asset class, and rebalance runs with the orders each placed.
struct CreateTargetsAndRebalances: AsyncMigration {
    var name: String { "011_create_targets_and_rebalances" }

    /// Percentages: up to 100 with 4 places.
    static let percent = MoneyColumn(precision: 10, scale: 4)

    func prepare(on database: any Database) async throws {
        func n(_ column: String) -> String { MoneyColumn.numeric(column, on: database) }
        let percent = Self.percent.dataType(on: database)

        try await database.schema("target_allocations")
            .id()
            .field("account_id", .uuid, .required, .references("accounts", "id", onDelete: .cascade))
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("version", .int, .required)
            .field("cash_percent", percent, .required)
            .field("drift_absolute_points", percent, .required)
            .field("drift_relative_percent", percent, .required)
            .field("created_by", .uuid)
            .field("created_at", .datetime, .required)
            .unique(on: "account_id", "version", name: "target_allocations_account_id_version_key")
            .constraint(.sql(unsafeRaw: """
                CONSTRAINT target_allocations_percent_check CHECK (\(n("cash_percent")) >= 0 AND \(n("cash_percent")) <= 100
                    AND \(n("drift_absolute_points")) > 0 AND \(n("drift_relative_percent")) > 0)
                """))
            .create()

        try await database.schema("target_weights")
            .field("allocation_id", .uuid, .required, .references("target_allocations", "id", onDelete: .cascade))
            .field("symbol", .string, .required)
            .field("percent", percent, .required)
            .compositeIdentifier(over: "allocation_id", "symbol")
            .constraint(.sql(unsafeRaw: "CONSTRAINT target_weights_percent_check CHECK (\(n("percent")) >= 0 AND \(n("percent")) <= 100)"))
            .create()

        try await database.schema("target_class_weights")
            .field("allocation_id", .uuid, .required, .references("target_allocations", "id", onDelete: .cascade))
            .field("asset_class", .string, .required)
            .field("percent", percent, .required)
            .compositeIdentifier(over: "allocation_id", "asset_class")
            .constraint(.sql(unsafeRaw: "CONSTRAINT target_class_weights_percent_check CHECK (\(n("percent")) >= 0 AND \(n("percent")) <= 100)"))
            .create()

        // Each symbol's asset class, learned once from the market-data source.
        try await database.schema("symbol_asset_classes")
            .field("symbol", .string, .identifier(auto: false))
            .field("asset_class", .string, .required)
            .field("updated_at", .datetime, .required)
            .create()

        try await database.schema("rebalance_runs")
            .id()
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("account_id", .uuid, .required, .references("accounts", "id", onDelete: .cascade))
            .field("mode", .string, .required)
            .field("status", .string, .required)
            // The request's options and the plan's trades as JSON: what the run was asked to do.
            .field("options", .string, .required)
            .field("plan", .string, .required)
            // Why the run fell short (orders not filled whole), and what it did that the plan did not say; JSON arrays of strings.
            .field("reasons", .string, .required)
            .field("notes", .string, .required)
            .field("buy_rounds", .int, .required)
            .field("created_at", .datetime, .required)
            .field("updated_at", .datetime, .required)
            .field("finished_at", .datetime)
            .constraint(.sql(unsafeRaw: """
                CONSTRAINT rebalance_runs_status_check CHECK (status IN ('selling', 'buying', 'done', 'partially_done', 'failed'))
                """))
            .constraint(.sql(unsafeRaw: "CONSTRAINT rebalance_runs_mode_check CHECK (mode IN ('full', 'buy_only', 'sell_only'))"))
            .create()
        let sql = database as! any SQLDatabase
        try await sql.raw("CREATE INDEX rebalance_runs_account_id_status_idx ON rebalance_runs (account_id, status)").run()
        // At most one run of an account at a time, whatever the code above it does.
        try await sql.raw("""
            CREATE UNIQUE INDEX rebalance_runs_one_active_key ON rebalance_runs (account_id) WHERE status IN ('selling', 'buying')
            """).run()
        try await sql.raw("CREATE INDEX rebalance_runs_user_id_idx ON rebalance_runs (user_id)").run()

        try await database.schema("rebalance_orders")
            .field("run_id", .uuid, .required, .references("rebalance_runs", "id", onDelete: .cascade))
            .field("order_id", .uuid, .required, .references("orders", "id", onDelete: .cascade))
            .field("phase", .string, .required)
            .field("round", .int, .required)
            .compositeIdentifier(over: "run_id", "order_id")
            .constraint(.sql(unsafeRaw: "CONSTRAINT rebalance_orders_phase_check CHECK (phase IN ('sell', 'buy'))"))
            .create()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("rebalance_orders").delete()
        try await database.schema("rebalance_runs").delete()
        try await database.schema("symbol_asset_classes").delete()
        try await database.schema("target_class_weights").delete()
        try await database.schema("target_weights").delete()
        try await database.schema("target_allocations").delete()
    }
}
