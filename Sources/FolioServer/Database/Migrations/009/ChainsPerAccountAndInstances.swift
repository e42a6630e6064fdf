import FluentKit
import Foundation
import SQLKit

/// 009: the core rebuild's schema, carrying existing rows over.
///
/// - The audit trail becomes one hash chain per account and per user
///   (`chain_id`, `chain_sequence`), with each chain's head kept under an
///   HMAC: an account's on its row (`audit_sequence`, `audit_hash`,
///   `audit_mac`, read by the same locking statement as its balance), other
///   chains' in `audit_chains`. Rows already there keep their links in the
///   legacy global chain (their `chain_id` stays NULL) and are verified by it.
///   The global `sequence` still orders every event: on PostgreSQL it now
///   comes from a sequence, so appends to different chains never wait on
///   each other. The append-only trigger raises SQLSTATE 23000
///   (integrity_constraint_violation), so a refused change is a constraint error.
/// - Jobs name the order they are about in their own `order_id` column
///   (filled from the payloads already there), and the instance that leases them.
/// - In-flight idempotency keys name the instance that owns them.
/// - `instances`: each running server or worker and its heartbeat.
/// - Orders record a cancel asked for while the order was on its way to a
///   broker that holds orders (`cancel_requested_at`).
struct ChainsPerAccountAndInstances: AsyncMigration {
    var name: String { "009_chains_per_account_and_instances" }

    func prepare(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        let postgres = sql.dialect.name == "postgresql"

        try await database.schema("audit_events").field("chain_id", .string).update()
        try await database.schema("audit_events").field("chain_sequence", .int64).update()
        try await sql.raw("CREATE UNIQUE INDEX audit_events_chain_key ON audit_events (chain_id, chain_sequence)").run()
        try await database.schema("accounts").field("audit_sequence", .int64).update()
        try await database.schema("accounts").field("audit_hash", .string).update()
        try await database.schema("accounts").field("audit_mac", .string).update()
        try await database.schema("audit_chains")
            .field("chain_id", .string, .identifier(auto: false))
            .field("sequence", .int64, .required)
            .field("hash", .string, .required)
            .field("mac", .string, .required)
            .constraint(.sql(unsafeRaw: "CONSTRAINT audit_chains_sequence_check CHECK (sequence > 0)"))
            .create()
        if postgres {
            let head = try await sql.raw("SELECT COALESCE(MAX(sequence), 0) AS head FROM audit_events").first()?.decode(column: "head", as: Int64.self) ?? 0
            try await sql.raw("CREATE SEQUENCE audit_events_global_sequence START WITH \(literal: Int(head + 1))").run()
            try await sql.raw("ALTER TABLE audit_events ALTER COLUMN sequence SET DEFAULT nextval('audit_events_global_sequence')").run()
            try await sql.raw("""
                CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger AS $$
                BEGIN RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation', MESSAGE = 'audit_events is append-only'; END
                $$ LANGUAGE plpgsql
                """).run()
        }

        try await database.schema("jobs").field("order_id", .uuid).update()
        try await database.schema("jobs").field("instance_id", .string).update()
        try await sql.raw("CREATE INDEX jobs_order_id_idx ON jobs (order_id)").run()
        // The order each submit job is about, from its payload (`{"order_id":"…"}`).
        for row in try await sql.raw("SELECT id, payload FROM jobs WHERE kind = 'submit_order'").all() {
            let payload = try row.decode(column: "payload", as: String.self)
            guard let fields = try? JSONDecoder().decode([String: String].self, from: Data(payload.utf8)),
                  let orderID = fields["order_id"].flatMap(UUID.init(uuidString:))
            else { continue }
            try await sql.raw("UPDATE jobs SET order_id = \(bind: orderID) WHERE id = \(bind: try row.decode(column: "id", as: UUID.self))").run()
        }

        try await database.schema("idempotency_keys").field("instance_id", .string).update()
        try await database.schema("instances")
            .field("id", .string, .identifier(auto: false))
            .field("kind", .string, .required)
            .field("started_at", .datetime, .required)
            .field("heartbeat_at", .datetime, .required)
            .create()
        try await sql.raw("CREATE INDEX orders_account_status_idx ON orders (account_id, status)").run()
        try await database.schema("orders").field("cancel_requested_at", .datetime).update()
    }

    func revert(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        func drop(_ table: String, _ column: String) async throws {
            try await sql.raw("ALTER TABLE \(ident: table) DROP COLUMN \(ident: column)").run()
        }
        try await drop("orders", "cancel_requested_at")
        try await sql.raw("DROP INDEX orders_account_status_idx").run()
        try await database.schema("instances").delete()
        try await drop("idempotency_keys", "instance_id")
        try await sql.raw("DROP INDEX jobs_order_id_idx").run()
        try await drop("jobs", "instance_id")
        try await drop("jobs", "order_id")
        if sql.dialect.name == "postgresql" {
            try await sql.raw("""
                CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger AS $$
                BEGIN RAISE EXCEPTION 'audit_events is append-only'; END
                $$ LANGUAGE plpgsql
                """).run()
            try await sql.raw("ALTER TABLE audit_events ALTER COLUMN sequence DROP DEFAULT").run()
            try await sql.raw("DROP SEQUENCE audit_events_global_sequence").run()
        }
        try await database.schema("audit_chains").delete()
        for column in ["audit_mac", "audit_hash", "audit_sequence"] { try await drop("accounts", column) }
        try await sql.raw("DROP INDEX audit_events_chain_key").run()
        try await drop("audit_events", "chain_sequence")
        try await drop("audit_events", "chain_id")
    }
}
