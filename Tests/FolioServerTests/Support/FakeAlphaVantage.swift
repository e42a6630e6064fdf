import FolioDomain
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers

/// A local Alpha Vantage on loopback that answers `/query` the way
/// https://www.alphavantage.co/documentation/ shows: every value a string,
/// errors with HTTP 200 under `Error Message`, `Note` or `Information`.
final class FakeAlphaVantage: Sendable {
    enum Mode: Sendable {
        case normal
        case errorMessage, note, information, premium
        /// A free key: `outputsize=full` is refused as a premium feature; everything else is answered.
        case freeKey
        case serverError
        case garbage
        /// `{}`: valid JSON with none of the answer's keys.
        case emptyObject
        /// Answers normally, but only after this long.
        case slow(Duration)
        /// Every GLOBAL_QUOTE answers with this symbol's quote, whatever was asked (a proxy's cache, a mix-up).
        case quoteOf(String)
        /// GLOBAL_QUOTE answers without its `07. latest trading day`.
        case noTradingDay
        /// Answers 200 and the body's first bytes at once, then nothing more for this long.
        case stallsMidBody(Duration)
        /// GLOBAL_QUOTE answers `{"Global Quote": {}}` for every symbol, as Alpha Vantage now and then does for a listed one.
        case emptyQuote
        /// TIME_SERIES_DAILY has one day (the second newest) whose close is "0.0000".
        case zeroCloseDay

        var omitsTradingDay: Bool { if case .noTradingDay = self { true } else { false } }
    }

    static let apiKey = "FAKEKEY1234567890"
    /// Symbol → (price, previous close), as the vendor formats them.
    static let prices: [String: (String, String)] = [
        "IBM": ("265.6500", "263.4000"),
        "AAPL": ("189.9800", "187.1500"),
        "MSFT": ("415.1234", "410.0000"),
        "ORDB": ("151.0000", "150.0000"),
    ]

    private let state = NIOLockedValueBox<(mode: Mode, hits: [String], keywords: [String], tradingDay: String)>((.normal, [], [], "2026-11-27"))
    let baseURL: String

    init(baseURL: String) {
        self.baseURL = baseURL
    }

    var mode: Mode {
        get { state.withLockedValue { $0.mode } }
        set { state.withLockedValue { $0.mode = newValue } }
    }

    /// The `function` of every call received, in order.
    var hits: [String] { state.withLockedValue { $0.hits } }

    /// The `keywords` of every SYMBOL_SEARCH received, as the vendor decodes them.
    var keywords: [String] { state.withLockedValue { $0.keywords } }

    var tradingDay: String {
        get { state.withLockedValue { $0.tradingDay } }
        set { state.withLockedValue { $0.tradingDay = newValue } }
    }

    func answer(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let function = query["function"].map(String.init) ?? ""
        let mode = state.withLockedValue { state -> Mode in
            state.hits.append(function)
            if let keywords = query["keywords"] { state.keywords.append(String(keywords)) }
            return state.mode
        }
        if case .slow(let delay) = mode { try await Task.sleep(for: delay) }
        if case .stallsMidBody(let stall) = mode {
            let body = ResponseBody { writer in
                try await writer.write(ByteBuffer(string: #"{"Global Quote": {"01. symbol": "#))
                try await Task.sleep(for: stall)
                try await writer.write(ByteBuffer(string: #""IBM"}}"#))
                try await writer.finish(nil)
            }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: body)
        }
        switch mode {
        case .serverError: return Self.json(#"{"detail": "upstream down"}"#, status: .internalServerError)
        case .garbage: return Self.json("<html>maintenance</html>")
        case .emptyObject: return Self.json("{}")
        case .errorMessage:
            return Self.json(#"{"Error Message": "Invalid API call. Please retry or visit the documentation (https://www.alphavantage.co/documentation/) for \#(function)."}"#)
        case .note:
            return Self.json(#"{"Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute and 500 calls per day. Please visit https://www.alphavantage.co/premium/ if you would like to target a higher API call frequency."}"#)
        case .information:
            return Self.json(#"{"Information": "We have detected your API key as \#(Self.apiKey) and our standard API rate limit is 25 requests per day. Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly remove all daily rate limits."}"#)
        case .premium:
            return Self.json(#"{"Information": "Thank you for using Alpha Vantage! The outputsize=full parameter value is a premium feature for the TIME_SERIES_DAILY endpoint. You may subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly unlock all premium features"}"#)
        case .freeKey where query["outputsize"] == "full":
            return Self.json(#"{"Information": "Thank you for using Alpha Vantage! The outputsize=full parameter value is a premium feature for the TIME_SERIES_DAILY endpoint. You may subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly unlock all premium features"}"#)
        case .emptyQuote where function == "GLOBAL_QUOTE": return Self.json(#"{"Global Quote": {}}"#)
        case .normal, .slow, .freeKey, .quoteOf, .noTradingDay, .stallsMidBody, .emptyQuote, .zeroCloseDay: break
        }
        guard query["apikey"].map(String.init) == Self.apiKey else {
            return Self.json(#"{"Error Message": "the parameter apikey is invalid or missing. Please claim your free API key on (https://www.alphavantage.co/support/#api-key). It should take less than 20 seconds."}"#)
        }
        var symbol = query["symbol"].map(String.init) ?? ""
        if case .quoteOf(let other) = mode, function == "GLOBAL_QUOTE" { symbol = other }
        switch function {
        case "GLOBAL_QUOTE":
            guard let (price, previous) = Self.prices[symbol.uppercased()] else { return Self.json(#"{"Global Quote": {}}"#) }
            return Self.json("""
                {
                    "Global Quote": {
                        "01. symbol": "\(symbol)",
                        "02. open": "\(previous)",
                        "03. high": "\(price)",
                        "04. low": "\(previous)",
                        "05. price": "\(price)",
                        "06. volume": "3462146",
                        \(mode.omitsTradingDay ? "" : "\"07. latest trading day\": \"\(tradingDay)\",")
                        "08. previous close": "\(previous)",
                        "09. change": "2.2500",
                        "10. change percent": "0.8541%"
                    }
                }
                """)
        case "TIME_SERIES_DAILY":
            guard let (price, _) = Self.prices[symbol] else {
                return Self.json(#"{"Error Message": "Invalid API call. Please retry or visit the documentation (https://www.alphavantage.co/documentation/) for TIME_SERIES_DAILY."}"#)
            }
            let count = query["outputsize"] == "full" ? 400 : 100
            let days = Self.weekdays(endingAt: tradingDay, count: count)
            let series = days.enumerated().map { index, day in
                // Each older day one cent lower, so the test can check exact closes.
                let close = try! Price(parsing: price) - Price(uncheckedUnits: Int128(index) * 1_000_000)
                if case .zeroCloseDay = mode, index == 1 {
                    return #""\#(day)": {"1. open": "0.0000", "2. high": "0.0000", "3. low": "0.0000", "4. close": "0.0000", "5. volume": "0"}"#
                }
                return #""\#(day)": {"1. open": "\#(close)", "2. high": "\#(close)", "3. low": "\#(close)", "4. close": "\#(close.formatted(minimumFractionDigits: 4))", "5. volume": "1000"}"#
            }
            return Self.json("""
                {
                    "Meta Data": {
                        "1. Information": "Daily Prices (open, high, low, close) and Volumes",
                        "2. Symbol": "\({ if case .quoteOf(let other) = mode { other } else { symbol } }())",
                        "3. Last Refreshed": "\(tradingDay)",
                        "4. Output Size": "\(count == 100 ? "Compact" : "Full size")",
                        "5. Time Zone": "US/Eastern"
                    },
                    "Time Series (Daily)": {
                        \(series.joined(separator: ",\n"))
                    }
                }
                """)
        case "SYMBOL_SEARCH":
            return Self.json("""
                {
                    "bestMatches": [
                        {"1. symbol": "IBM", "2. name": "International Business Machines Corp", "3. type": "Equity", "4. region": "United States",
                         "5. marketOpen": "09:30", "6. marketClose": "16:00", "7. timezone": "UTC-04", "8. currency": "USD", "9. matchScore": "1.0000"},
                        {"1. symbol": "IBM.LON", "2. name": "International Business Machines Corp", "3. type": "Equity", "4. region": "United Kingdom",
                         "5. marketOpen": "08:00", "6. marketClose": "16:30", "7. timezone": "UTC+01", "8. currency": "USD", "9. matchScore": "0.8000"}
                    ]
                }
                """)
        default:
            return Self.json(#"{"Error Message": "This API function (\#(function)) does not exist."}"#)
        }
    }

    /// Weekdays up to and including `last`, newest first.
    static func weekdays(endingAt last: String, count: Int) -> [String] {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = .gmt
        var day = try! Date(last + "T00:00:00Z", strategy: .iso8601)
        var days: [String] = []
        let style = Date.ISO8601FormatStyle(timeZone: .gmt).year().month().day()
        while days.count < count {
            if !calendar.isDateInWeekend(day) { days.append(style.format(day)) }
            day = calendar.date(byAdding: .day, value: -1, to: day)!
        }
        return days
    }

    static func json(_ body: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// Runs a fake Alpha Vantage on a free loopback port for the length of `body`.
func withFakeAlphaVantage<T: Sendable>(_ body: @escaping @Sendable (FakeAlphaVantage) async throws -> T) async throws -> T {
    // The fake's credentials are configured secrets of whatever talks to it, masked in every log line from
    // now on, as the composition root registers the configuration's before it builds a client: a test that
    // builds a client without an app must not depend on another test's app having registered them first.
    ConfiguredSecrets.register([FakeAlphaVantage.apiKey])
    return try await withLoopbackFake(
        "fake-alpha-vantage", method: .get, path: "/query", make: { FakeAlphaVantage(baseURL: "http://127.0.0.1:\($0)") },
        answer: { fake, request in try await fake.answer(request) }, body)
}
