import Foundation
import Testing

@testable import FolioDomain

@Suite("The exchange's calendar")
struct MarketCalendarTests {
    static func day(_ text: String) -> TradingDay {
        let parts = text.split(separator: "-").map { Int($0)! }
        return TradingDay(year: parts[0], month: parts[1], day: parts[2])
    }

    @Test("NYSE holidays and early closes, as the exchange published them for 2025 and 2026")
    func published() {
        let calendar = MarketCalendar.nyse
        // nyse.com, "Holidays & Trading Hours".
        #expect(calendar.holidays(in: 2026) == Set([
            "2026-01-01", "2026-01-19", "2026-02-16", "2026-04-03", "2026-05-25", "2026-06-19", "2026-07-03", "2026-09-07", "2026-11-26", "2026-12-25",
        ].map(Self.day)))
        #expect(calendar.holidays(in: 2025) == Set([
            "2025-01-01", "2025-01-20", "2025-02-17", "2025-04-18", "2025-05-26", "2025-06-19", "2025-07-04", "2025-09-01", "2025-11-27", "2025-12-25",
        ].map(Self.day)))
        #expect(calendar.isEarlyClose(Self.day("2026-11-27")) && calendar.isEarlyClose(Self.day("2026-12-24")))
        #expect(!calendar.isEarlyClose(Self.day("2026-07-03")), "a holiday in 2026 (Independence Day falls on a Saturday)")
        #expect(calendar.isEarlyClose(Self.day("2025-07-03")) && calendar.isEarlyClose(Self.day("2025-11-28")))
        // 2022: New Year's Day on a Saturday is not observed on the Friday before.
        #expect(!calendar.isHoliday(Self.day("2021-12-31")))
    }

    @Test("sessions: open 9:30 to 16:00 (13:00 early), closed on weekends and holidays; a DAY order ends at the next close")
    func sessions() {
        let calendar = MarketCalendar.nyse
        let tuesday = Self.day("2026-11-24")
        #expect(calendar.isOpen(at: tuesday.at(hour: 9, minute: 30)) && !calendar.isOpen(at: tuesday.at(hour: 9, minute: 29)))
        #expect(!calendar.isOpen(at: tuesday.close) && !calendar.isOpen(at: Self.day("2026-11-26").at(hour: 11, minute: 0)))
        let friday = Self.day("2026-11-27")
        #expect(calendar.isOpen(at: friday.at(hour: 12, minute: 59)) && !calendar.isOpen(at: friday.at(hour: 13, minute: 0)))
        #expect(calendar.dayEnd(for: friday.at(hour: 10, minute: 0)) == friday.at(hour: 13, minute: 0))
        // Placed on Saturday: it ends at Monday's close.
        #expect(calendar.dayEnd(for: Self.day("2026-11-28").at(hour: 12, minute: 0)) == Self.day("2026-11-30").close)
        #expect(calendar.currentOrNextSession(at: Self.day("2026-11-25").close).day == friday)
    }

    @Test("a quote's day's change runs from the close before its session: the session under way, or the last one before the open")
    func previousClose() {
        let calendar = MarketCalendar.nyse
        func at(_ day: String, _ hour: Int, _ minute: Int = 0) -> Date { Self.day(day).at(hour: hour, minute: minute) }
        // Tuesday 2026-12-01 during the session, and after its close: Monday's close.
        #expect(calendar.previousClose(before: at("2026-12-01", 11)) == at("2026-11-30", 16))
        #expect(calendar.previousClose(before: at("2026-12-01", 20)) == at("2026-11-30", 16))
        // Before Monday's open the quote is Friday's (an early close the day after Thanksgiving), measured from Wednesday (Thursday a holiday).
        #expect(calendar.previousClose(before: at("2026-11-30", 8)) == at("2026-11-25", 16))
        #expect(calendar.previousClose(before: at("2026-11-28", 12)) == at("2026-11-25", 16))
        // At the open a new session begins.
        #expect(calendar.previousClose(before: at("2026-11-30", 9, 30)) == at("2026-11-27", 13))
    }

    @Test("the last close by a moment: the session's own once it has closed, the one before while it is open, past weekends, holidays and early closes")
    func lastClose() {
        let calendar = MarketCalendar.nyse
        func at(_ day: String, _ hour: Int, _ minute: Int = 0) -> Date { Self.day(day).at(hour: hour, minute: minute) }
        #expect(calendar.lastClose(atOrBefore: at("2026-11-24", 17, 31)) == at("2026-11-24", 16))
        #expect(calendar.lastClose(atOrBefore: at("2026-11-24", 16)) == at("2026-11-24", 16), "at the close itself")
        #expect(calendar.lastClose(atOrBefore: at("2026-11-24", 15, 59)) == at("2026-11-23", 16))
        // Thanksgiving: Wednesday's; the day after closes at 13:00; the weekend after keeps Friday's.
        #expect(calendar.lastClose(atOrBefore: at("2026-11-26", 18)) == at("2026-11-25", 16))
        #expect(calendar.lastClose(atOrBefore: at("2026-11-27", 14)) == at("2026-11-27", 13))
        #expect(calendar.lastClose(atOrBefore: at("2026-11-29", 12)) == at("2026-11-27", 13))
    }

    @Test("a published calendar wins within its range: an unscheduled closure and early close are kept, days outside the range follow the rules")
    func publishedCalendar() {
        let closed = Self.day("2026-12-02"), early = Self.day("2026-12-01")
        let range = Self.day("2026-11-30")...Self.day("2026-12-04")
        var sessions: [MarketCalendar.Session] = []
        for text in ["2026-11-30", "2026-12-03", "2026-12-04"] {
            sessions.append(MarketCalendar.session(day: Self.day(text), open: (9, 30), close: (16, 0)))
        }
        sessions.append(MarketCalendar.session(day: early, open: (9, 30), close: (13, 0)))
        let calendar = MarketCalendar(published: sessions, covering: range)
        #expect(calendar.session(on: closed) == nil, "a weekday the publisher left out is closed")
        #expect(calendar.session(on: early)?.close == early.at(hour: 13, minute: 0))
        #expect(calendar.session(on: early)?.isEarlyClose == true)
        #expect(calendar.dayEnd(for: closed.at(hour: 10, minute: 0)) == Self.day("2026-12-03").close)
        // Outside the range, the rules: Christmas is closed, the 24th closes at 13:00.
        #expect(calendar.session(on: Self.day("2026-12-25")) == nil)
        #expect(calendar.session(on: Self.day("2026-12-24"))?.isEarlyClose == true)
        // An unscheduled closure: on Wednesday the quote is still Tuesday's, from Monday's close; on Thursday a quote's
        // day runs from Tuesday's early close, not from Wednesday's (there was none).
        #expect(calendar.previousClose(before: closed.at(hour: 11, minute: 0)) == Self.day("2026-11-30").close)
        #expect(calendar.previousClose(before: Self.day("2026-12-03").at(hour: 11, minute: 0)) == early.at(hour: 13, minute: 0))
    }
}
