import FluentKit
import SQLKit

/// 020: audit events by who acted. A person's export reads the events they
/// acted in on others (an administrator's), an erasure clears the address on
/// them, and retention finds an erased person's: each by `actor_id`, which
/// no index held, so each read most of the audit trail.
struct IndexAuditEventsByActor: AsyncMigration {
    var name: String { "020_index_audit_events_by_actor" }

    func prepare(on database: any Database) async throws {
        try await (database as! any SQLDatabase).raw("CREATE INDEX audit_events_actor_id_idx ON audit_events (actor_id)").run()
    }

    func revert(on database: any Database) async throws {
        try await (database as! any SQLDatabase).raw("DROP INDEX audit_events_actor_id_idx").run()
    }
}
