import FolioDomain
import Foundation

/// The dashboard's figures: totals, the two allocation donuts, the value
/// history and the positions, all from the API's own portfolio answers.
enum DashboardView {
    static func build(
        valuation: PortfolioController.PortfolioResponse, history: PortfolioController.HistoryResponse,
        returns: PerformanceController.PerformanceResponse, quotes: QuoteService, choice: PageRenderer.AccountChoice
    ) async throws -> [String: Any] {
        let total = valuation.totalValue
        // Allocation by symbol: each position and the cash, as shares of the total value.
        var bySymbol: [(label: String, value: Cash)] = valuation.positions.map { ($0.symbol, $0.marketValue) }
        if valuation.cash.isPositive { bySymbol.append(("Cash", valuation.cash)) }
        // By asset class: the classes the market data names, summed exactly.
        // Learning a class is a symbol search: on lookups' share of the market-data calls.
        let classes = await CallBudget.$purpose.withValue(.lookingUp) { await quotes.assetClasses(for: valuation.positions.map(\.symbol)) }
        var byClass: [String: Cash] = [:]
        for position in valuation.positions {
            let name = (classes[position.symbol] ?? .other).rawValue
            byClass[name] = try (byClass[name] ?? .zero) + position.marketValue
        }
        if valuation.cash.isPositive { byClass["cash", default: .zero] = try byClass["cash", default: .zero] + valuation.cash }
        let classSlices = byClass.map { (label: label(ofClass: $0.key), value: $0.value) }.sorted { $0.value > $1.value }

        let points = history.data.compactMap { point -> (String, Cash)? in
            // Today's point is the total the page heads with: the two were valued a moment apart, and a
            // quote refreshed in between made them differ by a few cents on one page.
            if point.provisional { return (point.date, total) }
            guard let value = Cash(point.totalValue) else { return nil }
            return (point.date, value)
        }
        let low = points.map(\.1).min(), high = points.map(\.1).max()
        let rangeLabel = ["1M": "one month", "3M": "three months", "YTD": "the year to date", "1Y": "one year", "ALL": "all time"][history.range] ?? history.range
        let chart = Charts.line(
            id: "history", title: "Total value over \(rangeLabel)",
            points: points.map { Charts.Point(label: $0.0, value: drawable($0.1)) },
            lowLabel: low.map(Display.money) ?? "", highLabel: high.map(Display.money) ?? "")
        func onRange(_ range: String) -> String { choice.next("/") + (choice.named ? "&" : "?") + "range=\(range)" }
        // The day's change holds what holdings sold out since the close did, which no row shows: say how much, so the rows add up.
        var rows = Cash.zero
        for change in valuation.positions.compactMap(\.dayChange) { rows = (try? rows + change) ?? rows }
        let soldOut = (try? valuation.dayChange - rows) ?? .zero

        return [
            "total": Display.money(total), "cash": Display.money(valuation.cash), "available": Display.money(valuation.availableCash),
            "market_value": Display.money(valuation.marketValue), "day_change": Display.change(valuation.dayChange),
            "day_change_negative": valuation.dayChange.isNegative,
            // No change (or less than a cent) is neither up nor down: not green.
            "day_change_up": Display.change(valuation.dayChange).hasPrefix("+"),
            // An empty string would still open a Mustache section: nothing is no value.
            "sold_out_change": (soldOut.isZero ? nil : Display.change(soldOut)) as Any,
            "day_change_partial": !valuation.dayChangeComplete,
            "unrealized": Display.change(valuation.unrealizedPnL), "unrealized_negative": valuation.unrealizedPnL.isNegative,
            "has_positions": !valuation.positions.isEmpty,
            "has_stale": valuation.positions.contains(where: \.stale),
            "positions": valuation.positions.map(position),
            "symbol_donut": Charts.donut(
                id: "by-symbol", title: "Allocation by symbol",
                slices: bySymbol.map { Charts.Slice(label: "\($0.label) \(share($0.value, of: total))", share: drawable($0.value)) }),
            "symbol_rows": legend(bySymbol, total: total),
            "class_donut": Charts.donut(
                id: "by-class", title: "Allocation by asset class",
                slices: classSlices.map { Charts.Slice(label: "\($0.label) \(share($0.value, of: total))", share: drawable($0.value)) }),
            "class_rows": legend(classSlices, total: total),
            "history_chart": chart,
            "history_rows": points.reversed().map { ["date": $0.0, "value": Display.money($0.1)] },
            "history_low": low.map(Display.money) ?? "—", "history_high": high.map(Display.money) ?? "—",
            "history_incomplete": !history.complete,
            "ranges": PortfolioController.HistoryRange.allCases.map { range in
                ["label": range.rawValue, "href": onRange(range.rawValue),
                 "current": range.rawValue == history.range] as [String: Any]
            },
            "valued_at": Display.date(valuation.valuedAt),
            "orders_href": choice.next("/orders"),
            // A paper account's cash is moved here; a brokerage account's moves at its broker.
            "paper": choice.currentKind == "paper", "account_id": valuation.accountID.description,
            // A form comes back to the page as it was: the same account and chart range.
            "self_href": history.range == PortfolioController.HistoryRange.oneMonth.rawValue ? choice.next("/") : onRange(history.range),
            "deposit_key": UUID.random().lowercasedString, "withdrawal_key": UUID.random().lowercasedString,
            "twr": returns.timeWeightedReturnPercent.map(Display.percentageChange) ?? "—",
            "twr_negative": returns.timeWeightedReturnPercent?.isNegative ?? false,
            "twr_note": returns.note as Any,
            "range": history.range,
        ]
    }

    static func position(_ position: PortfolioController.PositionResponse) -> [String: Any] {
        [
            "symbol": position.symbol, "quantity": Display.quantity(position.quantity),
            // Shares open sells hold are still the user's, but a new sell cannot take them.
            "held": (try? position.quantity - position.availableQuantity).flatMap { $0.isZero ? nil : Display.quantity($0) } as Any,
            "price": position.price.flatMap(Price.init).map(Display.price) ?? "—", "stale": position.stale,
            "price_time": position.priceTime.map(Display.date) ?? "no quote",
            "market_value": Display.money(position.marketValue), "average_cost": Display.averagePrice(position.averageCost),
            "average_cost_exact": Display.price(position.averageCost),
            "pnl": Display.change(position.unrealizedPnL), "pnl_negative": position.unrealizedPnL.isNegative,
            "pnl_percent": position.unrealizedPnLPercent.map(Display.percentageChange) ?? "—",
            "day_change": position.dayChange.map(Display.change) ?? "—", "day_negative": position.dayChange?.isNegative ?? false,
            "weight": Display.percent(position.weight),
        ]
    }

    static func legend(_ slices: [(label: String, value: Cash)], total: Cash) -> [[String: Any]] {
        slices.enumerated().map { index, slice in
            ["label": slice.label, "value": Display.money(slice.value), "share": share(slice.value, of: total), "colour": "c\(index % 8)"]
        }
    }

    /// An exact share of the total, as a percentage.
    static func share(_ value: Cash, of total: Cash) -> String {
        guard total.isPositive, let ratio = try? Ratio.quotient(value, total, rounding: .halfEven) else { return "—" }
        return Display.percent(ratio)
    }

    /// A value in pixels' terms, for drawing only (never shown, never stored).
    static func drawable(_ cash: Cash) -> Double {
        Double(cash.formatted(minimumFractionDigits: 0)) ?? 0
    }

    static func label(ofClass name: String) -> String {
        switch name {
        case "etf": "ETFs"
        case "equity": "Stocks"
        case "fund": "Funds"
        case "bond": "Bonds"
        case "cash": "Cash"
        case "commodity": "Commodities"
        case "crypto": "Crypto"
        default: "Other"
        }
    }
}
