import Foundation

/// Dates and times as clients send them: a day (`2026-01-31`, midnight UTC)
/// or an RFC 3339 time (`2026-01-31T14:30:00Z`). Strict: a day the month does
/// not have (`2026-02-30`) or an hour of 24 (`T24:00:00`) is refused,
/// where Foundation's parser quietly rolls it into the next day.
enum StrictDate {
    /// An RFC 3339 time only (request bodies).
    static func time(_ text: String) -> Date? {
        text.utf8.count >= 19 ? dayOrTime(text) : nil
    }

    /// Where a list's `to` ends, exclusive: after all of what it names, at the precision it is
    /// written in. A day takes every row of the day (`to=2026-01-31`, as a statement "to January 31"
    /// reads); a time in whole seconds takes that whole second, since rows show their times to the
    /// second (a bound copied from a row takes the row); a time with fractions ends exactly there.
    /// A day is `zone`'s day (UTC unless a person's time zone is given).
    static func end(_ text: String, in zone: TimeZone = .gmt) -> Date? {
        guard let date = dayOrTime(text, in: zone) else { return nil }
        if text.utf8.count == 10 {
            guard zone != .gmt else { return date.addingTimeInterval(24 * 3600) }
            // Where the next day starts in the zone, from its own date: a day of a clock change has 23 or 25 hours, and
            // a day whose midnight the clock skips starts at 01:00 (a day added to this one's start would overshoot by the hour).
            let calendar = calendar(zone)
            let day = calendar.dateComponents([.year, .month, .day], from: date)
            return calendar.date(from: DateComponents(year: day.year, month: day.month, day: (day.day ?? 0) + 1))
        }
        return text.utf8.contains(UInt8(ascii: ".")) ? date : date.addingTimeInterval(1)
    }

    /// A day or an RFC 3339 time (the `from` and `to` of list queries). A day starts at midnight in `zone`.
    static func dayOrTime(_ text: String, in zone: TimeZone = .gmt) -> Date? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 10, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-"),
              let year = number(bytes, at: 0, digits: 4), let month = number(bytes, at: 5, digits: 2), let day = number(bytes, at: 8, digits: 2),
              (1...12).contains(month), day >= 1, day <= days(inMonth: month, year: year)
        else { return nil }
        if bytes.count == 10 {
            guard zone != .gmt else { return try? Date(text + "T00:00:00Z", strategy: .iso8601) }
            return calendar(zone).date(from: DateComponents(year: year, month: month, day: day))
        }
        // Upper-case `T` and `Z` only, as documented (Foundation's parser would take a lower-case `z`).
        guard bytes.count >= 19, bytes[10] == UInt8(ascii: "T"), !bytes.contains(UInt8(ascii: "z")),
              bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":"),
              let hour = number(bytes, at: 11, digits: 2), let minute = number(bytes, at: 14, digits: 2), let second = number(bytes, at: 17, digits: 2),
              hour <= 23, minute <= 59, second <= 60  // 60: a leap second, as RFC 3339 allows
        else { return nil }
        return try? Date(text, strategy: .iso8601)
    }

    /// A person's time zone as the browser names it (`Pacific/Honolulu`); nil for a name no zone has.
    static func zone(named name: String) -> TimeZone? {
        guard name.utf8.count <= 64, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "/_+-".contains($0)) }) else { return nil }
        return TimeZone(identifier: name)
    }

    private static func calendar(_ zone: TimeZone) -> Calendar {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        return calendar
    }

    private static func number(_ bytes: [UInt8], at start: Int, digits: Int) -> Int? {
        var value = 0
        for byte in bytes[start..<(start + digits)] {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }

    private static func days(inMonth month: Int, year: Int) -> Int {
        switch month {
        case 2: return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }
}
