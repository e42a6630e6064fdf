import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers
import Testing

@testable import FolioServer

@Suite("Alpha Vantage client against a local fake")
struct AlphaVantageTests {
    /// Friday 27 November 2026, 15:00 UTC (10:00 in New York).
    static let friday = try! Date("2026-11-27T15:00:00Z", strategy: .iso8601)

    func provider(_ fake: FakeAlphaVantage, database: FolioDatabase, clock: TestClock, perMinute: Int = 1000, perDay: Int = 1000, logs: LogCapture = LogCapture()) -> AlphaVantageProvider {
        AlphaVantageProvider(
            apiKey: FakeAlphaVantage.apiKey, baseURL: fake.baseURL,
            budget: CallBudget(database: database, provider: AlphaVantageProvider.name, perMinute: perMinute, perDay: perDay, clock: clock.clock),
            clock: clock.clock, httpClient: .shared, logger: logs.logger())
    }

    @Test("a vendor that answers its head and then stalls in the middle of the body is unreachable once the call's deadline passes, not waited on for as long as it stalls")
    func stallInTheBody() async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestDatabase(.sqlite) { database, _ in
                var vendor = provider(fake, database: database, clock: TestClock(start: Self.friday))
                vendor.timeout = .milliseconds(300)
                // Waited out, the stalled body would end as a quote without a price (a bad response): the deadline's
                // "unreachable" is what says the call stopped waiting.
                fake.mode = .stallsMidBody(.seconds(2))
                do {
                    _ = try await vendor.quote(for: "IBM")
                    Issue.record("a stalled answer gave a quote")
                } catch MarketDataError.unreachable(let reason) {
                    #expect(reason.contains("VendorDeadlineExceeded"), "\(reason)")
                } catch {
                    Issue.record("not cut off at the deadline: \(error)")
                }
                fake.mode = .normal
            }
        }
    }

    @Test("GLOBAL_QUOTE, TIME_SERIES_DAILY and SYMBOL_SEARCH parse exactly from their documented shapes", arguments: TestDatabaseKind.all)
    func documentedShapes(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestDatabase(kind) { database, _ in
                let clock = TestClock(start: Self.friday)
                let vendor = provider(fake, database: database, clock: clock)

                let quote = try #require(try await vendor.quote(for: "MSFT"))
                #expect(quote.price == Price("415.1234"))
                #expect(quote.previousClose == Price("410"))
                #expect(quote.asOf == Self.friday, "a quote of today's trading day is as of the fetch")
                #expect(try await vendor.quote(for: "NOPE") == nil, "an empty Global Quote means an unknown symbol")

                fake.tradingDay = "2026-11-26"
                let older = try #require(try await vendor.quote(for: "IBM"))
                #expect(older.asOf == (try Date("2026-11-26T21:00:00Z", strategy: .iso8601)), "an earlier day's quote is as of its 16:00 New York close")

                let closes = try await vendor.dailyHistory(for: "IBM", days: 5)
                #expect(closes.count == 5)
                #expect(closes.last?.close == Price("265.65"))
                #expect(closes.first?.close == Price("265.61"))
                #expect(closes.map(\.date) == closes.map(\.date).sorted())
                #expect(fake.hits.last == "TIME_SERIES_DAILY")
                #expect(try await vendor.dailyHistory(for: "IBM", days: 365).count == 365, "a premium key gets a year")

                // A free key: `outputsize=full` is premium. The 100 days there are, and from then on no refused call first.
                fake.mode = .freeKey
                let before = fake.hits.count
                let year = try await vendor.dailyHistory(for: "IBM", days: 365)
                #expect(year.count == 100 && year.last?.close == Price("265.65"))
                #expect(fake.hits.count == before + 2, "the refused full call, then the compact one")
                #expect(try await vendor.dailyHistory(for: "AAPL", days: 200).count == 100)
                #expect(fake.hits.count == before + 3, "known to be free: compact at once")
                fake.mode = .normal

                let matches = try await vendor.search("ibm")
                #expect(matches == [SymbolMatch(symbol: "IBM", name: "International Business Machines Corp", assetClass: .equity)], "only US listings")
            }
        }
    }

    @Test("a quote that missed a whole session (a halted stock) is stale and prices no paper fill; a free key's end-of-day quote of the last session is not", arguments: TestDatabaseKind.all)
    func quoteMissingASessionIsStale(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestDatabase(kind) { database, _ in
                // Friday after Thanksgiving: the session before is Wednesday's.
                let clock = TestClock(start: Self.friday)
                let vendor = provider(fake, database: database, clock: clock)
                let quotes = QuoteService(provider: vendor, store: QuoteStore(database: database), clock: clock.clock)
                fake.tradingDay = "2026-11-25"
                let endOfDay = try #require(try await quotes.quote(for: "IBM"))
                #expect(!endOfDay.isStale, "the last session's close is what a free key gives during the next one")

                fake.tradingDay = "2026-11-24"
                let halted = try #require(try await quotes.quote(for: "MSFT"))
                #expect(halted.isStale)
                #expect(halted.price == Price("415.1234"), "still shown, with its age")
                let broker = PaperBroker(quotes: quotes, clock: clock.clock, slippageBasisPoints: .zero)
                let order = BrokerOrder(OrderState(
                    id: OrderID(UUID()), accountID: AccountID(UUID()), userID: UserID(UUID()), clientOrderID: nil, symbol: "MSFT", side: .buy,
                    type: .market, timeInForce: .day, quantity: 1, notional: nil, limitPrice: nil, stopPrice: nil, status: .new,
                    filledQuantity: .zero, averageFillPrice: nil, reservedCash: 500, reservedQuantity: .zero, rejectReason: nil,
                    createdAt: Self.friday, updatedAt: Self.friday))
                await #expect(throws: MarketDataError.self, "no fill at a price a session old") { try await broker.submit(order) }
                #expect(try await broker.recheck(order) == nil, "a resting order waits")

                // The same symbol trading again: fresh once refetched.
                fake.tradingDay = "2026-11-27"
                clock.advance(by: 60)
                #expect(try await quotes.quote(for: "MSFT")?.isStale == false)
            }
        }
    }

    @Test("a symbol's asset class is learned once from SYMBOL_SEARCH's type (other when the vendor has no typed match) and kept in the database; a failed search is not repeated at once and gives no class", arguments: TestDatabaseKind.all)
    func assetClassLearned(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestDatabase(kind) { database, _ in
                let clock = TestClock(start: Self.friday)
                let quotes = QuoteService(provider: provider(fake, database: database, clock: clock), store: QuoteStore(database: database), clock: clock.clock)
                #expect(await quotes.assetClasses(for: ["IBM", "NOPE"]) == ["IBM": .equity, "NOPE": .other])
                let searches = fake.hits.filter { $0 == "SYMBOL_SEARCH" }.count
                let stored = try await QuoteStore(database: database).assetClasses(of: ["IBM", "NOPE"])
                #expect(stored == ["IBM": .equity, "NOPE": .other])
                // Another instance reads them from the database, without a vendor call.
                let other = QuoteService(provider: provider(fake, database: database, clock: clock), store: QuoteStore(database: database), clock: clock.clock)
                #expect(await other.assetClasses(for: ["IBM", "NOPE"]) == ["IBM": .equity, "NOPE": .other])
                #expect(fake.hits.filter { $0 == "SYMBOL_SEARCH" }.count == searches)
                // The vendor down: no class, and no second call right away.
                fake.mode = .serverError
                #expect(await other.assetClasses(for: ["MSFT"]).isEmpty)
                let failed = fake.hits.filter { $0 == "SYMBOL_SEARCH" }.count
                #expect(await other.assetClasses(for: ["MSFT"]).isEmpty)
                #expect(fake.hits.filter { $0 == "SYMBOL_SEARCH" }.count == failed)
            }
        }
    }

    @Test("a body without a Global Quote is a bad answer, not an unknown symbol (which is an empty Global Quote)", arguments: TestDatabaseKind.all)
    func emptyBody(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestDatabase(kind) { database, _ in
                let vendor = provider(fake, database: database, clock: TestClock(start: Self.friday), logs: LogCapture())
                fake.mode = .emptyObject
                do {
                    let quote = try await vendor.quote(for: "IBM")
                    Issue.record("{} was taken as an answer: \(String(describing: quote))")
                } catch let error as MarketDataError {
                    guard case .badResponse = error else { Issue.record("expected badResponse, got \(error)"); return }
                }
                fake.mode = .normal
                #expect(try await vendor.quote(for: "NOPE") == nil)
            }
        }
    }

    @Test("a quote of another symbol than the one asked for, of no known trading day, or with a price past 8 places is a bad answer, never a price made up", arguments: [TestDatabaseKind.sqlite])
    func quoteOfAnotherSymbol(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestDatabase(kind) { database, _ in
                let vendor = provider(fake, database: database, clock: TestClock(start: Self.friday), logs: LogCapture())
                fake.mode = .quoteOf("MSFT")
                do {
                    let quote = try await vendor.quote(for: "AAPL")
                    Issue.record("MSFT's quote was taken for AAPL: \(String(describing: quote))")
                } catch let error as MarketDataError {
                    guard case .badResponse = error else { Issue.record("expected badResponse, got \(error)"); return }
                }
                // A quote of no known day is not taken for today's.
                fake.mode = .noTradingDay
                do {
                    let quote = try await vendor.quote(for: "AAPL")
                    Issue.record("a quote without its trading day was taken: \(String(describing: quote))")
                } catch let error as MarketDataError {
                    guard case .badResponse = error else { Issue.record("expected badResponse, got \(error)"); return }
                }
                // Nor one dated after today, or on a weekend: it would be taken for today's, fresh.
                fake.mode = .normal
                for day in ["2026-11-30", "2027-06-01", "2026-11-28", "2026-11-22"] {
                    fake.tradingDay = day
                    do {
                        let quote = try await vendor.quote(for: "IBM")
                        Issue.record("a quote dated \(day) was taken: \(String(describing: quote))")
                    } catch let error as MarketDataError {
                        guard case .badResponse = error else { Issue.record("expected badResponse, got \(error)"); return }
                    }
                }
                fake.tradingDay = "2026-11-25"
                #expect(try await vendor.quote(for: "IBM") != nil, "an earlier session's quote is still an answer")
                fake.tradingDay = "2026-11-27"
                // A price with more places than a price holds is no answer either: never rounded into another price.
                #expect(AlphaVantageProvider.price("0.000000006") == nil && AlphaVantageProvider.price("123.456789012345") == nil)
                #expect(AlphaVantageProvider.price("265.6500") == (try Price(parsing: "265.65")) && AlphaVantageProvider.price("0.00000001") != nil)
                // The symbol as the vendor writes it in another case is the same symbol.
                fake.mode = .quoteOf("msft")
                #expect(try await vendor.quote(for: "MSFT")?.price == (try Price(parsing: "415.1234")))
            }
        }
    }

    @Test("the three HTTP-200 error shapes, a server error and an unreadable body are told apart", arguments: TestDatabaseKind.all)
    func errorShapes(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestDatabase(kind) { database, _ in
                let logs = LogCapture()
                let vendor = provider(fake, database: database, clock: TestClock(start: Self.friday), logs: logs)
                func failure(_ mode: FakeAlphaVantage.Mode) async -> MarketDataError? {
                    fake.mode = mode
                    do {
                        _ = try await vendor.quote(for: "IBM")
                        return nil
                    } catch {
                        return error as? MarketDataError
                    }
                }
                guard case .rejected(let message) = await failure(.errorMessage) else { Issue.record("Error Message"); return }
                #expect(message.contains("Invalid API call"))
                guard case .rateLimited(let note) = await failure(.note) else { Issue.record("Note"); return }
                #expect(note.contains("5 calls per minute"))
                guard case .rateLimited(let information) = await failure(.information) else { Issue.record("Information"); return }
                #expect(information.contains("25 requests per day"))
                // A call the plan does not include is refused, not a limit to hold every call back for.
                guard case .rejected(let premium) = await failure(.premium) else { Issue.record("premium Information"); return }
                #expect(premium.contains("premium feature"))
                guard case .badResponse = await failure(.serverError) else { Issue.record("HTTP 500"); return }
                guard case .badResponse = await failure(.garbage) else { Issue.record("garbage"); return }

                // A wrong key is refused by the vendor with an Error Message.
                fake.mode = .normal
                let wrongKey = AlphaVantageProvider(apiKey: "WRONG", baseURL: fake.baseURL, budget: vendor.budget, clock: vendor.clock, httpClient: .shared, logger: vendor.logger)
                await #expect(throws: MarketDataError.self) { try await wrongKey.quote(for: "IBM") }

                // Nothing listening: unreachable, quickly.
                let nowhere = AlphaVantageProvider(apiKey: FakeAlphaVantage.apiKey, baseURL: "http://127.0.0.1:9", budget: vendor.budget, clock: vendor.clock, httpClient: .shared, logger: vendor.logger)
                do {
                    _ = try await nowhere.quote(for: "IBM")
                    Issue.record("a closed port answered")
                } catch let error as MarketDataError {
                    guard case .unreachable = error else { Issue.record("expected unreachable, got \(error)"); return }
                }

                // The vendor's message echoes the key; our own logs carry the failure but never the key.
                #expect(logs.lines.contains { $0.contains("market data call failed") })
                #expect(!logs.lines.joined().contains("apikey=\(FakeAlphaVantage.apiKey)"))
            }
        }
    }

    @Test("the call budget: 5 a minute and 25 a day by default, shared through the database", arguments: TestDatabaseKind.all)
    func callBudget(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestDatabase(kind) { database, _ in
                let clock = TestClock(start: Self.friday)
                let settings = AppConfiguration.AlphaVantageSettings(apiKey: FakeAlphaVantage.apiKey)
                #expect(settings.callsPerMinute == 5 && settings.callsPerDay == 25)
                // Two instances with one database draw on one budget.
                let first = provider(fake, database: database, clock: clock, perMinute: settings.callsPerMinute, perDay: settings.callsPerDay)
                let second = provider(fake, database: database, clock: clock, perMinute: settings.callsPerMinute, perDay: settings.callsPerDay)
                for index in 0..<5 { _ = try await (index.isMultiple(of: 2) ? first : second).quote(for: "IBM") }
                do {
                    _ = try await second.quote(for: "IBM")
                    Issue.record("a sixth call in one minute was made")
                } catch let error as MarketDataError {
                    #expect(error == .budgetExhausted(retryAt: try Date("2026-11-27T15:01:00Z", strategy: .iso8601)))
                }
                #expect(fake.hits.count == 5, "a call over budget never reaches the vendor")

                // Minute by minute up to the day's 25.
                for _ in 0..<4 {
                    clock.advance(by: 60)
                    for _ in 0..<5 { _ = try await first.quote(for: "IBM") }
                }
                #expect(fake.hits.count == 25)
                clock.advance(by: 60)
                do {
                    _ = try await first.quote(for: "IBM")
                    Issue.record("a 26th call in one day was made")
                } catch let error as MarketDataError {
                    #expect(error == .budgetExhausted(retryAt: try Date("2026-11-28T00:00:00Z", strategy: .iso8601)))
                }
                #expect(try await first.budget.remaining() == (minute: 5, day: 0), "the refused call was not counted")
                // The minute spent as well as the day (the calls of another instance): told to come back tomorrow, not in a minute.
                let minute = CallBudget.periodStart(of: clock.now, length: 60)
                try await database.sql.raw("""
                    INSERT INTO market_data_calls (provider, period, period_start, calls) VALUES (\(bind: AlphaVantageProvider.name), 'minute', \(bind: minute), 5)
                    """).run()
                do {
                    _ = try await first.quote(for: "IBM")
                    Issue.record("a call past both limits was made")
                } catch let error as MarketDataError {
                    #expect(error == .budgetExhausted(retryAt: try Date("2026-11-28T00:00:00Z", strategy: .iso8601)))
                }
                clock.advance(by: 9 * 3600)
                #expect(try await first.quote(for: "IBM") != nil, "a new UTC day has a new budget")
                #expect(fake.hits.count == 26)
            }
        }
    }

    @Test("a person's lookups spend all but a fifth of each period's calls; the rest is kept for pricing orders and jobs", arguments: TestDatabaseKind.all)
    func budgetKeptForTrading(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestDatabase(kind) { database, _ in
                let clock = TestClock(start: Self.friday)
                let vendor = provider(fake, database: database, clock: clock, perMinute: 5, perDay: 25)
                try await CallBudget.$purpose.withValue(.lookingUp) {
                    for _ in 0..<4 { _ = try await vendor.quote(for: "IBM") }
                    await #expect(throws: MarketDataError.self, "a fifth lookup in the minute") { try await vendor.quote(for: "IBM") }
                }
                #expect(fake.hits.count == 4)
                #expect(try await vendor.quote(for: "IBM") != nil, "an order's price still has its call")
                #expect(fake.hits.count == 5)
                #expect(CallBudget.limit(25, for: .lookingUp) == 20 && CallBudget.limit(4, for: .lookingUp) == 4, "below five a period, nothing is kept")

                // Through the quote service: a lookup refused for want of its share does not pause the symbol's
                // refresh for trading (a portfolio read revalidating its stale quote still calls the vendor).
                clock.advance(by: 60)
                let quotes = QuoteService(provider: provider(fake, database: database, clock: clock, perMinute: 5, perDay: 25), store: nil, clock: clock.clock)
                guard case .found = await quotes.lookup("IBM") else { Issue.record("no first quote"); return }
                clock.advance(by: 20)  // past the quote's 15 s
                let before = fake.hits.count
                await CallBudget.$purpose.withValue(.lookingUp) {
                    for symbol in ["AAPL", "MSFT", "ORDB"] { _ = await quotes.lookup(symbol) }
                    _ = await quotes.lookup("IBM")  // refused: the lookups' four of five are spent; the stale quote is answered
                }
                #expect(fake.hits.count == before + 3)
                _ = await quotes.lookups(for: ["IBM"], staleWhileRevalidate: true)
                try await eventually("trading's refresh of IBM called the vendor") { fake.hits.count == before + 4 }
            }
        }
    }

    @Test("an order's price does not wait on a refresh a person's lookup started (it runs on lookups' share of the budget, which may be spent): it asks the vendor on its own",
          .timeLimit(.minutes(1)))  // joining the lookup's refresh would wait on its gate for good
    func tradingDoesNotStopAtLookupsShare() async throws {
        let vendor = GatedLookups()
        let quotes = QuoteService(provider: vendor, store: nil, clock: TestClock(start: Self.friday).clock)
        let lookup = Task { await CallBudget.$purpose.withValue(.lookingUp) { await quotes.lookup("IBM") } }
        try await eventually("the lookup's refresh reached the vendor") { vendor.calls.withLockedValue { $0.lookingUp } == 1 }
        // While the lookup's refresh still waits at the vendor, the order's price is fetched on its own.
        let order = Task { await quotes.lookup("IBM") }
        guard case .found(let quote) = await order.value else { Issue.record("the order got no price"); return }
        #expect(!quote.isStale)
        #expect(vendor.calls.withLockedValue { $0.trading } == 1)
        vendor.gate.finish()
        // The lookup's own refresh ends as its share allows; a later lookup joins no refresh it could not use.
        _ = await lookup.value
        #expect(quotes.refreshesInFlight == 0)
    }

    @Test("twenty concurrent callers on two instances share the budget: exactly 5 calls reach the vendor, the rest are refused uncounted", arguments: TestDatabaseKind.all)
    func callBudgetUnderConcurrency(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestDatabase(kind) { database, _ in
                let clock = TestClock(start: Self.friday)
                let instances = [
                    provider(fake, database: database, clock: clock, perMinute: 5, perDay: 25), provider(fake, database: database, clock: clock, perMinute: 5, perDay: 25),
                ]
                let outcomes = await withTaskGroup(of: Bool.self) { group in
                    for index in 0..<20 {
                        group.addTask {
                            do {
                                // Different symbols, so no answer comes from a cache; an unknown one still costs a call.
                                _ = try await instances[index % 2].quote(for: "S\(index)")
                                return true
                            } catch let error as MarketDataError {
                                if case .budgetExhausted = error { return false }
                                Issue.record("unexpected \(error)")
                                return false
                            } catch {
                                Issue.record("unexpected \(error)")
                                return false
                            }
                        }
                    }
                    return await group.reduce(into: []) { $0.append($1) }
                }
                #expect(outcomes.filter { $0 }.count == 5)
                #expect(fake.hits.count == 5, "a refused call never reaches the vendor")
                let remaining = try await instances[0].budget.remaining()
                #expect(remaining.minute == 0 && remaining.day == 20)
            }
        }
    }

    @Test("the request that meets the vendor's rate limit is told when to come back (Retry-After), as the ones held off after it are", arguments: [TestDatabaseKind.sqlite])
    func rateLimitedAnswerSaysWhen(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            try await withTestApp(kind, clock: TestClock(start: Self.friday), configure: { configuration in
                configuration.alphaVantage = .init(apiKey: FakeAlphaVantage.apiKey, baseURL: fake.baseURL, callsPerMinute: 100, callsPerDay: 1000)
            }) { client, env in
                let tokens = try await signUp(client, env, email: "limited@example.com")
                fake.mode = .note
                var retryAfter: [String?] = []
                for _ in 0..<2 {
                    let refused = try await client.execute(uri: "/api/market/quotes?symbols=IBM", method: .get, headers: bearer(tokens))
                    #expect(refused.status == .serviceUnavailable)
                    #expect(try problem(refused).code == "market_data_unavailable")
                    retryAfter.append(refused.headers[.retryAfter])
                }
                #expect(retryAfter.allSatisfy { ($0.flatMap(Int.init) ?? 0) >= 1 }, "\(retryAfter)")
                #expect(fake.hits.count == 1, "the second was held off without a call")
                // A per-minute limit met at 15:00:00: both are told the next minute, not the symbol's 5-second pause.
                #expect(retryAfter == ["60", "60"], "\(retryAfter)")
            }
        }
    }

    @Test("through the API: quotes, stale quotes, 503 when nothing is known, orders filled at the vendor's price", arguments: TestDatabaseKind.all)
    func throughTheAPI(kind: TestDatabaseKind) async throws {
        try await withFakeAlphaVantage { fake in
            let clock = TestClock(start: Self.friday)
            try await withTestApp(kind, clock: clock, configure: { configuration in
                configuration.alphaVantage = .init(apiKey: FakeAlphaVantage.apiKey, baseURL: fake.baseURL, callsPerMinute: 100, callsPerDay: 1000)
                configuration.quoteTimeToLive = 900
                configuration.accessTokenLifetime = 3600
            }) { client, env in
                let tokens = try await signUp(client, env, email: "vantage@example.com")
                let quotes = try json(try await client.execute(uri: "/api/market/quotes?symbols=IBM,AAPL", method: .get, headers: bearer(tokens)))
                let data = try #require(quotes["data"] as? [[String: Any]])
                #expect(data.map { $0["price"] as? String } == ["265.65", "189.98"])
                #expect(data.map { $0["stale"] as? Bool } == [false, false])
                let calls = fake.hits.count

                // Within the TTL the cache answers: memory, and the quotes table for other instances.
                _ = try await client.execute(uri: "/api/market/quotes?symbols=IBM", method: .get, headers: bearer(tokens))
                #expect(fake.hits.count == calls)
                let stored = try await QuoteStore(database: env.database).load("IBM", source: AlphaVantageProvider.name)
                #expect(stored?.quote?.price == Price("265.65"))

                // Past the TTL with the vendor limiting us: the old quote, marked stale, with its age.
                clock.advance(by: 901)
                fake.mode = .note
                let stale = try json(try await client.execute(uri: "/api/market/quotes?symbols=IBM", method: .get, headers: bearer(tokens)))
                let staleQuote = try #require((stale["data"] as? [[String: Any]])?.first)
                #expect(staleQuote["stale"] as? Bool == true)
                #expect(staleQuote["price"] as? String == "265.65")
                #expect(staleQuote["age_seconds"] as? Int == 901)

                // A symbol never quoted before: 503 market_data_unavailable, not "unknown".
                let unavailable = try await client.execute(uri: "/api/market/quotes?symbols=MSFT", method: .get, headers: bearer(tokens))
                #expect(unavailable.status == .serviceUnavailable)
                #expect(try problem(unavailable).code == "market_data_unavailable")

                // The Note was a per-minute limit: Folio holds the vendor off until the next minute, calling nothing.
                // The stale answer started a refresh in the background (which met the Note): it lands first.
                try await eventually("the background refresh lands") { env.services.quotes.refreshesInFlight == 0 }
                fake.mode = .normal
                let heldOff = fake.hits.count
                let stillStale = try json(try await client.execute(uri: "/api/market/quotes?symbols=IBM", method: .get, headers: bearer(tokens)))
                #expect((stillStale["data"] as? [[String: Any]])?.first?["stale"] as? Bool == true)
                #expect(fake.hits.count == heldOff, "no call while the vendor is held off")
                clock.advance(by: 60)

                // Unknown to the vendor: 422.
                let unknown = try await client.execute(uri: "/api/market/quotes?symbols=NOPE", method: .get, headers: bearer(tokens))
                #expect(try problem(unknown).code == "unknown_symbol")

                // The seed's order fills at the vendor's price; cash drops by exactly that.
                let placed = try await post(client, "/api/orders", ["symbol": "MSFT", "quantity": 1, "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
                #expect(placed.status == .created)
                await env.worker.drain()
                let portfolio = try json(try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(tokens)))
                #expect(portfolio["cash"] as? String == "99584.87", "a buy costs its amount rounded up to the cent")
                let position = try #require((portfolio["positions"] as? [[String: Any]])?.first)
                #expect(position["price"] as? String == "415.1234")
            }
        }
    }
}

/// A vendor whose lookups wait at a gate and are then refused for want of their share; trading's calls are answered.
final class GatedLookups: MarketDataProvider {
    let calls = NIOLockedValueBox((lookingUp: 0, trading: 0))
    let (gateStream, gate) = AsyncStream<Void>.makeStream()
    var name: String { "gated" }

    func quote(for symbol: String) async throws -> PriceQuote? {
        if CallBudget.purpose == .lookingUp {
            calls.withLockedValue { $0.lookingUp += 1 }
            for await _ in gateStream {}
            throw MarketDataError.budgetExhausted(retryAt: .distantFuture)
        }
        calls.withLockedValue { $0.trading += 1 }
        return PriceQuote(symbol: symbol, price: try Price(parsing: "100"), previousClose: nil, asOf: Date())
    }

    func search(_ query: String) async throws -> [SymbolMatch] { [] }
    func dailyHistory(for symbol: String, days: Int) async throws -> [DailyClose] { [] }
    func previousCloseTime(at date: Date, calendar: MarketCalendar) -> Date { calendar.previousClose(before: date) }
}
