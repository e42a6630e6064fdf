import Foundation
import Testing

@testable import FolioServer

/// `folio serve` behind PgBouncer in transaction mode (Debian's 1.18, which
/// cannot keep prepared statements), started by `.ci/run` in front of the
/// test cluster and named by `FOLIO_TEST_POOLER_URL`.
@Suite("Behind a connection pooler", .serialized)
struct PoolerTests {
    static let pooler = ProcessInfo.processInfo.environment["FOLIO_TEST_POOLER_URL"]
    static let inCI = ProcessInfo.processInfo.environment["CI"] != nil

    /// The test database's URL, through the pooler (which serves every database of the cluster).
    static func throughPooler(_ location: AppConfiguration.DatabaseLocation) throws -> String {
        let pooler = try #require(Self.pooler.flatMap(URLComponents.init(string:)), "CI starts PgBouncer and sets FOLIO_TEST_POOLER_URL")
        var url = try #require(URLComponents(string: location.databaseURL))
        url.host = pooler.host
        url.port = pooler.port
        return try #require(url.string)
    }

    /// Orders from `people` people at once (market buys the paper broker fills), with portfolio reads among them; every status.
    static func trade(_ http: HTTPCalls, _ people: [[String: String]], orders: Int) async -> [Int] {
        await withTaskGroup(of: Int.self) { group in
            for (index, headers) in people.enumerated() {
                for order in 0..<orders {
                    group.addTask {
                        let symbol = ["AAPL", "MSFT", "KO"][(index + order) % 3]
                        let body: [String: Any] = ["symbol": symbol, "quantity": "1", "side": "BUY", "order_type": "MARKET"]
                        return (try? await http.post("/api/orders", body, headers: headers).status) ?? 0
                    }
                    group.addTask { (try? await http.get("/api/portfolio", headers: headers).status) ?? 0 }
                }
            }
            return await group.reduce(into: [Int]()) { $0.append($1) }
        }
    }

    static func everyOrderFilled(_ http: HTTPCalls, _ people: [[String: String]], count: Int) async throws {
        try await eventually("every order filled") {
            for headers in people {
                let listed = try await http.get("/api/orders?limit=200", headers: headers).json["data"] as? [[String: Any]] ?? []
                guard listed.count == count, listed.allSatisfy({ $0["status"] as? String == "filled" }) else { return false }
            }
            return true
        }
    }

    @Test("with DATABASE_PREPARED_STATEMENTS=false, orders, fills, reads and the job queue work through PgBouncer in transaction mode; the books verify through it", .enabled(if: pooler != nil || inCI))
    func unprepared() async throws {
        try await withTestDatabase(.postgres) { _, location in
            let folio = try FolioProcess()
            defer { folio.cleanUp() }
            let environment = ProcessCrashTests().environment(location, ["DATABASE_URL": try Self.throughPooler(location), "DATABASE_PREPARED_STATEMENTS": "false"])
            let server = try await RunningFolio.serve(folio, environment: environment)
            defer { server.kill() }
            let http = HTTPCalls(baseURL: server.baseURL)
            var people: [[String: String]] = []
            for person in 0..<4 { people.append(try await http.signIn("pooled-\(person)@example.com")) }
            let statuses = await Self.trade(http, people, orders: 10)
            #expect(statuses.allSatisfy { $0 == 201 || $0 == 200 }, "\(statuses.sorted())")
            try await Self.everyOrderFilled(http, people, count: 10)
            #expect(await server.terminate().status == 0)
            try await ProcessCrashTests().verifyBooks(folio, environment)
            let errors = server.stdout.lines.filter { $0.contains("\"level\":\"error\"") }
            #expect(errors.isEmpty, "\(errors.prefix(3))")
        }
    }

    @Test("with prepared statements left on, the pooler's first \"does not exist\" or \"already exists\" stops all preparing, with one error line naming the setting; then every request succeeds", .enabled(if: pooler != nil || inCI))
    func detected() async throws {
        try await withTestDatabase(.postgres) { _, location in
            let folio = try FolioProcess()
            defer { folio.cleanUp() }
            let environment = ProcessCrashTests().environment(location, ["DATABASE_URL": try Self.throughPooler(location)])
            let server = try await RunningFolio.serve(folio, environment: environment)
            defer { server.kill() }
            let http = HTTPCalls(baseURL: server.baseURL)
            var people: [[String: String]] = []
            for person in 0..<4 { people.append(try await http.signIn("prepared-\(person)@example.com")) }
            let warning = "DATABASE_PREPARED_STATEMENTS=false"
            // The job worker's claims usually show it at once; traffic until it has.
            var placed = 0
            try await eventually("the pooler detected") {
                if server.stdout.lines.contains(where: { $0.contains(warning) }) { return true }
                placed += await Self.trade(http, people, orders: 2).count(where: { $0 == 201 })
                return false
            }
            // From now on nothing is prepared: every request succeeds.
            let statuses = await Self.trade(http, people, orders: 10)
            #expect(statuses.allSatisfy { $0 == 201 || $0 == 200 }, "\(statuses.sorted())")
            try await eventually("every order filled") {
                var orders: [[String: Any]] = []
                for headers in people { orders += try await http.get("/api/orders?limit=200", headers: headers).json["data"] as? [[String: Any]] ?? [] }
                // At least those answered 201 (one answered 500 after its commit would be there too).
                return orders.count >= placed + 40 && orders.allSatisfy { $0["status"] as? String == "filled" }
            }
            #expect(await server.terminate().status == 0)
            #expect(server.stdout.lines.count(where: { $0.contains(warning) }) == 1)
            // Verified on a direct connection: a command behind this pooler needs the setting too.
            try await ProcessCrashTests().verifyBooks(folio, environment.merging(["DATABASE_URL": location.databaseURL]) { _, new in new })
        }
    }
}
