import FolioDomain
import Foundation
import NIOConcurrencyHelpers

/// No price could be had: the source failed and no cache knows one. The HTTP
/// layer answers 503 `market_data_unavailable`.
struct MarketDataUnavailable: Error, Sendable {
    var reason: MarketDataError
    /// What was asked for: a quote, or slow data (history, search).
    var subject: Subject
    /// Seconds until our own call budget allows another call, when it is spent.
    var retryAfter: Int?

    enum Subject: Sendable { case quote, history, search }
}

/// Quotes with a time-to-live cache in memory and in the `quotes` table, so
/// that every server instance shares what one of them fetched. A fresh quote
/// is served from memory under a lock, without a task hop (the portfolio
/// read's twenty quotes cost twenty dictionary lookups). A quote older than
/// the TTL is refreshed, one refresh per symbol at a time; if the refresh
/// fails, the last quote is served marked stale rather than failing the request.
final class QuoteService: Sendable {
    let provider: any MarketDataProvider
    let store: QuoteStore?
    let clock: AppClock
    let timeToLive: TimeInterval
    static let slowDataLifetime: TimeInterval = 3600
    /// After a failed refresh, how long before the symbol is asked about again: doubled with each failure in a
    /// row, up to `longestPause`. Resting orders look at their symbol's price every second or so: without a
    /// pause, one symbol the vendor keeps refusing spent the whole call budget orders need within minutes.
    static let retryPause: TimeInterval = 5
    static let longestPause: TimeInterval = 600

    /// The pause after `failures` failed refreshes of a symbol in a row.
    static func pause(after failures: Int) -> TimeInterval {
        min(retryPause * pow(2, Double(max(failures, 1) - 1)), longestPause)
    }

    private struct State {
        /// A nil quote remembers that the source does not know the symbol.
        var cache: [String: Fetched] = [:]
        /// Refreshes running, one per symbol and purpose. A person's lookup runs on lookups' share of the call
        /// budget, which may be spent: an order's price never waits on such a refresh (a lookup may join trading's).
        var refreshing: [InFlight: Task<Lookup, Never>] = [:]
        /// After a failed refresh, the symbol is not asked about again before then (reads are served what is
        /// known, marked stale; a lookup without a quote is answered as held off).
        var paused: [String: Pause] = [:]
        /// Daily closes and search answers change slowly and cost vendor calls: kept an hour.
        var histories: [String: (closes: [DailyClose], fetchedAt: Date)] = [:]
        var searches: [String: (matches: [SymbolMatch], fetchedAt: Date)] = [:]
        /// Asset classes do not change: learned once.
        var assetClasses: [String: AssetClass] = [:]
        /// After a failed search for a class, no other before then.
        var classRetryAt: [String: Date] = [:]
    }

    private let state = NIOLockedValueBox(State())

    struct Pause {
        var until: Date
        var failures: Int
        var reason: MarketDataError
    }

    struct InFlight: Hashable {
        var symbol: String
        var lookingUp: Bool
    }

    struct Fetched: Sendable {
        var quote: PriceQuote?
        var fetchedAt: Date
    }

    enum Lookup: Sendable {
        case found(PriceQuote)
        case unknown
        /// No quote at all could be had; the reason is kept for the problem's detail.
        case unavailable(MarketDataError)
    }

    /// Refreshes running now (for tests and health).
    var refreshesInFlight: Int { state.withLockedValue { $0.refreshing.count } }

    /// The exchange's sessions, for the start of a quote's day.
    let calendar: @Sendable () -> MarketCalendar

    init(
        provider: any MarketDataProvider, store: QuoteStore?, clock: AppClock, timeToLive: TimeInterval = 15,
        calendar: @escaping @Sendable () -> MarketCalendar = { .nyse }
    ) {
        self.provider = provider
        self.store = store
        self.clock = clock
        self.timeToLive = timeToLive
        self.calendar = calendar
    }

    /// The quote, nil for a symbol the source does not know; `MarketDataUnavailable`
    /// when neither the source nor a cache has a price.
    func quote(for symbol: String) async throws -> PriceQuote? {
        switch await lookup(symbol) {
        case .found(let quote): return quote
        case .unknown: return nil
        case .unavailable(let reason): throw unavailable(reason, .quote)
        }
    }

    /// Quotes that could be had; unknown and unavailable symbols are absent.
    /// For reads: a quote past its TTL is served at once, marked stale, while
    /// it is refreshed in the background (stale-while-revalidate).
    func quotes(for symbols: some Sequence<String>, staleWhileRevalidate: Bool = true) async -> [String: PriceQuote] {
        await lookups(for: symbols, staleWhileRevalidate: staleWhileRevalidate).compactMapValues { lookup in
            if case .found(let quote) = lookup { return quote }
            return nil
        }
    }

    /// Fresh answers from memory at once; only the rest are fetched, in parallel.
    /// With `staleWhileRevalidate` (reads: the portfolio, `/api/market/quotes`),
    /// a quote known but past its TTL is answered at once, marked stale, and
    /// refreshed in the background, one refresh per symbol at a time; only
    /// symbols with no quote at all wait for the source. Orders wait for a
    /// fresh price instead (`quote(for:)`).
    func lookups(for symbols: some Sequence<String>, staleWhileRevalidate: Bool = false) async -> [String: Lookup] {
        let now = clock.now()
        var result: [String: Lookup] = [:]
        var missing: [String] = []
        var seen = Set<String>()
        state.withLockedValue { state in
            for symbol in symbols where result[symbol] == nil {
                if let cached = state.cache[symbol], now.timeIntervalSince(cached.fetchedAt) < timeToLive {
                    result[symbol] = cached.quote.map(Lookup.found) ?? .unknown
                } else if staleWhileRevalidate, let cached = state.cache[symbol], var known = cached.quote {
                    known.isStale = true
                    result[symbol] = .found(known)
                    if Self.running(symbol, in: state) == nil, now >= state.paused[symbol]?.until ?? .distantPast {
                        _ = Self.start(symbol, remembered: cached.quote, in: &state, service: self)
                    }
                } else if seen.insert(symbol).inserted {
                    missing.append(symbol)
                }
            }
        }
        guard !missing.isEmpty else { return result }
        if staleWhileRevalidate, let store, let stored = try? await store.load(missing, source: provider.name).mapValues({ Self.believable($0, now: now) }),
           !stored.isEmpty {
            // Not in this process's memory (it has just started, or never read them): what any instance stored is
            // served at once as well, stale when past its lifetime, and refreshed in the background.
            let known = stored.compactMapValues { fetched in self.dated(fetched.quote).map { Fetched(quote: $0, fetchedAt: fetched.fetchedAt) } }
            state.withLockedValue { state in
                for (symbol, fetched) in known {
                    guard var quote = fetched.quote else { continue }
                    if (state.cache[symbol]?.fetchedAt ?? .distantPast) < fetched.fetchedAt { state.cache[symbol] = fetched }
                    if now.timeIntervalSince(fetched.fetchedAt) >= timeToLive {
                        quote.isStale = true
                        if Self.running(symbol, in: state) == nil, now >= state.paused[symbol]?.until ?? .distantPast {
                            _ = Self.start(symbol, remembered: quote, in: &state, service: self)
                        }
                    }
                    result[symbol] = .found(quote)
                }
            }
            missing.removeAll { result[$0] != nil }
            guard !missing.isEmpty else { return result }
        }
        await withTaskGroup(of: (String, Lookup).self) { group in
            for symbol in missing {
                group.addTask { (symbol, await self.lookup(symbol)) }
            }
            for await (symbol, lookup) in group { result[symbol] = lookup }
        }
        return result
    }

    /// How far ahead of this clock a stored fetch time may be and still be believed: another instance's clock a
    /// little ahead.
    static let futureAllowance: TimeInterval = 60

    /// A stored quote said to be fetched more than a minute from now (a clock set wrong, or the row changed) is
    /// not believed fresh: taken as fetched long ago, it is refreshed before it prices anything, rather than
    /// trusted until that time comes.
    static func believable(_ fetched: Fetched, now: Date) -> Fetched {
        guard fetched.fetchedAt.timeIntervalSince(now) > futureAllowance else { return fetched }
        return Fetched(quote: fetched.quote, fetchedAt: .distantPast)
    }

    func lookup(_ symbol: String) async -> Lookup {
        enum Step { case answer(Lookup), wait(Task<Lookup, Never>), paused(Pause, known: PriceQuote?) }
        let now = clock.now()
        let step: Step = state.withLockedValue { state in
            if let cached = state.cache[symbol], now.timeIntervalSince(cached.fetchedAt) < timeToLive {
                return .answer(cached.quote.map(Lookup.found) ?? .unknown)
            }
            if let running = Self.running(symbol, in: state) { return .wait(running) }
            if let pause = state.paused[symbol], now < pause.until { return .paused(pause, known: state.cache[symbol]?.quote) }
            return .wait(Self.start(symbol, remembered: state.cache[symbol]?.quote, in: &state, service: self))
        }
        switch step {
        case .answer(let lookup): return lookup
        case .wait(let task): return await task.value
        case .paused(let pause, let known):
            // Its last refresh failed moments ago: the vendor is not asked again yet, but another instance may have
            // stored a fresh quote meanwhile (the shared table costs no call). Otherwise answered as that refresh was.
            if let stored = try? await store?.load(symbol, source: provider.name).map({ Self.believable($0, now: now) }),
               now.timeIntervalSince(stored.fetchedAt) < timeToLive,
               let quote = dated(stored.quote) {
                state.withLockedValue { state in
                    state.cache[symbol] = Fetched(quote: quote, fetchedAt: stored.fetchedAt)
                    state.paused[symbol] = nil
                }
                return .found(quote)
            }
            if var known {
                known.isStale = true
                return .found(known)
            }
            return .unavailable(.heldOff(retryAt: pause.until, reason: "the last look at \(symbol) failed: \(pause.reason)"))
        }
    }

    /// The refresh of `symbol` the current task may wait on: trading's, or for a lookup, either.
    private static func running(_ symbol: String, in state: State) -> Task<Lookup, Never>? {
        let lookingUp = CallBudget.purpose == .lookingUp
        return state.refreshing[InFlight(symbol: symbol, lookingUp: false)] ?? (lookingUp ? state.refreshing[InFlight(symbol: symbol, lookingUp: true)] : nil)
    }

    /// Starts a refresh on the current task's purpose (the new task inherits it, as task-local values are).
    private static func start(_ symbol: String, remembered: PriceQuote?, in state: inout State, service: QuoteService) -> Task<Lookup, Never> {
        let key = InFlight(symbol: symbol, lookingUp: CallBudget.purpose == .lookingUp)
        let task = Task { await service.refresh(key, remembered: remembered) }
        state.refreshing[key] = task
        return task
    }

    /// Shared cache first, then the source; on failure the newest quote known, marked stale.
    private func refresh(_ key: InFlight, remembered: PriceQuote?) async -> Lookup {
        let symbol = key.symbol
        defer { state.withLockedValue { _ = $0.refreshing.removeValue(forKey: key) } }
        let now = clock.now()
        var stored = try? await store?.load(symbol, source: provider.name).map { Self.believable($0, now: now) }
        if let quote = stored?.quote { stored?.quote = dated(quote) }
        if let stored, now.timeIntervalSince(stored.fetchedAt) < timeToLive {
            state.withLockedValue { state in
                state.cache[symbol] = stored
                state.paused[symbol] = nil
            }
            return .found(stored.quote!)
        }
        do {
            let quote = dated(try await provider.quote(for: symbol))
            // A symbol priced lately that the vendor now says it does not know (Alpha Vantage answers an empty quote
            // for a listed symbol now and then): a bad answer about this one symbol, not the symbol gone. Its last
            // quote is served, marked stale, so a holding can still be sold and an order waits rather than being refused.
            // A symbol unpriced for a week of such answers is taken as gone (delisted): unknown, as the vendor says.
            if quote == nil, provider.answersUnknownByMistake,
               let known = [remembered, stored?.quote].compactMap({ $0 }).max(by: { $0.asOf < $1.asOf }),
               now.timeIntervalSince(known.asOf) < Self.unknownAfter {
                throw MarketDataError.badResponse("\(provider.name) answered no quote for a symbol it priced lately", aboutTheSymbol: true)
            }
            state.withLockedValue { state in
                state.cache[symbol] = Fetched(quote: quote, fetchedAt: now)
                state.paused[symbol] = nil
            }
            if let quote { try? await store?.save(quote, fetchedAt: now, source: provider.name) }
            return quote.map(Lookup.found) ?? .unknown
        } catch {
            let reason = Self.reason(error)
            // Not asked again before the vendor may be called again, or before a pause that grows with each failure.
            // Lookups that spent their share of the budget leave the rest to trading: no pause for the symbol.
            if case .budgetExhausted = reason, CallBudget.purpose == .lookingUp {} else {
                state.withLockedValue { state in
                    let earlier = state.paused[symbol]?.failures ?? 0
                    // Held off for every symbol (a rate limit, the budget): not this symbol's failure, so not counted.
                    let (until, failures): (Date, Int) = switch reason {
                    case .heldOff(let until, _), .budgetExhausted(let until): (until, earlier)
                    // This call met the limit: held off as the gate holds every call, until the window the vendor named.
                    case .rateLimited(let message): (VendorGate.nextWindow(after: now, message: message), earlier)
                    default: (now.addingTimeInterval(Self.pause(after: earlier + 1)), earlier + 1)
                    }
                    state.paused[symbol] = Pause(until: until, failures: failures, reason: reason)
                }
            }
            let candidates = [remembered, stored?.quote].compactMap { $0 }
            guard var newest = candidates.max(by: { $0.asOf < $1.asOf }) else { return .unavailable(reason) }
            newest.isStale = true
            return .found(newest)
        }
    }

    /// Waits for the refreshes in flight, background ones included, so the database does not close under them;
    /// false when some were still running at `limit` (a vendor that does not answer: shutdown goes on).
    @discardableResult
    func settle(within limit: Duration = .seconds(15)) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while refreshesInFlight > 0 {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    /// How long a symbol the vendor priced stays known while it answers "unknown" (`answersUnknownByMistake`).
    static let unknownAfter: TimeInterval = 7 * 86_400

    /// Since when trades count in the day's change of quotes taken now.
    func previousCloseTime() -> Date {
        provider.previousCloseTime(at: clock.now(), calendar: calendar())
    }

    /// The quote with the start of its day: worked out once, when it is fetched or loaded. A quote from before
    /// the close the day's change is measured from missed a whole session (a halted stock, a symbol the vendor
    /// stopped updating): stale, so it prices no fill. A free key's end-of-day quote (yesterday's, during
    /// today's session) is that close itself, and stays fresh.
    private func dated(_ quote: PriceQuote?) -> PriceQuote? {
        guard var quote else { return nil }
        let calendar = calendar()
        quote.previousCloseAt = provider.previousCloseTime(at: quote.asOf, calendar: calendar)
        if quote.asOf < provider.previousCloseTime(at: clock.now(), calendar: calendar) { quote.isStale = true }
        return quote
    }

    /// Daily closes, oldest first, at most `days` (1 to 365) of them.
    func dailyHistory(for symbol: String, days: Int) async throws -> [DailyClose] {
        // Fetched in two sizes only, so that different `days` share one vendor call.
        let size = days <= 100 ? 100 : 365
        let key = "\(symbol) \(size)"
        let now = clock.now()
        if let cached = state.withLockedValue({ $0.histories[key] }), now.timeIntervalSince(cached.fetchedAt) < Self.slowDataLifetime {
            return Array(cached.closes.suffix(days))
        }
        do {
            let closes = try await provider.dailyHistory(for: symbol, days: size)
            state.withLockedValue { $0.histories[key] = (closes, now) }
            return Array(closes.suffix(days))
        } catch {
            throw unavailable(Self.reason(error), .history)
        }
    }

    func search(_ query: String) async throws -> [SymbolMatch] {
        let key = query.lowercased()
        let now = clock.now()
        if let cached = state.withLockedValue({ $0.searches[key] }), now.timeIntervalSince(cached.fetchedAt) < Self.slowDataLifetime {
            return cached.matches
        }
        do {
            let matches = try await provider.search(query)
            state.withLockedValue { state in
                if state.searches.count > 10_000 { state.searches.removeAll() }
                state.searches[key] = (matches, now)
            }
            return matches
        } catch {
            throw unavailable(Self.reason(error), .search)
        }
    }

    /// Each symbol's asset class: from memory, then the `symbol_asset_classes`
    /// table (learned once by any instance), then the vendor's symbol search:
    /// the exact match's instrument type, or `other` when the vendor answers
    /// with no typed match; either is stored. A symbol whose search failed is
    /// not asked again for `retryPause` × 60 (the shared call budget), and is
    /// left out of the answer: callers that trade on classes refuse to guess.
    func assetClasses(for symbols: some Sequence<String>) async -> [String: AssetClass] {
        let now = clock.now()
        var result: [String: AssetClass] = [:]
        var missing: [String] = []
        state.withLockedValue { state in
            for symbol in Set(symbols) {
                if let known = state.assetClasses[symbol] {
                    result[symbol] = known
                } else if now >= state.classRetryAt[symbol] ?? .distantPast {
                    missing.append(symbol)
                }
            }
        }
        guard !missing.isEmpty else { return result }
        missing.sort()
        let stored = (try? await store?.assetClasses(of: missing)) ?? [:]
        await withTaskGroup(of: (String, AssetClass?).self) { group in
            for symbol in missing {
                if let known = stored[symbol] {
                    result[symbol] = known
                    continue
                }
                group.addTask {
                    guard let matches = try? await self.search(symbol) else { return (symbol, nil) }
                    let learned = matches.first(where: { $0.symbol == symbol })?.assetClass ?? .other
                    try? await self.store?.saveAssetClass(learned, of: symbol, now: now)
                    return (symbol, learned)
                }
            }
            for await (symbol, learned) in group { result[symbol] = learned }
        }
        state.withLockedValue { state in
            for symbol in missing {
                if let known = result[symbol] { state.assetClasses[symbol] = known } else { state.classRetryAt[symbol] = now.addingTimeInterval(Self.retryPause * 60) }
            }
        }
        return result
    }

    /// A provider's failure as a `MarketDataError` (anything else counts as unreachable).
    static func reason(_ error: any Error) -> MarketDataError {
        error as? MarketDataError ?? .unreachable("\(type(of: error))")
    }

    func unavailable(_ reason: MarketDataError, _ subject: MarketDataUnavailable.Subject) -> MarketDataUnavailable {
        var retryAfter: Int?
        switch reason {
        case .budgetExhausted(let retryAt), .heldOff(let retryAt, _):
            retryAfter = max(1, Int(retryAt.timeIntervalSince(clock.now()).rounded(.up)))
        case .rateLimited(let message):
            // The call that met the vendor's limit: when the gate it closes opens again, as those held off after it are told.
            let now = clock.now()
            retryAfter = max(1, Int(VendorGate.nextWindow(after: now, message: message).timeIntervalSince(now).rounded(.up)))
        default:
            // The vendor failed (unreachable, a bad answer): the symbol is not asked about again for this long.
            retryAfter = Int(Self.retryPause)
        }
        return MarketDataUnavailable(reason: reason, subject: subject, retryAfter: retryAfter)
    }
}
