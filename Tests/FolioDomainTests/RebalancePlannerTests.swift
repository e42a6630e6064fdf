import Foundation
import Testing

@testable import FolioDomain

/// Targets, drift and the rebalance planner, with figures worked by hand and
/// properties checked over random portfolios.
@Suite("Rebalancing")
struct RebalancePlannerTests {
    static let now = Date(timeIntervalSince1970: 1_795_534_200)

    static func quotes(_ prices: [String: String], stale: Set<String> = []) -> [String: PriceQuote] {
        prices.reduce(into: [:]) { result, entry in
            result[entry.key] = PriceQuote(symbol: entry.key, price: try! Price(parsing: entry.value), previousClose: nil, asOf: now, isStale: stale.contains(entry.key))
        }
    }

    static func holding(_ symbol: String, _ quantity: Quantity, reserved: Quantity = .zero, cost: Cash = .zero) -> PricedHolding {
        PricedHolding(symbol: symbol, quantity: quantity, availableQuantity: try! quantity - reserved, costBasis: cost)
    }

    static func allocation(_ weights: [(String, Ratio)], cash: Ratio = .zero, band: DriftBand = .standard) throws -> TargetAllocation {
        try TargetAllocation(weights: weights.map { TargetWeight(symbol: $0.0, percent: $0.1) }, cashPercent: cash, band: band)
    }

    // MARK: - Targets

    @Test("targets must sum to exactly 100 %, with valid, distinct symbols and at most 4 places")
    func targetValidation() throws {
        let ok = try Self.allocation([("vti", 60), ("BND", try Ratio(parsing: "33.3333"))], cash: try Ratio(parsing: "6.6667"))
        #expect(ok.weights.map(\.symbol) == ["BND", "VTI"])
        #expect(ok.percent(of: "VTI") == 60)
        #expect(ok.percent(of: "AAPL") == nil)

        func codes(_ weights: [(String, String)], cash: String = "0") -> [String] {
            do {
                _ = try TargetAllocation(weights: weights.map { TargetWeight(symbol: $0.0, percent: try! Ratio(parsing: $0.1)) }, cashPercent: try! Ratio(parsing: cash))
                return []
            } catch {
                guard case .invalid(let issues) = error else { return ["?"] }
                return issues.map { "\($0.field):\($0.code)" }
            }
        }
        #expect(codes([("VTI", "60"), ("BND", "39.9999")]) == ["targets:sum_not_100"])
        #expect(codes([("VTI", "60"), ("BND", "40.00001")]) == ["targets[1].percent:too_precise"])
        #expect(codes([("VTI", "60"), ("vti", "40")]) == ["targets[1].symbol:duplicate"])
        #expect(codes([("VTI", "110"), ("BND", "-10")]) == ["targets[0].percent:out_of_range", "targets[1].percent:out_of_range"])
        #expect(codes([("1BAD", "100")]) == ["targets[0].symbol:invalid"])
        #expect(codes([("VTI", "100")], cash: "5") == ["targets:sum_not_100"])
        #expect(codes([], cash: "100") == [])
        #expect(throws: TradingError.self) {
            try TargetAllocation(weights: [TargetWeight(symbol: "VTI", percent: 100)], band: DriftBand(absolutePoints: 0, relativePercent: 25))
        }
    }

    @Test("the band is 5 points or 25 % of the target, whichever is reached first; a zero target has no room")
    func band() {
        let band = DriftBand.standard
        #expect(!band.isOutside(current: 64, target: 60))  // 4 points, 6.7 % relative
        #expect(band.isOutside(current: 66, target: 60))  // 6 points
        #expect(band.isOutside(current: 13, target: 10))  // 3 points but 30 % relative
        #expect(!band.isOutside(current: try! Ratio(parsing: "12.5"), target: 10))  // exactly 25 %: on the edge, inside
        #expect(band.isOutside(current: try! Ratio(parsing: "0.0001"), target: 0))
        #expect(!band.isOutside(current: 0, target: 0))
    }

    @Test("drift: each target's weight, value and drift; unplanned holdings; stale and missing quotes flagged")
    func drift() throws {
        let targets = try Self.allocation([("VTI", 50), ("BND", 40), ("VXUS", 0)], cash: 10)
        let report = try DriftReport(
            holdings: [Self.holding("VTI", 30), Self.holding("BND", 30), Self.holding("GLD", 5, cost: 500)],
            quotes: Self.quotes(["VTI": "200", "BND": "100", "VXUS": "60"], stale: ["BND"]), cash: 500, allocation: targets)
        // 6,000 + 3,000 + 500 (GLD at cost: no quote) + 500 cash = 10,000.
        #expect(report.totalValue == 10_000)
        #expect(report.lines.map(\.symbol) == ["BND", "GLD", "VTI", "VXUS"])
        let bnd = report.lines[0], gld = report.lines[1], vti = report.lines[2], vxus = report.lines[3]
        #expect(vti.currentPercent == 60 && vti.targetValue == 5_000 && vti.driftPoints == 10 && vti.driftRelativePercent == 20 && vti.outsideBand)
        #expect(bnd.currentPercent == 30 && bnd.driftPoints == -10 && bnd.driftRelativePercent == -25 && bnd.outsideBand && bnd.stale)
        #expect(gld.targetPercent == nil && !gld.planned && gld.value == 500 && gld.currentPercent == 5 && gld.outsideBand && gld.stale)
        #expect(vxus.value == .zero && vxus.driftPoints == .zero && !vxus.outsideBand)
        // Cash 5 points under its target: 50 % relative, but only the absolute band applies to cash.
        #expect(report.cash.currentPercent == 5 && report.cash.driftPoints == -5 && !report.cash.outsideBand)
        #expect(report.outsideBand && report.stale)
    }

    @Test("targets by asset class: shared over the class's holdings by value, exactly 100 % in all; drift by class; a class with nothing held cannot be planned")
    func assetClasses() throws {
        let byClass = try TargetAllocation(weights: [], classWeights: [ClassWeight(assetClass: .equity, percent: 60), ClassWeight(assetClass: .etf, percent: 35)], cashPercent: 5)
        let classes: [String: AssetClass] = ["AAPL": .equity, "MSFT": .equity, "VTI": .etf, "KO": .equity]
        // Equities held 3,000 / 1,000 / 2,000: their 60 % is shared 30 / 10 / 20; the ETF class has VTI alone.
        let shared = try byClass.bySymbol(values: ["AAPL": 3_000, "MSFT": 1_000, "KO": 2_000, "VTI": 2_000], classes: classes)
        #expect(shared.weights.map { "\($0.symbol)=\($0.percent)" } == ["AAPL=30", "KO=20", "MSFT=10", "VTI=35"])
        #expect(shared.cashPercent == 5)
        // Thirds: each share rounded down to 0.0001 %, the step left over to the largest remainder.
        let thirds = try byClass.bySymbol(values: ["AAPL": 1_000, "MSFT": 1_000, "KO": 1_001, "VTI": 5], classes: classes)
        // AAPL and MSFT tie on the largest remainder (0.35 of a step against KO's 0.28): AAPL by symbol.
        #expect(thirds.weights.map(\.percent.description) == ["19.9934", "20.0133", "19.9933", "35"])
        // 1 % over 155 equal holdings: no share goes negative or above the class, and they sum to it exactly.
        let many = Dictionary(uniqueKeysWithValues: (0..<155).map { ("S\($0)", Cash(integerLiteral: 1_000)) })
        let small = try TargetAllocation(weights: [], classWeights: [ClassWeight(assetClass: .equity, percent: 1)], cashPercent: 99)
        let spread = try small.bySymbol(values: many, classes: many.mapValues { _ in .equity })
        #expect(spread.weights.allSatisfy { !$0.percent.isNegative && $0.percent <= 1 })
        #expect(try spread.weights.reduce(Ratio.zero) { try $0 + $1.percent } == 1)
        #expect(throws: RebalanceError.nothingHeldInClass("etf")) { try byClass.bySymbol(values: ["AAPL": 1_000], classes: classes) }
        // Held, but worth less than half a cent (a billionth of a share): the class is held, as saving the targets
        // said; its weight goes to what is held in it, equally when nothing in it is worth a cent.
        let dust = try byClass.bySymbol(values: ["AAPL": 1_000, "VTI": .zero, "SPY": .zero], classes: classes.merging(["SPY": .etf]) { $1 })
        #expect(dust.weights.map { "\($0.symbol)=\($0.percent)" } == ["AAPL=60", "SPY=17.5", "VTI=17.5"])
        #expect(throws: TradingError.self) {
            try TargetAllocation(weights: [TargetWeight(symbol: "AAPL", percent: 50)], classWeights: [ClassWeight(assetClass: .etf, percent: 50)])
        }

        let report = try DriftReport(
            holdings: [Self.holding("AAPL", 10), Self.holding("VTI", 10)], quotes: Self.quotes(["AAPL": "100", "VTI": "100"]), cash: 0,
            allocation: byClass, classes: classes)
        #expect(report.lines.map { "\($0.assetClass!.rawValue) \($0.currentPercent) \($0.targetPercent!)" } == ["equity 50 60", "etf 50 35"])
        #expect(report.lines.allSatisfy { $0.symbol == nil } && report.outsideBand)
        let bySymbol = try DriftReport(
            holdings: [Self.holding("AAPL", 10), Self.holding("VTI", 10)], quotes: Self.quotes(["AAPL": "100", "VTI": "100"]), cash: 0,
            allocation: try Self.allocation([("AAPL", 40), ("MSFT", 20), ("VTI", 40)]), classes: classes)
        #expect(bySymbol.byClass.map { "\($0.assetClass!.rawValue) \($0.currentPercent) \($0.targetPercent!)" } == ["equity 50 60", "etf 50 40"])
    }

    // MARK: - Worked examples

    @Test("full: sell the overweight, buy the underweight within the cash the margin leaves (worked by hand)")
    func fullWorkedExample() throws {
        // VTI 30 × 200 = 6,000 (60 %), BND 30 × 100 = 3,000 (30 %), cash 1,000 (10 %). Targets 50 / 40 / cash 10.
        let targets = try Self.allocation([("VTI", 50), ("BND", 40)], cash: 10)
        let holdings = [Self.holding("VTI", 30), Self.holding("BND", 30)]
        let quotes = Self.quotes(["VTI": "200.00", "BND": "100.00"])
        let exact = try RebalancePlanner.plan(holdings: holdings, quotes: quotes, cash: 1_000, availableCash: 1_000, allocation: targets, options: .init())
        // Sell 1,000 of VTI = 5 shares; the 1,000 of proceeds buy 10 BND; cash stays at its 1,000 target.
        #expect(exact.trades.map { "\($0.side.rawValue) \($0.quantity) \($0.symbol) \($0.estimatedAmount)" } == ["SELL 5 VTI 1000.00", "BUY 10 BND 1000.00"])
        #expect(exact.cashAfter == 1_000 && exact.estimatedProceeds == 1_000 && exact.estimatedCost == 1_000)
        #expect(exact.lines.map(\.percentAfter) == [40, 50] && exact.lines.allSatisfy { $0.driftAfterPoints.isZero && !$0.outsideBandAfter })
        #expect(exact.reason == nil)

        // With a 5 % market-buy margin the buys may reserve at most 1,000: 1,000 / 1.05 = 952.38 at the quote,
        // so 9 BND (900.00, reserving 945.00); a tenth would reserve 1,050.00.
        let margin = try RebalancePlanner.plan(
            holdings: holdings, quotes: quotes, cash: 1_000, availableCash: 1_000, allocation: targets,
            options: .init(marketBuyMargin: try Ratio(parsing: "0.05")))
        #expect(margin.buys.map(\.quantity) == [9] && margin.buys[0].reservation == 945 && margin.buyReservation == 945)
        #expect(margin.cashAfter == 1_100 && margin.lines[0].percentAfter == 39 && margin.lines[0].driftAfterPoints == -1)
    }

    @Test("a buy dropped as below the minimum trade leaves its cash to the others, not idle (worked by hand)")
    func droppedBuyReinvested() throws {
        // H 100 × 10 (no target, not sold in buy_only), cash 1,000: total 2,000. A 60 % (1,200 short), B 40 % (800 short).
        // The 1,000 cut both to 500 short: A 70 (700), B 30 (300). B is below the 400 minimum: its 300 goes to A,
        // whose whole 1,000 then buys 100, rather than stay as cash.
        let plan = try RebalancePlanner.plan(
            holdings: [Self.holding("H", 100)], quotes: Self.quotes(["A": "10", "B": "10", "H": "10"]), cash: 1_000, availableCash: 1_000,
            allocation: try Self.allocation([("A", 60), ("B", 40)]), options: .init(mode: .buyOnly, minimumTrade: 400))
        #expect(plan.trades.map { "\($0.side.rawValue) \($0.quantity) \($0.symbol)" } == ["BUY 100 A"])
        #expect(plan.cashAfter == .zero && plan.reason == nil)
        // Every buy below the minimum: the smaller half go, and the other's share grows to it. A 10 % and B 10 % of
        // 10,500 with 2,100 to spend (5 % margin): 1,000 each, below 1,000.01; A goes (a tie: by symbol), B gets 1,050.
        let tied = try RebalancePlanner.plan(
            holdings: [], quotes: Self.quotes(["A": "10", "B": "10"]), cash: 10_500, availableCash: 10_500,
            allocation: try Self.allocation([("A", 10), ("B", 10)], cash: 80),
            options: .init(mode: .buyOnly, minimumTrade: try Cash(parsing: "1000.01"), marketBuyMargin: try Ratio(parsing: "0.05")))
        #expect(tied.trades.map { "\($0.side.rawValue) \($0.quantity) \($0.symbol) \($0.estimatedAmount)" } == ["BUY 105 B 1050.00"])
        // A buy too small in one pass may come back larger: A, B, C short 1,000, 500 and 350 with 1,260 to spend (5 %
        // margin, fractional, 300 minimum) get 783.33, 283.33 and 133.33; B and C are too small, and C (the smaller)
        // goes when a second pass is too small again; then A and B share the rest: 850 and 350, less the cents that
        // rounding each pass's fractions of a share down leaves.
        let again = try RebalancePlanner.plan(
            holdings: [], quotes: Self.quotes(["A": "10", "B": "10", "C": "10"]), cash: 10_000, availableCash: 10_000,
            allocation: try Self.allocation([("A", 10), ("B", 5), ("C", try Ratio(parsing: "3.5"))], cash: try Ratio(parsing: "81.5")),
            options: .init(mode: .buyOnly, cashReserve: 8_740, minimumTrade: 300, allowFractional: true, marketBuyMargin: try Ratio(parsing: "0.05")))
        #expect(again.trades.map { "\($0.side.rawValue) \($0.symbol) \($0.estimatedAmount)" } == ["BUY A 849.99", "BUY B 349.99"], "\(again.trades)")
        #expect(again.buyReservation <= 1_260)
        // A buy that got its whole gap and is still too small is left out for good, and its cash goes to the others,
        // rather than come back to take a share of every pass. (Found by fuzzing a model of the planner: with A back
        // every pass, B and C got 1,506 and 4; the model and the planner agree on 1,600 and 5.)
        let hopeless = try RebalancePlanner.plan(
            holdings: [Self.holding("E", 10)],
            quotes: Self.quotes(["A": "11.59", "B": "3.52", "C": "1273.76", "D": "735.62", "E": "689.75"]),
            cash: try Cash(parsing: "13967.20"), availableCash: try Cash(parsing: "13967.20"),
            allocation: try Self.allocation([("A", 2), ("B", 27), ("C", 32), ("D", 15), ("E", 21)], cash: 3),
            options: .init(minimumTrade: 4_539))
        #expect(hopeless.buys.map { "\($0.quantity) \($0.symbol)" } == ["1600 B", "5 C"], "\(hopeless.trades)")
        // When nothing is left above the minimum, the plan says why.
        let none = try RebalancePlanner.plan(
            holdings: [Self.holding("H", 100)], quotes: Self.quotes(["A": "10", "B": "10", "H": "10"]), cash: 1_000, availableCash: 1_000,
            allocation: try Self.allocation([("A", 60), ("B", 40)]), options: .init(mode: .buyOnly, minimumTrade: 1_001))
        #expect(none.trades.isEmpty && none.reason?.code == "below_minimum_trade")
    }

    @Test("an excluded symbol is left as it is and out of the sums; the other targets are scaled to the rest (worked by hand)")
    func excludedSymbols() throws {
        // HALT 10 × 100 (halted: no current price), VTI 20 × 100 = 2,000, cash 1,000. Targets HALT 30, VTI 40, BND 20, cash 10.
        let targets = try Self.allocation([("HALT", 30), ("VTI", 40), ("BND", 20)], cash: 10)
        let holdings = [Self.holding("HALT", 10), Self.holding("VTI", 20)]
        let quotes = Self.quotes(["HALT": "100", "VTI": "100", "BND": "100"])
        let blocked = try RebalancePlanner.plan(
            holdings: holdings, quotes: quotes, cash: 1_000, availableCash: 1_000, allocation: targets, options: .init(), outdated: ["HALT"])
        #expect(blocked.trades.isEmpty && blocked.reason?.code == RebalancePlanner.outdatedPrice)

        // Without HALT the rest is 3,000 and its targets 70 %: VTI 40/70 (1,714.29), BND 20/70 (857.14), cash 10/70 (428.57).
        // VTI is 285.71 over: 3 shares sold (300). 1,000 + 300 − 428.57 leaves 871.43 to spend: 8 BND (800); a ninth does not fit.
        // HALT needs no quote at all.
        let withoutHalt = Self.quotes(["VTI": "100", "BND": "100"])
        let plan = try RebalancePlanner.plan(
            holdings: holdings, quotes: withoutHalt, cash: 1_000, availableCash: 1_000, allocation: targets, options: .init(excluded: ["HALT"]),
            outdated: ["HALT"])
        #expect(plan.reason == nil)
        #expect(plan.trades.map { "\($0.side.rawValue) \($0.quantity) \($0.symbol)" } == ["SELL 3 VTI", "BUY 8 BND"])
        #expect(plan.lines.map(\.symbol) == ["BND", "VTI"])
        #expect(plan.totalValue == 3_000)
        #expect(plan.lines.map(\.targetPercent) == [try Ratio(parsing: "28.5714"), try Ratio(parsing: "57.1429")])
        #expect(try plan.cashTargetPercent == Ratio(parsing: "14.2857"))
        #expect(try plan.cashKept == Cash(parsing: "428.57"))
        #expect(plan.cashAfter == 500)
        #expect(try plan.lines.map(\.percentAfter) == [Ratio(parsing: "26.6667"), Ratio(parsing: "56.6667")])

        // A held symbol without a target can be excluded too: it is not sold, and the targets stay as they are.
        let kept = try RebalancePlanner.plan(
            holdings: holdings + [Self.holding("OLD", 5)], quotes: withoutHalt, cash: 1_000, availableCash: 1_000,
            allocation: try Self.allocation([("VTI", 70), ("BND", 20)], cash: 10), options: .init(excluded: ["OLD", "HALT"]))
        #expect(kept.lines.map(\.symbol) == ["BND", "VTI"] && kept.lines.map(\.targetPercent) == [20, 70] && kept.totalValue == 3_000)

        func refusal(_ excluded: Set<String>, _ allocation: TargetAllocation = targets) -> [String] {
            do {
                _ = try RebalancePlanner.plan(
                    holdings: holdings, quotes: quotes, cash: 1_000, availableCash: 1_000, allocation: allocation, options: .init(excluded: excluded))
                return []
            } catch {
                guard let error = error as? TradingError, case .invalid(let issues) = error else { return ["\(error)"] }
                return issues.map { "\($0.field):\($0.code)" }
            }
        }
        // Every symbol target excluded: the rest would have nothing but cash to aim at (every other holding would be sold).
        #expect(refusal(["HALT", "VTI"], try Self.allocation([("HALT", 30), ("VTI", 70)])) == ["excluded_symbols:whole_allocation"])
        #expect(refusal(["HALT", "VTI", "BND"]) == ["excluded_symbols:whole_allocation"])
        #expect(refusal(["HALT", "VTI"]) == [])
        // A symbol neither held nor targeted is the request's to refuse (RebalanceService.requireExcludable): a run plans
        // again after an excluded holding was sold, and that plan goes on.
        #expect(refusal(["GONE"]) == [])
    }

    @Test("buy_only: the cash goes to the largest shortfalls first until they are equal (worked by hand)")
    func buyOnlyWorkedExample() throws {
        // Total 2,000: C is 1,000 (50 %), cash 1,000. Targets A 40 (800), B 20 (400), C 40 (800).
        // 1,000 of cash against shortfalls of 800 and 400: both are cut to 100 short, so A gets 700 and B 300.
        let targets = try Self.allocation([("A", 40), ("B", 20), ("C", 40)])
        let plan = try RebalancePlanner.plan(
            holdings: [Self.holding("C", 100)], quotes: Self.quotes(["A": "10", "B": "10", "C": "10"]), cash: 1_000, availableCash: 1_000,
            allocation: targets, options: .init(mode: .buyOnly))
        #expect(plan.trades.map { "\($0.side.rawValue) \($0.quantity) \($0.symbol)" } == ["BUY 70 A", "BUY 30 B"])
        #expect(plan.sells.isEmpty && plan.cashAfter == .zero)
        #expect(plan.lines.map(\.driftAfterPoints) == [-5, -5, 10])

        // A reserve keeps cash back; nothing above it leaves nothing to invest, and the plan says so.
        let reserved = try RebalancePlanner.plan(
            holdings: [Self.holding("C", 100)], quotes: Self.quotes(["A": "10", "B": "10", "C": "10"]), cash: 1_000, availableCash: 1_000,
            allocation: targets, options: .init(mode: .buyOnly, cashReserve: 1_000))
        #expect(reserved.trades.isEmpty && reserved.reason?.code == "no_cash")
        // An empty account is not "on target": it has nothing to rebalance.
        let empty = try RebalancePlanner.plan(
            holdings: [], quotes: Self.quotes(["A": "10", "B": "10", "C": "10"]), cash: 0, availableCash: 0, allocation: targets, options: .init(mode: .full))
        #expect(empty.trades.isEmpty && empty.reason?.code == "no_cash" && empty.reason?.message.contains("nothing to rebalance") == true, "\(String(describing: empty.reason))")
    }

    @Test("no trade is larger than one order may be: sells and buys are cut to 1,000,000,000 shares, and the plan says so")
    func tradesWithinTheOrderSize() throws {
        // 3,000,000,000 OLD at $0.0001 (300,000) to sell in full; NEW at $0.0001 wants all of it and the 100,000 of cash.
        let targets = try Self.allocation([("NEW", 100)])
        let quotes = Self.quotes(["OLD": "0.0001", "NEW": "0.0001"])
        let plan = try RebalancePlanner.plan(
            holdings: [Self.holding("OLD", 3_000_000_000)], quotes: quotes, cash: 100_000, availableCash: 100_000, allocation: targets, options: .init())
        #expect(plan.trades.map { "\($0.side.rawValue) \($0.quantity) \($0.symbol)" } == ["SELL 1000000000 OLD", "BUY 1000000000 NEW"])
        #expect(plan.limitedByOrderSize)
        #expect(plan.trades.allSatisfy { OrderDraft(symbol: $0.symbol, side: $0.side, type: .market, quantity: $0.quantity).validate().isEmpty })
        // What is left unbought stays as cash: 100,000 + 100,000 of proceeds − 100,000 of cost.
        #expect(plan.cashAfter == 100_000 && plan.estimatedProceeds == 100_000 && plan.estimatedCost == 100_000)

        let small = try RebalancePlanner.plan(
            holdings: [Self.holding("OLD", 30)], quotes: quotes, cash: 10, availableCash: 10, allocation: targets, options: .init())
        // (30 OLD bring under a cent, so they are not sold; the 10.00 buys 100,000 NEW.)
        let smallTrades = small.trades.map { "\($0.side.rawValue) \($0.quantity) \($0.symbol)" }
        #expect(!small.limitedByOrderSize)
        #expect(smallTrades == ["BUY 100000 NEW"])
    }

    @Test("whole shares round to the nearest share; fractional shares go to 9 places; small trades are dropped with a reason")
    func roundingAndMinimum() throws {
        // Total 1,000: X 10 × 70 = 700 (70 %), cash 300. Target X 50 / Y 50: sell 200 of X = 2.857 shares → 3.
        let targets = try Self.allocation([("X", 50), ("Y", 50)])
        let quotes = Self.quotes(["X": "70", "Y": "30"])
        let whole = try RebalancePlanner.plan(holdings: [Self.holding("X", 10)], quotes: quotes, cash: 300, availableCash: 300, allocation: targets, options: .init())
        #expect(whole.sells.map(\.quantity) == [3])
        // 300 + 210 = 510 of cash for a 500 target in Y: 16 shares (480); a 17th would be nearer (510) and fits.
        #expect(whole.buys.map(\.quantity) == [17] && whole.cashAfter == .zero)

        let fractional = try RebalancePlanner.plan(
            holdings: [Self.holding("X", 10)], quotes: quotes, cash: 300, availableCash: 300, allocation: targets, options: .init(allowFractional: true))
        #expect(fractional.sells.map(\.quantity.description) == ["2.857142857"])
        // The sale pays 199.99 (2.857142857 × 70 = 199.99999999, down to the cent): 499.99 buys 16.666333333 Y.
        #expect(fractional.buys.map(\.quantity.description) == ["16.666333333"] && fractional.cashAfter == .zero)

        let small = try RebalancePlanner.plan(
            holdings: [Self.holding("X", 10)], quotes: quotes, cash: 300, availableCash: 300, allocation: targets, options: .init(minimumTrade: 1_000))
        #expect(small.trades.isEmpty && small.reason?.code == "below_minimum_trade")

        let balanced = try RebalancePlanner.plan(
            holdings: [Self.holding("X", 7), Self.holding("Y", 17)], quotes: quotes, cash: 1, availableCash: 1, allocation: targets, options: .init())
        #expect(balanced.trades.isEmpty && balanced.reason?.code == "on_target")
    }

    @Test("whole shares: a holding far below its target gets the share that did not fit when shares taken back elsewhere make room and the largest drift shrinks (worked by hand)")
    func roomForTheNeediest() throws {
        // 1,000 in cash; targets AAPL 50 (500), MSFT 30 (300), KO 15 (150), cash 5 (50); a 5 % market-buy margin.
        // Water-filling at 904.76 buys 2 AAPL and 2 KO (MSFT's 0.64 of a share rounds to none), leaving 420.00;
        // one MSFT share needs 464.73, so the top-up alone bought a third AAPL and a third KO: MSFT 300 short
        // beside AAPL 83 over. Taking back the third AAPL and two KO frees enough for one MSFT: the largest
        // drift falls from 300.00 to 142.60 (MSFT over).
        let plan = try RebalancePlanner.plan(
            holdings: [], quotes: Self.quotes(["AAPL": "194.30", "MSFT": "442.60", "KO": "58.10"]), cash: 1_000, availableCash: 1_000,
            allocation: try Self.allocation([("AAPL", 50), ("MSFT", 30), ("KO", 15)], cash: 5), options: .init(mode: .buyOnly, marketBuyMargin: try Ratio(parsing: "0.05")))
        #expect(plan.trades.map { "\($0.side.rawValue) \($0.quantity) \($0.symbol)" } == ["BUY 2 AAPL", "BUY 1 KO", "BUY 1 MSFT"])
        #expect(plan.buyReservation <= 950)
        let gaps = try plan.lines.map { try Percent.share(of: plan.totalValue, $0.targetPercent ?? .zero) - $0.valueAfter }
        #expect(gaps == (try ["111.40", "91.90", "-142.60"].map { try Cash(parsing: $0) }))

        // With a 500 minimum trade, the swap would leave three buys each below it, all dropped: it is not made,
        // and the three AAPL (582.90) stay the plan.
        let minimum = try RebalancePlanner.plan(
            holdings: [], quotes: Self.quotes(["AAPL": "194.30", "MSFT": "442.60", "KO": "58.10"]), cash: 1_000, availableCash: 1_000,
            allocation: try Self.allocation([("AAPL", 50), ("MSFT", 30), ("KO", 15)], cash: 5),
            options: .init(mode: .buyOnly, minimumTrade: 500, marketBuyMargin: try Ratio(parsing: "0.05")))
        #expect(minimum.trades.map { "\($0.side.rawValue) \($0.quantity) \($0.symbol)" } == ["BUY 3 AAPL"])
    }

    @Test("unplanned holdings are sold whole in full and sell_only modes; reserved shares are never sold; no price is an error")
    func unplannedAndReserved() throws {
        let targets = try Self.allocation([("VTI", 100)])
        let quotes = Self.quotes(["VTI": "100", "OLD": "50"])
        let plan = try RebalancePlanner.plan(
            holdings: [Self.holding("OLD", try Quantity(parsing: "10.5"), reserved: 4), Self.holding("VTI", 10)], quotes: quotes,
            cash: 0, availableCash: 0, allocation: targets, options: .init(mode: .sellOnly))
        #expect(plan.trades.map { "\($0.side.rawValue) \($0.quantity) \($0.symbol)" } == ["SELL 6.5 OLD"])
        #expect(plan.lines[0].targetPercent == nil && plan.lines[0].quantityAfter == 4)
        #expect(throws: RebalanceError.noPrice("VTI")) {
            try RebalancePlanner.plan(holdings: [], quotes: [:], cash: 100, availableCash: 100, allocation: targets, options: .init())
        }
    }

    // MARK: - Properties

    @Test("random portfolios: cash, shares, modes, rounding, minimum and closeness rules all hold", arguments: 0..<4)
    func properties(batch: Int) throws {
        var random = SeededRandom(seed: 0xF0_11_0000 + UInt64(batch))
        var traded = 0, outside = 0
        for round in 0..<250 {
            let scenario = try Scenario.random(using: &random)
            let plan = try scenario.check(context: "batch \(batch) round \(round)")
            if !plan.trades.isEmpty { traded += 1 }
            if plan.lines.contains(where: \.outsideBandAfter) { outside += 1 }
        }
        // The generator makes plans with trades, and plans whose limits leave some line outside its band.
        #expect(traded > 150 && outside > 20, "\(traded) plans traded, \(outside) left a line outside its band")
    }

    struct Scenario {
        var holdings: [PricedHolding]
        var quotes: [String: PriceQuote]
        var cash: Cash
        var availableCash: Cash
        var allocation: TargetAllocation
        var options: RebalanceOptions

        static func random(using random: inout SeededRandom) throws -> Scenario {
            let universe = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH", "III", "JJJ", "KKK", "LLL"]
            let symbols = Array(universe.shuffled(using: &random).prefix(Int.random(in: 1...universe.count, using: &random)))
            let fractional = Bool.random(using: &random)
            var prices: [String: String] = [:]
            for symbol in symbols {
                let cents = Int.random(in: 100...50_000, using: &random)
                prices[symbol] = "\(cents / 100).\(String(format: "%02d", cents % 100))\(Bool.random(using: &random) ? "37" : "")"
            }
            var holdings: [PricedHolding] = []
            for symbol in symbols where Int.random(in: 0..<3, using: &random) > 0 {
                let whole = Int.random(in: 0...400, using: &random)
                let quantity = fractional ? try Quantity(parsing: "\(whole).\(Int.random(in: 0...999, using: &random))") : try Quantity(whole)
                let reserved = Bool.random(using: &random) ? try Quantity.quotient(quantity, Quantity(3), places: 0, rounding: .down) : .zero
                holdings.append(RebalancePlannerTests.holding(symbol, quantity, reserved: reserved))
            }
            // Weights in whole and fractional percents that sum to exactly 100, some symbols left unplanned.
            let targeted = symbols.filter { _ in Int.random(in: 0..<5, using: &random) > 0 }
            var remaining = Int128(100) * Int128(Ratio.one)
            let cashShare = Bool.random(using: &random) ? Int128(Int.random(in: 0...20, using: &random)) * Int128(Ratio.one) : 0
            remaining -= cashShare
            var weights: [TargetWeight] = []
            for (index, symbol) in targeted.enumerated() {
                let share = index == targeted.count - 1 ? remaining : remaining * Int128(Int.random(in: 0...60, using: &random)) / 100 / 100 * 100
                weights.append(TargetWeight(symbol: symbol, percent: Ratio(uncheckedUnits: share)))
                remaining -= share
            }
            let cashPercent = Ratio(uncheckedUnits: cashShare + (targeted.isEmpty ? remaining : 0))
            let allocation = try TargetAllocation(weights: weights, cashPercent: cashPercent)
            let cash = try Cash(parsing: "\(Int.random(in: 0...200_000, using: &random)).\(String(format: "%02d", Int.random(in: 0...99, using: &random)))")
            let reservedCash = Bool.random(using: &random) ? try Cash.quotient(cash, Quantity(4), places: 2, rounding: .down) : .zero
            let options = RebalanceOptions(
                mode: RebalanceMode.allCases.randomElement(using: &random)!,
                cashReserve: Bool.random(using: &random) ? try Cash(Int.random(in: 0...5_000, using: &random)) : .zero,
                minimumTrade: Int.random(in: 0..<4, using: &random) == 0 ? try Cash(Int.random(in: 1...500, using: &random)) : .zero,
                allowFractional: fractional || Int.random(in: 0..<4, using: &random) == 0,
                marketBuyMargin: Ratio(uncheckedUnits: Int128(Int.random(in: 0...100_000, using: &random))))
            return Scenario(
                holdings: holdings, quotes: RebalancePlannerTests.quotes(prices), cash: cash, availableCash: try cash - reservedCash,
                allocation: allocation, options: options)
        }

        @discardableResult
        func check(context: String) throws -> RebalancePlan {
            let plan = try RebalancePlanner.plan(
                holdings: holdings, quotes: quotes, cash: cash, availableCash: availableCash, allocation: allocation, options: options)
            let comment = Comment(rawValue: "\(context): \(options) \(plan.trades.map { "\($0.side) \($0.quantity) \($0.symbol)" })")
            // Deterministic: the same inputs in another order give the same plan.
            let again = try RebalancePlanner.plan(
                holdings: holdings.reversed(), quotes: quotes, cash: cash, availableCash: availableCash, allocation: allocation, options: options)
            #expect(plan == again, comment)
            #expect((plan.reason == nil) == !plan.trades.isEmpty, comment)
            #expect(Set(plan.trades.map(\.symbol)).count == plan.trades.count, "a symbol is bought or sold, never both; \(comment)")

            let held = Dictionary(uniqueKeysWithValues: holdings.map { ($0.symbol, $0) })
            for trade in plan.trades {
                #expect(trade.quantity.isPositive, comment)
                #expect(trade.estimatedAmount >= options.minimumTrade, comment)
                if trade.side == .sell {
                    #expect(options.mode != .buyOnly, comment)
                    let available = held[trade.symbol]?.availableQuantity ?? .zero
                    #expect(trade.quantity <= available, "never sells more than is held unreserved; \(comment)")
                    #expect(options.allowFractional || trade.quantity.places == 0 || trade.quantity == available, comment)
                } else {
                    #expect(options.mode != .sellOnly, comment)
                    #expect(options.allowFractional || trade.quantity.places == 0, comment)
                }
            }
            // Never needs more cash than is available after the reserve, the cash target and the margin.
            let spendable = try availableCash + (options.mode == .full ? plan.estimatedProceeds : .zero) - plan.cashKept
            #expect(plan.buyReservation <= Cash.max(spendable, .zero), comment)
            #expect(plan.buyReservation == (try plan.buys.reduce(Cash.zero) { try $0 + $1.reservation }), comment)
            guard options.minimumTrade.isZero else { return plan }

            // As close as whole shares and the cash allow: a line left outside its band could not be helped by one more share.
            let left = try Cash.max(spendable, .zero) - plan.buyReservation
            for line in plan.lines where line.outsideBandAfter {
                let target = try Percent.share(of: plan.totalValue, line.targetPercent ?? .zero)
                // Twice a cash gap against a price, exactly: cash has 4 places, prices 8; a cent of value rounding is allowed.
                func withinHalfShare(_ gap: Cash) -> Bool { gap.units * 2 * 10_000 <= line.price.units + 2_000_000 }
                if line.valueAfter < target {
                    guard options.mode != .sellOnly, line.trade?.side != .sell, (line.targetPercent ?? .zero).isPositive else { continue }
                    let gap = try target - line.valueAfter
                    if options.allowFractional {
                        // Only rounding is left: a few cents per symbol at most.
                        #expect(gap <= Cash(uncheckedUnits: 200) || left <= Cash(uncheckedUnits: Int128(100 * (plan.lines.count + 2))),
                                "\(line.symbol) is \(gap) short with \(left) unspent; \(comment)")
                    } else {
                        let bought = line.trade?.quantity ?? .zero
                        let more = try RebalancePlanner.reservation(try bought + 1, line.price, options) - RebalancePlanner.reservation(bought, line.price, options)
                        #expect(withinHalfShare(gap) || more > left, "\(line.symbol) stays \(gap) below target though another share (\(more)) fits in \(left); \(comment)")
                    }
                } else {
                    guard options.mode != .buyOnly else { continue }
                    let available = try (held[line.symbol]?.availableQuantity ?? .zero) - (line.trade?.side == .sell ? line.trade!.quantity : .zero)
                    let excess = try line.valueAfter - target
                    if options.allowFractional {
                        #expect(excess <= Cash(uncheckedUnits: 200) || available.isZero, "\(line.symbol) stays \(excess) above target; \(comment)")
                    } else {
                        #expect(withinHalfShare(excess) || available < 1, "\(line.symbol) stays \(excess) above target with \(available) more to sell; \(comment)")
                    }
                }
            }
            return plan
        }
    }

    // MARK: - Open buys

    static func openBuy(_ symbol: String, quantity: String, filled: String = "0", reserved: String, type: OrderType = .limit) -> OrderState {
        OrderState(
            id: OrderID(), accountID: AccountID(), userID: UserID(), clientOrderID: nil, symbol: symbol, side: .buy, type: type, timeInForce: .goodTillCanceled,
            quantity: try! Quantity(parsing: quantity), notional: nil, limitPrice: nil, stopPrice: nil, status: filled == "0" ? .accepted : .partiallyFilled,
            filledQuantity: try! Quantity(parsing: filled), averageFillPrice: nil, reservedCash: try! Cash(parsing: reserved), reservedQuantity: .zero,
            rejectReason: nil, createdAt: now, updatedAt: now)
    }

    @Test("open buys count as the shares their reserved cash buys today, no more than they still ask for; the total stays the account's")
    func pendingBuys() throws {
        let prices = Self.quotes(["AAPL": "200", "MSFT": "400"])
        let holdings = [Self.holding("AAPL", 10)]
        let cash = try Cash(parsing: "10000")
        let buys = [
            // A market buy with its margin: all 5 shares.
            Self.openBuy("MSFT", quantity: "5", reserved: "2100", type: .market),
            // A limit far below the market: 1,000 shares for $10 are 0.05 of a share today.
            Self.openBuy("AAPL", quantity: "1000", reserved: "10"),
            // Partly filled: 2 of 3 left, and its reservation would buy more.
            Self.openBuy("AAPL", quantity: "3", filled: "1", reserved: "500"),
        ]
        let counted = try PendingBuys.counted(buys, holdings: holdings, cash: cash, prices: prices)
        #expect(counted.holdings.first { $0.symbol == "AAPL" }?.quantity == (try Quantity(parsing: "12.05")))
        #expect(counted.holdings.first { $0.symbol == "AAPL" }?.availableQuantity == 10)
        #expect(counted.holdings.first { $0.symbol == "MSFT" }?.quantity == 5)
        #expect(counted.holdings.first { $0.symbol == "MSFT" }?.availableQuantity == .zero)
        // 10000 − 5 × 400 − 2.05 × 200
        #expect(counted.cash == (try Cash(parsing: "7590")))
        // A stop buy above today's price buys only if the price rises to it: the cash it holds, no shares.
        var stop = Self.openBuy("MSFT", quantity: "3", reserved: "3150", type: .stop)
        stop = OrderState(
            id: stop.id, accountID: stop.accountID, userID: stop.userID, clientOrderID: nil, symbol: "MSFT", side: .buy, type: .stop,
            timeInForce: .goodTillCanceled, quantity: 3, notional: nil, limitPrice: nil, stopPrice: try Price(parsing: "1000"), status: .accepted,
            filledQuantity: .zero, averageFillPrice: nil, reservedCash: stop.reservedCash, reservedQuantity: .zero, rejectReason: nil, createdAt: Self.now,
            updatedAt: Self.now)
        let waiting = try PendingBuys.counted([stop], holdings: holdings, cash: cash, prices: prices)
        #expect(waiting.holdings == holdings)
        #expect(waiting.cash == cash)
        // A symbol without a price counts as the cash it holds.
        let unpriced = try PendingBuys.counted([Self.openBuy("VTI", quantity: "1", reserved: "300")], holdings: holdings, cash: cash, prices: prices)
        #expect(unpriced.holdings == holdings)
        #expect(unpriced.cash == cash)
    }

    static func openSell(_ symbol: String, quantity: Quantity, type: OrderType, limit: String? = nil, stop: String? = nil) -> OrderState {
        OrderState(
            id: OrderID(), accountID: AccountID(), userID: UserID(), clientOrderID: nil, symbol: symbol, side: .sell, type: type, timeInForce: .goodTillCanceled,
            quantity: quantity, notional: nil, limitPrice: limit.map { try! Price(parsing: $0) }, stopPrice: stop.map { try! Price(parsing: $0) },
            status: .accepted, filledQuantity: .zero, averageFillPrice: nil, reservedCash: .zero, reservedQuantity: quantity,
            rejectReason: nil, createdAt: now, updatedAt: now)
    }

    @Test("shares a marketable open sell holds count as the cash their sale brings: the plan does not sell them a second time; a sell that waits keeps its shares")
    func openSellsAreOnTheirWayOut() throws {
        let prices = Self.quotes(["X": "10", "Y": "10"])
        // 100 X, 50 of them held by an open sell; $1,000 in cash, all of it free.
        let holdings = [Self.holding("X", 100, reserved: 50)]
        let cash = try Cash(parsing: "1000")
        let allocation = try Self.allocation([("X", 25), ("Y", 75)])
        for sell in [Self.openSell("X", quantity: 50, type: .market), Self.openSell("X", quantity: 50, type: .limit, limit: "9.50"),
                     Self.openSell("X", quantity: 50, type: .stop, stop: "10.20")] {
            let selling = try PendingSells.counted([sell], holdings: holdings, cash: cash, prices: prices)
            #expect(selling.holdings.first?.quantity == 50, "\(sell.type)")
            #expect(selling.holdings.first?.availableQuantity == 50)
            #expect(selling.cash == (try Cash(parsing: "1500")), "the total stays $2,000")
            let plan = try RebalancePlanner.plan(
                holdings: selling.holdings, quotes: prices, cash: selling.cash, availableCash: cash, allocation: allocation, options: RebalanceOptions())
            // X's 25 % of $2,000 is the $500 that stays once the open sell fills: nothing more to sell.
            #expect(plan.sells.isEmpty, "\(plan.sells)")
            #expect(plan.buys.map(\.symbol) == ["Y"])
            #expect(plan.buys.first.map { $0.quantity <= 100 } == true, "only the free $1,000 is spent: \(plan.buys)")
        }
        // A limit far above the market, or a stop below it, waits: its shares stay held (and reserved).
        for waiting in [Self.openSell("X", quantity: 50, type: .limit, limit: "99"), Self.openSell("X", quantity: 50, type: .stop, stop: "8")] {
            let kept = try PendingSells.counted([waiting], holdings: holdings, cash: cash, prices: prices)
            #expect(kept.holdings == holdings && kept.cash == cash, "\(waiting.type)")
        }
        // A symbol without a price keeps its shares; buys are not sells.
        let unpriced = try PendingSells.counted([Self.openSell("Z", quantity: 4, type: .market)], holdings: [Self.holding("Z", 10, reserved: 4)], cash: cash, prices: prices)
        #expect(unpriced.holdings == [Self.holding("Z", 10, reserved: 4)] && unpriced.cash == cash)
        let buying = try PendingSells.counted([Self.openBuy("X", quantity: "5", reserved: "60")], holdings: holdings, cash: cash, prices: prices)
        #expect(buying.holdings == holdings && buying.cash == cash)
    }

    @Test("open buys counted as shares keep the plan's cash in whole cents and its total the account's: no fraction of a cent appears")
    func openBuysKeepCashInCents() throws {
        // $10 held by a limit buy far below a price of 195.21 is 0.051226883 of a share, worth 10.0000... and a little.
        let prices = Self.quotes(["AAPL": "195.21", "MSFT": "3.33"])
        let cash = try Cash(parsing: "100000")
        for (buys, holdings) in [
            ([Self.openBuy("AAPL", quantity: "10", reserved: "10")], [PricedHolding]()),
            ([Self.openBuy("AAPL", quantity: "10", reserved: "10"), Self.openBuy("AAPL", quantity: "0.7", reserved: "140.01", type: .market),
              Self.openBuy("MSFT", quantity: "0.333", reserved: "1.17", type: .market)], [Self.holding("MSFT", try Quantity(parsing: "0.5"))]),
        ] {
            let counted = try PendingBuys.counted(buys, holdings: holdings, cash: cash, prices: prices)
            #expect(counted.cash == (try counted.cash.rounded(places: Cash.centPlaces, .down)), "\(counted.cash)")
            func total(_ held: [PricedHolding], _ cash: Cash) throws -> Cash {
                try held.reduce(cash) { sum, holding in try sum + Money.value(quantity: holding.quantity, price: prices[holding.symbol]!.price) }
            }
            #expect(try total(counted.holdings, counted.cash) == total(holdings, cash))
        }
    }

    @Test("a plan does not take a limit buy far below the market for shares held")
    func farLimitBuyIsNotHeld() throws {
        let prices = Self.quotes(["AAPL": "200", "MSFT": "400"])
        let holdings = [Self.holding("AAPL", 100), Self.holding("MSFT", 50)]
        let cash = try Cash(parsing: "10")
        let buys = [Self.openBuy("AAPL", quantity: "1000", reserved: "10")]
        let counted = try PendingBuys.counted(buys, holdings: holdings, cash: cash, prices: prices)
        let plan = try RebalancePlanner.plan(
            holdings: counted.holdings, quotes: prices, cash: counted.cash, availableCash: .zero,
            allocation: try Self.allocation([("AAPL", 80), ("MSFT", 20)]), options: RebalanceOptions())
        // $40,010 in all: AAPL's 80 % is $32,008 and it holds $20,010 (the $10 limit counts as 0.05 of a share), so it buys.
        #expect(plan.sells.map(\.symbol) == ["MSFT"])
        #expect(plan.buys.map(\.symbol) == ["AAPL"])
        #expect(plan.buys.first.map { $0.quantity >= 55 } == true, "\(plan.buys)")
    }
}
