import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import SQLKit
import Testing

@testable import FolioServer

/// The `/api/auth/*` bucket lives in the database, so it holds across instances.
@Suite("Shared rate limit")
struct SharedRateLimitTests {
    @Test("two instances on one database take from one bucket: the limit holds in all, refills, and full buckets are removed by retention", arguments: TestDatabaseKind.all)
    func acrossInstances(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind) { database, _ in
            let clock = TestClock()
            let a = SharedRateLimiter(database: database, clock: clock.clock), b = SharedRateLimiter(database: database, clock: clock.clock)
            var allowed: [Bool] = [], remaining: [Int] = []
            for i in 0..<8 {
                let decision = try await (i.isMultiple(of: 2) ? a : b).take("auth:203.0.113.7", perMinute: 5)
                allowed.append(decision.allowed)
                remaining.append(decision.remaining)
            }
            #expect(allowed == [true, true, true, true, true, false, false, false])
            #expect(remaining == [4, 3, 2, 1, 0, 0, 0, 0])
            let refused = try await a.take("auth:203.0.113.7", perMinute: 5)
            #expect(refused.retryAfter == 12)
            #expect(refused.reset == 60)
            // Another address has its own bucket.
            let other = try await b.take("auth:203.0.113.8", perMinute: 5)
            #expect(other.allowed && other.remaining == 4)

            // A token comes back every 12 seconds, on either instance.
            clock.advance(by: 11)
            let early = try await b.take("auth:203.0.113.7", perMinute: 5)
            #expect(!early.allowed && early.retryAfter == 1)
            clock.advance(by: 1)
            let oneBack = try await b.take("auth:203.0.113.7", perMinute: 5)
            #expect(oneBack.allowed && oneBack.remaining == 0)
            let thenNone = try await a.take("auth:203.0.113.7", perMinute: 5)
            #expect(!thenNone.allowed)
            // A full minute later the bucket is full again.
            clock.advance(by: 60)
            let full = try await a.take("auth:203.0.113.7", perMinute: 5)
            #expect(full.allowed && full.remaining == 4)

            // Retention removes the buckets that are full again (the same as none), and only those.
            clock.advance(by: 13)
            _ = try await a.take("auth:203.0.113.9", perMinute: 5)
            let outcomes = try await Retention(database: database, clock: clock.clock).run(dryRun: false)
            #expect(outcomes.first { $0.policy == "rate_limit_buckets" }?.rows == 2)
            let keys = try await database.sql.raw("SELECT key FROM rate_limit_buckets").all().map { try $0.decode(column: "key", as: String.self) }
            #expect(keys == ["auth:203.0.113.9"])
        }
    }

    @Test("a limit that does not divide a minute holds exactly that many; one beyond a token a microsecond is held to that", arguments: TestDatabaseKind.all)
    func uneven(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind) { database, _ in
            let limiter = SharedRateLimiter(database: database, clock: TestClock().clock)
            var taken = 0
            for _ in 0..<9 where try await limiter.take("auth:seven", perMinute: 7).allowed { taken += 1 }
            #expect(taken == 7)
            let huge = try await limiter.take("auth:huge", perMinute: 70_000_000)
            #expect(huge.allowed && huge.remaining == 59_999_999 && huge.limit == 70_000_000)
        }
    }

    @Test("concurrent requests from one address cannot take more than the bucket holds", arguments: TestDatabaseKind.all)
    func concurrent(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind) { database, _ in
            let clock = TestClock()
            let limiters = (0..<4).map { _ in SharedRateLimiter(database: database, clock: clock.clock) }
            let allowed = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<40 {
                    group.addTask {
                        let decision = try await limiters[i % 4].take("auth:198.51.100.1", perMinute: 10)
                        return decision.allowed
                    }
                }
                var count = 0
                for try await ok in group where ok { count += 1 }
                return count
            }
            #expect(allowed == 10)
        }
    }

    @Test("over HTTP, two instances' routers on one database answer 429 once the client's shared limit is spent", arguments: TestDatabaseKind.all)
    func overHTTP(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.rateLimit = .init(enabled: true, requestsPerMinute: 1000, authRequestsPerMinute: 4) }) { first, env in
            // A second instance: its own services and memory, the same database.
            var dependencies = FolioDependencies.live(
                configuration: env.configuration, logger: Logger(label: "second-instance"), database: env.database, clock: env.clock.clock)
            dependencies.instance = "test-second-instance"
            let services = await FolioServices(dependencies)
            let second = Application(router: services.buildRouter(), logger: Logger(label: "second-instance"))
            try await second.test(.router) { secondClient in
                var statuses: [HTTPResponse.Status] = []
                for i in 0..<6 {
                    let body = ["email": "x@example.com", "password": "whatever at all"]
                    let response = i.isMultiple(of: 2) ? try await post(first, "/api/auth/login", body) : try await post(secondClient, "/api/auth/login", body)
                    statuses.append(response.status)
                    if response.status == .tooManyRequests {
                        #expect(try problem(response).code == "rate_limited")
                        #expect(response.headers[HTTPField.Name("RateLimit-Policy")!] == "\"auth\";q=4;w=60")
                    }
                }
                #expect(statuses == [.unauthorized, .unauthorized, .unauthorized, .unauthorized, .tooManyRequests, .tooManyRequests])
                // The in-memory buckets are untouched: other routes still answer on both.
                let health = try await secondClient.execute(uri: "/api/health", method: .get)
                #expect(health.status == .ok)
            }
        }
    }

    @Test("the addresses of one IPv6 /64 share a bucket, and a refusal this instance can make itself writes nothing", arguments: TestDatabaseKind.all)
    func ipv6AndLocalGate(kind: TestDatabaseKind) async throws {
        try await withTestApp(
            kind, configure: { $0.rateLimit = .init(enabled: true, requestsPerMinute: 1000, authRequestsPerMinute: 3); $0.trustedProxies = ["127.0.0.1"] },
            overSocket: true
        ) { client, env in
            var statuses: [HTTPResponse.Status] = []
            for host in 1...5 {
                let response = try await post(
                    client, "/api/auth/login", ["email": "x@example.com", "password": "whatever at all"],
                    headers: [HTTPField.Name("X-Forwarded-For")!: "2001:db8:7:8::\(host)"])
                statuses.append(response.status)
            }
            #expect(statuses == [.unauthorized, .unauthorized, .unauthorized, .tooManyRequests, .tooManyRequests])
            let rows = try await env.database.sql.raw("SELECT key FROM rate_limit_buckets").all().map { try $0.decode(column: "key", as: String.self) }
            #expect(rows == ["auth:2001:db8:7:8::/64"])
            // This instance has seen the limit spent: it refuses without asking the database, so even with the table gone it answers 429.
            try await env.database.sql.raw("DROP TABLE rate_limit_buckets").run()
            let refused = try await post(
                client, "/api/auth/login", ["email": "x@example.com", "password": "whatever at all"],
                headers: [HTTPField.Name("X-Forwarded-For")!: "2001:db8:7:8::99"])
            #expect(refused.status == .tooManyRequests)
            // Another /64 is another client.
            let other = try await post(
                client, "/api/auth/login", ["email": "x@example.com", "password": "whatever at all"],
                headers: [HTTPField.Name("X-Forwarded-For")!: "2001:db8:7:9::1"])
            #expect(other.status == .serviceUnavailable, "a new client's bucket is in the (dropped) table")
        }
    }

    @Test("when the shared bucket cannot be read, auth requests are refused with 503, and other routes still answer", arguments: TestDatabaseKind.all)
    func failsClosed(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.rateLimit = .init(enabled: true, requestsPerMinute: 1000, authRequestsPerMinute: 4) }) { client, env in
            try await env.database.sql.raw("DROP TABLE rate_limit_buckets").run()
            let refused = try await post(client, "/api/auth/register", ["email": "new@example.com", "password": strongPassword])
            #expect(refused.status == .serviceUnavailable)
            #expect(try problem(refused).code == "rate_limit_unavailable")
            #expect(refused.headers[.retryAfter] == "1")
            // Nothing was written: the request never reached its handler.
            let users = try await env.database.sql.raw("SELECT COUNT(*) AS n FROM users").first(decodingColumn: "n", as: Int.self)
            #expect(users == 0)
            #expect(env.logs.lines.contains { $0.contains("shared rate limit unavailable") })
            let health = try await client.execute(uri: "/api/health", method: .get)
            #expect(health.status == .ok)
        }
    }
}
