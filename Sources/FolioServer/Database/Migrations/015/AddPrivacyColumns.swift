import FluentKit
import SQLKit

/// 015: what erasure, retention and the access review need.
/// - `audit_events.ip_salt`, `ip_commitment`: the chain hashes a salted
///   commitment to the client's address instead of the address, so the
///   address can be cleared (after a year, or on erasure) and the chain still verifies.
/// - `users.erased_at`: when the person was erased; the row stays, pseudonymous,
///   because the ledger and audit trail point at it.
/// - `users.last_sign_in_at`: kept on the user, as sessions are removed 30 days after they end.
/// - The append-only trigger on `audit_events` now lets one change through:
///   clearing `ip` and `ip_salt` on a row whose chain holds a commitment to
///   them, with every other column unchanged. Anything else is still refused.
struct AddPrivacyColumns: AsyncMigration, RevertCheck {
    var name: String { "015_add_privacy_columns" }

    func prepare(on database: any Database) async throws {
        try await database.schema("audit_events").field("ip_salt", .string).update()
        try await database.schema("audit_events").field("ip_commitment", .string).update()
        try await database.schema("users").field("erased_at", .datetime).update()
        try await database.schema("users").field("last_sign_in_at", .datetime).update()
        let sql = database as! any SQLDatabase
        // What a sign-in before this migration left: the newest session.
        try await sql.raw("""
            UPDATE users SET last_sign_in_at = (SELECT MAX(created_at) FROM sessions WHERE sessions.user_id = users.id)
            """).run()
        if sql.dialect.name == "postgresql" {
            try await sql.raw("""
                CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger AS $$
                BEGIN
                    IF TG_OP = 'UPDATE' AND NEW.ip IS NULL AND NEW.ip_salt IS NULL AND OLD.ip_commitment IS NOT NULL
                       AND (to_jsonb(NEW) - 'ip' - 'ip_salt') = (to_jsonb(OLD) - 'ip' - 'ip_salt') THEN
                        RETURN NEW;
                    END IF;
                    RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation', MESSAGE = 'audit_events is append-only';
                END
                $$ LANGUAGE plpgsql
                """).run()
        } else {
            let unchanged = Self.keptColumns.map { "NEW.\($0) IS OLD.\($0)" }.joined(separator: " AND ")
            try await sql.raw("DROP TRIGGER audit_events_no_update").run()
            try await sql.raw("""
                CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
                WHEN NOT (NEW.ip IS NULL AND NEW.ip_salt IS NULL AND OLD.ip_commitment IS NOT NULL AND \(unsafeRaw: unchanged))
                BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END
                """).run()
        }
    }

    /// Every column but the address and its salt.
    static let keptColumns = [
        "id", "occurred_at", "actor_id", "action", "subject_type", "subject_id", "user_id", "details", "request_id", "sequence", "previous_hash",
        "hash", "chain_id", "chain_sequence", "ip_commitment",
    ]

    /// Events written since hash their address's commitment: without the column they could never verify again.
    func revertRefusal(on sql: any SQLDatabase) async throws -> String? {
        let committed = try await sql.raw("SELECT COUNT(*) AS n FROM audit_events WHERE ip_commitment IS NOT NULL").first()?.decode(column: "n", as: Int.self) ?? 0
        guard committed > 0 else { return nil }
        return "migration 015 cannot be reverted: \(committed) audit event(s) hash an address commitment and would no longer verify; restore a backup taken before it instead"
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        if let refusal = try await revertRefusal(on: sql) { throw RevertRefused(description: refusal) }
        if sql.dialect.name == "postgresql" {
            try await sql.raw("""
                CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger AS $$
                BEGIN RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation', MESSAGE = 'audit_events is append-only'; END
                $$ LANGUAGE plpgsql
                """).run()
        } else {
            try await sql.raw("DROP TRIGGER audit_events_no_update").run()
            try await sql.raw("CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END").run()
        }
        try await database.schema("users").deleteField("last_sign_in_at").update()
        try await database.schema("users").deleteField("erased_at").update()
        try await database.schema("audit_events").deleteField("ip_commitment").update()
        try await database.schema("audit_events").deleteField("ip_salt").update()
    }
}
