import FolioDomain
import Foundation
import Hummingbird

/// Quotes, symbol search and daily history for signed-in users: `/api/market/*`.
struct MarketDataController: Sendable {
    let quotes: QuoteService
    let calendar: ExchangeCalendar

    static let maximumSymbols = 50

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let market = router.group("/api/market", context: AuthenticatedContext.self)
        market.get("/quotes", use: Self.lookingUp(quotesRoute))
        market.get("/symbols", use: Self.lookingUp(search))
        market.get("/history/:symbol", use: Self.lookingUp(history))
        market.get("/clock", use: marketClock)
    }

    /// A route whose vendor calls are a person's lookups: they spend the part of the call budget not kept for trading.
    static func lookingUp<Output: ResponseGenerator>(
        _ handler: @escaping @Sendable (Request, AuthenticatedContext) async throws -> Output
    ) -> @Sendable (Request, AuthenticatedContext) async throws -> Output {
        { request, context in try await CallBudget.$purpose.withValue(.lookingUp) { try await handler(request, context) } }
    }

    struct ClockResponse: ResponseEncodable {
        var timestamp: Date
        var isOpen: Bool
        /// The session in progress, or the next one.
        var sessionDay: String
        var nextOpen: Date?
        var nextClose: Date
        var earlyClose: Bool
        /// `rules` (the NYSE's rules, computed) or `alpaca` (Alpaca's published calendar).
        var source: String
    }

    /// The exchange's clock from its calendar (Alpaca's when an Alpaca
    /// account is linked): open now or not, and the next open and close.
    /// Alpaca's own clock, read within the last minute, has the last word on
    /// whether the market is open now (a halt no calendar shows).
    @Sendable func marketClock(_ request: Request, context: AuthenticatedContext) async throws -> ClockResponse {
        let now = quotes.clock.now()
        let calendar = self.calendar.current
        let session = calendar.currentOrNextSession(at: now)
        let brokerClock = self.calendar.brokerClock(at: now)
        let open = brokerClock?.isOpen ?? calendar.isOpen(at: now)
        // Closed by the broker's clock in what the calendar calls a session (a halt): its next open, not one gone by.
        let nextOpen = open ? nil : (session.open > now ? session.open : brokerClock?.nextOpen ?? session.open)
        return ClockResponse(
            timestamp: now, isOpen: open, sessionDay: session.day.description, nextOpen: nextOpen, nextClose: session.close,
            earlyClose: session.isEarlyClose, source: calendar.publishedRange == nil ? "rules" : "alpaca")
    }

    struct QuoteResponse: Codable, Sendable {
        var symbol: String
        var price: String
        var previousClose: String?
        var asOf: Date
        var ageSeconds: Int
        var stale: Bool

        init(_ quote: PriceQuote, now: Date) {
            symbol = quote.symbol
            price = quote.price.formatted(minimumFractionDigits: 2)
            previousClose = quote.previousClose.map { $0.formatted(minimumFractionDigits: 2) }
            asOf = quote.asOf
            ageSeconds = max(0, Int(now.timeIntervalSince(quote.asOf)))
            stale = quote.isStale
        }
    }

    struct QuoteList: ResponseEncodable {
        var data: [QuoteResponse]
        /// Symbols no quote could be had for right now; absent when every symbol has one.
        var errors: [QuoteError]?
    }

    struct QuoteError: Codable, Sendable {
        var symbol: String
        var code: String
        var detail: String
        var retryAfterSeconds: Int?
    }

    /// Reads `symbols=AAPL,MSFT`: each must be a ticker the market knows (422
    /// `unknown_symbol` otherwise). Quotes past their TTL come at once, marked
    /// stale. A symbol with no quote at all right now is listed under `errors`
    /// while the others are answered; 503 only when no symbol has a quote.
    @Sendable func quotesRoute(_ request: Request, context: AuthenticatedContext) async throws -> QuoteList {
        let raw = request.query["symbols"].map(String.init) ?? ""
        let requested = raw.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !requested.isEmpty, requested.count <= Self.maximumSymbols else {
            throw AppError.validation(field: "symbols", code: "invalid", message: "Give 1 to \(Self.maximumSymbols) comma-separated symbols.")
        }
        let symbols = requested.map { OrderDraft.normalizedSymbol($0) ?? $0 }
        let lookups = await quotes.lookups(for: requested.compactMap(OrderDraft.normalizedSymbol), staleWhileRevalidate: true)
        var errors: [QuoteError] = []
        var firstReason: MarketDataError?
        for symbol in Self.unique(symbols) {
            guard case .unavailable(let reason) = lookups[symbol] else { continue }
            firstReason = firstReason ?? reason
            errors.append(QuoteError(
                symbol: symbol, code: "market_data_unavailable", detail: "No quote for \(symbol) can be had right now; try again later.",
                retryAfterSeconds: quotes.unavailable(reason, .quote).retryAfter))
        }
        let known = try Self.known(symbols, in: lookups)
        if known.isEmpty, let firstReason { throw quotes.unavailable(firstReason, .quote) }
        let now = quotes.clock.now()
        return QuoteList(data: known.map { QuoteResponse($0, now: now) }, errors: errors.isEmpty ? nil : errors)
    }

    static func unique(_ symbols: [String]) -> [String] {
        var seen = Set<String>()
        return symbols.filter { seen.insert($0).inserted }
    }

    /// The quotes in the order asked, or 422 naming the symbols nobody quotes.
    /// Symbols that are only unavailable for now are left out, not refused.
    static func known(_ symbols: [String], in lookups: [String: QuoteService.Lookup]) throws -> [PriceQuote] {
        let quotes = lookups.compactMapValues { lookup -> PriceQuote? in
            if case .found(let quote) = lookup { return quote }
            return nil
        }
        let unknown = symbols.filter { symbol in
            if case .unavailable = lookups[symbol] { return false }
            return quotes[symbol] == nil
        }
        if !unknown.isEmpty {
            throw AppError(
                .unprocessableContent, code: "unknown_symbol", detail: TradingError.unknownSymbolsMessage(unknown),
                errors: [.init(field: "symbols", code: "unknown_symbol", message: TradingError.unknownSymbolsMessage(unknown))])
        }
        var seen = Set<String>()
        return symbols.filter { seen.insert($0).inserted }.compactMap { quotes[$0] }
    }

    struct SearchResult: ResponseEncodable {
        var data: [SymbolMatch]
    }

    @Sendable func search(_ request: Request, context: AuthenticatedContext) async throws -> SearchResult {
        guard let query = request.query["query"].map(String.init), (1...50).contains(query.count) else {
            throw AppError.validation(field: "query", code: "invalid", message: "query must have 1 to 50 characters.")
        }
        return SearchResult(data: try await quotes.search(query))
    }

    struct HistoryPoint: Codable, Sendable {
        var date: String
        var close: String
    }

    struct HistoryResponse: ResponseEncodable {
        var symbol: String
        var data: [HistoryPoint]
    }

    @Sendable func history(_ request: Request, context: AuthenticatedContext) async throws -> HistoryResponse {
        func unknown(_ message: String) -> AppError {
            AppError(.unprocessableContent, code: "unknown_symbol", detail: message, errors: [.init(field: "symbol", code: "unknown_symbol", message: message)])
        }
        guard let symbol = context.parameters.get("symbol").flatMap(OrderDraft.normalizedSymbol) else {
            throw unknown("symbol must be a ticker such as AAPL.")
        }
        switch await quotes.lookup(symbol) {
        case .found: break
        case .unknown: throw unknown(TradingError.unknownSymbolsMessage([symbol]))
        // No quote to check the symbol against: it is history that cannot be had right now.
        case .unavailable(let reason): throw quotes.unavailable(reason, .history)
        }
        let days = Int(request.query["days"].map(String.init) ?? "30") ?? 0
        guard (1...365).contains(days) else { throw AppError.validation(field: "days", code: "out_of_range", message: "days must be from 1 to 365.") }
        let closes = try await quotes.dailyHistory(for: symbol, days: days)
        let dateStyle = Date.ISO8601FormatStyle(timeZone: .gmt).year().month().day()
        return HistoryResponse(symbol: symbol, data: closes.map { HistoryPoint(date: dateStyle.format($0.date), close: $0.close.formatted(minimumFractionDigits: 2)) })
    }
}
