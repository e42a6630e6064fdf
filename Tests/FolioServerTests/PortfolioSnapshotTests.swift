import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOConcurrencyHelpers
import Testing

@testable import FolioServer

@Suite("Portfolio history and recurring jobs")
struct PortfolioSnapshotTests {
    /// Monday 23 November 2026, 10:00 in New York.
    static let monday = try! Date("2026-11-23T15:00:00Z", strategy: .iso8601)

    /// Long sessions: these tests move the clock by days.
    static func longSessions(_ configuration: inout AppConfiguration) {
        configuration.accessTokenLifetime = 30 * 86_400
        configuration.sessionIdleTimeout = 30 * 86_400
        configuration.sessionMaxAge = 30 * 86_400
    }

    func close(of symbol: String, on day: TradingDay, now: Date) throws -> Price {
        try #require(SimulatedMarket().dailyCloses(of: symbol, days: 30, before: now).first { TradingDay($0.date, in: .gmt) == day }?.close)
    }

    @Test("history backfills past days from the ledger and daily closes; the close snapshot job replaces today's provisional point", arguments: TestDatabaseKind.all)
    func history(kind: TestDatabaseKind) async throws {
        let clock = TestClock(start: Self.monday)
        try await withTestApp(kind, clock: clock, configure: Self.longSessions) { client, env in
            let tokens = try await signUp(client, env, email: "history@example.com")
            let placed = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "2", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
            #expect(placed.status == .created)
            await env.worker.drain()
            let cashAfterBuy = try await env.firstAccount().cash

            // Thursday morning: Monday to Wednesday are backfilled, Thursday is provisional.
            clock.advance(by: 3 * 86_400)
            let response = try await client.execute(uri: "/api/portfolio/history?range=1M", method: .get, headers: bearer(tokens))
            #expect(response.status == .ok)
            let body = try json(response)
            #expect(body["range"] as? String == "1M")
            #expect(body["complete"] as? Bool == true)
            let points = try #require(body["data"] as? [[String: Any]])
            #expect(points.map { $0["date"] as? String } == ["2026-11-23", "2026-11-24", "2026-11-25", "2026-11-26"])
            #expect(points.map { $0["provisional"] as? Bool } == [false, false, false, true])
            for point in points.prefix(3) {
                let day = try #require(TradingDay(point["date"] as! String))
                let marketValue = try Money.value(quantity: 2, price: try close(of: "AAPL", on: day, now: clock.now))
                #expect(point["cash"] as? String == cashAfterBuy.description)
                #expect(point["market_value"] as? String == marketValue.description)
                #expect(point["total_value"] as? String == (try cashAfterBuy + marketValue).description)
            }

            // The schedule is created at its next time and enqueues the job once, after 16:10 New York.
            try await env.worker.onIdle?()
            await env.worker.drain()
            clock.advance(by: 6 * 3600 + 15 * 60)
            try await env.worker.onIdle?()
            try await env.worker.onIdle?()
            #expect(try await env.jobs().filter { $0.kind == "snapshot_portfolios" }.count == 1)
            await env.worker.drain()
            let after = try json(try await client.execute(uri: "/api/portfolio/history?range=1M", method: .get, headers: bearer(tokens)))
            let thursday = try #require((after["data"] as? [[String: Any]])?.last)
            #expect(thursday["date"] as? String == "2026-11-26")
            #expect(thursday["provisional"] as? Bool == false)
            let live = try Money.value(quantity: 2, price: try #require(SimulatedMarket().price(of: "AAPL", at: clock.now)))
            #expect(thursday["market_value"] as? String == live.description)

            // Saturday: Friday's missed run is enqueued once and values Friday at its close (a past day).
            clock.advance(by: 2 * 86_400)
            try await env.worker.onIdle?()
            try await env.worker.onIdle?()
            #expect(try await env.jobs().filter { $0.kind == "snapshot_portfolios" }.count == 2)
            await env.worker.drain()
            let friday = try #require(TradingDay("2026-11-27"))
            let stored = try await env.database.sql.select().column("market_value").from("portfolio_snapshots").where("day", .equal, "2026-11-27")
                .first(decodingColumn: "market_value", as: Cash.self)
            #expect(stored == (try Money.value(quantity: 2, price: try close(of: "AAPL", on: friday, now: clock.now))))
            let weekend = try json(try await client.execute(uri: "/api/portfolio/history?range=ALL", method: .get, headers: bearer(tokens)))
            #expect((weekend["data"] as? [[String: Any]])?.last?["date"] as? String == "2026-11-27")

            let bad = try await client.execute(uri: "/api/portfolio/history?range=2W", method: .get, headers: bearer(tokens))
            #expect(bad.status == .unprocessableContent)
            #expect(try problem(bad).errors?.first?.field == "range")
        }
    }

    @Test("a backfill leaves out the days its daily closes do not reach (no value at cost kept for good), and only a range that reaches them is incomplete", arguments: TestDatabaseKind.all)
    func backfillBeyondTheCloses(kind: TestDatabaseKind) async throws {
        let clock = TestClock(start: Self.monday)
        try await withTestApp(kind, clock: clock, configure: { configuration in
            configuration.accessTokenLifetime = 500 * 86_400
            configuration.sessionIdleTimeout = 500 * 86_400
            configuration.sessionMaxAge = 500 * 86_400
        }) { client, env in
            let tokens = try await signUp(client, env, email: "old-account@example.com")
            #expect(try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "2", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens)).status == .created)
            await env.worker.drain()
            // Tuesday 28 December 2027: the year of daily closes a backfill asks for starts on Monday 28 December 2026.
            clock.advance(by: 400 * 86_400)
            let firstClose = "2026-12-28"

            let all = try json(try await client.execute(uri: "/api/portfolio/history?range=ALL", method: .get, headers: bearer(tokens)))
            #expect(all["complete"] as? Bool == false, "\(all)")
            let dates = try #require(all["data"] as? [[String: Any]]).compactMap { $0["date"] as? String }
            #expect(dates.first == firstClose, "\(dates.prefix(3))")
            let stored = try await env.database.sql.select().column("day").from("portfolio_snapshots").all(decodingColumn: "day", as: String.self)
            #expect(!stored.isEmpty && stored.allSatisfy { $0 >= firstClose }, "\(stored.sorted().prefix(3))")
            let firstDay = try #require(TradingDay(firstClose))
            let point = try #require((all["data"] as? [[String: Any]])?.first)
            #expect(point["market_value"] as? String == (try Money.value(quantity: 2, price: try #require(
                SimulatedMarket().dailyCloses(of: "AAPL", days: 400, before: clock.now).first { TradingDay($0.date, in: .gmt) == firstDay }?.close))).description)

            let month = try json(try await client.execute(uri: "/api/portfolio/history?range=1M", method: .get, headers: bearer(tokens)))
            #expect(month["complete"] as? Bool == true, "\(month)")
            let performanceAll = try json(try await client.execute(uri: "/api/portfolio/performance?range=ALL", method: .get, headers: bearer(tokens)))
            #expect(performanceAll["complete"] as? Bool == false, "\(performanceAll)")
            #expect(performanceAll["from"] as? String == firstClose, "\(performanceAll)")
            let performanceMonth = try json(try await client.execute(uri: "/api/portfolio/performance?range=1M", method: .get, headers: bearer(tokens)))
            #expect(performanceMonth["complete"] as? Bool == true, "\(performanceMonth)")
        }
    }

    @Test("an account opened on a weekend shows what it holds now in its history and performance, before its first close", arguments: TestDatabaseKind.all)
    func openedOnAWeekend(kind: TestDatabaseKind) async throws {
        // Saturday 28 November 2026, 10:00 in New York: the last close (Friday's) was before the account existed.
        let clock = TestClock(start: try Date("2026-11-28T15:00:00Z", strategy: .iso8601))
        try await withTestApp(kind, clock: clock, configure: Self.longSessions) { client, env in
            let tokens = try await signUp(client, env, email: "weekend@example.com")
            let placed = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "2", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
            #expect(placed.status == .created)
            await env.worker.drain()
            let account = try await env.firstAccount()
            let marketValue = try Money.value(quantity: 2, price: try #require(SimulatedMarket().price(of: "AAPL", at: clock.now)))

            let history = try json(try await client.execute(uri: "/api/portfolio/history?range=1M", method: .get, headers: bearer(tokens)))
            let points = try #require(history["data"] as? [[String: Any]])
            #expect(points.map { $0["date"] as? String } == ["2026-11-28"], "\(history)")
            #expect(points.first?["provisional"] as? Bool == true)
            #expect(points.first?["total_value"] as? String == (try account.cash + marketValue).description)

            let performance = try json(try await client.execute(uri: "/api/portfolio/performance?range=1M", method: .get, headers: bearer(tokens)))
            #expect(performance["from"] as? String == "2026-11-28" && performance["to"] as? String == "2026-11-28", "\(performance)")
            #expect(performance["start_value"] as? String == "0.00" && performance["deposits"] as? String == env.configuration.startingCash.description, "\(performance)")

            // Monday: no close was made for the weekend; Monday is the provisional point.
            clock.advance(by: 2 * 86_400)
            let monday = try json(try await client.execute(uri: "/api/portfolio/history?range=1M", method: .get, headers: bearer(tokens)))
            #expect((monday["data"] as? [[String: Any]])?.map { $0["date"] as? String } == ["2026-11-30"], "\(monday)")
        }
    }

    @Test("the year-to-date history starts at the last close of the year before, as the year-to-date return does; the dashboard offers it", arguments: TestDatabaseKind.all)
    func yearToDateHistory(kind: TestDatabaseKind) async throws {
        // Monday 29 December 2025, 10:00 in New York.
        let clock = TestClock(start: try Date("2025-12-29T15:00:00Z", strategy: .iso8601))
        try await withTestApp(kind, clock: clock, configure: Self.longSessions) { client, env in
            let tokens = try await signUp(client, env, email: "ytd@example.com")
            #expect(try await post(client, "/api/orders", ["symbol": "MSFT", "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens)).status == .created)
            await env.worker.drain()
            // Tuesday 6 January 2026.
            clock.advance(by: 8 * 86_400)
            func dates(_ range: String) async throws -> [String] {
                let body = try json(try await client.execute(uri: "/api/portfolio/history?range=\(range)", method: .get, headers: bearer(tokens)))
                #expect(body["range"] as? String == range.uppercased())
                return try #require(body["data"] as? [[String: Any]]).compactMap { $0["date"] as? String }
            }
            #expect(try await dates("ytd") == ["2025-12-31", "2026-01-01", "2026-01-02", "2026-01-05", "2026-01-06"])
            #expect(try await dates("1M").first == "2025-12-29")
            let performance = try json(try await client.execute(uri: "/api/portfolio/performance?range=YTD", method: .get, headers: bearer(tokens)))
            #expect(performance["from"] as? String == "2025-12-31", "the chart and the return start at the same close")
            let session = try await post(client, "/api/auth/login", ["email": "ytd@example.com", "password": strongPassword, "session": "cookie"])
            let cookie: HTTPFields = [.cookie: String(try #require(session.headers[.setCookie]).split(separator: ";")[0])]
            let page = String(buffer: try await client.execute(uri: "/?range=YTD", method: .get, headers: cookie).body)
            #expect(page.contains(#"<a href="/?range=YTD" aria-current="true">YTD</a>"#), "\(page.prefix(0))")
            #expect(page.contains("Total value over the year to date"))
        }
    }

    @Test("a late close run goes on past an account whose closes cannot be had, backfills the others, and fails so it is tried again", arguments: TestDatabaseKind.all)
    func lateRunPastAFailure(kind: TestDatabaseKind) async throws {
        let clock = TestClock(start: Self.monday)
        let market = ClosesFailing(clock: clock.clock)
        try await withTestApp(kind, clock: clock, configure: Self.longSessions, dependencies: { $0.marketData = market }) { client, env in
            // Two people: the first (by account id, the order the job goes in) holds the symbol whose closes fail.
            let first = try await signUp(client, env, email: "first@example.com")
            let second = try await signUp(client, env, email: "second@example.com")
            let accounts = try await env.accounts().sorted { $0.id.uuid.uuidString < $1.id.uuid.uuidString }
            let owners = try await env.database.sql.raw("SELECT id, email FROM users").all().reduce(into: [UUID: String]()) {
                $0[try $1.decode(column: "id", as: UUID.self)] = try $1.decode(column: "email", as: String.self)
            }
            let failing = accounts[0], healthy = accounts[1]
            let tokens = owners[failing.userID.uuid] == "first@example.com" ? (first, second) : (second, first)
            for (who, symbol) in [(tokens.0, "MSFT"), (tokens.1, "AAPL")] {
                let placed = try await post(client, "/api/orders", ["symbol": symbol, "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(who))
                #expect(placed.status == .created)
            }
            await env.worker.drain()

            // Wednesday: Tuesday's run was missed, so Tuesday is backfilled from daily closes; MSFT's cannot be had.
            clock.advance(by: 2 * 86_400)
            market.failing.withLockedValue { $0 = ["MSFT"] }
            let tuesday = try #require(TradingDay("2026-11-24"))
            await #expect(throws: (any Error).self) { try await env.services.snapshots.snapshotAll(day: tuesday) }
            func days(_ account: AccountRecord) async throws -> [String] {
                try await env.database.sql.raw("SELECT day FROM portfolio_snapshots WHERE account_id = \(bind: account.id) ORDER BY day").all()
                    .map { try $0.decode(column: "day", as: String.self) }
            }
            #expect(try await days(healthy) == ["2026-11-23", "2026-11-24"], "the account after the failing one is backfilled")
            #expect(try await days(failing).isEmpty)
            #expect(env.logs.lines.contains { $0.contains("could not be backfilled") })
            // Tried again once the closes can be had: the failing account catches up.
            market.failing.withLockedValue { $0 = [] }
            try await env.services.snapshots.snapshotAll(day: tuesday)
            #expect(try await days(failing) == ["2026-11-23", "2026-11-24"])
        }
    }

    @Test("a close run whose prices are stale writes no close for that account (it would stay for good); the day is backfilled when the history is read", arguments: TestDatabaseKind.all)
    func staleCloseIsLeftToTheBackfill(kind: TestDatabaseKind) async throws {
        let clock = TestClock(start: Self.monday)
        let board = PriceBoard(clock: clock, ["AAPL": "100"])
        try await withTestApp(kind, clock: clock, configure: { $0.quoteTimeToLive = 1; Self.longSessions(&$0) }, dependencies: { $0.marketData = board }) { client, env in
            let tokens = try await signUp(client, env, email: "stale-close@example.com")
            let placed = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "2", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
            #expect(placed.status == .created)
            await env.worker.drain()
            // After the close the vendor fails: the only price is the morning's, marked stale.
            clock.advance(by: 8 * 3600)
            board.set("AAPL", "120")
            board.failing.withLockedValue { $0 = true }
            let monday = TradingDay(clock.now)
            try await env.services.snapshots.snapshotAll(day: monday)
            let closes = try await env.database.sql.raw("SELECT COUNT(*) AS n FROM portfolio_snapshots WHERE source = 'close'").first(decodingColumn: "n", as: Int.self)
            #expect(closes == 0, "no close at a stale price")
            // Tuesday, the vendor back: reading the history backfills Monday (no daily closes here: the last trade's price).
            board.failing.withLockedValue { $0 = false }
            clock.advance(by: 86_400)
            let history = try json(try await client.execute(uri: "/api/portfolio/history?range=1M", method: .get, headers: bearer(tokens)))
            let first = try #require((history["data"] as? [[String: Any]])?.first)
            #expect(first["date"] as? String == monday.description)
            #expect(first["provisional"] as? Bool == false)
            let source = try await env.database.sql.raw("SELECT source FROM portfolio_snapshots WHERE day = \(bind: monday.description)").first(decodingColumn: "source", as: String.self)
            #expect(source == "backfill")
        }
    }

    @Test("many workers asking at once enqueue a due schedule exactly once", arguments: TestDatabaseKind.all)
    func scheduleOnce(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind) { database, _ in
            let clock = TestClock(start: Self.monday)
            let schedule = RecurringJob(name: "every_minute", kind: .logAuditHeads, cadence: .every(60), payload: { _ in .logAuditHeads })
            let schedulers = (0..<8).map { index in
                JobScheduler(database: database, queue: JobQueue(database: database, clock: clock.clock, ids: .random, instance: "scheduler-\(index)"), schedules: [schedule])
            }
            #expect(try await schedulers[0].enqueueDue().isEmpty, "a new schedule waits for its first time")
            for round in 1...3 {
                clock.advance(by: 61)
                let enqueued = try await withThrowingTaskGroup(of: [String].self) { group in
                    for scheduler in schedulers { group.addTask { try await scheduler.enqueueDue() } }
                    return try await group.reduce(into: [String]()) { $0 += $1 }
                }
                #expect(enqueued == ["every_minute"])
                #expect(try await JobQueue(database: database, clock: clock.clock, ids: .random, instance: "reader").all().count == round)
            }
        }
    }

    @Test("weekday schedules skip weekends and keep New York time across daylight saving")
    func weekdayCadence() throws {
        let schedule = RecurringJob(name: "close", kind: .snapshotPortfolios, cadence: .weekdaysAt(hour: 16, minute: 10), payload: { .snapshotPortfolios(due: $0) })
        let friday = try Date("2026-11-27T21:30:00Z", strategy: .iso8601)  // 16:30 New York
        #expect(schedule.nextRun(after: friday) == (try Date("2026-11-30T21:10:00Z", strategy: .iso8601)))
        let beforeSummer = try Date("2026-03-06T22:00:00Z", strategy: .iso8601)  // Friday 17:00 EST
        #expect(schedule.nextRun(after: beforeSummer) == (try Date("2026-03-09T20:10:00Z", strategy: .iso8601)), "Monday 16:10 EDT")
    }
}

/// The simulated market, except that the daily closes of the symbols in `failing` cannot be had.
final class ClosesFailing: MarketDataProvider {
    let base: SimulatedMarketDataProvider
    let failing = NIOLockedValueBox<Set<String>>([])
    var name: String { "simulated" }

    struct Unavailable: Error {}

    init(clock: AppClock) {
        base = SimulatedMarketDataProvider(market: SimulatedMarket(), clock: clock)
    }

    func quote(for symbol: String) async throws -> PriceQuote? { try await base.quote(for: symbol) }
    func search(_ query: String) async throws -> [SymbolMatch] { try await base.search(query) }
    func dailyHistory(for symbol: String, days: Int) async throws -> [DailyClose] {
        if failing.withLockedValue({ $0.contains(symbol) }) { throw Unavailable() }
        return try await base.dailyHistory(for: symbol, days: days)
    }

    func previousCloseTime(at date: Date, calendar: MarketCalendar) -> Date { base.previousCloseTime(at: date, calendar: calendar) }
}
