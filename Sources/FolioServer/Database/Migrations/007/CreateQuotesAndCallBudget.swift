import FluentKit
import SQLKit

/// 007: the last quote of each symbol, shared by every server instance, and the
/// count of calls made to each market-data vendor per minute and per day.
struct CreateQuotesAndCallBudget: AsyncMigration {
    var name: String { "007_create_quotes_and_call_budget" }

    func prepare(on database: any Database) async throws {
        func n(_ column: String) -> String { MoneyColumn.numeric(column, on: database) }
        let price = CreateAccountsAndLedger.price.dataType(on: database)

        try await database.schema("quotes")
            .field("symbol", .string, .identifier(auto: false))
            .field("price", price, .required)
            .field("previous_close", price)
            .field("as_of", .datetime, .required)
            .field("fetched_at", .datetime, .required)
            .field("source", .string, .required)
            .constraint(.sql(unsafeRaw: "CONSTRAINT quotes_price_check CHECK (\(n("price")) > 0)"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT quotes_previous_close_check CHECK (previous_close IS NULL OR \(n("previous_close")) > 0)"))
            .create()

        // Periods are Unix seconds at the start of the minute or UTC day.
        try await sql(database).raw("""
            CREATE TABLE market_data_calls (
                provider TEXT NOT NULL,
                period TEXT NOT NULL CONSTRAINT market_data_calls_period_check CHECK (period IN ('minute', 'day')),
                period_start BIGINT NOT NULL,
                calls INTEGER NOT NULL CONSTRAINT market_data_calls_calls_check CHECK (calls >= 0),
                CONSTRAINT market_data_calls_pkey PRIMARY KEY (provider, period, period_start)
            )
            """).run()
    }

    func revert(on database: any Database) async throws {
        try await sql(database).raw("DROP TABLE market_data_calls").run()
        try await database.schema("quotes").delete()
    }

    private func sql(_ database: any Database) -> any SQLDatabase {
        database as! any SQLDatabase
    }
}
