import FluentKit
import SQLKit

/// 008: each account's value at each day's close, and the recurring job
/// schedules that take those snapshots (among others).
struct CreatePortfolioSnapshotsAndSchedules: AsyncMigration {
    var name: String { "008_create_portfolio_snapshots_and_schedules" }

    func prepare(on database: any Database) async throws {
        func n(_ column: String) -> String { MoneyColumn.numeric(column, on: database) }
        let cash = CreateAccountsAndLedger.cash.dataType(on: database)

        try await database.schema("portfolio_snapshots")
            .id()
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("account_id", .uuid, .required, .references("accounts", "id", onDelete: .cascade))
            // The New York trading day, `2026-11-27`: sorts as text on both databases.
            .field("day", .string, .required)
            .field("cash", cash, .required)
            .field("market_value", cash, .required)
            .field("total_value", cash, .required)
            .field("source", .string, .required)
            .field("created_at", .datetime, .required)
            .unique(on: "account_id", "day", name: "portfolio_snapshots_account_id_day_key")
            .constraint(.sql(unsafeRaw: "CONSTRAINT portfolio_snapshots_source_check CHECK (source IN ('close', 'backfill'))"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT portfolio_snapshots_values_check CHECK (\(n("cash")) >= 0 AND \(n("market_value")) >= 0 AND \(n("total_value")) >= 0)"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT portfolio_snapshots_day_check CHECK (length(day) = 10)"))
            .create()
        try await sql(database).raw("CREATE INDEX portfolio_snapshots_user_id_idx ON portfolio_snapshots (user_id)").run()

        // next_run_at is Unix seconds, so a claim can compare it exactly.
        try await sql(database).raw("""
            CREATE TABLE job_schedules (
                name TEXT NOT NULL CONSTRAINT job_schedules_pkey PRIMARY KEY,
                kind TEXT NOT NULL,
                next_run_at BIGINT NOT NULL,
                last_enqueued_at BIGINT
            )
            """).run()
    }

    func revert(on database: any Database) async throws {
        try await sql(database).raw("DROP TABLE job_schedules").run()
        try await database.schema("portfolio_snapshots").delete()
    }

    private func sql(_ database: any Database) -> any SQLDatabase {
        database as! any SQLDatabase
    }
}
