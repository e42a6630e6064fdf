import AsyncHTTPClient
import FolioDomain
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOFoundationCompat

/// Why a market-data vendor gave no answer. Each ends up as 503
/// `market_data_unavailable` unless an older quote can be served instead.
enum MarketDataError: Error, Sendable, Equatable {
    /// Our own call budget for the vendor is spent until `retryAt`.
    case budgetExhausted(retryAt: Date)
    /// The vendor says we called too often (Alpha Vantage's `Note` or `Information`).
    case rateLimited(String)
    /// The vendor refused the call (Alpha Vantage's `Error Message`).
    case rejected(String)
    /// Not HTTP 200, or a body that is not the documented shape. `aboutTheSymbol`: a well-formed answer that
    /// is unusable for this one symbol (no positive price, no trading day, another symbol's quote): the vendor
    /// answered, so it does not count towards holding the vendor off for every symbol.
    case badResponse(String, aboutTheSymbol: Bool = false)
    /// No answer in time, or no connection.
    case unreachable(String)
    /// Not called: the vendor is held off after a rate limit or repeated failures (`VendorGate`).
    case heldOff(retryAt: Date, reason: String)

    /// What a person may be told of it: never the vendor's own message (Alpha Vantage's daily-limit answer quotes the API key).
    var plainWords: String {
        switch self {
        case .budgetExhausted: "the calls allowed to the market data vendor are used up for now"
        case .rateLimited, .heldOff: "the market data vendor is holding calls back for now"
        case .rejected: "the market data vendor refused the request"
        case .badResponse: "the market data vendor's answer could not be read"
        case .unreachable: "the market data vendor could not be reached"
        }
    }
}

/// Alpha Vantage (https://www.alphavantage.co/documentation/): `GLOBAL_QUOTE`,
/// `TIME_SERIES_DAILY` and `SYMBOL_SEARCH`. Every price arrives as a JSON
/// string and is parsed straight to a `Price` (one with more than 8 places, which
/// the column cannot keep, is no answer). Errors arrive with HTTP 200 and
/// one of three keys: `Error Message`, `Note` or `Information`. Every call is
/// first claimed from the shared `CallBudget`.
struct AlphaVantageProvider: MarketDataProvider {
    static let name = "alpha_vantage"
    var name: String { Self.name }
    /// An empty "Global Quote" now and then for a listed symbol.
    var answersUnknownByMistake: Bool { true }

    let apiKey: String
    let baseURL: String
    let budget: CallBudget
    let clock: AppClock
    let httpClient: HTTPClient
    let logger: Logger
    var timeout: TimeAmount = .seconds(10)
    /// Each call by function, result and latency.
    var metrics: FolioMetrics? = nil
    /// Set once Alpha Vantage answered that `outputsize=full` needs a premium plan: this key is a free
    /// one, and longer histories are asked for as the 100 days it serves, without a refused call first.
    private let freeKey = NIOLockedValueBox(false)

    func quote(for symbol: String) async throws -> PriceQuote? {
        try await call(["function": "GLOBAL_QUOTE", "symbol": symbol]) { try quote(for: symbol, in: $0) }
    }

    private func quote(for symbol: String, in body: ByteBuffer) throws -> PriceQuote? {
        let fields = try decode(GlobalQuoteBody.self, from: body).quote
        // An unknown symbol is answered with an empty "Global Quote"; no "Global Quote" at all is not an answer
        // (cached as unknown, it would refuse the symbol's orders for a while).
        guard let fields else { throw MarketDataError.badResponse("GLOBAL_QUOTE without a Global Quote") }
        guard !fields.isEmpty else { return nil }
        // A quote of another symbol is no answer to this one (a proxy's cache, a vendor's mix-up): never priced as it.
        guard let quoted = fields["01. symbol"], quoted.uppercased() == symbol.uppercased() else {
            throw MarketDataError.badResponse("GLOBAL_QUOTE for another symbol than the one asked for", aboutTheSymbol: true)
        }
        guard let price = fields["05. price"].flatMap(Self.price), price.isPositive else {
            throw MarketDataError.badResponse("GLOBAL_QUOTE without a positive price", aboutTheSymbol: true)
        }
        // A price of no known day is not taken for today's: it would price fills and show as fresh.
        // Its time: now on its trading day, else that day's 16:00 New York close.
        guard let day = fields["07. latest trading day"].flatMap({ TradingDay($0) }) else {
            throw MarketDataError.badResponse("GLOBAL_QUOTE without a latest trading day", aboutTheSymbol: true)
        }
        // A day still to come, or a weekend, is no trading day: such a quote would be taken as today's, fresh, and
        // price fills. (A holiday is not refused here: the exchange's own calendar may know a session the rules do not.)
        guard day <= TradingDay(clock.now()), day.isWeekday else {
            throw MarketDataError.badResponse("GLOBAL_QUOTE dated \(day), which is no trading day up to today", aboutTheSymbol: true)
        }
        let previousClose = fields["08. previous close"].flatMap(Self.price).flatMap { $0.isPositive ? $0 : nil }
        return PriceQuote(symbol: symbol, price: price, previousClose: previousClose, asOf: min(clock.now(), day.close))
    }

    func search(_ query: String) async throws -> [SymbolMatch] {
        let matches = try await call(["function": "SYMBOL_SEARCH", "keywords": query]) { try decode(SearchBody.self, from: $0).bestMatches ?? [] }
        // Folio trades US listings; other markets' tickers (TSCO.LON) are left out.
        return matches.compactMap { match in
            guard match["4. region"] == "United States", let symbol = match["1. symbol"].flatMap(OrderDraft.normalizedSymbol) else { return nil }
            return SymbolMatch(symbol: symbol, name: match["2. name"] ?? symbol, assetClass: match["3. type"].map(AssetClass.init(instrumentType:)))
        }
    }

    func dailyHistory(for symbol: String, days: Int) async throws -> [DailyClose] {
        // The free tier serves the last 100 days ("compact"); more needs "full", a premium feature: on a free key,
        // the 100 days there are (a chart of a year then starts 100 trading days back).
        let full = days > 100 && !freeKey.withLockedValue { $0 }
        let read = { (body: ByteBuffer) throws -> [DailyClose] in try dailyCloses(in: body, of: symbol, days: days) }
        do {
            return try await call(["function": "TIME_SERIES_DAILY", "symbol": symbol, "outputsize": full ? "full" : "compact"], read: read)
        } catch MarketDataError.rejected(let message) where full && message.lowercased().contains("premium") {
            freeKey.withLockedValue { $0 = true }
            logger.notice("the Alpha Vantage key is a free one: daily history is its last 100 days", metadata: ["provider": "\(Self.name)"])
            return try await call(["function": "TIME_SERIES_DAILY", "symbol": symbol, "outputsize": "compact"], read: read)
        }
    }

    private func dailyCloses(in body: ByteBuffer, of symbol: String, days: Int) throws -> [DailyClose] {
        // A well-formed answer that is unusable for this symbol is about the symbol (`aboutTheSymbol`): one chart's bad
        // day must not hold the vendor off for every symbol, and every order with it.
        let answer = try decode(DailySeriesBody.self, from: body)
        guard let series = answer.series else {
            throw MarketDataError.badResponse("TIME_SERIES_DAILY without a time series", aboutTheSymbol: true)
        }
        // Another symbol's closes (a proxy's cache, a vendor's mix-up) would value a backfilled day for good: refused, as a quote's are.
        if let named = answer.metaData?["2. Symbol"], named.uppercased() != symbol.uppercased() {
            throw MarketDataError.badResponse("TIME_SERIES_DAILY for another symbol than the one asked for", aboutTheSymbol: true)
        }
        // A day that cannot be read exactly (a zero close, a price past 8 places, no date) fails the series rather than
        // leaving a gap: a backfill would value the missing day at the day before's close and keep that for good.
        let closes = try series.map { day, fields -> DailyClose in
            guard let date = Self.tradingDay(day), let close = fields["4. close"].flatMap(Self.price), close.isPositive else {
                throw MarketDataError.badResponse("TIME_SERIES_DAILY with an unreadable day", aboutTheSymbol: true)
            }
            return DailyClose(date: date, close: close)
        }
        return Array(closes.sorted { $0.date < $1.date }.suffix(days))
    }

    // MARK: - Wire

    /// One GET of `/query`, after claiming a call from the budget: `read` of the body of a 200 that is not one
    /// of the three error shapes. A body `read` refuses (an HTML page, `{}`, a price that is no price) is a
    /// failed call, counted and logged as one: it is no answer, whatever the status said.
    private func call<Answer>(_ parameters: [String: String], read: (ByteBuffer) throws -> Answer) async throws -> Answer {
        do {
            try await budget.claim()
        } catch let exhausted as CallBudget.Exhausted {
            throw MarketDataError.budgetExhausted(retryAt: exhausted.retryAt)
        }
        let function = parameters["function"] ?? "?"
        var request = HTTPClientRequest(url: url(parameters.merging(["apikey": apiKey]) { old, _ in old }))
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "Folio/\(FolioVersion.current)")
        let body: ByteBuffer
        let start = ContinuousClock.now
        func record(_ result: String) {
            metrics?.vendorCall(vendor: "alpha_vantage", endpoint: function, result: result, duration: ContinuousClock.now - start)
        }
        do {
            let (response, whole) = try await httpClient.executeWhole(request, timeout: timeout, upTo: 8 << 20)
            body = whole
            guard response.status == .ok else {
                record("error")
                throw MarketDataError.badResponse("\(function) answered HTTP \(response.status.code)")
            }
        } catch let error as MarketDataError {
            throw logged(error, function: function)
        } catch {
            record("unreachable")
            // The error's description never includes the URL, so the key stays out of logs.
            throw logged(.unreachable("\(function): \(type(of: error))"), function: function)
        }
        // Alpha Vantage answers its refusals with HTTP 200: counted by what the body says, so a revoked key or a
        // spent limit shows in the metrics (and FolioVendorErrorBurst) as the failure it is.
        let envelope = (try? JSONDecoder().decode(ErrorEnvelope.self, from: body)) ?? ErrorEnvelope()
        if let message = envelope.errorMessage {
            record("rejected")
            throw logged(.rejected(message), function: function)
        }
        if let message = envelope.note ?? envelope.information {
            // `Information` also says a call needs a premium plan (`outputsize=full`, say): a refusal of that
            // call, not a limit to hold every call back for. Only a message about the rate is a limit.
            let limited = Self.isRateLimit(message)
            record(limited ? "rate_limited" : "rejected")
            throw logged(limited ? .rateLimited(message) : .rejected(message), function: function)
        }
        let answer: Answer
        do {
            answer = try read(body)
        } catch {
            record("error")
            throw logged(error as? MarketDataError ?? .badResponse("\(function): \(type(of: error))"), function: function)
        }
        record("ok")
        return answer
    }

    /// Alpha Vantage's words for a spent limit: "Our standard API rate limit is 25 requests per day",
    /// "5 calls per minute", "call frequency", "spreading out your free API requests more sparingly
    /// (1 request per second)". A message without them that speaks of a premium plan refuses the call;
    /// any other is taken as a limit, as before.
    static func isRateLimit(_ message: String) -> Bool {
        let lowered = message.lowercased()
        if ["rate limit", "requests per", "calls per", "request per", "call frequency", "sparingly"].contains(where: { lowered.contains($0) }) { return true }
        return !lowered.contains("premium")
    }

    private func logged(_ error: MarketDataError, function: String) -> MarketDataError {
        logger.warning("market data call failed", metadata: ["provider": "\(Self.name)", "function": "\(function)", "error": "\(error)"])
        return error
    }

    private func url(_ parameters: [String: String]) -> String {
        let query = parameters.sorted { $0.key < $1.key }
            .map { "\(Self.encode($0.key))=\(Self.encode($0.value))" }
            .joined(separator: "&")
        return baseURL.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/query?" + query
    }

    private func decode<Body: Decodable>(_ type: Body.Type, from body: ByteBuffer) throws -> Body {
        do {
            return try JSONDecoder().decode(Body.self, from: body)
        } catch {
            throw MarketDataError.badResponse("undecodable \(Body.self)")
        }
    }

    func previousCloseTime(at date: Date, calendar: MarketCalendar) -> Date {
        calendar.previousClose(before: date)
    }

    static func encode(_ text: String) -> String {
        var unreserved = CharacterSet.alphanumerics
        unreserved.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? ""
    }

    /// A price as the vendor wrote it (four places), exactly: one with more places than a price holds
    /// is no answer Folio can take, never rounded into another price ("0.000000006" is not "0.00000001").
    static func price(_ text: String) -> Price? {
        try? Price(parsing: text)
    }

    /// `2026-11-27` as midnight UTC, as the simulated market dates its days.
    static func tradingDay(_ text: String) -> Date? {
        try? Date(text + "T00:00:00Z", strategy: .iso8601)
    }

    // MARK: - Documented bodies (every value is a string)

    private struct ErrorEnvelope: Decodable {
        var errorMessage: String?
        var note: String?
        var information: String?

        enum CodingKeys: String, CodingKey {
            case errorMessage = "Error Message"
            case note = "Note"
            case information = "Information"
        }
    }

    private struct GlobalQuoteBody: Decodable {
        var quote: [String: String]?
        enum CodingKeys: String, CodingKey { case quote = "Global Quote" }
    }

    private struct SearchBody: Decodable {
        var bestMatches: [[String: String]]?
    }

    private struct DailySeriesBody: Decodable {
        var metaData: [String: String]?
        var series: [String: [String: String]]?
        enum CodingKeys: String, CodingKey {
            case metaData = "Meta Data"
            case series = "Time Series (Daily)"
        }
    }
}
