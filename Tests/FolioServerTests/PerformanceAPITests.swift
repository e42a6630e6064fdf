import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import FolioServer

/// Returns, lots and realized gains through the API, on both databases.
@Suite("Performance, lots and realized gains")
struct PerformanceAPITests {
    static func order(_ client: some TestClientProtocol, _ env: TestEnvironment, _ tokens: [String: Any], _ side: String, _ quantity: Int) async throws {
        let placed = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": quantity, "side": side, "order_type": "MARKET"], headers: bearer(tokens))
        #expect(placed.status == .created, "\(String(buffer: placed.body))")
        await env.worker.drain()
    }

    @Test("performance on an account's first day counts from nothing at its opening: its deposits show, and returns are worked out", arguments: TestDatabaseKind.all)
    func firstDay(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "day-one@example.com")
            let account = try await env.firstAccount()
            #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "2500.00"], headers: bearer(tokens)).status == .created)
            try await Self.order(client, env, tokens, "BUY", 10)
            let today = try json(try await client.execute(uri: "/api/portfolio/performance?range=ALL", method: .get, headers: bearer(tokens)))
            let opening = try env.configuration.startingCash + #require(Cash("2500.00"))
            #expect(today["deposits"] as? String == opening.description, "\(today)")
            #expect(today["start_value"] as? String == "0.00" && today["days"] as? Int == 2 && today["note"] == nil, "\(today)")
            let end = try Cash(parsing: try #require(today["end_value"] as? String))
            // No flow but the deposits: the return is what the value is against them.
            let simple = try Returns.percent(try Growth.quotient(end, opening, rounding: .halfEven))
            #expect(today["time_weighted_return_percent"] as? String == simple.description, "\(today)")
            #expect(today["from"] as? String == today["to"] as? String)
        }
    }

    @Test("on the first day, after the close snapshot was taken, every range still counts from the opening", arguments: TestDatabaseKind.all)
    func firstDayAfterTheClose(kind: TestDatabaseKind) async throws {
        let clock = TestClock(start: PortfolioSnapshotTests.monday)  // 10:00 in New York, before Monday's close
        try await withTestApp(kind, clock: clock, configure: PortfolioSnapshotTests.longSessions) { client, env in
            let tokens = try await signUp(client, env, email: "day-one-close@example.com")
            let account = try await env.firstAccount()
            #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "2500.00"], headers: bearer(tokens)).status == .created)
            try await Self.order(client, env, tokens, "BUY", 10)
            // Past 16:10 New York, the close snapshot job has written Monday's close.
            try await env.worker.onIdle?()
            await env.worker.drain()
            clock.advance(by: 6 * 3600 + 15 * 60)
            try await env.worker.onIdle?()
            await env.worker.drain()
            let closes = try await env.database.sql.raw("SELECT COUNT(*) AS n FROM portfolio_snapshots WHERE account_id = \(bind: account.id)").first()?
                .decode(column: "n", as: Int.self)
            #expect(closes == 1, "the close snapshot was taken")
            let opening = try env.configuration.startingCash + #require(Cash("2500.00"))
            for range in ["1M", "YTD", "ALL"] {
                let shown = try json(try await client.execute(uri: "/api/portfolio/performance?range=\(range)", method: .get, headers: bearer(tokens)))
                #expect(shown["deposits"] as? String == opening.description, "\(range): \(shown)")
                #expect(shown["start_value"] as? String == "0.00" && shown["note"] == nil && shown["time_weighted_return_percent"] != nil, "\(range): \(shown)")
            }
        }
    }

    @Test("a range of a year by the calendar is annualized whatever the time of day; a shorter one is not")
    func annualizedByTheCalendar() throws {
        let today = TradingDay(year: 2026, month: 12, day: 8)  // a Tuesday
        let yearAgo = PerformanceController.Range.oneYear.baseDay(today: today)
        // During the session the clock says 364.8 days since the close a year ago.
        let clock = try Growth.quotient(try Growth(3648), try Growth(3650), rounding: .down)
        #expect(try PerformanceController.annualizes(years: clock, from: yearAgo, to: today))
        #expect(try !PerformanceController.annualizes(years: clock, from: today.adding(days: -364), to: today))
        #expect(try PerformanceController.annualizes(years: try Growth(2), from: nil, to: nil))
        #expect(try !PerformanceController.annualizes(years: clock, from: nil, to: nil))
    }

    @Test("ALL runs from the account's opening on every later day too: the first day's deposits, sales and gain count; a shorter range starts at a close", arguments: TestDatabaseKind.all)
    func allSinceOpening(kind: TestDatabaseKind) async throws {
        let clock = TestClock(start: PortfolioSnapshotTests.monday)  // 10:00 in New York, before Monday's close
        try await withTestApp(kind, clock: clock, configure: PortfolioSnapshotTests.longSessions) { client, env in
            let tokens = try await signUp(client, env, email: "since-opening@example.com")
            let account = try await env.firstAccount()
            #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "2500.00"], headers: bearer(tokens)).status == .created)
            try await Self.order(client, env, tokens, "BUY", 10)
            try await Self.order(client, env, tokens, "SELL", 4)
            let sold = try json(try await client.execute(uri: "/api/reports/realized-gains", method: .get, headers: bearer(tokens)))
            let dayOneGain = try #require((sold["total"] as? [String: String])?["gain"])
            // Thursday: three closes since.
            clock.advance(by: 3 * 86_400)
            let all = try json(try await client.execute(uri: "/api/portfolio/performance?range=ALL", method: .get, headers: bearer(tokens)))
            let opening = try env.configuration.startingCash + #require(Cash("2500.00"))
            #expect(all["from"] as? String == "2026-11-23" && all["start_value"] as? String == "0.00", "\(all)")
            #expect(all["deposits"] as? String == opening.description && all["realized_gain"] as? String == dayOneGain, "\(all)")
            #expect(all["stale"] as? Bool == false, "\(all)")
            // One deposit at the opening and nothing since: the return is the value against it.
            let end = try Cash(parsing: try #require(all["end_value"] as? String))
            #expect(all["time_weighted_return_percent"] as? String == (try Returns.percent(try Growth.quotient(end, opening, rounding: .halfEven))).description, "\(all)")
            // 1M is "from the last close before the range": the account's first close.
            let month = try json(try await client.execute(uri: "/api/portfolio/performance?range=1M", method: .get, headers: bearer(tokens)))
            #expect(month["from"] as? String == "2026-11-23" && month["start_value"] as? String != "0.00" && month["deposits"] as? String == "0.00", "\(month)")
        }
    }

    @Test("an account opened on a weekend starts from nothing at its opening on the weekend and on its first weekday, until its first close", arguments: TestDatabaseKind.all)
    func openedOnAWeekend(kind: TestDatabaseKind) async throws {
        let clock = TestClock(start: try Date("2026-11-28T15:00:00Z", strategy: .iso8601))  // a Saturday
        try await withTestApp(kind, clock: clock) { client, env in
            let tokens = try await signUp(client, env, email: "weekend@example.com")
            let account = try await env.firstAccount()
            #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "2500.00"], headers: bearer(tokens)).status == .created)
            let opening = try env.configuration.startingCash + #require(Cash("2500.00"))
            // Sunday, then Monday before its close: no close yet either day.
            for later in [try Date("2026-11-29T15:00:00Z", strategy: .iso8601), try Date("2026-11-30T18:00:00Z", strategy: .iso8601)] {
                clock.advance(by: later.timeIntervalSince(clock.now))
                let signedIn = try json(try await post(client, "/api/auth/login", ["email": "weekend@example.com", "password": strongPassword]))
                let shown = try json(try await client.execute(uri: "/api/portfolio/performance?range=ALL", method: .get, headers: bearer(signedIn)))
                #expect(shown["deposits"] as? String == opening.description, "\(later): \(shown)")
                #expect(shown["start_value"] as? String == "0.00" && shown["days"] as? Int == 2 && shown["note"] == nil, "\(later): \(shown)")
            }
            #expect(PerformanceController.firstWeekday(from: try Date("2026-11-28T15:00:00Z", strategy: .iso8601)) == TradingDay(year: 2026, month: 11, day: 30))
        }
    }

    @Test("performance: with no flows the time-weighted return is the simple return; a deposit is a flow, not a gain; lots add up to the holding; realized gains reconcile in JSON and CSV", arguments: TestDatabaseKind.all)
    func performance(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            var tokens = try await signUp(client, env, email: "returns@example.com")
            // Access tokens live minutes: after moving the clock on, sign in again.
            func signIn() async throws -> [String: Any] {
                try json(try await post(client, "/api/auth/login", ["email": "returns@example.com", "password": strongPassword]))
            }
            let account = try await env.firstAccount()
            try await Self.order(client, env, tokens, "BUY", 100)
            // A week and a half on: the days between are backfilled from the ledger and the daily closes.
            env.clock.advance(by: 10 * 86_400)
            tokens = try await signIn()
            let quiet = try json(try await client.execute(uri: "/api/portfolio/performance?range=1M", method: .get, headers: bearer(tokens)))
            #expect(quiet["complete"] as? Bool == true, "\(quiet.description)")
            #expect((quiet["days"] as? Int ?? 0) >= 7)
            let start = try Cash(parsing: try #require(quiet["start_value"] as? String)), end = try Cash(parsing: try #require(quiet["end_value"] as? String))
            let simple = try Returns.percent(try Growth.quotient(end, start, rounding: .halfEven))
            #expect(quiet["time_weighted_return_percent"] as? String == simple.description, "\(quiet)")
            #expect(quiet["money_weighted_return_percent"] as? String != nil && quiet["time_weighted_return_annualized_percent"] == nil)

            // A deposit of 50,000 moves the value but is not a return.
            #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "50000"], headers: bearer(tokens)).status == .created)
            env.clock.advance(by: 86_400)
            tokens = try await signIn()
            let funded = try json(try await client.execute(uri: "/api/portfolio/performance?range=1M", method: .get, headers: bearer(tokens)))
            #expect(funded["deposits"] as? String == "50000.00")
            let twr = try Ratio(parsing: try #require(funded["time_weighted_return_percent"] as? String))
            #expect(twr.magnitude < 20, "a deposit of half the account is not a 50 % return: \(funded)")

            // Buy 50 more, sell 120: FIFO takes the first 100, then 20 of the second lot.
            try await Self.order(client, env, tokens, "BUY", 50)
            try await Self.order(client, env, tokens, "SELL", 120)
            let lots = try json(try await client.execute(uri: "/api/portfolio/lots", method: .get, headers: bearer(tokens)))
            let open = try #require(lots["data"] as? [[String: Any]])
            #expect(open.map { $0["quantity"] as? String } == ["30"] && lots["method"] as? String == "fifo", "\(lots.description)")
            #expect(open.first?["term"] as? String == "short")

            let report = try json(try await client.execute(uri: "/api/reports/realized-gains", method: .get, headers: bearer(tokens)))
            let rows = try #require(report["data"] as? [[String: Any]])
            #expect(rows.map { $0["quantity"] as? String } == ["100", "20"])
            for row in rows {
                #expect(try Cash(parsing: row["proceeds"] as! String) - Cash(parsing: row["cost"] as! String) == Cash(parsing: row["gain"] as! String))
            }
            let total = try #require(report["total"] as? [String: String])
            #expect(try Cash(parsing: total["proceeds"]!) - Cash(parsing: total["cost"]!) == Cash(parsing: total["gain"]!))
            let csv = try await client.execute(uri: "/api/reports/realized-gains.csv", method: .get, headers: bearer(tokens))
            #expect(csv.headers[.contentType] == "text/csv; charset=utf-8")
            let lines = String(buffer: csv.body).split(separator: "\n")
            #expect(lines.first == "account_id,symbol,quantity,acquired_at,sold_at,proceeds,cost,gain,term" && lines.count == 3)
            #expect(try await client.execute(uri: "/api/reports/realized-gains?year=1800", method: .get, headers: bearer(tokens)).status == .unprocessableContent)
            #expect(try await client.execute(uri: "/api/portfolio/performance?range=5Y", method: .get, headers: bearer(tokens)).status == .unprocessableContent)

            let other = try await signUp(client, env, email: "nosy@example.com")
            #expect(try await client.execute(uri: "/api/portfolio/lots?account_id=\(account.id)", method: .get, headers: bearer(other)).status == .notFound)
            #expect(try await client.execute(uri: "/api/reports/realized-gains?account_id=\(account.id)", method: .get, headers: bearer(other)).status == .notFound)
            let empty = try json(try await client.execute(uri: "/api/reports/realized-gains", method: .get, headers: bearer(other)))
            #expect((empty["data"] as? [Any])?.isEmpty == true)
        }
    }
}
