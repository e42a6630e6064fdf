import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import FolioServer

@Suite("Health")
struct HealthTests {
    @Test("liveness answers ok at /health and /api/health", arguments: TestDatabaseKind.all)
    func liveness(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, _ in
            for path in ["/health", "/api/health"] {
                let response = try await client.execute(uri: path, method: .get)
                #expect(response.status == .ok)
                #expect(String(buffer: response.body) == #"{"status":"ok"}"#)
            }
        }
    }

    @Test("readiness is 200 with the database up and migrations applied", arguments: TestDatabaseKind.all)
    func ready(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, _ in
            let response = try await client.execute(uri: "/health/ready", method: .get)
            #expect(response.status == .ok)
        }
    }

    @Test("readiness is 503 problem+json while migrations are pending", arguments: TestDatabaseKind.all)
    func notReady(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, migrated: false) { client, _ in
            let response = try await client.execute(uri: "/health/ready", method: .get)
            #expect(response.status == .serviceUnavailable)
            let body = try problem(response)
            #expect(body.code == "not_ready")
            #expect(body.checks == ["database": "ok", "migrations": "pending"])
        }
    }

    @Test("detailed health shows strangers only status words", arguments: TestDatabaseKind.all)
    func detailedForStrangers(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.opsToken = String(repeating: "o", count: 40) }) { client, _ in
            let response = try await client.execute(uri: "/health/detailed", method: .get, headers: [.authorization: "Bearer wrong"])
            #expect(response.status == .ok)
            let text = String(buffer: response.body)
            #expect(text == #"{"components":{"application":{"status":"ok"},"database":{"status":"ok"},"migrations":{"status":"ok"}},"status":"ok"}"#)
        }
    }

    @Test("detailed health shows operators latency, migrations, version and uptime", arguments: TestDatabaseKind.all)
    func detailedForOperators(kind: TestDatabaseKind) async throws {
        let token = String(repeating: "o", count: 40)
        try await withTestApp(kind, configure: { $0.opsToken = token }) { client, _ in
            let response = try await client.execute(uri: "/health/detailed", method: .get, headers: [.authorization: "Bearer \(token)"])
            let report = try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any]
            let components = try #require(report?["components"] as? [String: [String: Any]])
            #expect(components["database"]?["latency_ms"] != nil)
            #expect(components["database"]?["kind"] as? String == kind.rawValue)
            #expect(components["migrations"]?["applied"] as? Int == MigrationRegistry.all.count)
            #expect(components["migrations"]?["pending"] as? Int == 0)
            #expect(components["application"]?["version"] as? String == FolioVersion.current)
            #expect(components["application"]?["uptime_seconds"] != nil)
            #expect(components["market_data"]?["source"] as? String == "simulated", "no vendor configured: the built-in market, said so")
            #expect(components["market_data"]?["status"] as? String == "ok")
        }
    }
}
