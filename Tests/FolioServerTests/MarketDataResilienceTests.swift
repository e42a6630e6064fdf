import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import SQLKit
import Testing

@testable import FolioServer

/// Market data when the vendor fails: no leaked keys, stale quotes at once,
/// back-off and a circuit, partial answers; and prices shown alike everywhere.
@Suite("Market data under vendor failure")
struct MarketDataResilienceTests {
    static let friday = AlphaVantageTests.friday

    static func vendor(_ fake: FakeAlphaVantage, perMinute: Int = 1000) -> (inout AppConfiguration) -> Void {
        { configuration in
            configuration.alphaVantage = .init(apiKey: FakeAlphaVantage.apiKey, baseURL: fake.baseURL, callsPerMinute: perMinute, callsPerDay: 100_000)
            configuration.quoteTimeToLive = 15
            configuration.accessTokenLifetime = 86_400
        }
    }

    static func quotes(_ client: some TestClientProtocol, _ tokens: [String: Any], _ symbols: String) async throws -> TestResponse {
        try await client.execute(uri: "/api/market/quotes?symbols=\(symbols)", method: .get, headers: bearer(tokens))
    }

    @Test("no configured secret reaches the log: the key the vendor quotes back, and every secret planted in vendor errors, exceptions and request bodies", arguments: TestDatabaseKind.all)
    func secretsNeverLogged(kind: TestDatabaseKind) async throws {
        struct VendorFailure: Error, CustomStringConvertible { var description: String }
        let secrets = [
            "current-signing-key-" + String(repeating: "k", count: 24), "previous-signing-key-" + String(repeating: "p", count: 24), "ops-token-0123456789abcdef",
            "ALPACA-KEY-ID-4567", "alpaca-secret-value-89abcdef", FakeAlphaVantage.apiKey,
        ]
        try await withFakeAlphaVantage { fake in
            try await withTestApp(kind, clock: TestClock(start: Self.friday), configure: { configuration in
                Self.vendor(fake)(&configuration)
                configuration.secretKey = secrets[0]
                configuration.previousSecretKeys = [secrets[1]]
                configuration.opsToken = secrets[2]
                configuration.alpaca = .init(keyID: secrets[3], secretKey: secrets[4], baseURL: "http://127.0.0.1:9")
                configuration.debug = true
                configuration.logLevel = .debug
            }) { client, env in
                let tokens = try await signUp(client, env, email: "keys@example.com")
                // The daily-limit answer names the key: "We have detected your API key as FAKEKEY…".
                fake.mode = .information
                _ = try await Self.quotes(client, tokens, "IBM")
                #expect(env.logs.lines.contains { $0.contains("We have detected your API key as [REDACTED]") })
                // Each secret planted where text from outside ends up: messages, errors, nested metadata, request bodies.
                for secret in secrets {
                    env.services.logger.error("vendor answered: \(secret)", metadata: [
                        "error": .string(String(describing: VendorFailure(description: "refused \(secret) at /v2/account"))),
                        "context": .dictionary(["detail": .string("prefix\(secret)suffix")]),
                        "items": .array([.stringConvertible(VendorFailure(description: secret))]),
                    ])
                    _ = try await post(client, "/api/test/echo", ["symbol": "AAPL", "quantity": "1", "note": "copy of \(secret) here"])
                }
                let lines = env.logs.lines
                #expect(lines.contains { $0.contains("request body") })
                for secret in secrets {
                    #expect(!lines.contains { $0.contains(secret) }, "\(secret) reached the log")
                }
            }
        }
    }

    @Test("refusals and bodies that are no answer Alpha Vantage sends with HTTP 200 (a wrong key, a spent limit, an HTML page) are counted and logged as what they are, not as calls that worked", arguments: [TestDatabaseKind.sqlite])
    func refusalsCounted(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            let clock = TestClock(start: Self.friday)
            try await withTestApp(kind, clock: clock, configure: { Self.vendor(fake)(&$0); $0.opsToken = "ops-token-for-tests-0123" }) { client, env in
                let tokens = try await signUp(client, env, email: "refusals@example.com")
                fake.mode = .errorMessage
                _ = try await Self.quotes(client, tokens, "IBM")
                clock.advance(by: 120)
                fake.mode = .note
                _ = try await Self.quotes(client, tokens, "AAPL")
                // An HTML page with HTTP 200 is no answer either: a failed call, logged, and the 503 says when to come back.
                clock.advance(by: 120)
                fake.mode = .garbage
                let page = try await Self.quotes(client, tokens, "MSFT")
                #expect(page.status == .serviceUnavailable && page.headers[.retryAfter] != nil, "\(page.headers)")
                #expect(env.logs.lines.contains { $0.contains("market data call failed") && $0.contains("GLOBAL_QUOTE") && $0.contains("undecodable") })
                let metrics = String(buffer: try await client.execute(uri: "/metrics", method: .get, headers: [.authorization: "Bearer ops-token-for-tests-0123"]).body)
                #expect(metrics.contains(#"folio_vendor_calls_total{vendor="alpha_vantage",endpoint="GLOBAL_QUOTE",result="error"} 1"#), "\(metrics)")
                #expect(metrics.contains(#"folio_vendor_calls_total{vendor="alpha_vantage",endpoint="GLOBAL_QUOTE",result="rejected"} 1"#), "\(metrics)")
                #expect(metrics.contains(#"folio_vendor_calls_total{vendor="alpha_vantage",endpoint="GLOBAL_QUOTE",result="rate_limited"} 1"#))
                #expect(!metrics.contains(#"folio_vendor_calls_total{vendor="alpha_vantage",endpoint="GLOBAL_QUOTE",result="ok"}"#))
            }
        }
    }

    @Test("during a 60-second outage, 100 quote requests get the stale quotes at once and the vendor sees a handful of calls, not one per request", arguments: TestDatabaseKind.all)
    func outage(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            let clock = TestClock(start: Self.friday)
            try await withTestApp(kind, clock: clock, configure: { Self.vendor(fake)(&$0); $0.opsToken = "ops-token-for-tests-0123" }) { client, env in
                let tokens = try await signUp(client, env, email: "outage@example.com")
                #expect(try await Self.quotes(client, tokens, "IBM,AAPL").status == .ok)
                clock.advance(by: 16)
                fake.mode = .serverError
                let before = fake.hits.count
                for _ in 0..<100 {
                    let answer = try json(try await Self.quotes(client, tokens, "IBM,AAPL"))
                    let data = try #require(answer["data"] as? [[String: Any]])
                    #expect(data.map { $0["price"] as? String } == ["265.65", "189.98"])
                    #expect(data.allSatisfy { $0["stale"] as? Bool == true })
                    clock.advance(by: 0.6)
                    // Let this request's background refreshes finish before the next request, as time passes between them.
                    try await eventually("refreshes settle") { env.services.quotes.refreshesInFlight == 0 }
                }
                // Two symbols: 2 failed refreshes, 2 more open the circuit (3 in a row), then one half-open probe after 30 s.
                let calls = fake.hits.count - before
                #expect(calls <= 6, "the vendor saw \(calls) calls in the outage")
                #expect(env.services.marketDataGate?.report.state == "open")
                #expect(env.logs.lines.contains { $0.contains("market data vendor held off") })

                // Operators see the circuit in /health/detailed; Folio is degraded, not down.
                let health = try json(try await client.execute(uri: "/health/detailed", method: .get, headers: [.authorization: "Bearer ops-token-for-tests-0123"]))
                #expect(health["status"] as? String == "degraded")
                let vendor = try #require((health["components"] as? [String: Any])?["market_data"] as? [String: Any])
                #expect(vendor["state"] as? String == "open")
                #expect(vendor["source"] as? String == "alpha_vantage")
                #expect(vendor["retry_at"] != nil)
                // And in the metrics.
                let metrics = String(buffer: try await client.execute(uri: "/metrics", method: .get, headers: [.authorization: "Bearer ops-token-for-tests-0123"]).body)
                #expect(metrics.contains(#"folio_vendor_gate_state{vendor="alpha_vantage",state="open"} 1"#), "\(metrics.prefix(400))")
                #expect(metrics.contains(#"folio_vendor_gate_state{vendor="alpha_vantage",state="closed"} 0"#))
                #expect(metrics.contains(#"folio_vendor_calls_total{vendor="alpha_vantage",endpoint="GLOBAL_QUOTE",result="#), "each call counted by function")

                // The vendor recovers: after the cool-down one probe closes the circuit and quotes are fresh again.
                fake.mode = .normal
                clock.advance(by: 301)
                _ = try await Self.quotes(client, tokens, "IBM")
                try await eventually("the probe closes the circuit") { env.services.marketDataGate?.report.state == "closed" }
                try await eventually("fresh quotes") {
                    let answer = try json(try await Self.quotes(client, tokens, "IBM,AAPL"))
                    return (answer["data"] as? [[String: Any]])?.allSatisfy { $0["stale"] as? Bool == false } == true
                }
            }
        }
    }

    @Test("a symbol the vendor keeps refusing is asked about again only after a pause that doubles with each failure: resting orders on it cannot spend the call budget orders need")
    func failingSymbolPauses() async throws {
        try await withFakeAlphaVantage { fake in
            let clock = TestClock(start: Self.friday)
            try await withTestApp(.sqlite, clock: clock, configure: Self.vendor(fake)) { _, env in
                let quotes = env.services.quotes
                fake.mode = .errorMessage
                func hits() -> Int { fake.hits.filter { $0 == "GLOBAL_QUOTE" }.count }
                func look() async -> QuoteService.Lookup { await quotes.lookup("IBM") }
                guard case .unavailable = await look() else { Issue.record("a refused symbol gave a price"); return }
                #expect(hits() == 1)
                // Looked at every second, as a resting order's recheck does: no call until the pause is over.
                for _ in 0..<4 {
                    clock.advance(by: 1)
                    guard case .unavailable(let reason) = await look() else { Issue.record("a price out of nothing"); return }
                    guard case .heldOff = reason else { Issue.record("not held off: \(reason)"); return }
                }
                #expect(hits() == 1, "nothing asked for 5 seconds")
                clock.advance(by: 1)
                _ = await look()
                #expect(hits() == 2, "asked again after 5 seconds")
                // The next pause is 10 seconds, then 20.
                clock.advance(by: 9)
                _ = await look()
                #expect(hits() == 2)
                clock.advance(by: 1)
                _ = await look()
                #expect(hits() == 3)
                clock.advance(by: 19)
                _ = await look()
                #expect(hits() == 3)
                // An order for it meanwhile is told when to try again, and asks the vendor nothing.
                do {
                    _ = try await quotes.quote(for: "IBM")
                    Issue.record("an order priced from nothing")
                } catch let refused as MarketDataUnavailable {
                    #expect((refused.retryAfter ?? 0) >= 1, "told when to try again")
                }
                #expect(hits() == 3)
                // Answered again: the pause is forgotten.
                fake.mode = .normal
                clock.advance(by: 1)
                guard case .found = await look() else { Issue.record("no price once the vendor answers"); return }
                #expect(hits() == 4)
                clock.advance(by: 16)
                _ = await look()
                #expect(hits() == 5, "a fresh quote's lifetime, not a pause")
                #expect(QuoteService.pause(after: 1) == 5 && QuoteService.pause(after: 3) == 20 && QuoteService.pause(after: 20) == QuoteService.longestPause)
            }
        }
    }

    @Test("a symbol paused after a failure here still takes the fresh quote another instance stored meanwhile, and is no longer paused")
    func pausedSymbolReadsTheSharedTable() async throws {
        try await withFakeAlphaVantage { fake in
            let clock = TestClock(start: Self.friday)
            try await withTestApp(.sqlite, clock: clock, configure: Self.vendor(fake)) { _, env in
                let here = env.services.quotes
                fake.mode = .errorMessage
                guard case .unavailable = await here.lookup("IBM") else { Issue.record("a price from a refusal"); return }
                let hits = fake.hits.count
                // Another instance on the same database fetches it.
                fake.mode = .normal
                let there = QuoteService(provider: here.provider, store: QuoteStore(database: env.database), clock: clock.clock, timeToLive: 15)
                guard case .found = await there.lookup("IBM") else { Issue.record("no quote there"); return }
                #expect(fake.hits.count == hits + 1)
                clock.advance(by: 1)
                guard case .found(let quote) = await here.lookup("IBM") else { Issue.record("the stored quote was not taken"); return }
                #expect(!quote.isStale)
                #expect(fake.hits.count == hits + 1, "no call of its own")
            }
        }
    }

    @Test("a stored quote dated far ahead (a clock set wrong, a row changed) is not taken as fresh, and the next fetch replaces it")
    func quoteFromTheFuture() async throws {
        try await withFakeAlphaVantage { fake in
            let clock = TestClock(start: Self.friday)
            try await withTestApp(.sqlite, clock: clock, configure: Self.vendor(fake)) { _, env in
                let store = QuoteStore(database: env.database)
                let provider = env.services.quotes.provider
                let poisoned = PriceQuote(symbol: "IBM", price: Price("0.01")!, previousClose: nil, asOf: Self.friday)
                try await store.save(poisoned, fetchedAt: clock.now.addingTimeInterval(365 * 86_400), source: provider.name)
                let fresh = QuoteService(provider: provider, store: store, clock: clock.clock, timeToLive: 15)
                guard case .found(let quote) = await fresh.lookup("IBM") else { Issue.record("no quote"); return }
                #expect(quote.price != Price("0.01")!, "the vendor was asked")
                let stored = try #require(try await store.load("IBM", source: provider.name))
                #expect(stored.quote?.price == quote.price, "the row was replaced")
            }
        }
    }

    @Test("answers unusable for one symbol each (another symbol's quote, no positive price, no trading day) do not hold the vendor off for every symbol")
    func badAnswersAboutSymbolsKeepTheCircuitClosed() async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestApp(.sqlite, clock: TestClock(start: Self.friday), configure: Self.vendor(fake)) { _, env in
                let quotes = env.services.quotes
                fake.mode = .quoteOf("MSFT")
                for symbol in ["AAPL", "IBM"] {
                    guard case .unavailable = await quotes.lookup(symbol) else { Issue.record("\(symbol) priced from MSFT's quote"); return }
                }
                // Nor are another symbol's daily closes taken for this one's (a backfill would keep them for good).
                await #expect(throws: (any Error).self, "IBM's history taken from MSFT's closes") { try await quotes.provider.dailyHistory(for: "IBM", days: 30) }
                fake.mode = .noTradingDay
                guard case .unavailable = await quotes.lookup("ORDB") else { Issue.record("a quote of no day was taken"); return }
                // Three in a row would open the circuit if they were the vendor's failures.
                fake.mode = .normal
                guard case .found = await quotes.lookup("MSFT") else { Issue.record("the vendor was held off for every symbol"); return }
            }
        }
    }

    @Test("a symbol priced before that the vendor answers with an empty quote is not unknown: its last quote is served stale, a holding can still be sold, and its order waits rather than being refused", arguments: [TestDatabaseKind.sqlite])
    func emptyQuoteForAKnownSymbol(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            let clock = TestClock(start: Self.friday)
            try await withTestApp(kind, clock: clock, configure: Self.vendor(fake)) { client, env in
                let tokens = try await signUp(client, env, email: "empty-quote@example.com")
                let bought = try await post(client, "/api/orders", ["symbol": "IBM", "quantity": "2", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
                #expect(bought.status == .created, "\(String(buffer: bought.body))")
                await env.worker.drain()
                fake.mode = .emptyQuote
                clock.advance(by: 16)
                let sold = try await post(client, "/api/orders", ["symbol": "IBM", "quantity": "1", "side": "SELL", "order_type": "MARKET"], headers: bearer(tokens))
                #expect(sold.status == .created, "a holding is still sold: \(String(buffer: sold.body))")
                let portfolio = try json(try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(tokens)))
                let position = (portfolio["positions"] as? [[String: Any]])?.first { $0["symbol"] as? String == "IBM" }
                #expect(position?["price"] as? String == "265.65" && position?["stale"] as? Bool == true, "\(position ?? [:])")
                // Today's value in the history and the returns is at that stale quote too, and they say so.
                let history = try json(try await client.execute(uri: "/api/portfolio/history", method: .get, headers: bearer(tokens)))
                let today = (history["data"] as? [[String: Any]])?.last
                #expect(today?["provisional"] as? Bool == true && today?["stale"] as? Bool == true, "\(history)")
                let returns = try json(try await client.execute(uri: "/api/portfolio/performance?range=ALL", method: .get, headers: bearer(tokens)))
                #expect(returns["stale"] as? Bool == true, "\(returns)")
                // The vendor that never priced a symbol still makes it unknown.
                let unknown = try await post(client, "/api/orders", ["symbol": "NOPE", "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
                #expect(try problem(unknown).code == "unknown_symbol")
                await env.worker.drain()
                let order = try json(try await client.execute(uri: "/api/orders/\(try #require(try json(sold)["id"] as? String))", method: .get, headers: bearer(tokens)))
                #expect(order["status"] as? String != "rejected", "waits for a fresh price: \(order)")
                fake.mode = .normal
                clock.advance(by: 600)
                await env.worker.drain()
                let filled = try json(try await client.execute(uri: "/api/orders/\(try #require(try json(sold)["id"] as? String))", method: .get, headers: bearer(tokens)))
                #expect(filled["status"] as? String == "filled", "\(filled)")
                // A week of empty answers: the symbol is taken as gone, unknown as the vendor says.
                fake.mode = .emptyQuote
                clock.advance(by: 8 * 86_400)
                guard case .unknown = await env.services.quotes.lookup("IBM") else { Issue.record("a symbol unpriced for a week stays known"); return }
            }
        }
    }

    @Test("a daily history with a day that cannot be read is refused (no gap a backfill would fill with a guess), and does not hold the vendor off for every symbol")
    func unreadableHistoryDay() async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestApp(.sqlite, clock: TestClock(start: Self.friday), configure: Self.vendor(fake)) { client, env in
                let tokens = try await signUp(client, env, email: "bad-day@example.com")
                fake.mode = .zeroCloseDay
                for _ in 0..<4 {
                    let history = try await client.execute(uri: "/api/market/history/IBM?days=30", method: .get, headers: bearer(tokens))
                    #expect(history.status == .serviceUnavailable, "\(String(buffer: history.body))")
                }
                fake.mode = .normal
                guard case .found = await env.services.quotes.lookup("MSFT") else { Issue.record("the vendor was held off for every symbol"); return }
            }
        }
    }

    @Test("the portfolio read spends the lookups' share of the call budget: the call kept for pricing orders is still there", arguments: [TestDatabaseKind.sqlite])
    func portfolioSpendsLookupsShare(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            let clock = TestClock(start: Self.friday)
            try await withTestApp(kind, clock: clock, configure: Self.vendor(fake, perMinute: 5)) { client, env in
                let tokens = try await signUp(client, env, email: "portfolio-budget@example.com")
                for symbol in ["IBM", "AAPL", "MSFT", "ORDB"] {
                    #expect(try await post(client, "/api/orders", ["symbol": symbol, "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens)).status == .created)
                }
                await env.worker.drain()
                // A new minute, every quote past its lifetime: the read refreshes four of them, at most.
                clock.advance(by: 60)
                for _ in 0..<3 { _ = try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(tokens)) }
                await env.services.quotes.settle()
                let before = fake.hits.count
                let order = try await post(client, "/api/orders", ["symbol": "NOPE", "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
                #expect(order.status == .unprocessableContent, "priced (unknown to the vendor), not refused for want of a call: \(String(buffer: order.body))")
                #expect(fake.hits.count == before + 1)
            }
        }
    }

    @Test("a process that has just started serves reads the quotes another instance stored, stale past their lifetime, at once, and refreshes them in the background", arguments: TestDatabaseKind.all)
    func restartedInstanceServesStoredQuotes(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            let clock = TestClock(start: Self.friday)
            try await withTestApp(kind, clock: clock, configure: Self.vendor(fake)) { _, env in
                let first = env.services.quotes
                _ = await first.quotes(for: ["IBM", "AAPL"])
                #expect(fake.hits.count == 2)
                // Another process on the same database, with nothing in memory; the vendor now takes 8 s.
                let restarted = QuoteService(provider: first.provider, store: QuoteStore(database: env.database), clock: clock.clock, timeToLive: 15)
                fake.mode = .slow(.seconds(8))
                let fresh = await restarted.quotes(for: ["IBM", "AAPL"])
                #expect(fresh.count == 2 && fresh.values.allSatisfy { !$0.isStale }, "fresh from the table, no call")
                #expect(fake.hits.count == 2)
                clock.advance(by: 16)
                let again = QuoteService(provider: first.provider, store: QuoteStore(database: env.database), clock: clock.clock, timeToLive: 15)
                // No wall clock is read: both come back stale, which they could not if the read had waited for the vendor.
                let stale = await again.quotes(for: ["IBM", "AAPL"])
                #expect(stale.count == 2 && stale.values.allSatisfy(\.isStale), "\(stale)")
                let storedPrice = try Price(parsing: "265.65")
                #expect(stale["IBM"]?.price == storedPrice)
                fake.mode = .normal
                #expect(await again.settle(), "the background refreshes land")
                await restarted.settle()
            }
        }
    }

    @Test("saving targets checks their symbols on lookups' share of the call budget: the call kept for pricing orders is still there", arguments: [TestDatabaseKind.sqlite])
    func targetsSpendLookupsShare(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestApp(kind, clock: TestClock(start: Self.friday), configure: Self.vendor(fake, perMinute: 5)) { client, env in
                let tokens = try await signUp(client, env, email: "targets-budget@example.com")
                let account = try await env.firstAccount()
                let four = ["IBM", "AAPL", "MSFT", "ORDB"].map { ["symbol": $0, "percent": "25"] }
                let saved = try await RebalanceTests.put(client, "/api/accounts/\(account.id)/targets", ["targets": four], headers: bearer(tokens))
                #expect(saved.status == .ok, "\(String(buffer: saved.body))")
                #expect(fake.hits.count == 4)
                // Lookups' four calls of the minute are spent: a fifth symbol to check waits.
                let fifth = four.dropLast() + [["symbol": "KO", "percent": "25"]]
                let refused = try await RebalanceTests.put(client, "/api/accounts/\(account.id)/targets", ["targets": Array(fifth)], headers: bearer(tokens))
                #expect(refused.status == .serviceUnavailable, "\(String(buffer: refused.body))")
                // The minute's fifth call is still there for an order's price.
                let order = try await post(client, "/api/orders", ["symbol": "NOPE", "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
                #expect(order.status == .unprocessableContent, "priced (unknown to the vendor), not refused for want of a call: \(String(buffer: order.body))")
                #expect(fake.hits.count == 5)
            }
        }
    }

    @Test("a slow vendor does not hold up reads: stale quotes come at once while one refresh per symbol waits", arguments: TestDatabaseKind.all)
    func slowVendor(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            let clock = TestClock(start: Self.friday)
            try await withTestApp(kind, clock: clock, configure: Self.vendor(fake)) { client, env in
                let tokens = try await signUp(client, env, email: "slow@example.com")
                #expect(try await Self.quotes(client, tokens, "IBM,AAPL").status == .ok)
                clock.advance(by: 16)
                // The vendor now takes 8 s (under the client's 10 s timeout). No wall clock is read here: every answer
                // below comes back stale, which it could not if it had waited for the vendor's fresh quote.
                fake.mode = .slow(.seconds(8))
                let before = fake.hits.count
                for _ in 0..<5 {
                    let answer = try json(try await Self.quotes(client, tokens, "IBM,AAPL"))
                    #expect((answer["data"] as? [[String: Any]])?.allSatisfy { $0["stale"] as? Bool == true } == true)
                }
                #expect(fake.hits.count - before <= 2, "one refresh per symbol at a time")
                fake.mode = .normal
                try await eventually("the slow refreshes land") { env.services.quotes.refreshesInFlight == 0 }
            }
        }
    }

    @Test("the daily-limit answer holds the vendor off until the next UTC day; the per-minute Note until the next minute")
    func holdOffWindows() throws {
        let now = try Date("2026-11-27T15:00:42Z", strategy: .iso8601)
        let note = "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute and 500 calls per day."
        let information = "We have detected your API key as X and our standard API rate limit is 25 requests per day."
        #expect(VendorGate.nextWindow(after: now, message: note) == (try Date("2026-11-27T15:01:00Z", strategy: .iso8601)))
        #expect(VendorGate.nextWindow(after: now, message: information) == (try Date("2026-11-28T00:00:00Z", strategy: .iso8601)))
        // A burst waits a minute, though it names the day's limit; a function's name is not a daily limit.
        let burst = "Thank you for using Alpha Vantage! Please consider spreading out your free API requests more sparingly (1 request per second). You may subscribe to any of the premium plans to lift the free key rate limit (25 requests per day)."
        #expect(VendorGate.nextWindow(after: now, message: burst) == (try Date("2026-11-27T15:01:00Z", strategy: .iso8601)))
        #expect(AlphaVantageProvider.isRateLimit(burst))
        #expect(!AlphaVantageProvider.isRateLimit("This is a premium endpoint. You may subscribe to any of the premium plans"))
        #expect(AlphaVantageProvider.isRateLimit("Something Alpha Vantage has not said before"), "an unknown notice holds back, as before")
        #expect(VendorGate.nextWindow(after: now, message: "Burst of TIME_SERIES_DAILY calls") == (try Date("2026-11-27T15:01:00Z", strategy: .iso8601)))
    }

    @Test("the circuit: three failures open it for 30 s, late failures of calls already under way do not lengthen it, one probe at a time, a success closes it")
    func circuit() throws {
        let clock = TestClock(start: Self.friday)
        let gate = VendorGate(vendor: "test", clock: clock.clock, logger: LogCapture().logger())
        let down = MarketDataError.unreachable("timeout")
        let early = try (0..<4).map { _ in try gate.admit() }  // four calls under way
        for admission in early.prefix(3) { gate.failed(down, admission) }
        #expect(gate.report.state == "open")
        #expect(gate.report.retryAt == clock.now.addingTimeInterval(30))
        gate.failed(down, early[3])  // the fourth fails late
        #expect(gate.report.retryAt == clock.now.addingTimeInterval(30), "a late failure does not lengthen the cool-down")
        gate.succeeded(early[3])
        #expect(gate.report.state == "open", "a late success of a call from before is not the probe")
        #expect(throws: MarketDataError.self) { try gate.admit() }
        clock.advance(by: 31)
        #expect(gate.report.state == "half_open")
        let probe = try gate.admit()
        #expect(probe.isProbe)
        #expect(throws: MarketDataError.self, "one probe at a time") { try gate.admit() }
        gate.failed(down, probe)
        #expect(gate.report.retryAt == clock.now.addingTimeInterval(60), "a failed probe opens it for twice as long")
        clock.advance(by: 61)
        let second = try gate.admit()
        gate.succeeded(second)
        #expect(gate.report.state == "closed")

        // A rate-limit hold is not lifted by the late success of a call made before it.
        let before = try gate.admit()
        gate.failed(.rateLimited("25 requests per day"), try gate.admit())
        gate.succeeded(before)
        #expect(gate.report.state == "held_off")
    }

    @Test("one symbol without a quote does not fail the others: they are answered, it is listed under errors; 503 only when none has a quote", arguments: TestDatabaseKind.all)
    func partialAnswers(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestApp(kind, clock: TestClock(start: Self.friday), configure: Self.vendor(fake, perMinute: 1)) { client, env in
                let tokens = try await signUp(client, env, email: "partial@example.com")
                #expect(try await Self.quotes(client, tokens, "IBM").status == .ok)  // the minute's one call
                let partial = try await Self.quotes(client, tokens, "IBM,AAPL")
                #expect(partial.status == .ok)
                let body = try json(partial)
                #expect((body["data"] as? [[String: Any]])?.map { $0["symbol"] as? String } == ["IBM"])
                let errors = try #require(body["errors"] as? [[String: Any]])
                #expect(errors.map { $0["symbol"] as? String } == ["AAPL"])
                #expect(errors.first?["code"] as? String == "market_data_unavailable")
                #expect((errors.first?["retry_after_seconds"] as? Int).map { (1...60).contains($0) } == true)
                let none = try await Self.quotes(client, tokens, "AAPL")
                #expect(none.status == .serviceUnavailable)
                #expect(try problem(none).code == "market_data_unavailable")
            }
        }
    }

    @Test("prices show at least two places everywhere: a fill at 151.00 is 151.00 in the order, the ledger, the position and the description", arguments: TestDatabaseKind.all)
    func priceFormatting(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestApp(kind, clock: TestClock(start: Self.friday), configure: Self.vendor(fake)) { client, env in
                let tokens = try await signUp(client, env, email: "prices@example.com")
                let placed = try json(try await post(client, "/api/orders", ["symbol": "ORDB", "quantity": "1", "side": "buy", "order_type": "market"], headers: bearer(tokens)))
                await env.worker.drain()
                let id = try #require(placed["id"] as? String)
                let order = try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))
                #expect(order["average_fill_price"] as? String == "151.00")
                let entries = try #require(try json(try await client.execute(uri: "/api/transactions?type=buy", method: .get, headers: bearer(tokens)))["data"] as? [[String: Any]])
                #expect(entries.first?["price"] as? String == "151.00")
                #expect(entries.first?["description"] as? String == "buy 1 ORDB @ 151.00")
                let position = try #require((try json(try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(tokens)))["positions"] as? [[String: Any]])?.first)
                #expect(position["average_cost"] as? String == "151.00")
                #expect(position["price"] as? String == "151.00")
                try await env.expectConsistent("the ledger digest keeps its canonical text")
            }
        }
    }

    @Test("query strings read + as a space; history names history when it is unavailable; a submit that died for want of a price says so", arguments: TestDatabaseKind.all)
    func smallIssues(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            let clock = TestClock(start: Self.friday)
            try await withTestApp(kind, clock: clock, configure: Self.vendor(fake)) { client, env in
                let tokens = try await signUp(client, env, email: "small@example.com")
                _ = try await client.execute(uri: "/api/market/symbols?query=apple+corp", method: .get, headers: bearer(tokens))
                _ = try await client.execute(uri: "/api/market/symbols?query=c%2B%2B", method: .get, headers: bearer(tokens))
                #expect(fake.keywords == ["apple corp", "c++"])

                fake.mode = .serverError
                let history = try await client.execute(uri: "/api/market/history/MSFT", method: .get, headers: bearer(tokens))
                #expect(history.status == .serviceUnavailable)
                #expect(try problem(history).detail.contains("history"))
                #expect(try !problem(history).detail.contains("quote"))

                // Priced while the vendor answered; by submission the quote is stale and the vendor down.
                fake.mode = .normal
                let placed = try json(try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "buy", "order_type": "market"], headers: bearer(tokens)))
                let id = try #require(placed["id"] as? String)
                clock.advance(by: 16)
                fake.mode = .serverError
                await env.worker.drain()
                let job = try #require(try await env.jobs().first { $0.orderID?.description == id })
                #expect(job.lastError?.hasPrefix("market data unavailable") == true, "\(job.lastError ?? "none")")
                // Its retries spent: the order is rejected naming the real cause.
                try await env.database.sql.raw("UPDATE jobs SET status = 'dead' WHERE id = \(bind: job.id)").run()
                try await env.orders.recheckRestingOrders()
                let order = try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))
                #expect(order["status"] as? String == "rejected")
                #expect(order["reject_reason"] as? String == "market data unavailable: no fresh price for AAPL")
            }
        }
    }
}
