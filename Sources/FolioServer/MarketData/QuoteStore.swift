import FolioDomain
import Foundation
import SQLKit

/// The `quotes` table: the last quote fetched for each symbol, by any instance.
struct QuoteStore: Sendable {
    let database: FolioDatabase

    /// The stored quote of `symbol` if it came from `source` (a quote of another
    /// source, left from before a change of provider, is not used).
    func load(_ symbol: String, source: String) async throws -> QuoteService.Fetched? {
        try await load([symbol], source: source)[symbol]
    }

    /// The stored quotes of these symbols that came from `source`, in one query (per 500 symbols).
    func load(_ symbols: [String], source: String) async throws -> [String: QuoteService.Fetched] {
        var found: [String: QuoteService.Fetched] = [:]
        for start in stride(from: 0, to: symbols.count, by: 500) {
            let slice = Array(symbols[start..<min(start + 500, symbols.count)])
            let rows = try await database.sql.raw("""
                SELECT symbol, price, previous_close, as_of, fetched_at FROM quotes WHERE source = \(bind: source) AND symbol IN (\(binds: slice))
                """).all()
            for row in rows {
                let symbol = try row.decode(column: "symbol", as: String.self)
                let quote = PriceQuote(
                    symbol: symbol, price: try row.decode(column: "price", as: Price.self),
                    previousClose: try row.decode(column: "previous_close", as: Price?.self), asOf: try row.decode(column: "as_of", as: Date.self))
                found[symbol] = .init(quote: quote, fetchedAt: try row.decode(column: "fetched_at", as: Date.self))
            }
        }
        return found
    }

    /// Keeps the quote unless a newer fetch is already stored. One said to be from more than five minutes after
    /// this one is not believed (it would hold the row until that time); five, so that a fetch that took long, or
    /// an instance whose clock is a little behind, does not overwrite a fresher quote.
    static let replaceAfter: TimeInterval = 300

    func save(_ quote: PriceQuote, fetchedAt: Date, source: String) async throws {
        try await database.sql.raw("""
            INSERT INTO quotes (symbol, price, previous_close, as_of, fetched_at, source)
            VALUES (\(bind: quote.symbol), \(bind: quote.price), \(bind: quote.previousClose), \(bind: quote.asOf), \(bind: fetchedAt), \(bind: source))
            ON CONFLICT (symbol) DO UPDATE SET price = excluded.price, previous_close = excluded.previous_close,
                as_of = excluded.as_of, fetched_at = excluded.fetched_at, source = excluded.source
            WHERE quotes.fetched_at <= excluded.fetched_at OR quotes.fetched_at > \(bind: fetchedAt.addingTimeInterval(Self.replaceAfter))
            """).run()
    }

    /// The asset classes already learned for these symbols.
    func assetClasses(of symbols: [String]) async throws -> [String: AssetClass] {
        guard !symbols.isEmpty else { return [:] }
        var found: [String: AssetClass] = [:]
        for start in stride(from: 0, to: symbols.count, by: 500) {
            let slice = Array(symbols[start..<min(start + 500, symbols.count)])
            for row in try await database.sql.raw("SELECT symbol, asset_class FROM symbol_asset_classes WHERE symbol IN (\(binds: slice))").all() {
                if let assetClass = AssetClass(rawValue: try row.decode(column: "asset_class", as: String.self)) {
                    found[try row.decode(column: "symbol", as: String.self)] = assetClass
                }
            }
        }
        return found
    }

    func saveAssetClass(_ assetClass: AssetClass, of symbol: String, now: Date) async throws {
        try await database.sql.raw("""
            INSERT INTO symbol_asset_classes (symbol, asset_class, updated_at) VALUES (\(bind: symbol), \(bind: assetClass.rawValue), \(bind: now))
            ON CONFLICT (symbol) DO UPDATE SET asset_class = excluded.asset_class, updated_at = excluded.updated_at
            """).run()
    }
}
