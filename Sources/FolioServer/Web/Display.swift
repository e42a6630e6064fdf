import FolioDomain
import Foundation
import HTTPTypes

/// How the web pages show values. Amounts are shown from their exact text:
/// cash rounded half-even to the cent for display only (the API keeps every
/// digit), prices with at least two decimals, quantities as they are.
enum Display {
    /// A field's message in a person's words: the API's `limit_price must be …` as `Limit price must be …`.
    /// A row's field (`targets[1].percent must be …`) is named by the row's symbol in the request that was sent
    /// (`AAPL: percent must be …`): the API counts only the rows sent, so a row number could name another row.
    /// A message that does not start with its field is left as it is.
    static func issue(field: String, message: String, request: [String: Any]? = nil) -> String {
        guard !field.isEmpty, message.hasPrefix(field) else { return message }
        let rest = message.dropFirst(field.count)
        // A form's own field (`_api`) is named without its mark: "Api must…", not " api must…".
        let name = (field.split(separator: ".").last.map(String.init) ?? field)
            .replacingOccurrences(of: #"\[\d+\]"#, with: "", options: .regularExpression)
            .trimmingCharacters(in: CharacterSet(charactersIn: "_"))
            .replacingOccurrences(of: "_", with: " ")
        if let row = field.firstMatch(of: /^(\w+)\[(\d+)\]/), let index = Int(row.2),
           let rows = request?[String(row.1)] as? [[String: Any]], rows.indices.contains(index) {
            // A symbol's row, an asset class's row (`asset_classes[0]`), or else its place among the rows sent.
            let label = (rows[index]["symbol"] as? String).flatMap { $0.isEmpty ? nil : $0 }
                ?? (rows[index]["asset_class"] as? String).flatMap { AssetClass(rawValue: $0) }.map(assetClass)
                ?? "Row \(index + 1)"
            return "\(label): \(name)\(rest)"
        }
        return name.prefix(1).uppercased() + name.dropFirst() + rest
    }

    /// An error page's lead line when the fields' own messages follow: the API's detail would repeat the first of them.
    static let checkWhatYouEntered = "Some of what was entered needs a change:"

    /// An asset class as a person reads it.
    static func assetClass(_ assetClass: AssetClass) -> String {
        switch assetClass {
        case .equity: "Stocks"
        case .etf: "ETFs"
        case .fund: "Funds"
        case .bond: "Bonds"
        case .cash: "Cash equivalents"
        case .commodity: "Commodities"
        case .crypto: "Crypto"
        case .other: "Other"
        }
    }

    /// An error page's title: a person's words for a refused form, the status's own name otherwise.
    static func errorTitle(_ status: HTTPResponse.Status) -> String {
        status == .unprocessableContent ? "Check what you entered" : status.reasonPhrase
    }

    /// The error page's heading, its problem code (for a report to support) and what the page says
    /// beside them. A refused form's fields say what is wrong, so its code (`validation_failed`) is not shown.
    static func errorValues(status: HTTPResponse.Status, code: String) -> [String: Any] {
        ["heading": status == .unprocessableContent ? "Check what you entered" : status == .notFound ? "Not found" : "Something is not right",
         "code": (code == "validation_failed" ? nil : code) as String? as Any]
    }

    static func money(_ cash: Cash) -> String {
        money(cash, .halfEven)
    }

    /// Cash to the cent by `rule`: a refusal names what is available rounded down and what is
    /// needed rounded up, so "only $100.01 is available" never stands beside a refused $100.01.
    static func money(_ cash: Cash, _ rule: RoundingRule) -> String {
        let cents = (try? cash.rounded(places: 2, rule)) ?? cash
        return signed(cents.formatted(minimumFractionDigits: 2), prefix: "$")
    }

    /// A change: "+$12.30", "−$4.00", "$0.00".
    static func change(_ cash: Cash) -> String {
        let text = money(cash)
        return cash.isPositive && text != "$0.00" ? "+" + text : text
    }

    static func price(_ price: Price) -> String {
        signed(price.formatted(minimumFractionDigits: 2), prefix: "$")
    }

    /// An average of prices (a position's cost per share) to four places, as brokers show it:
    /// "$189.3521" for 189.35214689. The exact figure stays in the API and the cell's title.
    /// Cents alone show as cents ("$250.00"); past them, all four places ("$439.5590", not "$439.559"
    /// beside "$196.8445" in the same column).
    static func averagePrice(_ price: Price) -> String {
        let rounded = (try? price.rounded(places: 4, .halfEven)) ?? price
        let cents = rounded.formatted(minimumFractionDigits: 2)
        let places = cents.split(separator: ".").last?.count ?? 0
        return signed(places > 2 ? rounded.formatted(minimumFractionDigits: 4) : cents, prefix: "$")
    }

    static func quantity(_ quantity: Quantity) -> String {
        signed(quantity.description, prefix: "")
    }

    /// A ratio (0.1234) as a percentage with two decimals ("12.34%").
    static func percent(_ ratio: Ratio) -> String {
        let hundred = (try? Ratio(100)) ?? .zero
        let value = (try? Ratio.product(ratio, hundred, places: 2, rounding: .halfEven)) ?? .zero
        return signed(value.formatted(minimumFractionDigits: 2), prefix: "") + "%"
    }

    /// A value that is already a percentage (5.1234) with two decimals ("5.12%").
    static func percentage(_ value: Ratio) -> String {
        let rounded = (try? value.rounded(places: 2, .halfEven)) ?? value
        return signed(rounded.formatted(minimumFractionDigits: 2), prefix: "") + "%"
    }

    /// A change in percent beside a change in money ("+0.01%"), signed as `change` signs the money.
    static func percentageChange(_ value: Ratio) -> String {
        let text = percentage(value)
        return value.isPositive && text != "0.00%" ? "+" + text : text
    }

    /// "2026-11-30 10:50 UTC".
    static func date(_ date: Date) -> String {
        let text = date.formatted(Date.ISO8601FormatStyle(timeZone: .gmt))
        return text.prefix(10) + " " + text.dropFirst(11).prefix(5) + " UTC"
    }

    /// A moment as the exchange reads it, for when the market opens: "Monday 30 November, 09:30 New York time (14:30 UTC)".
    static func marketTime(_ date: Date) -> String {
        var newYork = Calendar(identifier: .gregorian)
        newYork.timeZone = TradingDay.newYork
        var utc = newYork
        utc.timeZone = .gmt
        let parts = newYork.dateComponents([.weekday, .day, .month, .hour, .minute], from: date)
        let weekdays = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
        let months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
        func clock(_ hour: Int?, _ minute: Int?) -> String { String(format: "%02d:%02d", hour ?? 0, minute ?? 0) }
        let inUTC = utc.dateComponents([.hour, .minute], from: date)
        return "\(weekdays[(parts.weekday ?? 1) - 1]) \(parts.day ?? 0) \(months[(parts.month ?? 1) - 1]), \(clock(parts.hour, parts.minute)) New York time (\(clock(inUTC.hour, inUTC.minute)) UTC)"
    }

    /// A browser and its system in a few words ("Firefox on Windows") from a User-Agent header, for a person
    /// telling their sessions apart; a client that is no browser by its first product ("curl").
    static func device(_ userAgent: String?) -> String {
        guard let agent = userAgent?.trimmingCharacters(in: .whitespaces), !agent.isEmpty else { return "Unknown device" }
        // The order matters: Edge and Opera also say Chrome, Chrome also says Safari.
        let browsers = [("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("FxiOS/", "Firefox"), ("HeadlessChrome/", "Headless Chrome"),
                        ("CriOS/", "Chrome"), ("Chrome/", "Chrome"), ("Safari/", "Safari")]
        let systems = [("iPhone", "iPhone"), ("iPad", "iPad"), ("Android", "Android"), ("Windows", "Windows"), ("CrOS", "ChromeOS"),
                       ("Mac OS X", "macOS"), ("Macintosh", "macOS"), ("Linux", "Linux")]
        guard let browser = browsers.first(where: { agent.contains($0.0) })?.1 else {
            let product = agent.prefix { $0 != "/" && $0 != " " }
            return String(product.prefix(40))
        }
        guard let system = systems.first(where: { agent.contains($0.0) })?.1 else { return browser }
        return "\(browser) on \(system)"
    }

    /// Thousands separators on the whole part, and a real minus sign before the prefix.
    static func signed(_ text: String, prefix: String) -> String {
        let negative = text.hasPrefix("-")
        return (negative ? "−" : "") + prefix + FixedText.grouped(negative ? text.dropFirst() : Substring(text))
    }
}
