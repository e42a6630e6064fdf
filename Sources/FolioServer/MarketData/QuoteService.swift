import FolioDomain
import Foundation

/// Quotes with a time-to-live cache in memory. A quote older than the TTL is
/// refreshed, one refresh per symbol at a time; if the refresh fails, the old
/// quote is served marked stale rather than failing the request.
actor QuoteService {
    let provider: any MarketDataProvider
    let clock: AppClock
    let timeToLive: TimeInterval
    private var cache: [String: PriceQuote] = [:]
    private var refreshing: [String: Task<PriceQuote?, any Error>] = [:]

    init(provider: any MarketDataProvider, clock: AppClock, timeToLive: TimeInterval = 15) {
        self.provider = provider
        self.clock = clock
        self.timeToLive = timeToLive
    }

    /// Quotes for every symbol the source knows; unknown symbols are absent.
    func quotes(for symbols: some Sequence<String>) async -> [String: PriceQuote] {
        var result: [String: PriceQuote] = [:]
        await withTaskGroup(of: (String, PriceQuote?).self) { group in
            for symbol in Set(symbols) {
                group.addTask { (symbol, await self.quote(for: symbol)) }
            }
            for await (symbol, quote) in group {
                if let quote { result[symbol] = quote }
            }
        }
        return result
    }

    func quote(for symbol: String) async -> PriceQuote? {
        let now = clock.now()
        if let cached = cache[symbol], now.timeIntervalSince(cached.asOf) < timeToLive { return cached }
        let task: Task<PriceQuote?, any Error>
        if let running = refreshing[symbol] {
            task = running
        } else {
            let provider = self.provider
            task = Task { try await provider.quote(for: symbol) }
            refreshing[symbol] = task
        }
        defer { refreshing[symbol] = nil }
        do {
            guard let fresh = try await task.value else { return nil }
            cache[symbol] = fresh
            return fresh
        } catch {
            guard var stale = cache[symbol] else { return nil }
            stale.isStale = true
            return stale
        }
    }
}
