@testable import FolioDomain
import Foundation
import Testing

@Suite("Trading days and the portfolio history replay")
struct PortfolioHistoryTests {
    func day(_ text: String) -> TradingDay { TradingDay(text)! }

    @Test("trading days read, print, close at 16:00 New York and skip weekends")
    func tradingDays() throws {
        #expect(day("2026-11-27").description == "2026-11-27")
        #expect(TradingDay("2026-02-30") == nil)
        #expect(TradingDay("26-11-27") == nil)
        #expect(day("2026-11-27").close == (try Date("2026-11-27T21:00:00Z", strategy: .iso8601)), "EST is UTC-5")
        #expect(day("2026-07-01").close == (try Date("2026-07-01T20:00:00Z", strategy: .iso8601)), "EDT is UTC-4")
        #expect(TradingDay(try Date("2026-11-28T03:00:00Z", strategy: .iso8601)) == day("2026-11-27"), "still Friday evening in New York")
        #expect(TradingDay.weekdays(from: day("2026-11-26"), through: day("2026-12-01")).map(\.description) == ["2026-11-26", "2026-11-27", "2026-11-30", "2026-12-01"])
        #expect(day("2026-12-31").adding(days: 1) == day("2027-01-01"))
    }

    @Test("the replay values each day's holdings at that day's close, exactly")
    func replay() throws {
        let monday = day("2026-11-23"), tuesday = day("2026-11-24"), wednesday = day("2026-11-25"), thursday = day("2026-11-26")
        let movements = [
            LedgerMovement(occurredAt: monday.close.addingTimeInterval(-8 * 3600), cash: 1000),
            // Bought Monday morning at 10.005 a share.
            LedgerMovement(occurredAt: monday.close.addingTimeInterval(-7 * 3600), cash: cash("-30.02"), symbol: "XYZ", quantity: 3, price: px("10.005")),
            // Sold one share after Tuesday's close: counts from Wednesday.
            LedgerMovement(occurredAt: tuesday.close.addingTimeInterval(60), cash: cash("10.50"), symbol: "XYZ", quantity: -1, price: px("10.5")),
        ]
        let closes: [String: [(day: TradingDay, close: Price)]] = ["XYZ": [
            (monday, px("10.10")),
            (tuesday, px("10.333333")),
            // No close Wednesday (a gap in the data): Tuesday's close, then Thursday's.
            (thursday, px("11")),
        ]]
        let values = try PortfolioHistory.replay(movements: movements, closes: closes, days: [monday, tuesday, wednesday, thursday])
        #expect(values.map(\.cash) == [cash("969.98"), cash("969.98"), cash("980.48"), cash("980.48")])
        #expect(values.map(\.marketValue) == [cash("30.30"), cash("31.00"), cash("21.00"), cash("22.00")])
        #expect(values[1].totalValue == cash("1000.98"))
        // Wednesday has a trade price (10.5, after Tuesday's close) newer than Tuesday's close.
        #expect(values[2].marketValue == (try Money.value(quantity: 2, price: px("10.5"))))
    }

    @Test("a symbol with no close at all is valued at its last trade price; days before any movement are empty")
    func noCloses() throws {
        let friday = day("2026-11-27")
        let movements = [LedgerMovement(occurredAt: friday.close.addingTimeInterval(-3600), cash: -5, symbol: "NEW", quantity: 2, price: px("2.5"))]
        let values = try PortfolioHistory.replay(movements: movements, closes: [:], days: [day("2026-11-26"), friday])
        #expect(values.map(\.totalValue) == [0, 0])
        #expect(values[1].marketValue == 5)
    }
}
