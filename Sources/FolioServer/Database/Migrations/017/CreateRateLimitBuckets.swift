import FluentKit
import SQLKit

/// 017: the sign-in and registration bucket (`/api/auth/*`) per client
/// address, shared by every instance, so N instances behind a balancer still
/// allow one client `AUTH_RATE_LIMIT_PER_MINUTE` and not N times it. One row
/// per key holds the bucket as a single time (see `SharedRateLimiter`).
struct CreateRateLimitBuckets: AsyncMigration {
    var name: String { "017_create_rate_limit_buckets" }

    func prepare(on database: any Database) async throws {
        try await database.schema("rate_limit_buckets")
            .field("key", .string, .identifier(auto: false))
            // Microseconds since 1970: when the bucket is full again.
            .field("full_at", .int64, .required)
            .create()
        // Retention removes the buckets that are full again, by this column.
        try await (database as! any SQLDatabase).raw("CREATE INDEX rate_limit_buckets_full_at ON rate_limit_buckets (full_at)").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("rate_limit_buckets").delete()
    }
}
