import FluentKit
import Foundation
import SQLKit
import Testing

@testable import FolioServer

@Suite("Audit trail")
struct AuditTrailTests {
    @Test("every event links to the one before; the database refuses UPDATE and DELETE", arguments: TestDatabaseKind.all)
    func appendOnly(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "audited@example.com")
            _ = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
            await env.worker.drain()
            let verified = try await AuditVerifier(database: env.database).verify()
            #expect(verified.firstBreak == nil)
            #expect(verified.events >= 6)
            let actions = try await AuditEvent.query(on: env.database.db).sort(\.$sequence).all().map(\.action)
            for action in ["user.registered", "ledger.deposit", "order.placed", "order.filled", "order.fill"] {
                #expect(actions.contains(action), "\(action) in \(actions)")
            }
            await #expect(throws: (any Error).self) { try await env.database.sql.raw("UPDATE audit_events SET action = 'nothing'").run() }
            await #expect(throws: (any Error).self) { try await env.database.sql.raw("DELETE FROM audit_events").run() }
            #expect(try await AuditEvent.query(on: env.database.db).count() == verified.events)
        }
    }

    @Test("concurrent appends never fork the chain", arguments: TestDatabaseKind.all)
    func concurrentAppends(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<20 {
                    group.addTask { _ = try await post(client, "/api/auth/login", ["email": "nobody\(index)@example.com", "password": "wrong password here"]) }
                }
                try await group.waitForAll()
            }
            let verified = try await AuditVerifier(database: env.database).verify()
            #expect(verified.events == 20)
            #expect(verified.firstBreak == nil)
        }
    }

    @Test("a row changed behind the triggers' back breaks the chain at that row", arguments: TestDatabaseKind.all)
    func tampering(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await signUp(client, env, email: "victim@example.com")
            let sql = env.database.sql
            // An intruder with database rights removes the guard first.
            if env.database.kind == .postgres {
                try await sql.raw("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only").run()
            } else {
                try await sql.raw("DROP TRIGGER audit_events_no_update").run()
            }
            try await sql.raw("UPDATE audit_events SET details = '{\"amount\":\"1000000\"}' WHERE sequence = 2").run()
            let verified = try await AuditVerifier(database: env.database).verify()
            #expect(verified.firstBreak?.hasPrefix("audit event 2 ") == true, "\(verified.firstBreak ?? "intact")")
            #expect(verified.firstBreak?.contains("was changed") == true)
        }
    }
}
