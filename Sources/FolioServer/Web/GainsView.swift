import FolioDomain
import Foundation

/// The gains page's values: the year's realized gains of the shown account
/// (first in, first out, by New York trade date, as the API reports them),
/// its open tax lots, and the CSV downloads.
enum GainsView {
    static func build(
        report: PerformanceController.RealizedReport, lots: PerformanceController.LotList, thisYear: Int, openedYear: Int? = nil, accountID: AccountID,
        severalAccounts: Bool
    ) -> [String: Any] {
        // The years since the account opened (ten back when that is not known), and the year asked for if it is older.
        let first = min(thisYear, openedYear ?? thisYear - 9)
        let years = Array(Set(Array(first...thisYear) + [report.year])).sorted(by: >)
        return [
            "year": report.year,
            "years": years.map { ["value": $0, "selected": $0 == report.year] },
            "totals": [
                totals("Short term", report.shortTerm),
                totals("Long term", report.longTerm),
                totals("Total", report.total),
            ],
            "sales": report.data.map { sale -> [String: Any] in
                [
                    "sold": TradingDay(sale.soldAt).description, "acquired": sale.acquiredAt.map { TradingDay($0).description } ?? "not found",
                    "symbol": sale.symbol, "quantity": Display.quantity(sale.quantity), "proceeds": Display.money(sale.proceeds),
                    "cost": Display.money(sale.cost), "gain": Display.change(sale.gain), "loss": sale.gain.isNegative, "term": term(sale.term),
                ]
            },
            "no_sales": report.data.isEmpty,
            "lots": lots.data.map { lot -> [String: Any] in
                [
                    "symbol": lot.symbol, "acquired": TradingDay(lot.acquiredAt).description, "quantity": Display.quantity(lot.quantity),
                    "cost_per_share": Display.averagePrice(lot.costPerShare), "cost": Display.money(lot.cost),
                    "value": lot.marketValue.map(Display.money) ?? "–", "gain": lot.unrealizedGain.map(Display.change) ?? "–",
                    "loss": lot.unrealizedGain?.isNegative ?? false, "term": term(lot.term),
                ]
            },
            "no_lots": lots.data.isEmpty,
            "csv": "/api/reports/realized-gains.csv?year=\(report.year)&account_id=\(accountID)",
            "csv_all": (severalAccounts ? "/api/reports/realized-gains.csv?year=\(report.year)" : nil) as Any,
        ]
    }

    static func totals(_ label: String, _ totals: PerformanceController.Totals) -> [String: Any] {
        ["label": label, "proceeds": Display.money(totals.proceeds), "cost": Display.money(totals.cost), "gain": Display.change(totals.gain), "loss": totals.gain.isNegative]
    }

    static func term(_ term: RealizedLot.Term) -> String {
        term == .long ? "Long" : "Short"
    }
}
