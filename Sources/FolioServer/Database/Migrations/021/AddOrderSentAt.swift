import FluentKit
import SQLKit

/// 021: `orders.sent_at`, set just before an order is first sent to a broker
/// that holds orders (Alpaca). An order not listed there is known never to have
/// arrived only when nothing sent it: after a send whose answer was lost (a
/// timeout; the POST may still land) Alpaca's look-up can lag, and a cancel
/// that took "not listed" for "never sent" freed cash for an order that went on
/// to fill there. A job's attempt count cannot tell: a worker that took a job
/// over from a stalled one counts an attempt that may never have sent anything.
struct AddOrderSentAt: AsyncMigration {
    var name: String { "021_add_order_sent_at" }

    func prepare(on database: any Database) async throws {
        try await database.schema("orders").field("sent_at", .datetime).update()
        // Orders still waiting to be sent whose submission was already tried may have been sent.
        let sql = database as! any SQLDatabase
        try await sql.raw("""
            UPDATE orders SET sent_at = updated_at
            WHERE status = 'new' AND id IN (SELECT order_id FROM jobs WHERE kind = 'submit_order' AND attempts > 0 AND order_id IS NOT NULL)
            """).run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("orders").deleteField("sent_at").update()
    }
}
