import FluentKit
import SQLKit

/// 010: failed sign-ins counted per account and client address (so a stranger
/// cannot lock the owner out), the addresses an account has signed in from,
/// failed sign-ins with emails that have no account (counted alike, so the
/// answers do not tell them apart), and the last TOTP time step each user has
/// spent (so a code cannot be replayed inside its window). The account-wide
/// count in `users` stays, as the ceiling against guessing from many addresses.
struct CreateSignInFailures: AsyncMigration {
    var name: String { "010_create_sign_in_failures" }

    func prepare(on database: any Database) async throws {
        try await database.schema("sign_in_failures")
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("client", .string, .required)
            .field("failures", .int, .required)
            .field("locked_until", .datetime)
            // When a sign-in from this address last succeeded: a known address is spared the account-wide ceiling.
            .field("succeeded_at", .datetime)
            .field("updated_at", .datetime, .required)
            .compositeIdentifier(over: "user_id", "client")
            .constraint(.sql(unsafeRaw: "CONSTRAINT sign_in_failures_failures_check CHECK (failures >= 0)"))
            .create()
        // Unknown emails are counted the same way, under an HMAC of the address
        // (never the address itself): `<hmac>|<client>` and `<hmac>|*` for the ceiling.
        try await database.schema("unknown_sign_in_failures")
            .field("key", .string, .identifier(auto: false))
            .field("failures", .int, .required)
            .field("locked_until", .datetime)
            .field("updated_at", .datetime, .required)
            .constraint(.sql(unsafeRaw: "CONSTRAINT unknown_sign_in_failures_failures_check CHECK (failures >= 0)"))
            .create()
        try await database.schema("users").field("totp_last_step", .int64).update()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("users").deleteField("totp_last_step").update()
        try await database.schema("unknown_sign_in_failures").delete()
        try await database.schema("sign_in_failures").delete()
    }
}
