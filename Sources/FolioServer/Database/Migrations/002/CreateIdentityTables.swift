import FluentKit
import SQLKit

/// 002: sessions and their rotating refresh tokens, single-use email tokens,
/// TOTP recovery codes, the development mail outbox and the audit trail.
struct CreateIdentityTables: AsyncMigration {
    var name: String { "002_create_identity_tables" }

    func prepare(on database: any Database) async throws {
        try await database.schema("sessions")
            .id()
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("kind", .string, .required)
            .field("created_at", .datetime, .required)
            .field("last_used_at", .datetime, .required)
            .field("expires_at", .datetime, .required)
            .field("revoked_at", .datetime)
            .field("revoke_reason", .string)
            .field("ip", .string)
            .field("user_agent", .string)
            .constraint(.sql(unsafeRaw: "CONSTRAINT sessions_kind_check CHECK (kind IN ('bearer', 'cookie'))"))
            .create()
        try await sql(database).raw("CREATE INDEX sessions_user_id_idx ON sessions (user_id)").run()

        try await database.schema("refresh_tokens")
            .id()
            .field("session_id", .uuid, .required, .references("sessions", "id", onDelete: .cascade))
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("token_hash", .string, .required)
            .field("created_at", .datetime, .required)
            .field("used_at", .datetime)
            .unique(on: "token_hash", name: "refresh_tokens_token_hash_key")
            .create()
        try await sql(database).raw("CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id)").run()
        try await sql(database).raw("CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id)").run()

        try await database.schema("email_tokens")
            .id()
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("purpose", .string, .required)
            .field("token_hash", .string, .required)
            .field("created_at", .datetime, .required)
            .field("expires_at", .datetime, .required)
            .field("used_at", .datetime)
            .unique(on: "token_hash", name: "email_tokens_token_hash_key")
            .constraint(.sql(unsafeRaw: "CONSTRAINT email_tokens_purpose_check CHECK (purpose IN ('verify_email', 'reset_password'))"))
            .create()
        try await sql(database).raw("CREATE INDEX email_tokens_user_id_idx ON email_tokens (user_id)").run()

        try await database.schema("recovery_codes")
            .id()
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("code_hash", .string, .required)
            .field("created_at", .datetime, .required)
            .field("used_at", .datetime)
            .unique(on: "code_hash", name: "recovery_codes_code_hash_key")
            .create()
        try await sql(database).raw("CREATE INDEX recovery_codes_user_id_idx ON recovery_codes (user_id)").run()

        try await database.schema("outbox_messages")
            .id()
            .field("user_id", .uuid, .references("users", "id", onDelete: .setNull))
            .field("recipient", .string, .required)
            .field("subject", .string, .required)
            .field("body", .string, .required)
            .field("kind", .string, .required)
            .field("created_at", .datetime, .required)
            .create()
        try await sql(database).raw("CREATE INDEX outbox_messages_user_id_idx ON outbox_messages (user_id)").run()

        try await database.schema("audit_events")
            .id()
            .field("occurred_at", .datetime, .required)
            .field("actor_id", .uuid)
            .field("action", .string, .required)
            .field("subject_type", .string, .required)
            .field("subject_id", .string)
            .field("user_id", .uuid)
            .field("details", .string, .required)
            .field("ip", .string)
            .field("request_id", .string)
            .create()
        try await sql(database).raw("CREATE INDEX audit_events_user_id_idx ON audit_events (user_id)").run()
        try await sql(database).raw("CREATE INDEX audit_events_occurred_at_idx ON audit_events (occurred_at)").run()
    }

    func revert(on database: any Database) async throws {
        for table in ["audit_events", "outbox_messages", "recovery_codes", "email_tokens", "refresh_tokens", "sessions"] {
            try await database.schema(table).delete()
        }
    }

    private func sql(_ database: any Database) -> any SQLDatabase {
        database as! any SQLDatabase
    }
}
