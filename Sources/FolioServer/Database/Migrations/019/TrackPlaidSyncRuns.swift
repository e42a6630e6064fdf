import FluentKit
import SQLKit

/// 019: what a Plaid sync under way must survive a restart of its process with.
/// Plaid's rule for a mutation during pagination is to start again from the cursor
/// of the last complete sync, not from a page saved since; and a transaction saved
/// by the pages before it that the new run no longer lists (a pending charge that
/// posted under a new id) is never named as removed. Both used to live in memory
/// only, so a run cut short after such a restart went on from a cursor Plaid had
/// given up on, and kept the old charge beside the new one (or lost the new one).
/// - `plaid_items.sync_run_start`: the cursor the pagination under way began
///   from ('' for an item's first sync); NULL when no pagination is under way.
/// - `plaid_sync_listed`: the transactions the pagination under way has saved;
///   `current` is false for those saved by a run a mutation cut short, until the
///   new run lists them again. The last page removes those it never did.
struct TrackPlaidSyncRuns: AsyncMigration {
    var name: String { "019_track_plaid_sync_runs" }

    func prepare(on database: any Database) async throws {
        try await database.schema("plaid_items").field("sync_run_start", .string).update()
        try await database.schema("plaid_sync_listed")
            .field("item_id", .uuid, .required, .references("plaid_items", "id", onDelete: .cascade))
            .field("plaid_transaction_id", .string, .required)
            .field("current", .bool, .required)
            .compositeIdentifier(over: "item_id", "plaid_transaction_id")
            .create()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("plaid_sync_listed").delete()
        try await database.schema("plaid_items").deleteField("sync_run_start").update()
    }
}
