import FolioDomain
import Foundation

/// The targets page: the weights to edit, by symbol or by asset class (with
/// spare rows, so the form works as it is), each holding's drift against its
/// band, and the recent runs.
enum TargetsView {
    static let spareRows = 3

    /// `byClass`: the form sets weights by asset class; nil: as the stored targets are set.
    static func unheldNotices(_ targets: RebalanceController.TargetsResponse) -> [[String: String]] {
        targets.assetClasses.enumerated().compactMap { index, weight in
            guard targets.warnings.contains(where: { $0.field == "asset_classes[\(index)].asset_class" }) else { return nil }
            let name = Display.assetClass(weight.assetClass)
            return ["message": "You hold nothing in \(name), so a rebalance cannot share out its \(weight.percent) % yet: buy a symbol of that class first, or set targets by symbol."]
        }
    }

    static func build(
        targets: RebalanceController.TargetsResponse, drift: RebalanceController.DriftResponse?, runs: [RebalanceController.RunResponse],
        namedAccount: String?, byClass asked: Bool? = nil
    ) -> [String: Any] {
        let byClass = asked ?? !targets.assetClasses.isEmpty
        let weights = targets.targets.map { (symbol: $0.symbol, percent: $0.percent.description) }
            + Array(repeating: (symbol: "", percent: ""), count: spareRows)
        // A row for every class a weight can name (cash has its own), the stored ones first.
        let classes = AssetClass.allCases.filter { $0 != .cash }
        let classWeights = targets.assetClasses.map { (assetClass: $0.assetClass.rawValue, percent: $0.percent.description) }
            + Array(repeating: (assetClass: "", percent: ""), count: max(0, classes.count - targets.assetClasses.count))
        var values: [String: Any] = [
            "account_id": targets.accountID.description,
            "version": targets.version, "has_targets": targets.version > 0,
            "by_class": byClass,
            // The drift is by class when the stored targets are.
            "class_targets": !targets.assetClasses.isEmpty,
            "rows": weights.enumerated().map { index, weight in
                ["index": index, "number": index + 1, "symbol": weight.symbol, "percent": weight.percent] as [String: Any]
            },
            "class_rows": classWeights.enumerated().map { index, weight in
                [
                    "index": index, "number": index + 1, "percent": weight.percent,
                    "options": classes.map { ["value": $0.rawValue, "label": Display.assetClass($0), "selected": $0.rawValue == weight.assetClass] as [String: Any] },
                ] as [String: Any]
            },
            // The stored class weights a rebalance cannot share out yet, named as the page names the classes.
            "unheld": (targets.warnings.isEmpty ? nil : unheldNotices(targets)) as Any,
            "cash_percent": targets.cashPercent.description,
            "band_points": targets.driftBand.absolutePoints.description, "band_relative": targets.driftBand.relativePercent.description,
            "runs": runs.map(run),
            "has_runs": !runs.isEmpty,
        ]
        // Only when the page names an account: plans and runs then act on it, not the default one.
        if let namedAccount { values["named_account"] = namedAccount }
        if let following = runs.first(where: { !$0.status.isFinished }) {
            values["follow"] = "/api/portfolio/rebalances/\(following.id)"
        }
        if let drift {
            let lines = drift.data + [drift.cash]
            let scale = lines.map { max(number($0.currentPercent), number($0.targetPercent)) }.max().map { min(100, $0 * 1.25 + 5) } ?? 100
            values["drift"] = [
                "outside": drift.outsideBand, "stale": drift.stale, "total": Display.money(drift.totalValue),
                "lines": lines.map { line in
                    let label = line.symbol ?? line.assetClass.map(Display.assetClass) ?? "Cash"
                    let target = number(line.targetPercent)
                    let band = min(number(drift.driftBand.absolutePoints), target * number(drift.driftBand.relativePercent) / 100)
                    return [
                        "label": label, "current": Display.percentage(line.currentPercent), "target": Display.percentage(line.targetPercent),
                        "drift": (line.driftPoints.isPositive ? "+" : "") + Display.percentage(line.driftPoints).dropLast() + " points",
                        "outside": line.outsideBand, "value": Display.money(line.value),
                        "bar": Charts.driftBar(
                            label: "\(label): \(Display.percentage(line.currentPercent)) held against a target of \(Display.percentage(line.targetPercent))",
                            current: number(line.currentPercent), target: target, band: band, outside: line.outsideBand, scale: scale),
                    ] as [String: Any]
                },
            ] as [String: Any]
        }
        return values
    }

    static func run(_ run: RebalanceController.RunResponse) -> [String: Any] {
        [
            "id": run.id.description, "status": run.status.rawValue.replacingOccurrences(of: "_", with: " "), "finished": run.status.isFinished,
            "mode": Self.modeName(run.mode), "created": Display.date(run.createdAt), "planned": run.plannedTrades.count,
            "orders": run.orders.map { order in
                ["side": order.side.rawValue.lowercased(), "symbol": order.symbol, "quantity": order.quantity.map(Display.quantity) ?? "",
                 "status": order.status.rawValue.replacingOccurrences(of: "_", with: " ")] as [String: Any]
            },
            "notes": run.reasons + run.notes,
        ]
    }

    /// A percentage for drawing only.
    static func number(_ ratio: Ratio) -> Double {
        Double(ratio.description) ?? 0
    }

    /// A run's mode in the words of the form's choices.
    static func modeName(_ mode: RebalanceMode) -> String {
        switch mode {
        case .full: "Buy and sell"
        case .buyOnly: "Invest cash only"
        case .sellOnly: "Sell only"
        }
    }
}
