import FluentKit

/// 023: `orders.triggered_at`, when the paper broker first saw a stop
/// order's stop price reached. A stop-limit whose price crossed its stop
/// outside its limit is a limit order from then on, as at a broker; without
/// the column the paper broker forgot the trigger until a fill, and waited
/// for the price to cross the stop again. Existing orders start untriggered
/// (a stop that filled in part counts as triggered by its fills).
struct AddOrderTriggeredAt: AsyncMigration {
    var name: String { "023_add_order_triggered_at" }

    func prepare(on database: any Database) async throws {
        try await database.schema("orders").field("triggered_at", .datetime).update()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("orders").deleteField("triggered_at").update()
    }
}
