import FluentKit
import SQLKit

/// 006: stored first responses of requests sent with an `Idempotency-Key`.
struct CreateIdempotencyKeys: AsyncMigration {
    var name: String { "006_create_idempotency_keys" }

    func prepare(on database: any Database) async throws {
        try await database.schema("idempotency_keys")
            .id()
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("key", .string, .required)
            .field("request_hash", .string, .required)
            .field("status", .string, .required)
            .field("response_status", .int)
            .field("response_location", .string)
            .field("response_body", .string)
            .field("created_at", .datetime, .required)
            .field("expires_at", .datetime, .required)
            .unique(on: "user_id", "key", name: "idempotency_keys_user_id_key_key")
            .constraint(.sql(unsafeRaw: "CONSTRAINT idempotency_keys_status_check CHECK (status IN ('in_flight', 'completed'))"))
            .create()
        try await (database as! any SQLDatabase).raw("CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at)").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("idempotency_keys").delete()
    }
}
