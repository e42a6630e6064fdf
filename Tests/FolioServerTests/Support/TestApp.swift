import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers
import SQLKit
import Testing

@testable import FolioServer

/// A JSON route for exercising the error contract the way every feature route decodes.
struct EchoOrder: Codable, ResponseEncodable {
    var symbol: String
    var quantity: Quantity
    var note: String?
}

/// Runs `body` against Folio's whole router, in process, on a fresh database
/// of `kind`. The services are built from `FolioDependencies` as `serve`
/// builds them; `dependencies` replaces parts (a broker, the ids) first.
func withTestApp(
    _ kind: TestDatabaseKind,
    migrated: Bool = true,
    clock: TestClock = TestClock(),
    configure: (inout AppConfiguration) -> Void = { _ in },
    dependencies: (inout FolioDependencies) -> Void = { _ in },
    logs: LogCapture = LogCapture(),
    overSocket: Bool = false,
    routes extraRoutes: (RecordingRouter<FolioRequestContext>, FolioServices) -> Void = { _, _ in },
    _ body: @escaping @Sendable (any TestClientProtocol, TestEnvironment) async throws -> Void
) async throws {
    try await withTestDatabase(kind, migrated: migrated) { database, location in
        var configuration = AppConfiguration(environment: .testing, database: location)
        // Fast hashing (bcrypt's least cost) and generous limits; tests of those features set their own.
        configuration.bcryptCost = 4
        configuration.rateLimit = .init(enabled: true, requestsPerMinute: 100_000, authRequestsPerMinute: 100_000)
        configuration.allowedOrigins = ["https://app.example.com"]
        configure(&configuration)
        TestLogArchive.recordSecrets(configuration.secretValues)
        let logger = logs.logger(level: configuration.logLevel)
        var folio = FolioDependencies.live(configuration: configuration, logger: logger, database: database, clock: clock.clock)
        folio.instance = "test-\(UUID().uuidString.prefix(8).lowercased())"
        dependencies(&folio)
        let services = await FolioServices(folio)
        let router = services.buildRouter { routes in
            routes.post("/api/test/echo") { request, context in
                try await request.decodeBody(as: EchoOrder.self, context: context)
            }
            routes.get("/api/test/boom") { _, _ -> String in
                throw TestDatabaseError(description: "secret internal detail: SELECT * FROM users")
            }
            extraRoutes(routes, services)
        }
        let environment = TestEnvironment(logs: logs, services: services, clock: clock)
        if overSocket {
            // The server as `serve` runs it (connection guard and all) on a free loopback port: `client.port` names it.
            let app = Application(
                router: router, server: try services.serverBuilder(),
                configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: logger)
            try await app.test(.live) { client in try await settled(services) { try await body(client, environment) } }
        } else {
            let app = Application(router: router, logger: logger)
            try await app.test(.router) { client in try await settled(services) { try await body(client, environment) } }
        }
    }
}

/// Runs `body`, then waits for the quote refreshes it left running in the background (as `serve` does at
/// shutdown), so none reaches the database after the test closed it.
private func settled(_ services: FolioServices, _ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch {
        await services.quotes.settle()
        throw error
    }
    await services.quotes.settle()
}

/// What a test can reach besides the HTTP client.
struct TestEnvironment: Sendable {
    let logs: LogCapture
    let services: FolioServices
    let clock: TestClock

    var database: FolioDatabase { services.database }
    var configuration: AppConfiguration { services.configuration }

    /// Waits until a statement whose text holds `fragment` waits for a lock
    /// (PostgreSQL), polled on a connection of its own: the app's pool may be
    /// held by the very transactions being watched. Only this test's database
    /// counts: the tests running beside it wait for locks of their own.
    func eventuallyWaitingForLock(_ what: String, statementHolding fragment: String) async throws {
        guard case .postgres(let url) = configuration.database else { return }
        let watcher = try FolioDatabase(location: .postgres(url: url), poolSize: 1, preparedStatements: false, logger: Logger(label: "lock-watcher"))
        do {
            try await eventually(what) {
                let waiting = try await watcher.sql.raw("""
                    SELECT COUNT(*) AS n FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' AND query LIKE \(bind: "%" + fragment + "%")
                    """).first()?.decode(column: "n", as: Int.self)
                return (waiting ?? 0) > 0
            }
        } catch {
            await watcher.shutdown()
            throw error
        }
        await watcher.shutdown()
    }
    /// The job worker; tests drain it to let submitted orders reach the broker.
    var worker: JobWorker { services.worker }
    var orders: OrderService { services.orders }
    var store: TradingStore { services.store }

    // MARK: - The books, read through the store

    func accounts() async throws -> [AccountRecord] {
        try await store.allAccounts(on: database.sql)
    }

    func firstAccount() async throws -> AccountRecord {
        try #require(try await accounts().first)
    }

    func holdings() async throws -> [HoldingState] {
        var all: [HoldingState] = []
        for account in try await accounts() { all += try await store.holdings(of: account.id) }
        return all
    }

    func holding(_ symbol: String) async throws -> HoldingState? {
        try await holdings().first { $0.symbol == symbol }
    }

    func orders() async throws -> [OrderState] {
        try await database.sql.raw("SELECT \(unsafeRaw: TradingStore.orderColumns) FROM orders ORDER BY created_at, id").all().map(TradingStore.order)
    }

    func order(_ id: OrderID) async throws -> OrderState {
        try #require(try await store.order(id))
    }

    func fills() async throws -> [FillLine] {
        var all: [FillLine] = []
        for order in try await orders() { all += try await store.fills(of: order.id) }
        return all
    }

    func entries(_ kind: LedgerKind? = nil) async throws -> [LedgerLine] {
        var all: [LedgerLine] = []
        for account in try await accounts() { all += try await store.entries(of: account.id).map(\.line) }
        return kind.map { kind in all.filter { $0.kind == kind } } ?? all
    }

    /// Every job but mail's (the mail tests look at those themselves).
    func jobs(includingMail: Bool = false) async throws -> [JobQueue.Row] {
        try await services.jobs.all().filter { includingMail || $0.kind != JobPayload.Kind.sendMail.rawValue }
    }

    /// Sends the mail waiting in the queue, as the worker would; other jobs stay queued.
    func deliverMail() async {
        await services.mailWorker.drain()
    }

    /// The development outbox's messages of one kind, once queued mail is sent.
    func outbox(kind: String) async throws -> [OutboxMessage] {
        await deliverMail()
        return try await OutboxMessage.query(on: database.db).filter(\.$kind == kind).sort(\.$createdAt).all()
    }

    func ledgerDifferences() async throws -> [LedgerVerifier.Difference] {
        try await LedgerVerifier(services: services).verify().differences
    }

    func auditBreak() async throws -> String? {
        try await AuditVerifier(services: services).verify().firstBreak
    }

    /// The books balance and the audit trail is intact.
    func expectConsistent(_ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let differences = try await ledgerDifferences()
        #expect(differences.isEmpty, "\(comment?.rawValue ?? ""): \(differences)", sourceLocation: sourceLocation)
        let broken = try await auditBreak()
        #expect(broken == nil, "\(comment?.rawValue ?? ""): \(broken ?? "")", sourceLocation: sourceLocation)
    }
}

/// A clock the test moves by hand. It starts at a fixed instant, never at
/// the real time, so no test depends on when it runs.
final class TestClock: Sendable {
    private let box: NIOLockedValueBox<Date>

    /// Tuesday 2026-11-24, 10:30 in New York: a trading day, mid-session.
    static let tuesdayMorning = Date(timeIntervalSince1970: 1_795_534_200)

    init(start: Date = TestClock.tuesdayMorning) {
        box = NIOLockedValueBox(start)
    }

    var clock: AppClock {
        let box = self.box
        return AppClock { box.withLockedValue { $0 } }
    }

    var now: Date { box.withLockedValue { $0 } }

    func advance(by seconds: TimeInterval) {
        box.withLockedValue { $0 = $0.addingTimeInterval(seconds) }
    }
}

/// Counts ids from a seed, so two runs of a test make the same ids.
final class CountingIDs: Sendable {
    private let next = NIOLockedValueBox<UInt64>(0)
    let seed: UInt64

    init(seed: UInt64) {
        self.seed = seed
    }

    var source: IDSource {
        IDSource { [self] in
            let count = next.withLockedValue { value -> UInt64 in
                value += 1
                return value
            }
            var bytes = [UInt8](repeating: 0, count: 16)
            for index in 0..<8 { bytes[index] = UInt8(truncatingIfNeeded: seed >> (8 * (7 - index))) }
            for index in 0..<8 { bytes[8 + index] = UInt8(truncatingIfNeeded: count >> (8 * (7 - index))) }
            bytes[6] = (bytes[6] & 0x0f) | 0x40
            bytes[8] = (bytes[8] & 0x3f) | 0x80
            return UUID(uuid: (bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                               bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]))
        }
    }
}

struct Problem: Decodable {
    var type: String
    var title: String
    var status: Int
    var detail: String
    var code: String
    var errors: [ProblemDetails.FieldError]?
    var request_id: String
    var checks: [String: String]?
}

func problem(_ response: TestResponse, sourceLocation: SourceLocation = #_sourceLocation) throws -> Problem {
    #expect(response.headers[.contentType] == "application/problem+json", sourceLocation: sourceLocation)
    return try JSONDecoder().decode(Problem.self, from: Data(buffer: response.body))
}

/// `withTestApp` on each database in turn, for tests whose arguments are
/// something else (a table of inputs); each run gets a fresh clock.
func withTestAppOnEachDatabase(
    configure: (inout AppConfiguration) -> Void = { _ in },
    _ body: @escaping @Sendable (any TestClientProtocol, TestEnvironment) async throws -> Void
) async throws {
    for kind in TestDatabaseKind.all {
        try await withTestApp(kind, configure: configure, body)
    }
}
