import FluentKit
import SQLKit

/// 005: the audit trail becomes a hash chain and append-only. Each row gets a
/// sequence number and the SHA-256 of the previous row's hash and its own
/// canonical content; rows already there are chained in order. Triggers make
/// the database itself refuse UPDATE and DELETE.
struct ChainAuditEvents: AsyncMigration {
    var name: String { "005_chain_audit_events" }

    func prepare(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        try await sql.raw("ALTER TABLE audit_events ADD COLUMN sequence BIGINT").run()
        try await sql.raw("ALTER TABLE audit_events ADD COLUMN previous_hash TEXT").run()
        try await sql.raw("ALTER TABLE audit_events ADD COLUMN hash TEXT").run()
        // Chain what is there already, oldest first.
        let existing = try await AuditEvent.query(on: database).sort(\.$occurredAt).sort(\.$id).all()
        var previous = AuditChain.genesis
        for (index, event) in existing.enumerated() {
            let hash = AuditChain.hash(of: event, sequence: Int64(index + 1), previousHash: previous)
            try await sql.raw("""
                UPDATE audit_events SET sequence = \(bind: Int64(index + 1)), previous_hash = \(bind: previous), hash = \(bind: hash) WHERE id = \(bind: event.id!)
                """).run()
            previous = hash
        }
        try await sql.raw("CREATE UNIQUE INDEX audit_events_sequence_key ON audit_events (sequence)").run()
        if sql.dialect.name == "postgresql" {
            try await sql.raw("""
                CREATE FUNCTION audit_events_refuse_change() RETURNS trigger AS $$
                BEGIN RAISE EXCEPTION 'audit_events is append-only'; END
                $$ LANGUAGE plpgsql
                """).run()
            try await sql.raw("""
                CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
                FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change()
                """).run()
        } else {
            try await sql.raw("CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END").run()
            try await sql.raw("CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END").run()
        }
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        if sql.dialect.name == "postgresql" {
            try await sql.raw("DROP TRIGGER audit_events_append_only ON audit_events").run()
            try await sql.raw("DROP FUNCTION audit_events_refuse_change()").run()
        } else {
            try await sql.raw("DROP TRIGGER audit_events_no_update").run()
            try await sql.raw("DROP TRIGGER audit_events_no_delete").run()
        }
        try await sql.raw("DROP INDEX audit_events_sequence_key").run()
        for column in ["hash", "previous_hash", "sequence"] {
            try await sql.raw("ALTER TABLE audit_events DROP COLUMN \(unsafeRaw: column)").run()
        }
    }
}
