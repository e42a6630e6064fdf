import Foundation
import Testing

@testable import FolioDomain

@Suite("Simulated market")
struct SimulatedMarketTests {
    let market = SimulatedMarket()
    let noon = Date(timeIntervalSince1970: 1_795_000_000)

    @Test("at least 50 well-known tickers are listed")
    func universe() {
        #expect(market.symbols.count >= 50)
        for symbol in ["AAPL", "MSFT", "GOOGL", "AMZN", "SPY"] { #expect(market.listings[symbol] != nil) }
    }

    @Test("the same seed and time give the same price; another seed another walk")
    func deterministic() {
        #expect(market.price(of: "AAPL", at: noon) == SimulatedMarket().price(of: "AAPL", at: noon))
        #expect(market.price(of: "AAPL", at: noon) != SimulatedMarket(seed: 7).price(of: "AAPL", at: noon))
    }

    @Test("prices move during the day, stay positive and in cents")
    func moves() throws {
        let prices = (0..<30).compactMap { market.price(of: "TSLA", at: noon.addingTimeInterval(Double($0) * 60)) }
        #expect(Set(prices).count > 5)
        for price in prices {
            #expect(price >= px("0.01"))
            #expect(price.places <= 2)
        }
        let close = try #require(market.previousClose(of: "TSLA", at: noon))
        let price = try #require(market.price(of: "TSLA", at: noon))
        // A day's move stays within a plausible band.
        #expect(try Ratio.quotient(try price - close, close, rounding: .up).magnitude < Ratio(uncheckedUnits: 500_000))
    }

    @Test("daily history has one close per day, oldest first, ending with yesterday's close")
    func history() {
        let closes = market.dailyCloses(of: "MSFT", days: 10, before: noon)
        #expect(closes.count == 10)
        #expect(zip(closes, closes.dropFirst()).allSatisfy { $0.date < $1.date })
        #expect(closes.last?.close == market.previousClose(of: "MSFT", at: noon))
    }

    @Test("unknown symbols have no price")
    func unknown() {
        #expect(market.price(of: "NOPE", at: noon) == nil)
    }
}
