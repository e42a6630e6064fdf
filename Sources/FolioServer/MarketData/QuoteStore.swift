import FolioDomain
import Foundation
import SQLKit

/// The `quotes` table: the last quote fetched for each symbol, by any instance.
struct QuoteStore: Sendable {
    let database: FolioDatabase

    /// The stored quote of `symbol` if it came from `source` (a quote of another
    /// source, left from before a change of provider, is not used).
    func load(_ symbol: String, source: String) async throws -> QuoteService.Fetched? {
        guard let row = try await database.sql.select()
            .columns("price", "previous_close", "as_of", "fetched_at")
            .from("quotes")
            .where("symbol", .equal, symbol).where("source", .equal, source)
            .first()
        else { return nil }
        let quote = PriceQuote(
            symbol: symbol,
            price: try row.decode(column: "price", as: Price.self),
            previousClose: try row.decode(column: "previous_close", as: Price?.self),
            asOf: try row.decode(column: "as_of", as: Date.self))
        return .init(quote: quote, fetchedAt: try row.decode(column: "fetched_at", as: Date.self))
    }

    /// Keeps the quote unless a newer fetch is already stored.
    func save(_ quote: PriceQuote, fetchedAt: Date, source: String) async throws {
        try await database.sql.raw("""
            INSERT INTO quotes (symbol, price, previous_close, as_of, fetched_at, source)
            VALUES (\(bind: quote.symbol), \(bind: quote.price), \(bind: quote.previousClose), \(bind: quote.asOf), \(bind: fetchedAt), \(bind: source))
            ON CONFLICT (symbol) DO UPDATE SET price = excluded.price, previous_close = excluded.previous_close,
                as_of = excluded.as_of, fetched_at = excluded.fetched_at, source = excluded.source
            WHERE quotes.fetched_at <= excluded.fetched_at
            """).run()
    }
}
