import FluentKit
import SQLKit

/// 001: accounts of people who use Folio.
struct CreateUsers: AsyncMigration, RevertCheck {
    var name: String { "001_create_users" }

    /// A batch that holds this one is the whole schema (a fresh install's first `migrate`): reverting it would
    /// drop every table, so it is done only while no one has signed up.
    func revertRefusal(on sql: any SQLDatabase) async throws -> String? {
        let users = try await sql.raw("SELECT COUNT(*) AS n FROM users").first()?.decode(column: "n", as: Int.self) ?? 0
        guard users > 0 else { return nil }
        return "the last batch is the whole schema (the first `folio migrate`): reverting it would drop every table and the data of \(users) user(s); nothing was reverted; restore a backup instead"
    }

    func prepare(on database: any Database) async throws {
        try await database.schema("users")
            .id()
            .field("email", .string, .required)
            .field("password_hash", .string, .required)
            .field("role", .string, .required, .sql(.default("user")))
            .field("email_verified_at", .datetime)
            .field("disabled_at", .datetime)
            // TOTP secret, sealed with a key derived from SECRET_KEY (AES-GCM).
            .field("totp_secret_sealed", .string)
            .field("totp_enabled_at", .datetime)
            .field("failed_login_count", .int, .required, .sql(.default(0)))
            .field("locked_until", .datetime)
            .field("password_changed_at", .datetime, .required)
            .field("created_at", .datetime, .required)
            .field("updated_at", .datetime, .required)
            .constraint(.sql(unsafeRaw: "CONSTRAINT users_role_check CHECK (role IN ('user', 'admin'))"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT users_email_check CHECK (length(email) BETWEEN 3 AND 254 AND email LIKE '%_@_%')"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT users_password_hash_check CHECK (length(password_hash) > 0)"))
            .constraint(.sql(unsafeRaw: "CONSTRAINT users_failed_login_count_check CHECK (failed_login_count >= 0)"))
            .create()
        // Unique regardless of case, enforced by the database itself.
        try await (database as! any SQLDatabase)
            .raw("CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email))")
            .run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("users").delete()
    }
}
