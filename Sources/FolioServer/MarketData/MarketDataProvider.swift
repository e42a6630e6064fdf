import FolioDomain
import Foundation

/// A source of prices: the built-in simulation, or a vendor (Alpha Vantage).
/// Failures are thrown as `MarketDataError`.
protocol MarketDataProvider: Sendable {
    /// Recorded with each stored quote.
    var name: String { get }
    /// The latest quote, or nil for a symbol the source does not know.
    func quote(for symbol: String) async throws -> PriceQuote?
    /// Symbols whose ticker or name matches the query.
    func search(_ query: String) async throws -> [SymbolMatch]
    /// Daily closes, oldest first.
    func dailyHistory(for symbol: String, days: Int) async throws -> [DailyClose]
    /// When the close was struck that a quote of `date` (its `asOf`) measures its day's change from: trades
    /// after it are the day's. A vendor's quotes follow the exchange's sessions, as `calendar` (Alpaca's, once
    /// published) has them.
    func previousCloseTime(at date: Date, calendar: MarketCalendar) -> Date
    /// Whether the source now and then answers "unknown" for a symbol it does know (Alpha Vantage's empty
    /// Global Quote): then a symbol it priced lately is taken as a bad answer, not as a symbol gone.
    var answersUnknownByMistake: Bool { get }
}

extension MarketDataProvider {
    var answersUnknownByMistake: Bool { false }
}

struct SymbolMatch: Codable, Sendable, Equatable {
    var symbol: String
    var name: String
    /// From the vendor's instrument type, when it gives one.
    var assetClass: AssetClass? = nil
}

struct DailyClose: Sendable, Equatable {
    var date: Date
    var close: Price
}

/// The default provider: `SimulatedMarket`, so Folio works offline.
struct SimulatedMarketDataProvider: MarketDataProvider {
    let market: SimulatedMarket
    let clock: AppClock
    var name: String { "simulated" }

    func quote(for symbol: String) async throws -> PriceQuote? {
        let now = clock.now()
        guard let price = market.price(of: symbol, at: now) else { return nil }
        return PriceQuote(symbol: symbol, price: price, previousClose: market.previousClose(of: symbol, at: now), asOf: now)
    }

    func search(_ query: String) async throws -> [SymbolMatch] {
        let needle = query.lowercased()
        return market.listings.values
            .filter { $0.symbol.lowercased().hasPrefix(needle) || $0.name.lowercased().contains(needle) }
            .sorted { ($0.symbol.lowercased().hasPrefix(needle) ? 0 : 1, $0.symbol) < ($1.symbol.lowercased().hasPrefix(needle) ? 0 : 1, $1.symbol) }
            .prefix(10)
            .map { SymbolMatch(symbol: $0.symbol, name: $0.name, assetClass: $0.assetClass) }
    }

    func dailyHistory(for symbol: String, days: Int) async throws -> [DailyClose] {
        market.dailyCloses(of: symbol, days: days, before: clock.now()).map { DailyClose(date: $0.date, close: $0.close) }
    }

    /// The simulation trades all day, every day: its days are UTC days.
    func previousCloseTime(at date: Date, calendar: MarketCalendar) -> Date {
        market.dayStart(of: date)
    }
}
