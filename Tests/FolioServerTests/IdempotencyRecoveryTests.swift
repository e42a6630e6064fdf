import Crypto
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SQLKit
import Testing

@testable import FolioServer

/// Keys in flight when their owner died are taken over within seconds; keys
/// whose owner is alive never are; and a claim that was taken over anyway
/// commits nothing.
@Suite("Idempotency after a crash")
struct IdempotencyRecoveryTests {
    /// The fingerprint Folio keeps for a request: method, path and canonical body.
    func fingerprint(_ path: String, _ body: String) -> String {
        let canonical = CanonicalJSON.text(of: Array(body.utf8))!
        return AuditChain.hex(SHA256.hash(data: Data("POST \(path)\n".utf8) + Data(canonical.utf8)))
    }

    func inFlight(_ env: TestEnvironment, key: String, user: UserID, hash: String, instance: String, age: TimeInterval) async throws {
        let created = env.clock.now.addingTimeInterval(-age)
        try await env.database.sql.raw("""
            INSERT INTO idempotency_keys (id, user_id, key, request_hash, status, instance_id, created_at, expires_at)
            VALUES (\(bind: UUID()), \(bind: user), \(bind: key), \(bind: hash), 'in_flight', \(bind: instance), \(bind: created), \(bind: created.addingTimeInterval(86_400)))
            """).run()
    }

    func heartbeat(_ env: TestEnvironment, instance: String, age: TimeInterval) async throws {
        let at = env.clock.now.addingTimeInterval(-age)
        try await env.database.sql.raw("""
            INSERT INTO instances (id, kind, started_at, heartbeat_at) VALUES (\(bind: instance), 'serve', \(bind: at), \(bind: at))
            """).run()
    }

    @Test("a key whose owner stopped heartbeating is taken over at once; one whose owner is alive is not, however old", arguments: TestDatabaseKind.all)
    func owners(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "owners@example.com")
            let account = try await env.firstAccount()
            let path = "/api/accounts/\(account.id)/deposits"
            let body = #"{"amount":"10.00"}"#
            try await heartbeat(env, instance: "killed", age: Instances.deadAfter + 1)
            try await heartbeat(env, instance: "alive", age: 0)
            try await inFlight(env, key: "dead-owner", user: account.userID, hash: fingerprint(path, body), instance: "killed", age: 1)
            try await inFlight(env, key: "live-owner", user: account.userID, hash: fingerprint(path, body), instance: "alive", age: 400)
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"

            headers[Idempotency.header] = "dead-owner"
            let takenOver = try await client.execute(uri: path, method: .post, headers: headers, body: ByteBuffer(string: body))
            #expect(takenOver.status == .created)

            headers[Idempotency.header] = "live-owner"
            let waiting = try await client.execute(uri: path, method: .post, headers: headers, body: ByteBuffer(string: body))
            #expect(waiting.status == .conflict)
            #expect(try problem(waiting).code == "idempotency_request_in_progress")

            // Its owner stops heartbeating: a few seconds later the key is free again.
            env.clock.advance(by: Instances.deadAfter + 1)
            let later = try await client.execute(uri: path, method: .post, headers: headers, body: ByteBuffer(string: body))
            #expect(later.status == .created)
            #expect(try await env.entries(.deposit).count == 3, "the starting deposit and one per key")
            try await env.expectConsistent()
        }
    }

    @Test("a key of this instance that no request of it holds (its failed request could not forget it: the database was gone) is free at once, and forgotten on the next keyed request", arguments: TestDatabaseKind.all)
    func unforgottenOwnKey(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "blip@example.com")
            let account = try await env.firstAccount()
            let path = "/api/accounts/\(account.id)/deposits"
            let body = #"{"amount":"10.00"}"#
            let instance = env.services.idempotency.instance
            try await heartbeat(env, instance: instance, age: 0)
            try await inFlight(env, key: "after-a-blip", user: account.userID, hash: fingerprint(path, body), instance: instance, age: 1)
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"
            headers[Idempotency.header] = "after-a-blip"
            let retried = try await client.execute(uri: path, method: .post, headers: headers, body: ByteBuffer(string: body))
            #expect(retried.status == .created, "\(String(buffer: retried.body))")

            // Another key whose request failed and could not forget it: the next keyed request forgets it.
            try await inFlight(env, key: "left-behind", user: account.userID, hash: fingerprint(path, body), instance: instance, age: 1)
            let leftBehind = try #require(try await env.database.sql.raw("SELECT id FROM idempotency_keys WHERE key = 'left-behind'").first(decodingColumn: "id", as: UUID.self))
            env.services.idempotency.held.release(leftBehind, forgotten: false)
            headers[Idempotency.header] = "next"
            #expect(try await client.execute(uri: path, method: .post, headers: headers, body: ByteBuffer(string: body)).status == .created)
            #expect(try await env.database.sql.raw("SELECT id FROM idempotency_keys WHERE key = 'left-behind'").first() == nil)
            #expect(env.services.idempotency.held.unreleased().isEmpty)
            try await env.expectConsistent()
        }
    }

    @Test("a claim taken over while its request was still running commits nothing", arguments: TestDatabaseKind.all)
    func takenOverClaim(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, routes: { routes, services in
            routes.post("/api/test/slow-deposit/:account") { request, context -> Response in
                let account = try #require(context.parameters.get("account").flatMap(AccountID.init))
                let database = services.database, accounts = services.accounts
                return try await services.idempotency.run(
                    request, userID: try #require(context.identity?.userID), status: .created, location: { (_: String) in nil },
                    prepare: {
                        // While this request prepares, another instance takes its key over.
                        try await database.sql.raw("DELETE FROM idempotency_keys").run()
                    },
                    perform: { _, db in
                        let entry = try await accounts.move(.deposit, amount: 10, description: nil, account: account, owner: nil, actor: nil, context: .none, on: db)
                        return entry.line.id.description
                    })
            }
        }) { client, env in
            let tokens = try await signUp(client, env, email: "overtaken@example.com")
            let account = try await env.firstAccount()
            var headers = bearer(tokens)
            headers[Idempotency.header] = "overtaken"
            let response = try await post(client, "/api/test/slow-deposit/\(account.id)", [:], headers: headers)
            #expect(response.status == .conflict)
            #expect(try problem(response).code == "idempotency_request_in_progress")
            #expect(try await env.entries(.deposit).count == 1, "only the starting deposit")
            #expect(try await env.firstAccount().cash == 100_000)
        }
    }
}
