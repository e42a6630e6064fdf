import FluentKit
import SQLKit

/// 012: accounts held at an outside broker (Alpaca). Each link belongs to
/// one Folio account of kind `brokerage`; its API key id and secret are
/// sealed together (`SecretBox`) and never stored in clear. An unlinked
/// account keeps its ledger and history; only the credentials go.
struct CreateBrokerageLinks: AsyncMigration {
    var name: String { "012_create_brokerage_links" }

    func prepare(on database: any Database) async throws {
        try await database.schema("brokerage_links")
            .id()
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("account_id", .uuid, .required, .references("accounts", "id", onDelete: .cascade))
            .field("broker", .string, .required)
            .field("environment", .string, .required)
            .field("base_url", .string, .required)
            // The broker's own account number, and the key id's last characters to tell links apart.
            .field("remote_account", .string, .required)
            .field("key_hint", .string, .required)
            // Empty once unlinked.
            .field("sealed_credentials", .string, .required)
            .field("status", .string, .required)
            // `user` (linked through the API) or `deployment` (ALPACA_API_KEY, linked once to the first admin).
            .field("origin", .string, .required)
            .field("created_at", .datetime, .required)
            .field("removed_at", .datetime)
            .unique(on: "account_id", name: "brokerage_links_account_id_key")
            .constraint(.sql(unsafeRaw: "CONSTRAINT brokerage_links_broker_check CHECK (broker IN ('alpaca'))"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT brokerage_links_environment_check CHECK (environment IN ('paper', 'live'))"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT brokerage_links_status_check CHECK (status IN ('active', 'removed'))"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT brokerage_links_origin_check CHECK (origin IN ('user', 'deployment'))"))
            .create()
        let sql = database as! any SQLDatabase
        // One active link per account at the broker, across all users: two Folio accounts mirroring one would count its money twice.
        try await sql.raw("""
            CREATE UNIQUE INDEX brokerage_links_one_active_key ON brokerage_links (broker, environment, remote_account) WHERE status = 'active'
            """).run()
        // The deployment's own keys are linked once, ever: not again after an unlink, nor to a later admin.
        try await sql.raw("CREATE UNIQUE INDEX brokerage_links_one_deployment_key ON brokerage_links (origin) WHERE origin = 'deployment'").run()
        try await sql.raw("CREATE INDEX brokerage_links_user_id_idx ON brokerage_links (user_id)").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("brokerage_links").delete()
    }
}
