import Foundation
import HTTPTypes
import Hummingbird
import Logging
import SQLKit
import FolioDomain
import HummingbirdTesting
import Testing

@testable import FolioServer

@Suite("Copying a SQLite database into PostgreSQL", .serialized)
struct DatabaseCopyTests {
    @Test("copy-database: a used SQLite database lands whole in an empty PostgreSQL one, verified; a server on the copy signs its people in to the same portfolio and goes on trading", .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func copy() async throws {
        try await withTestApp(.sqlite) { client, env in
            let tokens = try await signUp(client, env, email: "mover@example.com", password: strongPassword)
            for (symbol, side, quantity) in [("AAPL", "BUY", "3"), ("MSFT", "BUY", "2.5"), ("AAPL", "SELL", "1")] {
                let placed = try await post(client, "/api/orders", ["symbol": symbol, "quantity": quantity, "side": side, "order_type": "MARKET"], headers: bearer(tokens))
                #expect(placed.status == .created, "\(String(buffer: placed.body))")
                await env.worker.drain()
            }
            let account = try await env.firstAccount().id.description
            let deposit = try await post(client, "/api/accounts/\(account)/deposits", ["amount": "1234.56"], headers: bearer(tokens))
            #expect(deposit.status == .created, "\(String(buffer: deposit.body))")
            let portfolio = try json(try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(tokens)))
            let orders = try await env.orders().count

            let folio = try FolioProcess()
            defer { folio.cleanUp() }
            let source = ["DATABASE_URL": env.configuration.database.databaseURL, "SECRET_KEY": env.configuration.secretKey]
            try await BackupTests.withEmptyTarget(.postgres) { target in
                // Refused before anything changes: another key than the one that signed the audit heads, a process still running.
                var wrongKey = source
                wrongKey["SECRET_KEY"] = String(repeating: "7f3a", count: 16)
                let refused = try await folio.run(["copy-database", "--into", target.databaseURL], environment: wrongKey)
                #expect(refused.status == 1)
                #expect(refused.stderr.contains("does not verify, so it is not copied"), "\(refused.stderr)")
                try await env.database.sql.raw("""
                    INSERT INTO instances (id, kind, started_at, heartbeat_at) VALUES ('still-here', 'worker', \(bind: Date()), \(bind: Date()))
                    """).run()
                let running = try await folio.run(["copy-database", "--into", target.databaseURL], environment: source)
                #expect(running.status == 1)
                #expect(running.stderr.contains("a folio worker still runs"), "\(running.stderr)")
                try await env.database.sql.raw("DELETE FROM instances WHERE id = 'still-here'").run()
                let untouched = try await Backups.withDatabase(target, logger: Logger(label: "test")) { try await $0.isEmpty() }
                #expect(untouched, "the refusals changed nothing")

                let copied = try await folio.run(["copy-database", "--into", target.databaseURL], environment: source)
                #expect(copied.status == 0, "\(copied.stdout)\(copied.stderr)")
                #expect(copied.stdout.contains("the copy's ledger and audit trail verify"), "\(copied.stdout)")
                let again = try await folio.run(["copy-database", "--into", target.databaseURL], environment: source)
                #expect(again.status == 1)
                #expect(again.stderr.contains("the target database is not empty"), "\(again.stderr)")

                // As production would run it: the same SECRET_KEY, the copy as its database.
                let environment = ProcessCrashTests().environment(target, ["SECRET_KEY": env.configuration.secretKey])
                let server = try await RunningFolio.serve(folio, environment: environment)
                defer { server.kill() }
                let http = HTTPCalls(baseURL: server.baseURL)
                let login = try await http.post("/api/auth/login", ["email": "mover@example.com", "password": strongPassword])
                #expect(login.status == 200, "\(login.text)")
                let bearer = ["Authorization": "Bearer \(login.json["access_token"] as? String ?? "")"]
                let copy = try await http.get("/api/portfolio", headers: bearer).json
                #expect(copy["cash"] as? String == portfolio["cash"] as? String)
                let holdings = { (value: [String: Any]) in
                    ((value["positions"] ?? value["holdings"]) as? [[String: Any]] ?? []).map { "\($0["symbol"] ?? "") \($0["quantity"] ?? "")" }.sorted()
                }
                #expect(holdings(copy) == holdings(portfolio) && !holdings(portfolio).isEmpty, "\(copy)")
                let listed = try await http.get("/api/orders?limit=200", headers: bearer).json["data"] as? [[String: Any]] ?? []
                #expect(listed.count == orders)
                // New money and new audit events carry on from the copied ones.
                #expect(try await http.post("/api/orders", ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer).status == 201)
                try await eventually("the new order filled") {
                    let all = try await http.get("/api/orders?limit=200", headers: bearer).json["data"] as? [[String: Any]] ?? []
                    return all.count == orders + 1 && all.allSatisfy { $0["status"] as? String == "filled" }
                }
                #expect(await server.terminate().status == 0)
                try await ProcessCrashTests().verifyBooks(folio, environment)
            }
        }
    }

    @Test("copied in pages of three rows, every value arrives as it was: money to the last place, flags, ids, times to the millisecond", .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func values() async throws {
        try await withTestApp(.sqlite) { client, env in
            let tokens = try await signUp(client, env, email: "values@example.com", password: strongPassword)
            for quantity in ["1", "0.333333333", "2.5"] {
                let placed = try await post(client, "/api/orders", ["symbol": "MSFT", "quantity": quantity, "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
                #expect(placed.status == .created, "\(String(buffer: placed.body))")
                await env.worker.drain()
            }
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"
            let preferences = try await client.execute(
                uri: "/api/notifications/preferences", method: .put, headers: headers,
                body: ByteBuffer(string: #"{"email": {"orders": false, "cash": true}}"#))
            #expect(preferences.status == .ok, "\(String(buffer: preferences.body))")
            // What each side holds, as text both databases print alike.
            let queries = [
                "SELECT CAST(cash AS TEXT) AS a, CAST(id AS TEXT) AS b FROM accounts",
                "SELECT CAST(quantity AS TEXT) AS a, CAST(cost_basis AS TEXT) AS b FROM holdings",
                "SELECT CAST(amount AS TEXT) AS a, type AS b FROM transactions",
                "SELECT CAST(quantity AS TEXT) AS a, CAST(price AS TEXT) AS b FROM fills",
                "SELECT category AS a, CASE WHEN email THEN 'yes' ELSE 'no' END AS b FROM notification_preferences",
            ]
            func rows(_ sql: any SQLDatabase, _ query: String) async throws -> [String] {
                try await sql.raw(SQLQueryString(query)).all().map { "\(try $0.decode(column: "a", as: String.self)) \(try $0.decode(column: "b", as: String.self))" }.sorted()
            }
            func normalized(_ text: String) -> String {
                // NUMERIC prints its scale's zeros and uuid its lower case; SQLite prints what was written.
                text.split(separator: " ").map { word in (try? Quantity(parsing: String(word)))?.description ?? word.lowercased() }.joined(separator: " ")
            }
            var before: [[String]] = []
            for query in queries { before.append(try await rows(env.database.sql, query).map(normalized)) }
            let times = try await env.database.sql.raw("SELECT occurred_at FROM audit_events").all().map { try $0.decode(column: "occurred_at", as: Date.self) }

            try await BackupTests.withEmptyTarget(.postgres) { target in
                let copied = try await DatabaseCopy.copy(
                    from: env.configuration.database, into: target, configuration: env.configuration, logger: Logger(label: "test"), pageSize: 3)
                #expect((copied.first { $0.table == "audit_events" }?.rows ?? 0) > 3, "more rows than one page")
                try await Backups.withDatabase(target, logger: Logger(label: "test")) { copy in
                    for (index, query) in queries.enumerated() {
                        let after = try await rows(copy.sql, query).map(normalized)
                        #expect(after == before[index] && !after.isEmpty, "\(query): \(before[index]) became \(after)")
                    }
                    let copiedTimes = try await copy.sql.raw("SELECT occurred_at FROM audit_events").all().map { try $0.decode(column: "occurred_at", as: Date.self) }
                    let milliseconds = { (dates: [Date]) in dates.map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }.sorted() }
                    #expect(milliseconds(copiedTimes) == milliseconds(times))
                }
            }
        }
    }

    @Test("an empty PostgreSQL database has no table in any schema: another application's table in a schema of its own, or a view, makes it not empty (a restore or a copy is refused); an extension's own do not", .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func emptyMeansNoSchemaHoldsATable() async throws {
        for statements in [
            ["CREATE SCHEMA app", "CREATE TABLE app.precious (x int)"],
            ["CREATE VIEW answer AS SELECT 42 AS x"],
            ["CREATE SEQUENCE numbers"],
        ] {
            try await withTestDatabase(.postgres, migrated: false) { database, _ in
                #expect(try await database.isEmpty(), "a new database is empty")
                for statement in statements { try await database.sql.raw(SQLQueryString(statement)).run() }
                #expect(try await !database.isEmpty(), "\(statements)")
            }
        }
        // An extension's own relations (pg_buffercache's view, as a template database may hold) are no one's data.
        try await withTestDatabase(.postgres, migrated: false) { database, _ in
            try await database.sql.raw("CREATE EXTENSION pg_buffercache").run()
            #expect(try await database.isEmpty())
        }
    }

    @Test("the tables are copied parents first; a cycle is refused")
    func order() throws {
        let ordered = try DatabaseCopy.parentsFirst(["fills", "orders", "accounts", "users"], parents: ["fills": ["orders"], "orders": ["accounts", "users"], "accounts": ["users"]])
        #expect(ordered == ["users", "accounts", "orders", "fills"])
        #expect(throws: DatabaseCopy.Failure.self) { try DatabaseCopy.parentsFirst(["a", "b"], parents: ["a": ["b"], "b": ["a"]]) }
    }

    @Test("money with more places than its PostgreSQL column keeps is refused, never rounded")
    func scale() {
        #expect(DatabaseCopy.fits("1234.5600", scale: 4))
        #expect(DatabaseCopy.fits("-2", scale: 2))
        #expect(DatabaseCopy.fits("0.1000000000", scale: 4))
        #expect(!DatabaseCopy.fits("0.00001", scale: 4))
        #expect(!DatabaseCopy.fits("10.123456789", scale: 8))
    }
}
