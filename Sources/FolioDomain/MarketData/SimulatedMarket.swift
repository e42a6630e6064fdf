import Foundation

/// A built-in market for working offline: 50 well-known US tickers whose prices
/// move deterministically from a seed, as a random walk with drift and
/// volatility per symbol. The same seed and time always give the same price.
///
/// Each step multiplies by 1 + drift + volatility × z, with z drawn from a
/// seeded generator in [-1, 1] to 4 places, and rounds half to even to the
/// cent. The arithmetic is exact and runs on whole cents and millionths in
/// `Int64` (a close is 1,440 steps into its day).
public struct SimulatedMarket: Sendable {
    public struct Listing: Sendable {
        public var symbol: String
        public var name: String
        /// Price at the start of the walk (the epoch day's open), in cents.
        public var baseCents: Int64
        /// Expected move per daily step, in millionths.
        public var driftMillionths: Int64
        /// Largest move per daily step, in millionths.
        public var volatilityMillionths: Int64
        public var assetClass: AssetClass = .equity
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
    public func price(of symbol: String, at date: Date) -> Price? {
        guard let listing = listings[symbol] else { return nil }
        let (day, minute) = Self.position(of: date)
        return Self.price(cents: intraday(listing, day: day, from: open(listing, day: day), minutes: minute))
    }

    /// The walk through `day` from its open, `minutes` steps.
    func intraday(_ listing: Listing, day: Int, from open: Int64, minutes: Int) -> Int64 {
        var cents = open
        var generator = SeededRandom(seed: seed ^ Self.hash(listing.symbol) ^ UInt64(bitPattern: Int64(day)) &* 0x9E37_79B9)
        // Minute steps move a twentieth as far as daily ones.
        let volatility = listing.volatilityMillionths / 20
        for _ in 0..<minutes {
            cents = Self.step(cents, drift: 0, volatility: volatility, using: &generator)
        }
        return cents
    }

    /// The previous day's close (the price at the last minute of yesterday).
    public func previousClose(of symbol: String, at date: Date) -> Price? {
        let (day, _) = Self.position(of: date)
        return price(of: symbol, at: Self.epoch.addingTimeInterval(Double(day * Self.minutesPerDay - 1) * 60))
    }

    /// When the simulated day holding `date` began (its days are UTC days, trading all day): the moment of the
    /// previous close its quotes measure the day's change from.
    public func dayStart(of date: Date) -> Date {
        Self.epoch.addingTimeInterval(Double(Self.position(of: date).day * 86_400))
    }

    /// Daily closes for the `days` days before `date`, oldest first.
    public func dailyCloses(of symbol: String, days: Int, before date: Date) -> [(date: Date, close: Price)] {
        guard let listing = listings[symbol] else { return [] }
        let (today, _) = Self.position(of: date)
        let first = max(0, today - days)
        guard first < today else { return [] }
        // One walk over the opens, then each day's walk to its last minute.
        var open = self.open(listing, day: first)
        var generator = openGenerator(listing, skipping: first)
        var closes: [(date: Date, close: Price)] = []
        closes.reserveCapacity(today - first)
        for day in first..<today {
            let close = intraday(listing, day: day, from: open, minutes: Self.minutesPerDay - 1)
            closes.append((Self.epoch.addingTimeInterval(Double(day * 86_400)), Self.price(cents: close)))
            open = Self.step(open, drift: listing.driftMillionths, volatility: listing.volatilityMillionths, using: &generator)
        }
        return closes
    }

    /// The open of `day`, in cents: the daily walk from the base price.
    func open(_ listing: Listing, day: Int) -> Int64 {
        var cents = listing.baseCents
        var generator = openGenerator(listing, skipping: 0)
        let drift = listing.driftMillionths, volatility = listing.volatilityMillionths
        for _ in 0..<max(0, day) {
            cents = Self.step(cents, drift: drift, volatility: volatility, using: &generator)
        }
        return cents
    }

    /// The daily walk's generator, advanced past `days` steps.
    func openGenerator(_ listing: Listing, skipping days: Int) -> SeededRandom {
        var generator = SeededRandom(seed: seed ^ Self.hash(listing.symbol))
        for _ in 0..<max(0, days) { _ = generator.next() }
        return generator
    }

    // MARK: - Exact integer steps

    /// z has 4 places and drift and volatility 6: a step's factor is a whole number over 10^10.
    static let denominator: Int64 = 10_000_000_000

    /// cents × (1 + drift + volatility × z), rounded half to even, at least one cent.
    static func step(_ cents: Int64, drift: Int64, volatility: Int64, using generator: inout SeededRandom) -> Int64 {
        let z = Int64(generator.next() % 20_001) - 10_000
        let factor = denominator + drift * 10_000 + volatility * z
        let product = cents * factor
        var quotient = product / denominator
        let twiceRemainder = 2 * (product % denominator)
        if twiceRemainder > denominator || (twiceRemainder == denominator && quotient % 2 != 0) { quotient += 1 }
        return max(quotient, 1)
    }

    static func price(cents: Int64) -> Price {
        Price(uncheckedUnits: Int128(cents) * 1_000_000)
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
            symbol: entry.0, name: entry.1, baseCents: Int64(entry.2.replacingOccurrences(of: ".", with: ""))!,
            driftMillionths: 300, volatilityMillionths: Int64(10 + index % 20) * 1000,
            assetClass: entry.1.hasSuffix("ETF") || entry.0 == "QQQ" ? .etf : .equity)
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
