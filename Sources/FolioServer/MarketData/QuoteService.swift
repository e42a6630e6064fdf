import FolioDomain
import Foundation
import HTTPTypes

/// Quotes with a time-to-live cache in memory and in the `quotes` table, so
/// that every server instance shares what one of them fetched. A quote older
/// than the TTL is refreshed, one refresh per symbol at a time; if the refresh
/// fails, the last quote is served marked stale rather than failing the request.
actor QuoteService {
    let provider: any MarketDataProvider
    let store: QuoteStore?
    let clock: AppClock
    let timeToLive: TimeInterval
    /// A nil quote remembers that the source does not know the symbol.
    private var cache: [String: Fetched] = [:]
    private var refreshing: [String: Task<Lookup, Never>] = [:]
    /// Daily closes and search answers change slowly and cost vendor calls: kept an hour.
    private var histories: [String: (closes: [DailyClose], fetchedAt: Date)] = [:]
    private var searches: [String: (matches: [SymbolMatch], fetchedAt: Date)] = [:]
    static let slowDataLifetime: TimeInterval = 3600

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

    init(provider: any MarketDataProvider, store: QuoteStore?, clock: AppClock, timeToLive: TimeInterval = 15) {
        self.provider = provider
        self.store = store
        self.clock = clock
        self.timeToLive = timeToLive
    }

    /// The quote, nil for a symbol the source does not know, or 503
    /// `market_data_unavailable` when neither the source nor a cache has a price.
    func quote(for symbol: String) async throws -> PriceQuote? {
        switch await lookup(symbol) {
        case .found(let quote): return quote
        case .unknown: return nil
        case .unavailable(let reason): throw unavailable(reason)
        }
    }

    /// Quotes that could be had; unknown and unavailable symbols are absent.
    func quotes(for symbols: some Sequence<String>) async -> [String: PriceQuote] {
        await lookups(for: symbols).compactMapValues { lookup in
            if case .found(let quote) = lookup { return quote }
            return nil
        }
    }

    func lookups(for symbols: some Sequence<String>) async -> [String: Lookup] {
        var result: [String: Lookup] = [:]
        await withTaskGroup(of: (String, Lookup).self) { group in
            for symbol in Set(symbols) {
                group.addTask { (symbol, await self.lookup(symbol)) }
            }
            for await (symbol, lookup) in group { result[symbol] = lookup }
        }
        return result
    }

    func lookup(_ symbol: String) async -> Lookup {
        let now = clock.now()
        if let cached = cache[symbol], now.timeIntervalSince(cached.fetchedAt) < timeToLive {
            return cached.quote.map(Lookup.found) ?? .unknown
        }
        let task: Task<Lookup, Never>
        if let running = refreshing[symbol] {
            task = running
        } else {
            let remembered = cache[symbol]?.quote
            task = Task { await self.refresh(symbol, remembered: remembered) }
            refreshing[symbol] = task
        }
        return await task.value
    }

    /// Shared cache first, then the source; on failure the newest quote known, marked stale.
    private func refresh(_ symbol: String, remembered: PriceQuote?) async -> Lookup {
        defer { refreshing[symbol] = nil }
        let now = clock.now()
        let stored = try? await store?.load(symbol, source: provider.name)
        if let stored, now.timeIntervalSince(stored.fetchedAt) < timeToLive {
            cache[symbol] = stored
            return .found(stored.quote!)
        }
        do {
            let quote = try await provider.quote(for: symbol)
            cache[symbol] = Fetched(quote: quote, fetchedAt: now)
            if let quote { try? await store?.save(quote, fetchedAt: now, source: provider.name) }
            return quote.map(Lookup.found) ?? .unknown
        } catch {
            let reason = Self.reason(error)
            let candidates = [remembered, stored?.quote].compactMap { $0 }
            guard var newest = candidates.max(by: { $0.asOf < $1.asOf }) else { return .unavailable(reason) }
            newest.isStale = true
            return .found(newest)
        }
    }

    /// Daily closes, oldest first, at most `days` (1 to 365) of them.
    func dailyHistory(for symbol: String, days: Int) async throws -> [DailyClose] {
        // Fetched in two sizes only, so that different `days` share one vendor call.
        let size = days <= 100 ? 100 : 365
        let key = "\(symbol) \(size)"
        let now = clock.now()
        if let cached = histories[key], now.timeIntervalSince(cached.fetchedAt) < Self.slowDataLifetime {
            return Array(cached.closes.suffix(days))
        }
        do {
            let closes = try await provider.dailyHistory(for: symbol, days: size)
            histories[key] = (closes, now)
            return Array(closes.suffix(days))
        } catch {
            throw unavailable(Self.reason(error))
        }
    }

    func search(_ query: String) async throws -> [SymbolMatch] {
        let key = query.lowercased()
        let now = clock.now()
        if let cached = searches[key], now.timeIntervalSince(cached.fetchedAt) < Self.slowDataLifetime { return cached.matches }
        do {
            let matches = try await provider.search(query)
            if searches.count > 10_000 { searches.removeAll() }
            searches[key] = (matches, now)
            return matches
        } catch {
            throw unavailable(Self.reason(error))
        }
    }

    /// A provider's failure as a `MarketDataError` (anything else counts as unreachable).
    static func reason(_ error: any Error) -> MarketDataError {
        error as? MarketDataError ?? .unreachable("\(type(of: error))")
    }

    func unavailable(_ reason: MarketDataError) -> AppError {
        var headers = HTTPFields()
        if case .budgetExhausted(let retryAt) = reason {
            headers[.retryAfter] = String(max(1, Int(retryAt.timeIntervalSince(clock.now()).rounded(.up))))
        }
        return AppError(.serviceUnavailable, code: "market_data_unavailable",
                        detail: "Market data is unavailable right now and no earlier quote is known; try again later.", headers: headers)
    }
}
