/// Why a rebalance cannot be planned or run.
public enum RebalanceError: Error, Equatable, Sendable {
    /// The account has no target allocation yet.
    case targetsNotSet
    /// No price at all (not even a stale one) for a symbol the plan must value.
    case noPrice(String)
    /// Another rebalance of the account is still running.
    case runInProgress
    case runNotFound
    /// Targets by asset class name a class the account holds nothing of, so its weight cannot be shared out.
    case nothingHeldInClass(String)
    /// A run was asked for, but the plan has no trades (the plan's reason).
    case noTrades(code: String, message: String)
    /// A run was asked for a plan that is no longer the one the caller previewed (the targets changed, or it costs more).
    case planChanged(field: String, message: String)
}

public enum RebalanceMode: String, Sendable, CaseIterable, Codable {
    /// Sell what is above its target, buy what is below.
    case full
    /// Invest the available cash where the drift is largest; never sell (no gains realized).
    case buyOnly = "buy_only"
    /// Sell what is above its target; keep the proceeds as cash.
    case sellOnly = "sell_only"
}

public struct RebalanceOptions: Equatable, Sendable {
    public var mode: RebalanceMode
    /// Cash that stays in the account whatever the targets say.
    public var cashReserve: Cash
    /// Trades worth less than this are dropped.
    public var minimumTrade: Cash
    /// Fractional shares (to 9 places) instead of whole ones.
    public var allowFractional: Bool
    /// What a market buy sets aside above its cost (0.05 is 5 %): the plan's buys fit the cash with it.
    public var marketBuyMargin: Ratio
    /// Symbols left as they are (a halted holding, one the owner means to keep): neither bought nor sold, and
    /// out of the sums. The rest of the account (cash and the other holdings) is rebalanced towards the other
    /// targets, scaled so that they, cash included, make 100 %.
    public var excluded: Set<String>

    public init(
        mode: RebalanceMode = .full, cashReserve: Cash = .zero, minimumTrade: Cash = .zero, allowFractional: Bool = false, marketBuyMargin: Ratio = .zero,
        excluded: Set<String> = []
    ) {
        self.mode = mode
        self.cashReserve = cashReserve
        self.minimumTrade = minimumTrade
        self.allowFractional = allowFractional
        self.marketBuyMargin = marketBuyMargin
        self.excluded = excluded
    }
}

/// A market order the plan asks for, priced at the quote.
public struct PlannedTrade: Equatable, Sendable {
    public var symbol: String
    public var side: OrderSide
    public var quantity: Quantity
    public var price: Price
    /// A buy's cost (rounded up to the cent) or a sale's proceeds (down), at `price`.
    public var estimatedAmount: Cash
    /// What placing a buy sets aside: its cost plus the market-buy margin. Zero for a sale.
    public var reservation: Cash
}

/// One symbol before and after the plan's trades.
public struct PlanLine: Equatable, Sendable {
    public var symbol: String
    public var price: Price
    public var stale: Bool
    public var quantity: Quantity
    public var value: Cash
    public var currentPercent: Ratio
    /// Nil for an unplanned holding (target 0).
    public var targetPercent: Ratio?
    public var trade: PlannedTrade?
    public var quantityAfter: Quantity
    public var valueAfter: Cash
    public var percentAfter: Ratio
    public var driftAfterPoints: Ratio
    public var outsideBandAfter: Bool
}

/// Why a plan has no trades.
public struct PlanReason: Equatable, Sendable {
    public var code: String
    public var message: String
}

/// The trades that bring an account towards its targets, and what it looks
/// like afterwards at the quotes the plan used.
public struct RebalancePlan: Equatable, Sendable {
    public var mode: RebalanceMode
    public var lines: [PlanLine]
    public var totalValue: Cash
    public var cashBefore: Cash
    public var availableCashBefore: Cash
    public var cashAfter: Cash
    public var cashPercentAfter: Ratio
    public var cashTargetPercent: Ratio
    /// Cash the plan leaves untouched: the larger of the reserve and the cash target.
    public var cashKept: Cash
    public var estimatedCost: Cash
    public var estimatedProceeds: Cash
    /// Cash the buys set aside when placed (cost plus margin); never more than the plan may spend.
    public var buyReservation: Cash
    /// Sells first, then buys, each in symbol order.
    public var trades: [PlannedTrade]
    /// Set when there are no trades.
    public var reason: PlanReason?
    /// Some price is a stale quote.
    public var stale: Bool
    /// Some trade was cut to the largest quantity one order may have (`OrderDraft.maximumQuantity`).
    public var limitedByOrderSize = false

    public var sells: [PlannedTrade] { trades.filter { $0.side == .sell } }
    public var buys: [PlannedTrade] { trades.filter { $0.side == .buy } }
}

/// Plans a rebalance as a pure function of holdings, quotes, cash and targets.
///
/// - Sells bring what is above its target down to the nearest whole share of
///   it (all of a holding without a target), never more than is held unreserved.
/// - Buys get the cash available after the sells, less what is kept (the
///   reserve or the cash target, whichever is larger), with the market-buy
///   margin on top of each buy's cost, so that the order path accepts them.
///   When it is not enough for every shortfall, the largest shortfalls are
///   filled first until all are equal ("water-filling"), which makes the
///   largest drift as small as the cash allows; whole shares are then topped
///   up where one more share brings a holding nearer its target and fits, and
///   a holding far below its target whose share does not fit gets it when
///   shares taken back from other buys make room and the largest drift shrinks.
/// - Trades below the minimum are dropped, and a dropped buy's cash is spread over the other
///   buys again; ties are broken by symbol.
public enum RebalancePlanner {
    struct Item {
        var symbol: String
        var price: Price
        var stale: Bool
        var quantity: Quantity
        var available: Quantity
        var value: Cash
        var target: Ratio?
        var targetValue: Cash
        var sell: Quantity = .zero
        var buy: Quantity = .zero

        /// How far below its target the holding is with the buy so far (negative above it).
        func gapAfterBuy() throws -> Cash {
            try targetValue - Money.value(quantity: try quantity + buy, price: price)
        }

        /// A whole share helps when the gap is more than half a share (cash has 4 places, prices 8).
        func oneShareHelps(_ gap: Cash) -> Bool {
            gap.units * 2 * 10_000 > price.units
        }
    }

    /// The reason of a plan that would trade but values a symbol by an outdated price.
    public static let outdatedPrice = "outdated_price"

    /// `outdated` names symbols whose price is from before the latest session
    /// (a halted or delisted symbol, a vendor that stopped updating it): a plan
    /// that would trade while valuing one of them trades nothing, and says why,
    /// rather than size orders by a price the market has moved on from.
    public static func plan(
        holdings: [PricedHolding], quotes: [String: PriceQuote], cash: Cash, availableCash: Cash, allocation: TargetAllocation, options: RebalanceOptions,
        outdated: Set<String> = []
    ) throws -> RebalancePlan {
        let plan = try plan(holdings: holdings, quotes: quotes, cash: cash, availableCash: availableCash, allocation: allocation, options: options, trades: true)
        let outdatedHere = plan.lines.map(\.symbol).filter(outdated.contains).sorted()
        guard !outdatedHere.isEmpty, !plan.trades.isEmpty else { return plan }
        var still = try Self.plan(holdings: holdings, quotes: quotes, cash: cash, availableCash: availableCash, allocation: allocation, options: options, trades: false)
        let names = UserText.list(outdatedHere)
        still.reason = PlanReason(
            code: outdatedPrice,
            message: "There is no current price for \(names): the last is from before the latest session (a halted or delisted symbol, or market data that stopped updating it), and a rebalance would trade on it. Preview again once it is priced, or leave it out to rebalance around it.")
        return still
    }

    private static func plan(
        holdings: [PricedHolding], quotes: [String: PriceQuote], cash: Cash, availableCash: Cash, allocation: TargetAllocation, options: RebalanceOptions,
        trades: Bool
    ) throws -> RebalancePlan {
        let rest = try restOfTargets(allocation, excluding: options.excluded)
        var items = try Self.items(holdings: holdings, quotes: quotes, cash: cash, allocation: allocation, excluding: options.excluded)
        var total = cash
        for item in items { total = try total + item.value }
        // Targets are shares of what is left once the excluded symbols' are taken out (100 % when none is).
        for index in items.indices {
            let percent = items[index].target ?? .zero
            items[index].targetValue = try Percent.share(of: total, percent, over: rest)
            if rest != Percent.hundred, let target = items[index].target { items[index].target = try Percent.rescaled(target, over: rest) }
        }
        let cashTarget = try Percent.share(of: total, allocation.cashPercent, over: rest)
        let cashTargetPercent = rest == Percent.hundred ? allocation.cashPercent : try Percent.rescaled(allocation.cashPercent, over: rest)
        let kept = Cash.max(options.cashReserve, cashTarget)

        var proceeds = Cash.zero, droppedSmall = false, limited = false
        if trades, options.mode != .buyOnly {
            for index in items.indices {
                let item = items[index]
                guard item.value > item.targetValue, item.available.isPositive else { continue }
                var quantity: Quantity
                if (item.target ?? .zero).isZero {
                    quantity = item.available
                } else {
                    let excess = try item.value - item.targetValue
                    quantity = try Quantity.quotient(excess, item.price, places: options.allowFractional ? QuantityScale.fractionDigits : 0, rounding: .halfEven)
                    // In whole shares, a fractional remainder of what is available stays.
                    quantity = Quantity.min(quantity, options.allowFractional ? item.available : try item.available.rounded(places: 0, .down))
                }
                if quantity > OrderDraft.maximumQuantity {
                    quantity = OrderDraft.maximumQuantity
                    limited = true
                }
                guard quantity.isPositive else { continue }
                let amount = try Money.proceeds(quantity: quantity, price: item.price)
                if amount < options.minimumTrade || amount.isZero {
                    droppedSmall = true
                    continue
                }
                items[index].sell = quantity
                proceeds = try proceeds + amount
            }
        }

        var budget = Cash.zero
        if trades, options.mode != .sellOnly {
            budget = try availableCash + (options.mode == .full ? proceeds : .zero) - kept
            if budget.isPositive {
                droppedSmall = try buy(into: &items, budget: budget, options: options) || droppedSmall
            }
        }
        // One order may not be larger than the order path accepts: a buy cut to it only leaves cash unspent.
        for index in items.indices where items[index].buy > OrderDraft.maximumQuantity {
            items[index].buy = OrderDraft.maximumQuantity
            limited = true
        }
        var plan = try assemble(
            items: items, cash: cash, availableCash: availableCash, total: total, kept: kept, budget: budget,
            band: allocation.band, cashTargetPercent: cashTargetPercent, options: options, droppedSmall: droppedSmall)
        plan.limitedByOrderSize = limited
        return plan
    }

    /// The percent the targets of the symbols not excluded make, cash included: what the plan counts as the whole.
    /// Excluding every symbol target is refused: the rest would have nothing but cash to aim at, and every other
    /// holding would be sold. (Whether each excluded symbol is held or targeted is the request's check,
    /// `RebalanceService.requireExcludable`: a run's later phases plan again after holdings changed.)
    static func restOfTargets(_ allocation: TargetAllocation, excluding excluded: Set<String>) throws -> Ratio {
        guard !excluded.isEmpty else { return Percent.hundred }
        var rest = Percent.hundred
        var excludedTargets = 0
        for weight in allocation.weights where excluded.contains(weight.symbol) {
            rest = try rest - weight.percent
            excludedTargets += 1
        }
        if excludedTargets > 0, excludedTargets == allocation.weights.count || !rest.isPositive {
            throw TradingError.invalid([.init(
                field: "excluded_symbols", code: "whole_allocation",
                message: "The excluded symbols are every target the allocation has: nothing but cash would be left to rebalance towards.")])
        }
        return rest
    }

    /// Every held symbol and every target but the excluded ones, in symbol order, valued at its quote.
    static func items(
        holdings: [PricedHolding], quotes: [String: PriceQuote], cash: Cash, allocation: TargetAllocation, excluding excluded: Set<String> = []
    ) throws -> [Item] {
        var held: [String: PricedHolding] = [:]
        held.reserveCapacity(holdings.count)
        for holding in holdings where holding.quantity.isPositive && !excluded.contains(holding.symbol) { held[holding.symbol] = holding }
        var symbols = Array(held.keys)
        for weight in allocation.weights where held[weight.symbol] == nil && !excluded.contains(weight.symbol) { symbols.append(weight.symbol) }
        symbols.sort()
        var items: [Item] = []
        items.reserveCapacity(symbols.count)
        for symbol in symbols {
            guard let quote = quotes[symbol] else { throw RebalanceError.noPrice(symbol) }
            let holding = held[symbol]
            let quantity = holding?.quantity ?? .zero
            items.append(Item(
                symbol: symbol, price: quote.price, stale: quote.isStale, quantity: quantity, available: holding?.availableQuantity ?? .zero,
                value: try Money.value(quantity: quantity, price: quote.price), target: allocation.percent(of: symbol), targetValue: .zero))
        }
        return items
    }

    /// Spreads `budget` over the shortfalls; true when a buy was dropped as too small. A buy below the minimum
    /// trade is not placed, and its cash is spread again in another pass over the gaps the kept buys leave: a
    /// kept buy only ever grows (so it stays above the minimum), and what was too small may come back larger.
    /// When every buy of a pass is too small, the smaller half of them are left out for good, so the others'
    /// share can grow to the minimum. A few passes at most (a plan of thousands of tiny buys): what is still too
    /// small after them is dropped and its cash left.
    static func buy(into items: inout [Item], budget: Cash, options: RebalanceOptions) throws -> Bool {
        let before = items.map { (quantity: $0.quantity, value: $0.value) }
        var kept = [Quantity](repeating: .zero, count: items.count)
        var leftOut = Set<Int>()
        var droppedAny = false
        for _ in 1...maximumBuyPasses {
            // Each order's reservation is rounded up on its own: what is left is the budget less the kept orders'.
            var left = budget
            for index in items.indices where kept[index].isPositive {
                left = try left - reservation(kept[index], items[index].price, options)
                // A pass sees the kept buys as held: it spreads what is left over the gaps they leave.
                items[index].quantity = try before[index].quantity + kept[index]
                items[index].value = try Money.value(quantity: items[index].quantity, price: items[index].price)
            }
            for index in items.indices { items[index].buy = .zero }
            guard left.isPositive else { break }
            let dropped = try buy(into: &items, budget: left, options: options, leavingOut: leftOut, adding: kept)
            var grew = false
            for index in items.indices where items[index].buy.isPositive && !dropped.contains(index) {
                kept[index] = try kept[index] + items[index].buy
                grew = true
            }
            guard !dropped.isEmpty else { break }
            droppedAny = true
            // A buy that got the whole of its gap and is still too small never will be: it goes for good, and its
            // cash to the others, rather than come back to take a share of every pass.
            for index in dropped {
                let gap = try items[index].gapAfterBuy()
                if options.allowFractional ? gap <= cent : !items[index].oneShareHelps(gap) { leftOut.insert(index) }
            }
            if !grew {
                // All too small: the smaller half go (by amount, then symbol), and the rest share the cash next time.
                let ranked = try dropped.map { ($0, try Money.cost(quantity: items[$0].buy + kept[$0], price: items[$0].price)) }
                    .sorted { $0.1 == $1.1 ? items[$0.0].symbol < items[$1.0].symbol : $0.1 < $1.1 }
                leftOut.formUnion(ranked.prefix((ranked.count + 1) / 2).map(\.0))
            }
        }
        for index in items.indices {
            items[index].quantity = before[index].quantity
            items[index].value = before[index].value
            items[index].buy = kept[index]
        }
        return droppedAny
    }

    static let maximumBuyPasses = 12

    /// One spreading of `budget` over the shortfalls but those of `leavingOut`; the indices of the buys it
    /// found below the minimum trade (left in `items`: the caller spreads again without them).
    /// `adding`: what earlier passes kept of each buy; a buy is too small when it and that are below the minimum.
    private static func buy(into items: inout [Item], budget: Cash, options: RebalanceOptions, leavingOut: Set<Int>, adding kept: [Quantity]) throws -> [Int] {
        let places = options.allowFractional ? QuantityScale.fractionDigits : 0
        // Shortfalls of what is below its target and not being sold, largest first.
        var short: [(index: Int, amount: Cash)] = []
        for index in items.indices where items[index].sell.isZero && (items[index].target ?? .zero).isPositive && !leavingOut.contains(index) {
            let item = items[index]
            if item.targetValue > item.value { short.append((index, try item.targetValue - item.value)) }
        }
        guard !short.isEmpty else { return [] }
        short.sort { a, b in a.amount == b.amount ? items[a.index].symbol < items[b.index].symbol : a.amount > b.amount }

        // The budget at quote prices: what is left once every buy's margin is set aside.
        let onePlusMargin = try Ratio(units: Int128(Ratio.one) + options.marketBuyMargin.units)
        let atPrice = try budget.scaled(by: Ratio(uncheckedUnits: Int128(Ratio.one)), over: onePlusMargin, places: Cash.centPlaces, rounding: .down)
        // Water level: every shortfall above it is cut down to it.
        var level = Cash.zero
        var sum = Cash.zero
        for (rank, entry) in short.enumerated() {
            sum = try sum + entry.amount
            let next = rank + 1 < short.count ? short[rank + 1].amount : .zero
            guard sum > atPrice else { continue }
            let candidate = try Cash.quotient(try sum - atPrice, Quantity(rank + 1), places: Cash.centPlaces, rounding: .up)
            if candidate >= next {
                level = candidate
                break
            }
        }

        var left = budget
        for entry in short {
            let item = items[entry.index]
            guard entry.amount > level else { continue }
            var quantity = try Quantity.quotient(try entry.amount - level, item.price, places: places, rounding: .down)
            // Each reservation is rounded up to the cent on its own: the sum may not pass the budget.
            if try reservation(quantity, item.price, options) > left {
                let room = try left - cent
                let perShare = try Cash.product(item.price, onePlusMargin, rounding: .up)
                quantity = room.isPositive ? try Quantity.quotient(room, perShare, places: places, rounding: .down) : .zero
            }
            guard quantity.isPositive else { continue }
            items[entry.index].buy = quantity
            left = try left - reservation(quantity, item.price, options)
        }

        try topUp(&items, short: short, left: &left, options: options, onePlusMargin: onePlusMargin)
        // Whole shares: a holding far below its target whose share did not fit may get it by taking shares back elsewhere.
        if !options.allowFractional {
            var rounds = 0
            while rounds < short.count, try makeRoom(&items, short: short, left: &left, options: options, kept: kept) {
                rounds += 1
                try topUp(&items, short: short, left: &left, options: options, onePlusMargin: onePlusMargin)
            }
        }

        var dropped: [Int] = []
        for entry in short where items[entry.index].buy.isPositive {
            if try Money.cost(quantity: items[entry.index].buy + kept[entry.index], price: items[entry.index].price) < options.minimumTrade {
                dropped.append(entry.index)
            }
        }
        return dropped
    }

    /// What the rounding left: one more whole share where it brings a holding nearer its target and the
    /// cash allows it; in fractional shares, the rest of the gap that fits.
    static func topUp(_ items: inout [Item], short: [(index: Int, amount: Cash)], left: inout Cash, options: RebalanceOptions, onePlusMargin: Ratio) throws {
        let places = options.allowFractional ? QuantityScale.fractionDigits : 0
        var added = true, passes = 0
        while added, passes < 100, left.isPositive {
            added = false
            passes += 1
            var remaining: [(index: Int, gap: Cash)] = []
            for entry in short {
                let item = items[entry.index]
                let gap = try item.gapAfterBuy()
                let helps = options.allowFractional ? gap > cent : item.oneShareHelps(gap)
                if helps { remaining.append((entry.index, gap)) }
            }
            remaining.sort { a, b in a.gap == b.gap ? items[a.index].symbol < items[b.index].symbol : a.gap > b.gap }
            for entry in remaining {
                let item = items[entry.index]
                var more = Quantity(1)
                if options.allowFractional {
                    let room = try left - cent
                    guard room.isPositive else { break }
                    let perShare = try Cash.product(item.price, onePlusMargin, rounding: .up)
                    more = Quantity.min(
                        try Quantity.quotient(entry.gap, item.price, places: places, rounding: .down),
                        try Quantity.quotient(room, perShare, places: places, rounding: .down))
                    guard more.isPositive else { continue }
                }
                let quantity = try item.buy + more
                let extra = try reservation(quantity, item.price, options) - reservation(item.buy, item.price, options)
                guard extra <= left else { continue }
                items[entry.index].buy = quantity
                left = try left - extra
                added = !options.allowFractional
            }
        }
    }

    /// Whole shares: the holding furthest below its target, when one more share of it would help but does not fit
    /// what is left, gets it if taking shares back from other buys (each time from the one left nearest its target
    /// without it) frees enough, and the largest drift among the holdings bought then gets smaller. The top-up alone
    /// can leave one holding 30 points short beside another 8 points over (a $442 share, $420 left). True when it did.
    /// `kept`: what earlier passes bought of each item (`buy`), which the minimum trade counts with the trial's buy.
    static func makeRoom(
        _ items: inout [Item], short: [(index: Int, amount: Cash)], left: inout Cash, options: RebalanceOptions, kept: [Quantity] = []
    ) throws -> Bool {
        // Each holding's gap with its buy so far, read once. The trial below changes a few buys, so it keeps the buys
        // in a list of their own rather than a copy of every item (copying ten thousand items, and looking each
        // one's gap up again for every share taken back, was most of a large plan's time).
        var gaps: [Cash] = []
        gaps.reserveCapacity(short.count)
        var neediest: (position: Int, gap: Cash)?
        for (position, entry) in short.enumerated() {
            let item = items[entry.index], itemGap = try item.gapAfterBuy()
            gaps.append(itemGap)
            guard item.oneShareHelps(itemGap) else { continue }
            if neediest == nil || itemGap > neediest!.gap { neediest = (position, itemGap) }
        }
        guard let neediest else { return false }
        let needy = items[short[neediest.position].index]
        let one = try reservation(try needy.buy + Quantity(1), needy.price, options) - reservation(needy.buy, needy.price, options)
        guard one > left else { return false }  // it fits: the top-up buys it

        // The trial's buys, and how far each holding would be from its target with one share fewer.
        var buys = short.map { items[$0.index].buy }
        var changed: [Int] = []  // positions in `short` whose buy the trial changed
        func withoutOne(_ position: Int, gap: Cash) throws -> Cash {
            try gap + Money.value(quantity: Quantity(1), price: items[short[position].index].price)
        }
        var offers: [Cash] = []
        offers.reserveCapacity(short.count)
        for position in short.indices { offers.append(try withoutOne(position, gap: gaps[position]).magnitude) }
        var trialLeft = left
        while one > trialLeft {
            // The giver: the holding left nearest its target without one of its shares (the first such on a tie).
            var giver: Int?
            for position in short.indices where position != neediest.position && buys[position].isPositive {
                if giver == nil || offers[position] < offers[giver!] { giver = position }
            }
            // Nothing to take back without leaving that holding as far off as the one it would serve.
            guard let giver, offers[giver] < neediest.gap else { return false }
            var item = items[short[giver].index]
            let fewer = try buys[giver] - Quantity(1)
            trialLeft = try trialLeft + reservation(buys[giver], item.price, options) - reservation(fewer, item.price, options)
            if buys[giver] == item.buy { changed.append(giver) }
            buys[giver] = fewer
            item.buy = fewer
            offers[giver] = try withoutOne(giver, gap: try item.gapAfterBuy()).magnitude
        }
        buys[neediest.position] = try needy.buy + Quantity(1)
        changed.append(neediest.position)
        trialLeft = try trialLeft - one

        // The largest drift among the holdings bought, as the plan will be: a buy below the minimum trade is dropped
        // afterwards, so it is counted as none. Only the changed holdings differ between now and the trial.
        func drift(_ position: Int, buy: Quantity, gap: Cash?) throws -> Cash {
            var item = items[short[position].index]
            item.buy = buy
            let earlier = kept.isEmpty ? Quantity.zero : kept[short[position].index]
            if buy.isPositive, options.minimumTrade.isPositive, try Money.cost(quantity: buy + earlier, price: item.price) < options.minimumTrade {
                item.buy = .zero
            } else if let gap {
                return gap.magnitude
            }
            return try item.gapAfterBuy().magnitude
        }
        var largestNow = Cash.zero, largestUnchanged = Cash.zero
        var isChanged = [Bool](repeating: false, count: short.count)
        for position in changed { isChanged[position] = true }
        for position in short.indices {
            let now = try drift(position, buy: items[short[position].index].buy, gap: gaps[position])
            largestNow = Cash.max(largestNow, now)
            if !isChanged[position] { largestUnchanged = Cash.max(largestUnchanged, now) }
        }
        var largestTrial = largestUnchanged
        for position in changed { largestTrial = Cash.max(largestTrial, try drift(position, buy: buys[position], gap: nil)) }
        guard largestTrial < largestNow else { return false }
        for position in changed { items[short[position].index].buy = buys[position] }
        left = trialLeft
        return true
    }

    static let cent = Cash(uncheckedUnits: 100)

    static func reservation(_ quantity: Quantity, _ price: Price, _ options: RebalanceOptions) throws -> Cash {
        guard quantity.isPositive else { return .zero }
        return try TradingRules.buyReservation(OrderDraft(symbol: "", side: .buy, type: .market, quantity: quantity), price: price, margin: options.marketBuyMargin)
    }

    static func assemble(
        items: [Item], cash: Cash, availableCash: Cash, total: Cash, kept: Cash, budget: Cash, band: DriftBand, cashTargetPercent: Ratio,
        options: RebalanceOptions, droppedSmall: Bool
    ) throws -> RebalancePlan {
        var sells: [PlannedTrade] = [], buys: [PlannedTrade] = []
        var cost = Cash.zero, proceeds = Cash.zero, reserved = Cash.zero
        var after: [(quantity: Quantity, value: Cash, trade: PlannedTrade?)] = []
        after.reserveCapacity(items.count)
        var cashAfter = cash
        for item in items {
            var trade: PlannedTrade?
            var quantity = item.quantity
            if item.sell.isPositive {
                let amount = try Money.proceeds(quantity: item.sell, price: item.price)
                trade = PlannedTrade(symbol: item.symbol, side: .sell, quantity: item.sell, price: item.price, estimatedAmount: amount, reservation: .zero)
                sells.append(trade!)
                proceeds = try proceeds + amount
                quantity = try quantity - item.sell
            } else if item.buy.isPositive {
                let amount = try Money.cost(quantity: item.buy, price: item.price)
                let reservation = try reservation(item.buy, item.price, options)
                trade = PlannedTrade(symbol: item.symbol, side: .buy, quantity: item.buy, price: item.price, estimatedAmount: amount, reservation: reservation)
                buys.append(trade!)
                cost = try cost + amount
                reserved = try reserved + reservation
                quantity = try quantity + item.buy
            }
            after.append((quantity, try Money.value(quantity: quantity, price: item.price), trade))
        }
        cashAfter = try cash + proceeds - cost
        var totalAfter = cashAfter
        for entry in after { totalAfter = try totalAfter + entry.value }

        var lines: [PlanLine] = []
        lines.reserveCapacity(items.count)
        for (item, entry) in zip(items, after) {
            let target = item.target ?? .zero
            let percentAfter = try Percent.of(entry.value, in: totalAfter)
            lines.append(PlanLine(
                symbol: item.symbol, price: item.price, stale: item.stale, quantity: item.quantity, value: item.value,
                currentPercent: try Percent.of(item.value, in: total), targetPercent: item.target, trade: entry.trade,
                quantityAfter: entry.quantity, valueAfter: entry.value, percentAfter: percentAfter, driftAfterPoints: try percentAfter - target,
                outsideBandAfter: band.isOutside(current: percentAfter, target: target)))
        }

        var reason: PlanReason?
        if sells.isEmpty && buys.isEmpty {
            if !total.isPositive {
                reason = PlanReason(code: "no_cash", message: "The account holds no cash and no shares yet: there is nothing to rebalance.")
            } else if droppedSmall {
                reason = PlanReason(code: "below_minimum_trade", message: "Every trade that would help is smaller than min_trade_amount.")
            } else if options.mode != .sellOnly && !budget.isPositive && items.contains(where: { item in
                // Something is short of its target by more than half a share (cash has 4 places, prices 8).
                (item.target ?? .zero).isPositive && ((try? item.targetValue - item.value)?.units ?? 0) * 2 * 10_000 > item.price.units
            }) {
                reason = PlanReason(code: "no_cash", message: "No cash is available above the reserve and the cash target to invest.")
            } else if options.mode == .sellOnly {
                reason = PlanReason(code: "nothing_to_sell", message: "No holding is above its target by a whole share or more.")
            } else {
                reason = PlanReason(code: "on_target", message: "Every holding is as near its target as \(options.allowFractional ? "the cash allows" : "whole shares and the cash allow"); no trade would reduce the drift.")
            }
        }
        return RebalancePlan(
            mode: options.mode, lines: lines, totalValue: total, cashBefore: cash, availableCashBefore: availableCash, cashAfter: cashAfter,
            cashPercentAfter: try Percent.of(cashAfter, in: totalAfter), cashTargetPercent: cashTargetPercent, cashKept: kept,
            estimatedCost: cost, estimatedProceeds: proceeds, buyReservation: reserved, trades: sells + buys, reason: reason,
            stale: items.contains { $0.stale })
    }
}
