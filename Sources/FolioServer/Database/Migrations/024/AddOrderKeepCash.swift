import FluentKit

/// 024: `orders.keep_cash`, the cash a rebalance's buy must leave available
/// (the plan's cash kept: the reserve, the cash target). Checked when the buy
/// is placed, and now at each paper fill too: a market buy that fills above
/// its reservation pays the difference from available cash, and without the
/// column that difference could come out of the cash the run promised to
/// keep. NULL for every other order (and for orders placed before).
struct AddOrderKeepCash: AsyncMigration {
    var name: String { "024_add_order_keep_cash" }

    func prepare(on database: any Database) async throws {
        try await database.schema("orders").field("keep_cash", CreateAccountsAndLedger.cash.dataType(on: database)).update()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("orders").deleteField("keep_cash").update()
    }
}
