import Foundation

/// A built-in market for working offline: 50 well-known US tickers whose prices
/// move deterministically from a seed, as a random walk with drift and
/// volatility per symbol. The same seed and time always give the same price.
///
/// All arithmetic is `Decimal`: each step multiplies by 1 + drift + volatility × z,
/// with z drawn from a seeded generator in [-1, 1] to 4 places.
public struct SimulatedMarket: Sendable {
    public struct Listing: Sendable {
        public var symbol: String
        public var name: String
        /// Price at the start of the walk (the epoch day's open).
        public var basePrice: Decimal
        /// Expected move per step, as a fraction.
        public var drift: Decimal
        /// Largest move per step, as a fraction.
        public var volatility: Decimal
    }

    public let seed: UInt64
    public let listings: [String: Listing]
    /// Day zero of the walk.
    static let epoch = Date(timeIntervalSince1970: 1_767_225_600)  // 2026-01-01T00:00:00Z
    static let minutesPerDay = 24 * 60

    public init(seed: UInt64 = 20_260_101) {
        self.seed = seed
        self.listings = Dictionary(uniqueKeysWithValues: Self.universe.map { ($0.symbol, $0) })
    }

    public var symbols: [String] { listings.keys.sorted() }

    /// The price at `date`: a daily walk from the epoch to the day's open, then
    /// a walk minute by minute through the day. Prices are in cents, never below one cent.
    public func price(of symbol: String, at date: Date) -> Decimal? {
        guard let listing = listings[symbol] else { return nil }
        let (day, minute) = Self.position(of: date)
        var price = open(listing, day: day)
        var generator = SeededRandom(seed: seed ^ Self.hash(symbol) ^ UInt64(bitPattern: Int64(day)) &* 0x9E37_79B9)
        let intradayVolatility = listing.volatility / 20
        for _ in 0..<minute {
            price = step(price, drift: 0, volatility: intradayVolatility, using: &generator)
        }
        return price
    }

    /// The previous day's close (the price at the last minute of yesterday).
    public func previousClose(of symbol: String, at date: Date) -> Decimal? {
        let (day, _) = Self.position(of: date)
        return price(of: symbol, at: Self.epoch.addingTimeInterval(Double(day * Self.minutesPerDay - 1) * 60))
    }

    /// Daily closes for the `days` days before `date`, oldest first.
    public func dailyCloses(of symbol: String, days: Int, before date: Date) -> [(date: Date, close: Decimal)] {
        let (today, _) = Self.position(of: date)
        return (max(0, today - days)..<today).compactMap { day in
            let close = Self.epoch.addingTimeInterval(Double((day + 1) * Self.minutesPerDay - 1) * 60)
            return price(of: symbol, at: close).map { (Self.epoch.addingTimeInterval(Double(day * 86_400)), $0) }
        }
    }

    func open(_ listing: Listing, day: Int) -> Decimal {
        var price = listing.basePrice
        var generator = SeededRandom(seed: seed ^ Self.hash(listing.symbol))
        for _ in 0..<max(0, day) {
            price = step(price, drift: listing.drift, volatility: listing.volatility, using: &generator)
        }
        return price
    }

    func step(_ price: Decimal, drift: Decimal, volatility: Decimal, using generator: inout SeededRandom) -> Decimal {
        let z = Decimal(Int(generator.next() % 20_001) - 10_000) / 10_000
        let next = ExactDecimal.rounded(price * (1 + drift + volatility * z), scale: 2)
        return max(next, Decimal(string: "0.01")!)
    }

    static func position(of date: Date) -> (day: Int, minute: Int) {
        let minutes = max(0, Int(date.timeIntervalSince(epoch) / 60))
        return (minutes / minutesPerDay, minutes % minutesPerDay)
    }

    /// FNV-1a, so each symbol has its own stable stream.
    static func hash(_ text: String) -> UInt64 {
        text.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
    }

    static let universe: [Listing] = [
        ("AAPL", "Apple", "190.00"), ("MSFT", "Microsoft", "420.00"), ("GOOGL", "Alphabet", "170.00"), ("AMZN", "Amazon", "185.00"),
        ("NVDA", "NVIDIA", "120.00"), ("META", "Meta Platforms", "500.00"), ("TSLA", "Tesla", "240.00"), ("BRK.B", "Berkshire Hathaway", "410.00"),
        ("JPM", "JPMorgan Chase", "200.00"), ("V", "Visa", "275.00"), ("JNJ", "Johnson & Johnson", "155.00"), ("WMT", "Walmart", "68.00"),
        ("PG", "Procter & Gamble", "165.00"), ("MA", "Mastercard", "460.00"), ("UNH", "UnitedHealth", "520.00"), ("HD", "Home Depot", "350.00"),
        ("XOM", "Exxon Mobil", "115.00"), ("CVX", "Chevron", "155.00"), ("KO", "Coca-Cola", "62.00"), ("PEP", "PepsiCo", "170.00"),
        ("BAC", "Bank of America", "38.00"), ("ABBV", "AbbVie", "170.00"), ("COST", "Costco", "850.00"), ("MRK", "Merck", "125.00"),
        ("AVGO", "Broadcom", "160.00"), ("ADBE", "Adobe", "520.00"), ("CRM", "Salesforce", "270.00"), ("NFLX", "Netflix", "650.00"),
        ("ORCL", "Oracle", "140.00"), ("CSCO", "Cisco", "48.00"), ("INTC", "Intel", "30.00"), ("AMD", "Advanced Micro Devices", "160.00"),
        ("QCOM", "Qualcomm", "170.00"), ("TXN", "Texas Instruments", "195.00"), ("IBM", "IBM", "185.00"), ("DIS", "Walt Disney", "100.00"),
        ("NKE", "Nike", "95.00"), ("MCD", "McDonald's", "270.00"), ("SBUX", "Starbucks", "80.00"), ("BA", "Boeing", "180.00"),
        ("CAT", "Caterpillar", "340.00"), ("GE", "GE Aerospace", "160.00"), ("HON", "Honeywell", "205.00"), ("UPS", "UPS", "140.00"),
        ("T", "AT&T", "18.00"), ("VZ", "Verizon", "40.00"), ("PFE", "Pfizer", "28.00"), ("LLY", "Eli Lilly", "780.00"),
        ("SPY", "SPDR S&P 500 ETF", "540.00"), ("QQQ", "Invesco QQQ", "470.00"), ("VTI", "Vanguard Total Stock Market ETF", "265.00"),
    ].enumerated().map { index, entry in
        // Drift about 0.03 % a day and daily moves up to 1–3 %, varied by symbol.
        Listing(
            symbol: entry.0, name: entry.1, basePrice: Decimal(string: entry.2)!,
            drift: Decimal(string: "0.0003")!, volatility: Decimal(10 + index % 20) / 1000)
    }
}

/// SplitMix64: small, fast and deterministic.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
