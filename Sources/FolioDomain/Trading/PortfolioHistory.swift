import Foundation

/// A calendar day of the US market, named as `2026-11-27`.
public struct TradingDay: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let year: Int
    public let month: Int
    public let day: Int

    public static let newYork = TimeZone(identifier: "America/New_York")!

    public init(year: Int, month: Int, day: Int) {
        self.year = year
        self.month = month
        self.day = day
    }

    /// The day `date` falls on in `timeZone` (New York unless told).
    public init(_ date: Date, in timeZone: TimeZone = TradingDay.newYork) {
        let parts = Self.calendar(timeZone).dateComponents([.year, .month, .day], from: date)
        self.init(year: parts.year!, month: parts.month!, day: parts.day!)
    }

    /// Reads `2026-11-27`.
    public init?(_ text: String) {
        let parts = text.split(separator: "-")
        guard parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
              let year = Int(parts[0]), let month = Int(parts[1]), let day = Int(parts[2]),
              (1...12).contains(month), (1...31).contains(day)
        else { return nil }
        self.init(year: year, month: month, day: day)
        guard TradingDay(close, in: Self.newYork) == self else { return nil }
    }

    public var description: String {
        String(format: "%04d-%02d-%02d", year, month, day)
    }

    /// 16:00 in New York on this day: when the market closes.
    public var close: Date {
        at(hour: 16, minute: 0)
    }

    /// This day's `hour:minute` in New York.
    public func at(hour: Int, minute: Int) -> Date {
        Self.calendar(Self.newYork).date(from: DateComponents(year: year, month: month, day: day, hour: hour, minute: minute))!
    }

    public var isWeekday: Bool {
        !Self.calendar(Self.newYork).isDateInWeekend(close)
    }

    public func adding(days: Int) -> TradingDay {
        TradingDay(Self.calendar(Self.newYork).date(byAdding: .day, value: days, to: close)!)
    }

    /// Weekdays from `first` through `last`, oldest first.
    public static func weekdays(from first: TradingDay, through last: TradingDay) -> [TradingDay] {
        var days: [TradingDay] = []
        var day = first
        while day <= last {
            if day.isWeekday { days.append(day) }
            day = day.adding(days: 1)
        }
        return days
    }

    public static func < (lhs: TradingDay, rhs: TradingDay) -> Bool {
        (lhs.year, lhs.month, lhs.day) < (rhs.year, rhs.month, rhs.day)
    }

    static func calendar(_ timeZone: TimeZone) -> Calendar {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        return calendar
    }
}

/// One row of the ledger as the history needs it: signed cash and shares.
public struct LedgerMovement: Sendable {
    public var occurredAt: Date
    public var cash: Cash
    public var symbol: String?
    public var quantity: Quantity?
    /// The trade price, for buys and sells.
    public var price: Price?

    public init(occurredAt: Date, cash: Cash, symbol: String? = nil, quantity: Quantity? = nil, price: Price? = nil) {
        self.occurredAt = occurredAt
        self.cash = cash
        self.symbol = symbol
        self.quantity = quantity
        self.price = price
    }
}

/// An account's value at one day's close.
public struct DailyValue: Equatable, Sendable {
    public var day: TradingDay
    public var cash: Cash
    public var marketValue: Cash
    /// Cash and market value each fit their column; their sum is shown, not stored, and clamps at the limit.
    public var totalValue: Cash { (try? cash + marketValue) ?? .max }

    public init(day: TradingDay, cash: Cash, marketValue: Cash) {
        self.day = day
        self.cash = cash
        self.marketValue = marketValue
    }
}

public enum PortfolioHistory {
    /// The value at each day's close, found by replaying the ledger up to that
    /// close and pricing each holding at the day's closing price. A day without
    /// a close for a symbol (a holiday, a gap in the data) uses the latest
    /// close before it, or failing that the latest trade price. One pass over
    /// the movements and the closes.
    ///
    /// - Parameters:
    ///   - movements: the account's ledger, oldest first.
    ///   - closes: each symbol's daily closes, oldest first.
    ///   - days: the days wanted, oldest first.
    ///   - closesKnownFrom: each symbol's first close the source gave. A day before it on which the symbol is
    ///     held cannot be valued (its trade price would be a guess) and is left out of the result.
    public static func replay(
        movements: [LedgerMovement], closes: [String: [(day: TradingDay, close: Price)]], days: [TradingDay],
        closesKnownFrom: [String: TradingDay] = [:]
    ) throws(MoneyError) -> [DailyValue] {
        var values: [DailyValue] = []
        values.reserveCapacity(days.count)
        var cash = Cash.zero
        var shares: [String: Quantity] = [:]
        // The newest price known for each symbol, and when it was.
        var lastPrice: [String: (at: Date, price: Price)] = [:]
        var nextMovement = 0
        var nextClose: [String: Int] = [:]
        for day in days {
            let close = day.close
            while nextMovement < movements.count, movements[nextMovement].occurredAt <= close {
                let movement = movements[nextMovement]
                cash = try cash + movement.cash
                if let symbol = movement.symbol, let quantity = movement.quantity {
                    shares[symbol] = try shares[symbol, default: .zero] + quantity
                    if let price = movement.price { lastPrice[symbol] = (movement.occurredAt, price) }
                }
                nextMovement += 1
            }
            var marketValue = Cash.zero
            if shares.contains(where: { !$0.value.isZero && day < closesKnownFrom[$0.key] ?? day }) { continue }
            for (symbol, quantity) in shares where !quantity.isZero {
                if let series = closes[symbol] {
                    var index = nextClose[symbol, default: 0]
                    while index < series.count, series[index].day <= day {
                        if series[index].day.close >= lastPrice[symbol]?.at ?? .distantPast {
                            lastPrice[symbol] = (series[index].day.close, series[index].close)
                        }
                        index += 1
                    }
                    nextClose[symbol] = index
                }
                if let price = lastPrice[symbol]?.price { marketValue = try marketValue + Money.value(quantity: quantity, price: price) }
            }
            values.append(DailyValue(day: day, cash: cash, marketValue: marketValue))
        }
        return values
    }
}
