import Foundation
import Synchronization

/// The New York Stock Exchange's regular sessions, by its published rules:
/// weekdays 9:30–16:00 New York time, except its ten holidays (observed on
/// the nearest weekday), with a 13:00 close on the day before Independence
/// Day, the day after Thanksgiving and Christmas Eve when those are trading
/// days. Computed for any year, so it needs no table to be kept up to date.
public struct MarketCalendar: Sendable {
    public struct Session: Equatable, Sendable {
        public var day: TradingDay
        public var open: Date
        public var close: Date
        public var isEarlyClose: Bool
    }

    public static let nyse = MarketCalendar()

    /// Sessions a broker published (Alpaca's `GET /v2/calendar`), which win
    /// over the rules for the days from `publishedRange`'s first to its last:
    /// a day of that range with no published session is closed (an
    /// unscheduled closure the rules cannot know).
    public private(set) var published: [TradingDay: Session] = [:]
    public private(set) var publishedRange: ClosedRange<TradingDay>?

    public init() {}

    /// The rules, with `sessions` published for the days of `range`.
    public init(published sessions: [Session], covering range: ClosedRange<TradingDay>) {
        published = Dictionary(sessions.filter { range.contains($0.day) }.map { ($0.day, $0) }, uniquingKeysWith: { first, _ in first })
        publishedRange = range
    }

    /// A session from a day and New York opening and closing times ("09:30", "13:00").
    public static func session(day: TradingDay, open: (hour: Int, minute: Int), close: (hour: Int, minute: Int)) -> Session {
        let closing = day.at(hour: close.hour, minute: close.minute)
        return Session(day: day, open: day.at(hour: open.hour, minute: open.minute), close: closing, isEarlyClose: closing < day.close)
    }

    /// The day's session; nil on a weekend or holiday.
    public func session(on day: TradingDay) -> Session? {
        if let publishedRange, publishedRange.contains(day) { return published[day] }
        return Self.ruleSession(on: day)
    }

    /// The rules' session of `day`, worked out once per day: every DAY order
    /// asks when its day ends, and the rules cost several calendar computations.
    static func ruleSession(on day: TradingDay) -> Session? {
        if let known = sessionsByDay.withLock({ $0[day] }) { return known }
        var session: Session?
        if day.isWeekday, !nyse.isHoliday(day) {
            let early = nyse.isEarlyClose(day)
            session = Session(day: day, open: day.at(hour: 9, minute: 30), close: early ? day.at(hour: 13, minute: 0) : day.close, isEarlyClose: early)
        }
        sessionsByDay.withLock { known in
            // Bounded: a long-running server asks about a few days a year, a backfill about many.
            if known.count >= 4096 { known.removeAll() }
            known[day] = .some(session)
        }
        return session
    }

    private static let sessionsByDay = Mutex<[TradingDay: Session?]>([:])

    /// True during a regular session.
    public func isOpen(at date: Date) -> Bool {
        guard let session = session(on: TradingDay(date)) else { return false }
        return date >= session.open && date < session.close
    }

    /// The session in progress at `date`, or the next one to open.
    public func currentOrNextSession(at date: Date) -> Session {
        var day = TradingDay(date)
        for _ in 0..<15 {
            if let session = session(on: day), date < session.close { return session }
            day = day.adding(days: 1)
        }
        // A published calendar with no session for two weeks is not believed: the rules answer instead.
        guard publishedRange != nil else { preconditionFailure("the rules give no session within 15 days of \(date)") }
        return MarketCalendar.nyse.currentOrNextSession(at: date)
    }

    /// The close a quote at `date` takes its day's change from: the close of the session before the latest one
    /// opened by `date`. (Before Monday's open a quote is Friday's, measured from Thursday's close.)
    public func previousClose(before date: Date) -> Date {
        var day = TradingDay(date)
        var quoteSessionFound = false
        for _ in 0..<30 {
            if let session = session(on: day), session.open <= date {
                if quoteSessionFound { return session.close }
                quoteSessionFound = true
            }
            day = day.adding(days: -1)
        }
        // A published calendar with no sessions for weeks is not believed: the rules answer instead.
        return publishedRange == nil ? TradingDay(date).adding(days: -1).close : MarketCalendar.nyse.previousClose(before: date)
    }

    /// The close of the latest session that had closed by `date`: a DAY order
    /// placed before it ended by it (one placed after ends at a later close).
    public func lastClose(atOrBefore date: Date) -> Date {
        var day = TradingDay(date)
        for _ in 0..<30 {
            if let session = session(on: day), session.close <= date { return session.close }
            day = day.adding(days: -1)
        }
        // A published calendar with no sessions for weeks is not believed: the rules answer instead.
        return publishedRange == nil ? TradingDay(date).adding(days: -30).close : MarketCalendar.nyse.lastClose(atOrBefore: date)
    }

    /// When a DAY order placed at `date` ends: the close of the session in
    /// progress, or of the next session when placed while the market is closed.
    public func dayEnd(for date: Date) -> Date {
        currentOrNextSession(at: date).close
    }

    // MARK: - Holidays

    public func isHoliday(_ day: TradingDay) -> Bool {
        holidays(in: day.year).contains(day)
    }

    /// The exchange's full-day closures in `year`.
    public func holidays(in year: Int) -> Set<TradingDay> {
        var days: Set<TradingDay> = []
        // New Year's Day: a Sunday is observed on Monday; a Saturday is not moved to the Friday before.
        let newYear = TradingDay(year: year, month: 1, day: 1)
        if newYear.weekday == 1 { days.insert(newYear.adding(days: 1)) } else if newYear.weekday != 7 { days.insert(newYear) }
        days.insert(Self.nth(3, weekday: 2, month: 1, year: year))  // Martin Luther King Jr. Day
        days.insert(Self.nth(3, weekday: 2, month: 2, year: year))  // Washington's Birthday
        days.insert(Self.easter(year).adding(days: -2))  // Good Friday
        days.insert(Self.last(weekday: 2, month: 5, year: year))  // Memorial Day
        if year >= 2022 { days.insert(Self.observed(TradingDay(year: year, month: 6, day: 19))) }  // Juneteenth
        days.insert(Self.observed(TradingDay(year: year, month: 7, day: 4)))  // Independence Day
        days.insert(Self.nth(1, weekday: 2, month: 9, year: year))  // Labor Day
        days.insert(Self.nth(4, weekday: 5, month: 11, year: year))  // Thanksgiving
        days.insert(Self.observed(TradingDay(year: year, month: 12, day: 25)))  // Christmas
        return days
    }

    /// 13:00 closes: the trading day before Independence Day (July 3), the day after Thanksgiving, Christmas Eve.
    public func isEarlyClose(_ day: TradingDay) -> Bool {
        guard day.isWeekday, !isHoliday(day) else { return false }
        if day.month == 7, day.day == 3 { return true }
        if day.month == 12, day.day == 24 { return true }
        return day == Self.nth(4, weekday: 5, month: 11, year: day.year).adding(days: 1)
    }

    /// A Saturday holiday is observed on Friday, a Sunday one on Monday.
    static func observed(_ day: TradingDay) -> TradingDay {
        switch day.weekday {
        case 7: day.adding(days: -1)
        case 1: day.adding(days: 1)
        default: day
        }
    }

    /// The `n`th `weekday` (1 Sunday … 7 Saturday) of the month.
    static func nth(_ n: Int, weekday: Int, month: Int, year: Int) -> TradingDay {
        let first = TradingDay(year: year, month: month, day: 1)
        let offset = (weekday - first.weekday + 7) % 7
        return first.adding(days: offset + 7 * (n - 1))
    }

    static func last(weekday: Int, month: Int, year: Int) -> TradingDay {
        let nextMonth = month == 12 ? TradingDay(year: year + 1, month: 1, day: 1) : TradingDay(year: year, month: month + 1, day: 1)
        let lastDay = nextMonth.adding(days: -1)
        return lastDay.adding(days: -((lastDay.weekday - weekday + 7) % 7))
    }

    /// Easter Sunday (the anonymous Gregorian algorithm).
    static func easter(_ year: Int) -> TradingDay {
        let a = year % 19, b = year / 100, c = year % 100, d = b / 4, e = b % 4
        let f = (b + 8) / 25, g = (b - f + 1) / 3, h = (19 * a + b - d - g + 15) % 30
        let i = c / 4, k = c % 4, l = (32 + 2 * e + 2 * i - h - k) % 7
        let m = (a + 11 * h + 22 * l) / 451
        let month = (h + l - 7 * m + 114) / 31, day = (h + l - 7 * m + 114) % 31 + 1
        return TradingDay(year: year, month: month, day: day)
    }
}

extension TradingDay {
    /// 1 Sunday … 7 Saturday.
    public var weekday: Int {
        Self.calendar(Self.newYork).component(.weekday, from: close)
    }
}
