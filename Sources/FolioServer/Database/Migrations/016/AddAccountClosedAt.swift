import FluentKit
import SQLKit

/// 016: `accounts.closed_at`, set when the owner is erased. The books stay
/// (the ledger and audit trail point at them), but the owner's own moves
/// (orders, deposits, withdrawals, rebalances) lock an account only while it
/// is open: the column is in the row they lock, so a request that
/// authenticated before an erasure and waited for the account's lock finds it
/// closed when it gets the lock, at no cost to the hot path.
struct AddAccountClosedAt: AsyncMigration {
    var name: String { "016_add_account_closed_at" }

    func prepare(on database: any Database) async throws {
        try await database.schema("accounts").field("closed_at", .datetime).update()
        // Accounts of people erased before this migration are closed too.
        let sql = database as! any SQLDatabase
        try await sql.raw("""
            UPDATE accounts SET closed_at = (SELECT erased_at FROM users WHERE users.id = accounts.user_id)
            WHERE user_id IN (SELECT id FROM users WHERE erased_at IS NOT NULL)
            """).run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("accounts").deleteField("closed_at").update()
    }
}
