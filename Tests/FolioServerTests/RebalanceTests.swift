import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOConcurrencyHelpers
import SQLKit
import Testing

@testable import FolioServer

/// Targets, drift and rebalancing through the API, on both databases.
@Suite("Targets and rebalancing")
struct RebalanceTests {
    static func put(_ client: some TestClientProtocol, _ uri: String, _ body: [String: Any], headers: HTTPFields) async throws -> TestResponse {
        var all = jsonHeaders
        for field in headers { all[field.name] = field.value }
        return try await client.execute(uri: uri, method: .put, headers: all, body: ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
    }

    static func get(_ client: some TestClientProtocol, _ uri: String, _ tokens: [String: Any]) async throws -> [String: Any] {
        let response = try await client.execute(uri: uri, method: .get, headers: bearer(tokens))
        #expect(response.status == .ok, "\(uri): \(String(buffer: response.body))")
        return try json(response)
    }

    /// Buys `quantity` of `symbol` at the market and lets the worker fill it.
    static func buy(_ client: some TestClientProtocol, _ env: TestEnvironment, _ tokens: [String: Any], _ symbol: String, _ quantity: Int) async throws {
        let placed = try await post(client, "/api/orders", ["symbol": symbol, "quantity": quantity, "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
        #expect(placed.status == .created, "\(String(buffer: placed.body))")
        await env.worker.drain()
    }

    /// Runs the worker, moving the clock on, until the run has finished.
    static func finish(_ client: some TestClientProtocol, _ env: TestEnvironment, _ tokens: [String: Any], run id: String) async throws -> [String: Any] {
        for _ in 0..<40 {
            await env.worker.drain()
            let run = try await get(client, "/api/portfolio/rebalances/\(id)", tokens)
            if ["done", "partially_done", "failed"].contains(run["status"] as? String) { return run }
            env.clock.advance(by: 1)
        }
        Issue.record("the run did not finish")
        return try await get(client, "/api/portfolio/rebalances/\(id)", tokens)
    }

    nonisolated(unsafe) static let targets: [String: Any] = [
        "targets": [["symbol": "aapl", "percent": "40"], ["symbol": "MSFT", "percent": 30], ["symbol": "VTI", "percent": "25"]],
        "cash_percent": "5",
    ]

    @Test("targets: set, read, versioned and audited; invalid weights and unknown symbols refused with their field; others' accounts 404", arguments: TestDatabaseKind.all)
    func targets(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "targets@example.com")
            let account = try await env.firstAccount()
            let uri = "/api/accounts/\(account.id)/targets"
            let empty = try await Self.get(client, uri, tokens)
            #expect(empty["version"] as? Int == 0 && (empty["targets"] as? [Any])?.isEmpty == true)

            let saved = try await Self.put(client, uri, Self.targets, headers: bearer(tokens))
            #expect(saved.status == .ok, "\(String(buffer: saved.body))")
            let first = try json(saved)
            #expect(first["version"] as? Int == 1)
            #expect((first["targets"] as? [[String: Any]])?.map { "\($0["symbol"]!)=\($0["percent"]!)" } == ["AAPL=40", "MSFT=30", "VTI=25"])
            #expect(first["cash_percent"] as? String == "5")
            #expect((first["drift_band"] as? [String: Any])?["absolute_points"] as? String == "5")

            let badSum = try await Self.put(client, uri, ["targets": [["symbol": "AAPL", "percent": "60"], ["symbol": "MSFT", "percent": "39.99"]]], headers: bearer(tokens))
            #expect(badSum.status == .unprocessableContent)
            #expect(try problem(badSum).errors?.map(\.field) == ["targets"])
            #expect(try problem(badSum).errors?.map(\.code) == ["sum_not_100"])
            let unknown = try await Self.put(client, uri, ["targets": [["symbol": "NOPE", "percent": 100]]], headers: bearer(tokens))
            #expect(try unknown.status == .unprocessableContent && problem(unknown).errors?.first?.code == "unknown_symbol")
            // Each unknown symbol is named by its place in the request (the allocation itself is kept in symbol order).
            let unknownLater = try await Self.put(
                client, uri, ["targets": [["symbol": "VTI", "percent": 50], ["symbol": "zzzq", "percent": 30], ["symbol": "AAAQ", "percent": 20]]], headers: bearer(tokens))
            #expect(try problem(unknownLater).errors?.map(\.field) == ["targets[1].symbol", "targets[2].symbol"])
            let tooFine = try await Self.put(client, uri, ["targets": [["symbol": "AAPL", "percent": "99.99999"], ["symbol": "VTI", "percent": "0.00001"]]], headers: bearer(tokens))
            #expect(try problem(tooFine).errors?.map(\.field) == ["targets[0].percent", "targets[1].percent"])

            let second = try json(try await Self.put(
                client, uri, ["targets": [["symbol": "VTI", "percent": 100]], "drift_band": ["absolute_points": "3", "relative_percent": "20"]], headers: bearer(tokens)))
            #expect(second["version"] as? Int == 2)
            #expect((try await Self.get(client, uri, tokens))["version"] as? Int == 2)
            let old = try await Self.get(client, uri + "?version=1", tokens)
            #expect((old["targets"] as? [Any])?.count == 3)
            let versions = try await Self.get(client, uri + "/versions", tokens)
            #expect((versions["data"] as? [[String: Any]])?.map { $0["version"] as? Int } == [2, 1])

            // Each change is on the account's audit chain with a digest of its weights.
            let events = try await env.database.sql.raw("SELECT action, details FROM audit_events WHERE action = 'targets.changed' ORDER BY sequence").all()
            #expect(events.count == 2)
            #expect(try events[0].decode(column: "details", as: String.self).contains("targets_digest"))

            let other = try await signUp(client, env, email: "other@example.com")
            #expect(try await client.execute(uri: uri, method: .get, headers: bearer(other)).status == .notFound)
            #expect(try await Self.put(client, uri, Self.targets, headers: bearer(other)).status == .notFound)
            // Another's account is not found for its rebalances either (not an empty list); the owner's has none yet.
            let accountID = account.id
            let othersRuns = try await client.execute(uri: "/api/portfolio/rebalances?account_id=\(accountID)", method: .get, headers: bearer(other))
            #expect(othersRuns.status == .notFound)
            let ownRuns = try await client.execute(uri: "/api/portfolio/rebalances?account_id=\(accountID)", method: .get, headers: bearer(tokens))
            #expect(ownRuns.status == .ok)
            try await env.expectConsistent()
        }
    }

    @Test("a weight with too many places is refused with the one rule, at most 4 places, however many it has; a bad symbol's message names its row", arguments: TestDatabaseKind.all)
    func targetRulesStatedOnce(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "places@example.com")
            let account = try await env.firstAccount()
            let uri = "/api/accounts/\(account.id)/targets"
            for percent in ["50.12345", "50.123456", "50.1234567", "50.123456789012"] {
                let refused = try await Self.put(client, uri, ["targets": [["symbol": "AAPL", "percent": percent]], "cash_percent": "10"], headers: bearer(tokens))
                #expect(refused.status == .unprocessableContent)
                let issues = try problem(refused).errors ?? []
                #expect(issues.map(\.message) == ["targets[0].percent may have at most 4 decimal places."], "\(percent): \(issues)")
                #expect(issues.map(\.code) == ["too_precise"])
            }
            for points in ["1.12345", "1.1234567"] {
                let band = try await Self.put(client, uri, ["targets": [["symbol": "AAPL", "percent": 100]], "drift_band": ["absolute_points": points]], headers: bearer(tokens))
                #expect(try problem(band).errors?.map(\.message) == ["drift_band.absolute_points may have at most 4 decimal places."], "\(points)")
                #expect(try problem(band).errors?.map(\.code) == ["too_precise"], "\(points)")
            }
            let symbols = try await Self.put(client, uri, ["targets": [["symbol": "<b>X", "percent": 50], ["symbol": "", "percent": 50]]], headers: bearer(tokens))
            #expect(try problem(symbols).errors?.map(\.message) == ["targets[0].symbol must be a ticker such as VTI.", "targets[1].symbol must be a ticker such as VTI."])
        }
    }

    @Test("a drifted portfolio gets a plan, runs it (sells, then buys) and ends within its bands", arguments: TestDatabaseKind.all)
    func drifted(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "drifted@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 300)
            try await Self.buy(client, env, tokens, "VTI", 20)
            #expect(try await client.execute(uri: "/api/portfolio/drift", method: .get, headers: bearer(tokens)).status == .conflict)
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)

            let drift = try await Self.get(client, "/api/portfolio/drift", tokens)
            #expect(drift["outside_band"] as? Bool == true)
            let lines = try #require(drift["data"] as? [[String: Any]])
            #expect(lines.map { $0["symbol"] as? String } == ["AAPL", "MSFT", "VTI"])
            #expect(lines[1]["current_percent"] as? String == "0" && lines[1]["outside_band"] as? Bool == true)

            let planned = try await post(client, "/api/portfolio/rebalance", ["mode": "full"], headers: bearer(tokens))
            #expect(planned.status == .ok, "\(String(buffer: planned.body))")
            let plan = try json(planned)
            let trades = try #require(plan["trades"] as? [[String: Any]])
            #expect(trades.first?["side"] as? String == "SELL" && trades.first?["symbol"] as? String == "AAPL")
            #expect(trades.contains { $0["symbol"] as? String == "MSFT" && $0["side"] as? String == "BUY" })
            #expect(plan["order_count"] as? Int == trades.count && plan["reason"] == nil)
            #expect((plan["notes"] as? [String])?.first?.contains("bought in up to 2 more rounds") == true, "buys are topped up: the plan says so")
            // A plan changes nothing.
            #expect(try await env.store.orders(of: account.userID, filter: .init(), after: nil, limit: 10).count == 2)

            let missingKey = try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: bearer(tokens))
            #expect(try missingKey.status == .unprocessableContent && problem(missingKey).errors?.first?.field == "Idempotency-Key")

            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "rebalance-1"
            let started = try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed)
            #expect(started.status == .accepted, "\(String(buffer: started.body))")
            let run = try json(started)
            let id = try #require(run["id"] as? String)
            #expect(started.headers[.location] == "/api/portfolio/rebalances/\(id)")
            #expect(run["status"] as? String == "selling")
            #expect((run["orders"] as? [[String: Any]])?.allSatisfy { $0["side"] as? String == "SELL" } == true)
            // The same key answers the same run; a second run while this one runs is refused.
            let replay = try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed)
            #expect(try json(replay)["id"] as? String == id)
            keyed[Idempotency.header] = "rebalance-2"
            let second = try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed)
            #expect(try second.status == .conflict && problem(second).code == "rebalance_in_progress")
            // Refused for the run, not for what the run's reservations leave (here nothing to buy with): that is the reason.
            keyed[Idempotency.header] = "rebalance-3"
            let starved = try await post(client, "/api/portfolio/rebalance", ["execute": true, "mode": "buy_only", "cash_reserve": "900000000"], headers: keyed)
            #expect(try starved.status == .conflict && problem(starved).code == "rebalance_in_progress", "\(String(buffer: starved.body))")
            // A preview meanwhile says so.
            let preview = try json(try await post(client, "/api/portfolio/rebalance", [:], headers: bearer(tokens)))
            #expect(preview["active_run_id"] as? String == id)
            #expect((preview["notes"] as? [String])?.first?.hasPrefix("A rebalance of this account is still running") == true)
            #expect(preview["reason"] == nil, "the run is the reason")

            let finished = try await Self.finish(client, env, tokens, run: id)
            #expect(finished["status"] as? String == "done", "\(finished)")
            let orders = try #require(finished["orders"] as? [[String: Any]])
            #expect(orders.allSatisfy { $0["status"] as? String == "filled" })
            #expect(orders.contains { $0["phase"] as? String == "buy" })

            let after = try await Self.get(client, "/api/portfolio/drift", tokens)
            #expect(after["outside_band"] as? Bool == false, "\(after)")
            let events = try await env.database.sql.raw("SELECT action FROM audit_events WHERE action LIKE 'rebalance.%' ORDER BY sequence").all()
                .map { try $0.decode(column: "action", as: String.self) }
            #expect(events.first == "rebalance.started" && events.last == "rebalance.finished" && events.contains("rebalance.buying"))
            let list = try await Self.get(client, "/api/portfolio/rebalances", tokens)
            #expect((list["data"] as? [[String: Any]])?.map { $0["id"] as? String } == [id])
            try await env.expectConsistent()

            // Now on target: nothing to do, and executing says so.
            let nothing = try json(try await post(client, "/api/portfolio/rebalance", ["min_trade_amount": "5000"], headers: bearer(tokens)))
            #expect((nothing["trades"] as? [Any])?.isEmpty == true && (nothing["reason"] as? [String: Any])?["code"] as? String != nil)
            keyed[Idempotency.header] = "rebalance-3"
            let refused = try await post(client, "/api/portfolio/rebalance", ["execute": true, "min_trade_amount": "5000"], headers: keyed)
            #expect(try refused.status == .unprocessableContent && problem(refused).code == "nothing_to_rebalance")

            // A tolerance with too many places is told so, not that it is out of range.
            let fine = try await post(client, "/api/portfolio/rebalance", ["price_tolerance_percent": "0.00001"], headers: bearer(tokens))
            let fineIssue = try problem(fine).errors?.first
            #expect(fineIssue?.field == "price_tolerance_percent" && fineIssue?.code == "too_precise" && fineIssue?.message.contains("4 decimal places") == true)
        }
    }

    @Test("buy_only invests new cash where the drift is largest, without a sale", arguments: TestDatabaseKind.all)
    func buyOnly(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.startingCash = 20_000 }) { client, env in
            let tokens = try await signUp(client, env, email: "buyonly@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 80)
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)
            let deposit = try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "10000"], headers: bearer(tokens))
            #expect(deposit.status == .created)
            let before = try await Self.get(client, "/api/portfolio/drift", tokens)
            let beforeWorst = try Self.worstDrift(before)

            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "buy-only-1"
            let started = try await post(client, "/api/portfolio/rebalance", ["execute": true, "mode": "buy_only", "cash_reserve": "100"], headers: keyed)
            #expect(started.status == .accepted, "\(String(buffer: started.body))")
            let run = try json(started)
            #expect(run["status"] as? String == "buying")
            let finished = try await Self.finish(client, env, tokens, run: try #require(run["id"] as? String))
            #expect(["done", "partially_done"].contains(finished["status"] as? String), "\(finished)")
            let orders = try #require(finished["orders"] as? [[String: Any]])
            #expect(!orders.isEmpty && orders.allSatisfy { $0["side"] as? String == "BUY" })

            let after = try await Self.get(client, "/api/portfolio/drift", tokens)
            #expect(try Self.worstDrift(after) < beforeWorst)
            let portfolio = try await Self.get(client, "/api/portfolio", tokens)
            #expect(try Cash(parsing: portfolio["available_cash"] as! String) >= 100)
            try await env.expectConsistent()
        }
    }

    @Test("a symbol sold down to nothing is not held: one the market no longer quotes (delisted) stops neither the drift, the plan nor a run", arguments: TestDatabaseKind.all)
    func soldOutSymbolWithoutQuote(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.startingCash = 20_000 }) { client, env in
            let tokens = try await signUp(client, env, email: "delisted@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 10)
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)
            // What a holding sold out (or reconciled to nothing) leaves behind: its row, at zero.
            try await env.database.sql.raw("""
                INSERT INTO holdings (id, account_id, user_id, symbol, quantity, reserved_quantity, cost_basis, created_at, updated_at)
                VALUES (\(bind: UUID()), \(bind: account.id), \(bind: account.userID), 'ZZZQ', 0, 0, 0, \(bind: env.clock.now), \(bind: env.clock.now))
                """).run()
            let drift = try await client.execute(uri: "/api/portfolio/drift", method: .get, headers: bearer(tokens))
            #expect(drift.status == .ok, "\(String(buffer: drift.body))")
            let preview = try await post(client, "/api/portfolio/rebalance", ["mode": "full"], headers: bearer(tokens))
            #expect(preview.status == .ok, "\(String(buffer: preview.body))")
            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "sold-out-1"
            let started = try await post(client, "/api/portfolio/rebalance", ["execute": true, "mode": "buy_only"], headers: keyed)
            #expect(started.status == .accepted, "\(String(buffer: started.body))")
            let finished = try await Self.finish(client, env, tokens, run: try #require(try json(started)["id"] as? String))
            #expect(["done", "partially_done"].contains(finished["status"] as? String), "\(finished)")
        }
    }

    @Test("a run is refused (409 plan_changed, nothing placed) when the targets changed since the preview, or its buys would cost more than the tolerance above it", arguments: TestDatabaseKind.all)
    func previewedPlanOnly(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.startingCash = 20_000 }) { client, env in
            let tokens = try await signUp(client, env, email: "previewed@example.com")
            let account = try await env.firstAccount()
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)
            let preview = try json(try await post(client, "/api/portfolio/rebalance", ["mode": "full"], headers: bearer(tokens)))
            let version = try #require(preview["targets_version"] as? Int)
            let cost = try Cash(parsing: try #require(preview["estimated_cost"] as? String))
            #expect(version == 1 && cost.isPositive)
            let changed: [String: Any] = ["targets": [["symbol": "KO", "percent": "90"]], "cash_percent": "10"]
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", changed, headers: bearer(tokens)).status == .ok)
            func execute(_ key: String, _ extra: [String: Any]) async throws -> TestResponse {
                var keyed = bearer(tokens)
                keyed[Idempotency.header] = key
                return try await post(client, "/api/portfolio/rebalance", ["execute": true, "mode": "full"].merging(extra) { $1 }, headers: keyed)
            }
            let stale = try await execute("stale-targets", ["targets_version": version, "previewed_estimated_cost": cost.description])
            #expect(stale.status == .conflict)
            let refusal = try problem(stale)
            #expect(refusal.code == "plan_changed" && refusal.errors?.first?.field == "targets_version" && refusal.detail.contains("version 2"), "\(refusal.detail)")
            // Prices that moved the buys' cost past the tolerance: the preview said far less.
            let current = try json(try await post(client, "/api/portfolio/rebalance", ["mode": "full"], headers: bearer(tokens)))
            let newCost = try Cash(parsing: try #require(current["estimated_cost"] as? String))
            let dearer = try await execute("dearer", ["targets_version": 2, "previewed_estimated_cost": "1.00"])
            #expect(dearer.status == .conflict)
            #expect(try problem(dearer).errors?.first?.field == "previewed_estimated_cost")
            #expect(try await env.orders().isEmpty, "a refused run places nothing")
            // A negative preview is refused, not read as any cost at all; a preview that bought nothing stops a run that buys.
            let negative = try await execute("negative", ["targets_version": 2, "previewed_estimated_cost": "-1"])
            #expect(negative.status == .unprocessableContent)
            #expect(try problem(negative).errors?.first?.code == "negative")
            let none = try await execute("none", ["targets_version": 2, "previewed_estimated_cost": "0"])
            #expect(none.status == .conflict)
            #expect(try problem(none).detail.contains("bought nothing"))
            // Within the tolerance (2 %) of what was previewed, it runs.
            let within = Cash(uncheckedUnits: newCost.units * 100 / 101)
            let started = try await execute("current", ["targets_version": 2, "previewed_estimated_cost": within.description])
            #expect(started.status == .accepted, "\(String(buffer: started.body))")
            _ = try await Self.finish(client, env, tokens, run: try #require(try json(started)["id"] as? String))
            try await env.expectConsistent()
        }
    }

    @Test("targets by asset class: drift by class, and a run that brings the classes within their bands", arguments: TestDatabaseKind.all)
    func byAssetClass(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "classes@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 200)
            try await Self.buy(client, env, tokens, "MSFT", 20)
            try await Self.buy(client, env, tokens, "VTI", 10)
            let uri = "/api/accounts/\(account.id)/targets"
            let both = try await Self.put(client, uri, ["targets": [["symbol": "AAPL", "percent": 50]], "asset_classes": [["asset_class": "etf", "percent": 50]]], headers: bearer(tokens))
            #expect(try both.status == .unprocessableContent && problem(both).errors?.first?.code == "conflict")
            let saved = try await Self.put(client, uri, [
                "asset_classes": [["asset_class": "equity", "percent": "50"], ["asset_class": "ETF", "percent": "45"]], "cash_percent": "5",
            ], headers: bearer(tokens))
            #expect(saved.status == .ok, "\(String(buffer: saved.body))")
            #expect((try json(saved)["asset_classes"] as? [[String: Any]])?.map { $0["asset_class"] as? String } == ["equity", "etf"])

            let drift = try await Self.get(client, "/api/portfolio/drift", tokens)
            let lines = try #require(drift["data"] as? [[String: Any]])
            #expect(lines.map { $0["asset_class"] as? String } == ["equity", "etf"] && drift["outside_band"] as? Bool == true, "\(drift)")

            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "classes-1"
            let started = try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed)
            #expect(started.status == .accepted, "\(String(buffer: started.body))")
            let finished = try await Self.finish(client, env, tokens, run: try #require(try json(started)["id"] as? String))
            #expect(finished["status"] as? String == "done", "\(finished)")
            let after = try await Self.get(client, "/api/portfolio/drift", tokens)
            #expect(after["outside_band"] as? Bool == false, "\(after)")
            try await env.expectConsistent()
        }
    }

    @Test("a class weight with nothing of that class held is saved with a warning, shown on the targets page, until a symbol of it is bought", arguments: TestDatabaseKind.all)
    func unheldClassWarning(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "unheld-class@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 20)
            let uri = "/api/accounts/\(account.id)/targets"
            let byClass: [String: Any] = ["asset_classes": [["asset_class": "equity", "percent": "60"], ["asset_class": "etf", "percent": "35"]], "cash_percent": "5"]
            let saved = try await Self.put(client, uri, byClass, headers: bearer(tokens))
            #expect(saved.status == .ok, "\(String(buffer: saved.body))")
            let warnings = try #require(try json(saved)["warnings"] as? [[String: Any]])
            #expect(warnings.count == 1 && warnings.first?["field"] as? String == "asset_classes[1].asset_class" && warnings.first?["code"] as? String == "nothing_held", "\(warnings)")
            #expect((warnings.first?["message"] as? String)?.contains("Nothing of class etf is held") == true)
            // Reading the targets says the same, and the page shows it above the weights.
            let shown = try await Self.get(client, uri, tokens)
            #expect((shown["warnings"] as? [[String: Any]])?.count == 1)
            let login = try await post(client, "/api/auth/login", ["email": "unheld-class@example.com", "password": strongPassword, "session": "cookie"])
            let cookie = String(try #require(login.headers[.setCookie]).split(separator: ";")[0])
            let page = try await client.execute(uri: "/targets", method: .get, headers: [.cookie: cookie])
            let etf = Display.assetClass(.etf)
            #expect(String(buffer: page.body).contains("You hold nothing in \(etf), so a rebalance cannot share out its 35 % yet"), "\(String(buffer: page.body).prefix(300))")
            // As the preview would refuse it.
            let preview = try await post(client, "/api/portfolio/rebalance", ["execute": false], headers: bearer(tokens))
            #expect(try preview.status == .unprocessableContent && problem(preview).code == "nothing_held_in_class")

            try await Self.buy(client, env, tokens, "VTI", 5)
            let after = try await Self.get(client, uri, tokens)
            #expect((after["warnings"] as? [[String: Any]])?.isEmpty == true, "\(after)")
            // Targets by symbol never warn.
            let bySymbol = try await Self.put(client, uri, Self.targets, headers: bearer(tokens))
            #expect((try json(bySymbol)["warnings"] as? [[String: Any]])?.isEmpty == true)
        }
    }

    static func worstDrift(_ drift: [String: Any]) throws -> Ratio {
        try (drift["data"] as? [[String: Any]] ?? []).map { try Ratio(parsing: $0["drift_points"] as! String).magnitude }.max() ?? .zero
    }

    @Test("the seed's check: an unauthenticated rebalance is 401, a cookie session without the CSRF token 403", arguments: TestDatabaseKind.all)
    func authentication(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            let anonymous = try await post(client, "/api/portfolio/rebalance", ["execute": false])
            #expect(anonymous.status == .unauthorized && anonymous.headers[.contentType] == "application/problem+json")
            try await signUp(client, env, email: "cookie@example.com")
            let login = try await post(client, "/api/auth/login", ["email": "cookie@example.com", "password": strongPassword, "session": "cookie"])
            let cookie = String(try #require(login.headers[.setCookie]).split(separator: ";")[0])
            let forged = try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: [.cookie: cookie, Idempotency.header: "x"])
            #expect(try forged.status == .forbidden && problem(forged).code == "csrf_failed")
            var good: HTTPFields = [.cookie: cookie, .origin: "https://app.example.com"]
            good[AuthController.csrfHeader] = try #require(try json(login)["csrf_token"] as? String)
            // With the token it gets through to the rebalancer, which wants targets first.
            let allowed = try await post(client, "/api/portfolio/rebalance", [:], headers: good)
            #expect(try allowed.status == .conflict && problem(allowed).code == "targets_not_set")
        }
    }

    @Test("a sell the broker rejects leaves the run partially done with the reason; buys are planned from the cash there is", arguments: TestDatabaseKind.all)
    func rejectedSell(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "rejected@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 300)
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)
            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "rejected-1"
            let started = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed))
            let id = try #require(started["id"] as? String)
            // The sell is rejected before it reaches the broker, as a broker would.
            let sell = try #require((started["orders"] as? [[String: Any]])?.first?["order_id"] as? String)
            try await env.orders.apply(.rejected(reason: "market closed for this symbol"), to: try #require(OrderID(sell)))
            let finished = try await Self.finish(client, env, tokens, run: id)
            #expect(finished["status"] as? String == "partially_done", "\(finished)")
            let reasons = try #require(finished["reasons"] as? [String])
            #expect(reasons.contains { $0.contains("was rejected: market closed for this symbol") })
            try await env.expectConsistent()
        }
    }

    @Test("buys the account's open-order limit refuses end the run with the reason in words, and its notice says not everything went as planned", arguments: TestDatabaseKind.all)
    func buysOverOpenOrderLimit(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.maximumOpenOrders = 1 }) { client, env in
            let tokens = try await signUp(client, env, email: "order-limit@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 300)
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)
            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "order-limit-1"
            let started = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed))
            let finished = try await Self.finish(client, env, tokens, run: try #require(started["id"] as? String))
            #expect(finished["status"] as? String == "partially_done", "\(finished)")
            let reasons = try #require(finished["reasons"] as? [String])
            #expect(reasons.contains("The buys could not be placed: This account has an open order, as many as one may; cancel it, or let it fill, before placing another."), "\(reasons)")
            #expect(!reasons.contains { $0.contains("tooManyOpenOrders") }, "no Swift in a person's reasons")
            let notice = try #require(try await env.outbox(kind: "rebalance_finished").first)
            #expect(notice.body.contains("1 of 1 orders filled. Not everything went as planned: the run in Folio says why."), "\(notice.body)")
            try await env.expectConsistent()
        }
    }

    @Test("a resting limit buy far below the market is not shares held: the preview and the run both buy, and the limit keeps its reservation", arguments: TestDatabaseKind.all)
    func farLimitBuy(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "patient-limit@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 150)
            try await Self.buy(client, env, tokens, "MSFT", 100)
            let limit = try await post(client, "/api/orders", [
                "symbol": "AAPL", "quantity": "1000", "side": "BUY", "order_type": "LIMIT", "limit_price": "0.01", "time_in_force": "GTC",
            ], headers: bearer(tokens))
            let limitID = try #require(try json(limit)["id"] as? String)
            await env.worker.drain()
            let targets: [String: Any] = ["targets": [["symbol": "AAPL", "percent": "80"], ["symbol": "MSFT", "percent": "20"]], "cash_percent": "0"]
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", targets, headers: bearer(tokens)).status == .ok)

            let plan = try json(try await post(client, "/api/portfolio/rebalance", [:], headers: bearer(tokens)))
            let trades = try #require(plan["trades"] as? [[String: Any]])
            #expect(trades.contains { $0["symbol"] as? String == "AAPL" && $0["side"] as? String == "BUY" }, "\(trades)")

            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "far-limit-1"
            let started = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed))
            let finished = try await Self.finish(client, env, tokens, run: try #require(started["id"] as? String))
            #expect(finished["status"] as? String == "done", "\(finished)")
            let buys = (finished["orders"] as? [[String: Any]] ?? []).filter { $0["side"] as? String == "BUY" }
            #expect(buys.contains { $0["symbol"] as? String == "AAPL" && $0["status"] as? String == "filled" }, "\(finished)")
            #expect((finished["notes"] as? [String] ?? []).allSatisfy { !$0.hasPrefix("None of the planned buys") }, "\(finished)")
            // On target now, with the limit still resting on its $10.
            let drift = try await Self.get(client, "/api/portfolio/drift", tokens)
            #expect(drift["outside_band"] as? Bool == false, "\(drift)")
            let resting = try json(try await client.execute(uri: "/api/orders/\(limitID)", method: .get, headers: bearer(tokens)))
            #expect(resting["status"] as? String == "accepted")
            #expect(resting["reserved_cash"] as? String == "10.00")
            try await env.expectConsistent()
        }
    }

    @Test("an open buy of a symbol without a quote now counts as the cash it holds; it does not stop the plan", arguments: TestDatabaseKind.all)
    func openBuyWithoutQuote(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        let market = SwitchableMarket(clock: clock.clock)
        try await withTestApp(kind, clock: clock, dependencies: { $0.marketData = market }) { client, env in
            let tokens = try await signUp(client, env, email: "unquoted-buy@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 100)
            let resting = try await post(client, "/api/orders", [
                "symbol": "VTI", "quantity": "10", "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC",
            ], headers: bearer(tokens))
            #expect(resting.status == .created)
            await env.worker.drain()
            let targets: [String: Any] = ["targets": [["symbol": "AAPL", "percent": "50"], ["symbol": "MSFT", "percent": "50"]], "cash_percent": "0"]
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", targets, headers: bearer(tokens)).status == .ok)
            market.unknown.withLockedValue { $0.insert("VTI") }
            clock.advance(by: 60)  // past the quotes' time to live
            let plan = try await post(client, "/api/portfolio/rebalance", [:], headers: bearer(tokens))
            #expect(plan.status == .ok, "\(String(buffer: plan.body))")
            let trades = try #require(try json(plan)["trades"] as? [[String: Any]])
            #expect(trades.contains { $0["symbol"] as? String == "MSFT" && $0["side"] as? String == "BUY" }, "\(trades)")
        }
    }

    @Test("a price from before the last close (a halted symbol) sizes no trade: the preview says so and a run is refused, until it is priced again", arguments: TestDatabaseKind.all)
    func outdatedPrice(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        let market = SwitchableMarket(clock: clock.clock)
        try await withTestApp(kind, clock: clock, dependencies: { $0.marketData = market }) { client, env in
            let tokens = try await signUp(client, env, email: "halted@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 300)
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)
            market.monthOld.withLockedValue { $0 = ["AAPL"] }
            clock.advance(by: 60)  // past the quotes' time to live
            let plan = try json(try await post(client, "/api/portfolio/rebalance", ["mode": "full"], headers: bearer(tokens)))
            #expect((plan["trades"] as? [[String: Any]])?.isEmpty == true, "\(plan)")
            let reason = try #require(plan["reason"] as? [String: Any])
            #expect(reason["code"] as? String == "outdated_price", "\(reason)")
            #expect((reason["message"] as? String)?.contains("There is no current price for AAPL: the last is from before the latest session") == true, "\(reason)")
            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "halted-1"
            let refused = try await post(client, "/api/portfolio/rebalance", ["execute": true, "mode": "full"], headers: keyed)
            #expect(refused.status == .unprocessableContent, "\(String(buffer: refused.body))")
            let problem = try problem(refused)
            #expect(problem.code == "nothing_to_rebalance" && problem.errors?.first?.code == "outdated_price", "\(problem.detail)")
            #expect(try await env.orders().count == 1, "only the first buy: a refused run places nothing")
            // Priced again: the same plan trades.
            market.monthOld.withLockedValue { $0 = [] }
            clock.advance(by: 60)
            let priced = try json(try await post(client, "/api/portfolio/rebalance", ["mode": "full"], headers: bearer(tokens)))
            #expect(priced["reason"] == nil || priced["reason"] is NSNull, "\(priced)")
            #expect((priced["trades"] as? [[String: Any]])?.isEmpty == false, "\(priced)")
            // An open buy of a symbol neither held nor targeted counts as the cash it holds, whatever its price's age.
            let resting = try await post(client, "/api/orders", [
                "symbol": "KO", "quantity": "10", "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC",
            ], headers: bearer(tokens))
            #expect(resting.status == .created)
            await env.worker.drain()
            market.monthOld.withLockedValue { $0 = ["KO"] }
            clock.advance(by: 60)
            let beside = try json(try await post(client, "/api/portfolio/rebalance", ["mode": "full"], headers: bearer(tokens)))
            #expect((beside["trades"] as? [[String: Any]])?.isEmpty == false, "\(beside)")
            // A symbol that stops trading while the sells fill: the buys are not sized by its old price, and the run says so.
            market.monthOld.withLockedValue { $0 = [] }
            clock.advance(by: 60)
            keyed[Idempotency.header] = "halted-2"
            let started = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true, "mode": "full"], headers: keyed))
            let id = try #require(started["id"] as? String, "\(started)")
            #expect(started["status"] as? String == "selling", "\(started)")
            market.monthOld.withLockedValue { $0 = ["MSFT"] }
            clock.advance(by: 60)
            let ended = try await Self.finish(client, env, tokens, run: id)
            #expect(ended["status"] as? String == "partially_done", "\(ended)")
            #expect((ended["reasons"] as? [String])?.contains { $0.hasPrefix("The buys were not placed: There is no current price for MSFT") } == true, "\(ended)")
            #expect(!((ended["orders"] as? [[String: Any]]) ?? []).contains { $0["side"] as? String == "BUY" }, "\(ended)")
            try await env.expectConsistent()
        }
    }

    @Test("a halted holding can be left out: the rest of the account is rebalanced around it, by the preview and by every phase of the run", arguments: TestDatabaseKind.all)
    func excludedSymbols(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        let market = SwitchableMarket(clock: clock.clock)
        try await withTestApp(kind, clock: clock, dependencies: { $0.marketData = market }) { client, env in
            let tokens = try await signUp(client, env, email: "around@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 300)
            try await Self.buy(client, env, tokens, "MSFT", 90)
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)
            market.monthOld.withLockedValue { $0 = ["AAPL"] }
            clock.advance(by: 60)  // past the quotes' time to live
            let blocked = try json(try await post(client, "/api/portfolio/rebalance", [:], headers: bearer(tokens)))
            #expect((blocked["reason"] as? [String: Any])?["code"] as? String == "outdated_price", "\(blocked)")
            #expect(((blocked["reason"] as? [String: Any])?["message"] as? String)?.hasSuffix("or leave it out to rebalance around it.") == true, "\(blocked)")

            // Without AAPL the targets are MSFT 30, VTI 25 and cash 5 of 60 %: 50 %, 41.6667 % and 8.3333 % of the rest.
            let plan = try json(try await post(client, "/api/portfolio/rebalance", ["excluded_symbols": ["aapl"]], headers: bearer(tokens)))
            #expect(plan["reason"] == nil || plan["reason"] is NSNull, "\(plan)")
            #expect(plan["excluded_symbols"] as? [String] == ["AAPL"], "\(plan)")
            #expect((plan["notes"] as? [String])?.contains { $0.hasPrefix("AAPL is left as it is") } == true, "\(plan)")
            let lines = try #require(plan["lines"] as? [[String: Any]])
            #expect(lines.map { $0["symbol"] as? String ?? "" } == ["MSFT", "VTI"], "\(lines)")
            #expect(lines.map { $0["target_percent"] as? String ?? "" } == ["50", "41.6667"], "\(lines)")
            #expect(plan["cash_target_percent"] as? String == "8.3333", "\(plan)")
            let trades = try #require(plan["trades"] as? [[String: Any]])
            #expect(trades.map { "\($0["side"] as? String ?? "") \($0["symbol"] as? String ?? "")" } == ["SELL MSFT", "BUY VTI"], "\(trades)")

            // A mistyped symbol excludes nothing, so it is refused; so is a symbol listed twice.
            let typo = try await post(client, "/api/portfolio/rebalance", ["excluded_symbols": ["APPL"]], headers: bearer(tokens))
            #expect(typo.status == .unprocessableContent, "\(String(buffer: typo.body))")
            #expect(try problem(typo).errors?.map { "\($0.field):\($0.code)" } == ["excluded_symbols:not_in_account"])
            let twice = try await post(client, "/api/portfolio/rebalance", ["excluded_symbols": ["AAPL", "aapl", "1x"]], headers: bearer(tokens))
            #expect(try problem(twice).errors?.map { "\($0.field):\($0.code)" } == ["excluded_symbols[1]:duplicate", "excluded_symbols[2]:invalid"])

            // The run sells MSFT, then buys VTI with AAPL still halted: its buy phase leaves AAPL out as the preview did.
            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "around-1"
            let started = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true, "excluded_symbols": ["AAPL"]], headers: keyed))
            let id = try #require(started["id"] as? String, "\(started)")
            #expect(started["status"] as? String == "selling" && started["excluded_symbols"] as? [String] == ["AAPL"], "\(started)")
            let ended = try await Self.finish(client, env, tokens, run: id)
            #expect(ended["status"] as? String == "done", "\(ended)")
            let orders = try #require(ended["orders"] as? [[String: Any]])
            #expect(orders.contains { $0["symbol"] as? String == "VTI" && $0["side"] as? String == "BUY" }, "\(ended)")
            #expect(!orders.contains { $0["symbol"] as? String == "AAPL" }, "\(ended)")
            let held = try await env.holdings()
            #expect(held.first { $0.symbol == "AAPL" }?.quantity == 300)
            try await env.expectConsistent()
        }
    }

    @Test("an excluded holding sold while the run's sells wait does not stop its buys; one an open sell holds can be excluded", arguments: TestDatabaseKind.all)
    func excludedHoldingSoldMeanwhile(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "soldaside@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 300)
            try await Self.buy(client, env, tokens, "GOOGL", 50)
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)
            // GOOGL (no target) is on its way out: an open sell holds all of it.
            let sell = try await post(client, "/api/orders", ["symbol": "GOOGL", "quantity": "50", "side": "SELL", "order_type": "MARKET"], headers: bearer(tokens))
            #expect(sell.status == .created, "\(String(buffer: sell.body))")
            let plan = try await post(client, "/api/portfolio/rebalance", ["excluded_symbols": ["GOOGL"]], headers: bearer(tokens))
            #expect(plan.status == .ok, "\(String(buffer: plan.body))")
            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "soldaside-1"
            let started = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true, "excluded_symbols": ["GOOGL"]], headers: keyed))
            let id = try #require(started["id"] as? String, "\(started)")
            #expect(started["status"] as? String == "selling", "\(started)")
            // The GOOGL sale fills with the run's: by its buy phase GOOGL is neither held nor targeted.
            let ended = try await Self.finish(client, env, tokens, run: id)
            #expect(ended["status"] as? String == "done", "\(ended)")
            #expect((ended["orders"] as? [[String: Any]] ?? []).contains { $0["side"] as? String == "BUY" }, "\(ended)")
            #expect(try await env.holdings().first { $0.symbol == "GOOGL" }.map(\.quantity.isZero) ?? true, "all GOOGL sold")
            try await env.expectConsistent()
        }
    }

    @Test("with targets by asset class, an excluded holding takes its share of its class's weight out of the whole, as a symbol's target does", arguments: TestDatabaseKind.all)
    func excludedByClass(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "classaside@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 100)
            try await Self.buy(client, env, tokens, "MSFT", 50)
            try await Self.buy(client, env, tokens, "VTI", 20)
            let classes: [String: Any] = [
                "asset_classes": [["asset_class": "equity", "percent": "70"], ["asset_class": "etf", "percent": "25"]], "cash_percent": "5",
            ]
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", classes, headers: bearer(tokens)).status == .ok)
            func targets(_ excluded: [String]) async throws -> (lines: [String: Ratio], cash: Ratio) {
                let plan = try await post(client, "/api/portfolio/rebalance", ["excluded_symbols": excluded], headers: bearer(tokens))
                #expect(plan.status == .ok, "\(excluded): \(String(buffer: plan.body))")
                let body = try json(plan)
                var lines: [String: Ratio] = [:]
                for line in body["lines"] as? [[String: Any]] ?? [] {
                    lines[line["symbol"] as? String ?? ""] = try Ratio(parsing: line["target_percent"] as? String ?? "")
                }
                return (lines, try Ratio(parsing: body["cash_target_percent"] as? String ?? ""))
            }
            let whole = try await targets([])
            #expect(whole.lines["VTI"] == 25 && whole.cash == 5, "\(whole)")
            // VTI, the only ETF, left out: its 25 % goes, and equity's 70 and cash's 5 are of the other 75 %.
            let withoutVTI = try await targets(["VTI"])
            let twoThirdsOfTen = try Ratio(parsing: "6.6667")
            #expect(Set(withoutVTI.lines.keys) == ["AAPL", "MSFT"] && withoutVTI.cash == twoThirdsOfTen, "\(withoutVTI)")
            // AAPL left out: its share of equity goes, and MSFT's share is scaled as a symbol's target would be.
            let apple = try #require(whole.lines["AAPL"]), microsoft = try #require(whole.lines["MSFT"])
            let withoutApple = try await targets(["AAPL"])
            let rest = try Percent.hundred - apple
            let expected = (msft: try Percent.rescaled(microsoft, over: rest), vti: try Percent.rescaled(25, over: rest), cash: try Percent.rescaled(5, over: rest))
            #expect(withoutApple.lines["MSFT"] == expected.msft, "\(withoutApple) from \(whole)")
            #expect(withoutApple.lines["VTI"] == expected.vti && withoutApple.cash == expected.cash, "\(withoutApple)")
        }
    }

    @Test("a run whose job gave up is ended by the worker's sweep, saying why, and frees its account", arguments: TestDatabaseKind.all)
    func orphanedRun(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "orphan@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 300)
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)
            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "orphan-1"
            let started = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed))
            let id = try #require(started["id"] as? String)
            // The run's job dies as a worker killed during its last attempt leaves it.
            try await env.database.sql.raw("""
                UPDATE jobs SET status = 'dead', last_error = 'the worker stopped during the last attempt' WHERE kind = 'advance_rebalance'
                """).run()
            await env.worker.drain()
            // Just declared dead, its worker may still be finishing: left alone for a while.
            try await env.services.rebalancing.settleOrphanedRuns()
            #expect(try await Self.get(client, "/api/portfolio/rebalances/\(id)", tokens)["status"] as? String == "selling")
            env.clock.advance(by: RebalanceService.orphanGrace + 1)
            try await env.services.rebalancing.settleOrphanedRuns()
            let ended = try await Self.get(client, "/api/portfolio/rebalances/\(id)", tokens)
            #expect(ended["status"] as? String == "partially_done", "the sells filled: \(ended)")
            #expect((ended["reasons"] as? [String])?.contains("The run stopped: its job gave up (the worker stopped during the last attempt).") == true, "\(ended)")
            keyed[Idempotency.header] = "orphan-2"
            let next = try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed)
            #expect(next.status == .accepted, "\(String(buffer: next.body))")
            let nextID = try #require(try json(next)["id"] as? String)
            try await env.services.rebalancing.settleOrphanedRuns()
            let going = try await Self.get(client, "/api/portfolio/rebalances/\(nextID)", tokens)["status"] as? String
            #expect(going == "selling" || going == "buying", "its job is alive: \(going ?? "-")")
            try await env.expectConsistent()
        }
    }

    @Test("a run never buys what the account bought meanwhile, and a symbol the market stops quoting ends the run instead of blocking the account", arguments: TestDatabaseKind.all)
    func changesUnderTheRun(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        let market = SwitchableMarket(clock: clock.clock)
        try await withTestApp(kind, clock: clock, dependencies: { $0.marketData = market }) { client, env in
            let tokens = try await signUp(client, env, email: "meanwhile@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 300)
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)
            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "meanwhile-1"
            let started = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed))
            let planned = try #require(started["planned_trades"] as? [[String: Any]])
            #expect(planned.contains { $0["symbol"] as? String == "MSFT" && $0["side"] as? String == "BUY" })
            // While the sells are on their way, the owner buys MSFT past its target by hand.
            try await Self.buy(client, env, tokens, "MSFT", 80)
            let finished = try await Self.finish(client, env, tokens, run: try #require(started["id"] as? String))
            let buys = (finished["orders"] as? [[String: Any]] ?? []).filter { $0["side"] as? String == "BUY" }
            #expect(!buys.isEmpty && !buys.contains { $0["symbol"] as? String == "MSFT" }, "\(buys)")
            try await env.expectConsistent()

            // The next run: its sells fill, then VTI stops being quoted before the buys.
            #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "60000"], headers: bearer(tokens)).status == .created)
            try await Self.buy(client, env, tokens, "AAPL", 250)
            keyed[Idempotency.header] = "meanwhile-2"
            let second = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed))
            let id = try #require(second["id"] as? String)
            #expect(second["status"] as? String == "selling", "\(second)")
            await env.worker.drain()
            market.unknown.withLockedValue { $0.insert("VTI") }
            env.clock.advance(by: 60)  // past the quotes' time to live
            let stopped = try await Self.finish(client, env, tokens, run: id)
            #expect(stopped["status"] as? String == "partially_done", "\(stopped)")
            #expect((stopped["reasons"] as? [String])?.contains { $0.contains("the market data does not know VTI") } == true, "\(stopped)")
            // The account is free for another run.
            market.unknown.withLockedValue { $0.removeAll() }
            env.clock.advance(by: 60)
            keyed[Idempotency.header] = "meanwhile-3"
            let third = try await post(client, "/api/portfolio/rebalance", ["mode": "buy_only", "execute": true], headers: keyed)
            #expect(third.status != .conflict, "\(String(buffer: third.body))")
            try await env.expectConsistent()
        }
    }

    @Test("its owner stops a run by cancelling its sells, or by changing the targets while it runs: it buys nothing more", arguments: TestDatabaseKind.all)
    func ownerStopsTheRun(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "stops@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 300)
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)
            let before = try await Self.get(client, "/api/portfolio", tokens)
            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "stop-1"
            let started = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed))
            #expect(started["status"] as? String == "selling", "\(started)")
            // Before the sells fill, the owner changes their mind and cancels every open order.
            let canceled = try await client.execute(uri: "/api/orders", method: .delete, headers: bearer(tokens))
            #expect(canceled.status == .ok, "\(String(buffer: canceled.body))")
            let stopped = try await Self.finish(client, env, tokens, run: try #require(started["id"] as? String))
            #expect((stopped["orders"] as? [[String: Any]])?.allSatisfy { $0["side"] as? String == "SELL" && $0["status"] as? String == "canceled" } == true, "\(stopped)")
            #expect(stopped["status"] as? String == "failed", "\(stopped)")
            #expect((stopped["reasons"] as? [String])?.contains { $0.contains("canceled: nothing more was placed") } == true, "\(stopped)")
            let after = try await Self.get(client, "/api/portfolio", tokens)
            #expect(after["cash"] as? String == before["cash"] as? String && after["available_cash"] as? String == before["cash"] as? String, "\(after)")

            // A second run: while its sells are open the owner moves everything to cash. The sells fill, nothing is bought.
            keyed[Idempotency.header] = "stop-2"
            let second = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed))
            #expect(second["status"] as? String == "selling", "\(second)")
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", ["targets": [] as [Any], "cash_percent": "100"], headers: bearer(tokens)).status == .ok)
            let retargeted = try await Self.finish(client, env, tokens, run: try #require(second["id"] as? String))
            let orders = try #require(retargeted["orders"] as? [[String: Any]])
            #expect(!orders.isEmpty && orders.allSatisfy { $0["side"] as? String == "SELL" && $0["status"] as? String == "filled" }, "\(orders)")
            #expect(retargeted["status"] as? String == "partially_done", "\(retargeted)")
            #expect((retargeted["reasons"] as? [String])?.contains { $0.contains("the targets changed (to version 2)") } == true, "\(retargeted)")
            let positions = try #require(try await Self.get(client, "/api/portfolio", tokens)["positions"] as? [[String: Any]])
            #expect(positions.map { $0["symbol"] as? String } == ["AAPL"], "\(positions)")
            // The mail says what happened: stopped, and why.
            let mails = try await env.outbox(kind: "rebalance_finished")
            #expect(mails.count == 2 && mails.allSatisfy { $0.subject == "Your rebalance was stopped" }, "\(mails.map(\.subject))")
            // (Both written at the test clock's one moment: in either order.)
            #expect(mails.contains { $0.body.contains("One of its orders was canceled, so it placed nothing more.") }, "nothing was sold: \(mails.map(\.body))")
            #expect(mails.contains { $0.body.contains("Its targets were changed while it ran, so it placed nothing more; what its sales brought stays as cash.") }, "\(mails.map(\.body))")

            // A run that only buys, retargeted: its mail speaks of no sales (its filled orders are buys).
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)
            keyed[Idempotency.header] = "stop-3"
            let third = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true, "mode": "buy_only"], headers: keyed))
            #expect(third["status"] as? String == "buying", "\(third)")
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", ["targets": [] as [Any], "cash_percent": "100"], headers: bearer(tokens)).status == .ok)
            let buyOnly = try await Self.finish(client, env, tokens, run: try #require(third["id"] as? String))
            #expect((buyOnly["reasons"] as? [String])?.contains { $0.contains("the targets changed (to version 4)") } == true, "\(buyOnly)")
            let bodies = try await env.outbox(kind: "rebalance_finished").map(\.body)
            #expect(bodies.count == 3 && bodies.contains { $0.contains("Its targets were changed while it ran, so it placed nothing more. Preview") }, "\(bodies)")
            try await env.expectConsistent()
        }
    }

    @Test("targets saved while a run's buys are being priced stop it under the account's lock; the same weights saved again (another drift band) stop nothing", arguments: TestDatabaseKind.all)
    func retargetedWhilePricing(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        let market = SwitchableMarket(clock: clock.clock)
        try await withTestApp(kind, clock: clock, dependencies: { $0.marketData = market }) { client, env in
            let tokens = try await signUp(client, env, email: "retarget@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, "AAPL", 300)
            let uri = "/api/accounts/\(account.id)/targets"
            #expect(try await Self.put(client, uri, Self.targets, headers: bearer(tokens)).status == .ok)
            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "retarget-1"
            let started = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed))
            // The same weights again with another band: what the trades aim at is unchanged, and the run goes on.
            var banded = Self.targets
            banded["drift_band"] = ["absolute_points": "3"]
            #expect(try await Self.put(client, uri, banded, headers: bearer(tokens)).status == .ok)
            let done = try await Self.finish(client, env, tokens, run: try #require(started["id"] as? String))
            #expect(done["status"] as? String == "done", "\(done)")
            #expect((done["orders"] as? [[String: Any]])?.contains { $0["side"] as? String == "BUY" } == true, "\(done)")

            // The next run: the owner moves everything to cash while the run fetches the price of a buy, after its look
            // at the targets. The buys are not placed.
            #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "60000"], headers: bearer(tokens)).status == .created)
            try await Self.buy(client, env, tokens, "AAPL", 250)
            keyed[Idempotency.header] = "retarget-2"
            let second = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed))
            #expect(second["status"] as? String == "selling", "\(second)")
            let cash = try TargetAllocation(weights: [], cashPercent: 100)
            let rebalancing = env.services.rebalancing, owner = account.userID, accountID = account.id
            market.onQuote.withLockedValue { $0 = ("MSFT", { _ = try? await rebalancing.setTargets(cash, account: accountID, owner: owner, context: .none) }) }
            env.clock.advance(by: 60)  // past the quotes' time to live: the buys fetch their prices
            let stopped = try await Self.finish(client, env, tokens, run: try #require(second["id"] as? String))
            #expect(market.onQuote.withLockedValue { $0 == nil }, "the targets were saved while the buys were priced")
            #expect((stopped["orders"] as? [[String: Any]])?.allSatisfy { $0["side"] as? String == "SELL" } == true, "\(stopped)")
            #expect((stopped["reasons"] as? [String])?.contains { $0.contains("the targets changed (to version 3)") } == true, "\(stopped)")
            try await env.expectConsistent()
        }
    }

    @Test("a run's buys keep the cash reserve, checked under the account's lock: a withdrawal between the plan and the start refuses the run", arguments: TestDatabaseKind.all)
    func reserveKeptAtStart(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.startingCash = 20_000 }) { client, env in
            let tokens = try await signUp(client, env, email: "reserve@example.com")
            let account = try await env.firstAccount()
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)
            // The request's two steps, as the controller takes them: the plan (outside the lock), then the start.
            let rebalancing = env.services.rebalancing
            let request = RebalanceService.PlanRequest(
                accountID: account.id, options: RebalanceOptions(mode: .buyOnly, cashReserve: 5_000, minimumTrade: .zero, allowFractional: false),
                priceTolerancePercent: RebalanceService.defaultPriceTolerance)
            let planned = try await rebalancing.plan(request, owner: account.userID, defaultAccount: nil)
            #expect(planned.plan.cashKept == 5_000 && !planned.plan.buys.isEmpty)
            let placements = try await rebalancing.placements(for: planned)
            // Meanwhile the owner withdraws 4,000: the planned buys would leave less than the reserve.
            #expect(try await post(client, "/api/accounts/\(account.id)/withdrawals", ["amount": "4000"], headers: bearer(tokens)).status == .created)
            await #expect(throws: TradingError.self) {
                try await env.database.transaction { db in
                    try await rebalancing.start(planned, placements: placements, owner: account.userID, context: .none, on: db)
                }
            }
            let portfolio = try await Self.get(client, "/api/portfolio", tokens)
            #expect(try Cash(parsing: portfolio["available_cash"] as! String) == 16_000, "\(portfolio)")
            // Through the API the same plan, made now, keeps the reserve.
            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "reserve-1"
            let started = try await post(client, "/api/portfolio/rebalance", ["execute": true, "mode": "buy_only", "cash_reserve": "5000"], headers: keyed)
            #expect(started.status == .accepted, "\(String(buffer: started.body))")
            let after = try await Self.get(client, "/api/portfolio", tokens)
            #expect(try Cash(parsing: after["available_cash"] as! String) >= 5_000, "\(after)")
            try await env.expectConsistent()
        }
    }
}


extension RebalanceTests {
    @Test("a run's buy that fills far above its quote is stopped rather than paid from the cash reserve: the reserve stays, the run says why", arguments: TestDatabaseKind.all)
    func reserveKeptAtFill(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.startingCash = 20_000 }) { client, env in
            let tokens = try await signUp(client, env, email: "kept@example.com")
            let account = try await env.firstAccount()
            #expect(try await Self.put(client, "/api/accounts/\(account.id)/targets", Self.targets, headers: bearer(tokens)).status == .ok)
            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "kept-1"
            let started = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true, "mode": "buy_only", "cash_reserve": "5000"], headers: keyed))
            let id = try #require(started["id"] as? String)
            let buy = try #require((started["orders"] as? [[String: Any]])?.first?["order_id"] as? String)
            let buyID = try #require(OrderID(buy))
            let order = try #require(try await env.store.order(buyID))
            let quantity = try #require(order.quantity)
            // The broker fills the whole buy 30 % above what it set aside per share (its quote and the 5 % margin).
            let perShare = try Price.quotient(order.reservedCash, quantity, places: 2, rounding: .up)
            let price = try Price.product(perShare, Price("1.3")!, places: 2, rounding: .up)
            try await env.orders.apply(.filled([BrokerFill(id: "\(buy)-far", quantity: quantity, price: price)]), to: order.id)
            let shown = try #require(try await env.store.order(order.id))
            #expect(shown.status == .rejected && shown.rejectReason?.contains("cash kept aside") == true, "\(shown.status) \(shown.rejectReason ?? "")")
            let finished = try await Self.finish(client, env, tokens, run: id)
            #expect(finished["status"] as? String == "partially_done", "\(finished)")
            let after = try await Self.get(client, "/api/portfolio", tokens)
            #expect(try Cash(parsing: after["available_cash"] as! String) >= 5_000, "\(after)")
            try await env.expectConsistent()
        }
    }
}

/// The simulated market, with symbols that can be made unknown while a test runs.
final class SwitchableMarket: MarketDataProvider {
    let base: SimulatedMarketDataProvider
    let unknown = NIOLockedValueBox<Set<String>>([])
    /// Symbols whose quotes are a month old (the vendor stopped updating them): stale.
    let monthOld = NIOLockedValueBox<Set<String>>([])
    /// Run once, the next time `symbol` is quoted: something that happens while a price is being fetched.
    let onQuote = NIOLockedValueBox<(symbol: String, run: @Sendable () async -> Void)?>(nil)
    var name: String { "simulated" }

    init(clock: AppClock) {
        base = SimulatedMarketDataProvider(market: SimulatedMarket(), clock: clock)
    }

    func quote(for symbol: String) async throws -> PriceQuote? {
        let hook = onQuote.withLockedValue { hook -> (@Sendable () async -> Void)? in
            guard let armed = hook, armed.symbol == symbol else { return nil }
            hook = nil
            return armed.run
        }
        await hook?()
        if unknown.withLockedValue({ $0.contains(symbol) }) { return nil }
        guard var quote = try await base.quote(for: symbol) else { return nil }
        if monthOld.withLockedValue({ $0.contains(symbol) }) { quote.asOf = quote.asOf.addingTimeInterval(-30 * 86_400) }
        return quote
    }

    func search(_ query: String) async throws -> [SymbolMatch] { try await base.search(query) }
    func dailyHistory(for symbol: String, days: Int) async throws -> [DailyClose] { try await base.dailyHistory(for: symbol, days: days) }
    func previousCloseTime(at date: Date, calendar: MarketCalendar) -> Date { base.previousCloseTime(at: date, calendar: calendar) }
}
