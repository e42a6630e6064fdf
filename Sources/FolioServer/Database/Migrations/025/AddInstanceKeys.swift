import FluentKit

/// 025: `instances.key_fingerprints`, which keys a running `folio serve` or
/// `folio worker` knows (a one-way fingerprint of `SECRET_KEY` and of each of
/// `PREVIOUS_SECRET_KEYS`, comma-separated). `folio secrets rotate` signs the
/// audit heads and seals secrets again under its own `SECRET_KEY`: an instance
/// that does not know that key could then append to no audit chain, so the
/// command refuses while one runs. NULL for instances started before.
struct AddInstanceKeys: AsyncMigration {
    var name: String { "025_add_instance_keys" }

    func prepare(on database: any Database) async throws {
        try await database.schema("instances").field("key_fingerprints", .string).update()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("instances").deleteField("key_fingerprints").update()
    }
}
