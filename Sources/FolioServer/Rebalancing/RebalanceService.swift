import Crypto
import FolioDomain
import Foundation
import Logging
import SQLKit

/// Targets, drift, rebalance plans and the runs that carry them out.
///
/// A run places its sells through the ordinary order path; once every sell
/// has ended, the `advance_rebalance` job places the buys, planned again from
/// the cash the sells actually left when the quotes moved beyond the
/// tolerance or the cash differs from the plan; buys left short by the
/// market-buy margin are topped up in at most two more rounds. Every step
/// moves the run with a compare-and-set in the transaction that places its
/// orders, so a worker killed anywhere leaves the job to pick it up again.
struct RebalanceService: Sendable {
    let store: TradingStore
    let rebalances: RebalanceStore
    let ledger: Ledger
    let orders: OrderService
    let quotes: QuoteService
    let jobs: JobQueue
    let clock: AppClock
    let ids: IDSource
    let marketBuyMargin: Ratio
    let logger: Logger
    var pauses: PausePoints = .none

    var database: FolioDatabase { store.database }

    /// The first buys and at most two top-ups of what the margin left unspent.
    static let maximumBuyRounds = 3
    static let defaultPriceTolerance: Ratio = 2

    // MARK: - Targets

    func targets(of accountID: AccountID, owner: UserID, version: Int? = nil) async throws -> StoredTargets? {
        guard try await store.account(accountID, of: owner) != nil else { throw TradingError.accountNotFound }
        return try await rebalances.targets(of: accountID, version: version)
    }

    /// The asset classes the targets give a weight but the account holds
    /// nothing of: a rebalance cannot share such a weight out (it refuses with
    /// `nothing_held_in_class`), so the targets say so when they are set and shown.
    /// A symbol that cannot be classified right now counts as `other`, as in the drift.
    func unheldClasses(of allocation: TargetAllocation, account accountID: AccountID, owner: UserID) async throws -> [AssetClass] {
        let weighted = allocation.classWeights.filter { $0.percent.isPositive }.map(\.assetClass)
        guard !weighted.isEmpty, let (_, holdings) = try await held(accountID, owner: owner) else { return [] }
        let held = holdings.map(\.symbol)
        let classes = await quotes.assetClasses(for: held)
        let heldClasses = Set(held.map { classes[$0] ?? .other })
        return weighted.filter { !heldClasses.contains($0) }
    }

    func targetVersions(of accountID: AccountID, owner: UserID) async throws -> [RebalanceStore.VersionSummary] {
        guard try await store.account(accountID, of: owner) != nil else { throw TradingError.accountNotFound }
        return try await rebalances.targetVersions(of: accountID)
    }

    /// Adds a version of the account's targets, audited on the account's chain
    /// with a digest of the weights (the version's rows keep the weights themselves).
    /// `given` is the symbols as the request listed them, so that an unknown
    /// one is named by its place (`targets[2].symbol`); the allocation itself
    /// keeps them in symbol order.
    func setTargets(
        _ allocation: TargetAllocation, account accountID: AccountID, owner: UserID, given: [String] = [], context: AuditContext
    ) async throws -> StoredTargets {
        guard try await store.account(accountID, of: owner) != nil else { throw TradingError.accountNotFound }
        // Every symbol must be one the market knows; when that cannot be checked, nothing is saved.
        var unknown: [String] = []
        for (symbol, lookup) in await quotes.lookups(for: allocation.weights.map(\.symbol), staleWhileRevalidate: true) {
            switch lookup {
            case .found: break
            case .unknown: unknown.append(symbol)
            case .unavailable(let reason): throw quotes.unavailable(reason, .quote)
            }
        }
        if !unknown.isEmpty {
            let named = given.enumerated().compactMap { index, raw -> FieldIssue? in
                guard let symbol = OrderDraft.normalizedSymbol(raw), unknown.contains(symbol) else { return nil }
                return FieldIssue(field: "targets[\(index)].symbol", code: "unknown_symbol", message: TradingError.unknownSymbolsMessage([symbol]))
            }
            guard named.isEmpty else { throw TradingError.invalid(named) }
            throw TradingError.invalid(field: "targets", code: "unknown_symbol", message: TradingError.unknownSymbolsMessage(unknown.sorted()))
        }
        let now = ledger.now(), id = ids.uuid(), ledger = self.ledger, rebalances = self.rebalances
        return try await database.transaction { db in
            guard var open = try await ledger.open(account: accountID, owner: owner, on: db) else { throw TradingError.accountNotFound }
            let stored = try await rebalances.addTargets(allocation, account: open.books.account, by: owner, id: id, now: now, on: db)
            var posting = Posting()
            posting.events = [AuditNote(
                action: "targets.changed", actorID: owner, subjectType: "account", subjectID: accountID.description,
                details: [
                    "version": String(stored.version), "target_count": String(allocation.weights.count + allocation.classWeights.count),
                    "targets_digest": Self.digest(allocation), "cash_percent": allocation.cashPercent.description,
                    "drift_absolute_points": allocation.band.absolutePoints.description,
                    "drift_relative_percent": allocation.band.relativePercent.description,
                ])]
            open.books.record(posting)
            try await ledger.commit(open, context: context, on: db)
            return stored
        }
    }

    /// SHA-256 of the weights as `SYMBOL=percent` lines in symbol order.
    static func digest(_ allocation: TargetAllocation) -> String {
        let text = allocation.weights.map { "\($0.symbol)=\($0.percent)\n" }.joined()
            + allocation.classWeights.map { "class:\($0.assetClass.rawValue)=\($0.percent)\n" }.joined() + "CASH=\(allocation.cashPercent)\n"
        return AuditChain.hex(SHA256.hash(data: Data(text.utf8)))
    }

    // MARK: - Drift and plans

    /// The account and what it holds. A symbol sold down to nothing keeps its row at zero: it is not held, and
    /// needs no price (one delisted since would otherwise stop every plan of the account).
    private func held(_ accountID: AccountID, owner: UserID) async throws -> (account: AccountState, holdings: [HoldingState])? {
        guard let (account, holdings) = try await store.portfolio(of: accountID, owner: owner) else { return nil }
        return (account, holdings.filter { $0.quantity.isPositive })
    }

    func drift(of accountID: AccountID, owner: UserID) async throws -> (report: DriftReport, targets: StoredTargets) {
        guard let (account, holdings) = try await held(accountID, owner: owner) else { throw TradingError.accountNotFound }
        guard let targets = try await rebalances.targets(of: accountID) else { throw RebalanceError.targetsNotSet }
        let symbols = Set(holdings.map(\.symbol)).union(targets.allocation.weights.map(\.symbol))
        let prices = await quotes.quotes(for: symbols)
        // A symbol that cannot be classified right now shows as `other`.
        let classes = await quotes.assetClasses(for: symbols)
        let report = try DriftReport(
            holdings: holdings.map(PricedHolding.init), quotes: prices, cash: account.cash, allocation: targets.allocation, classes: classes)
        return (report, targets)
    }

    /// The daily drift digest: one notification per user whose accounts have
    /// lines outside their drift band, with those lines. A user already told
    /// on `day` is not told again (the job may run twice).
    static let digestSchedule = RecurringJob(
        name: "drift_digest", kind: .driftDigest, cadence: .weekdaysAt(hour: 16, minute: 20), payload: { .driftDigest(due: $0) })

    func sendDriftDigests(day: TradingDay, notifications: Notifications) async throws {
        let owners = Dictionary(grouping: try await rebalances.accountsWithTargets(), by: \.owner)
        for (owner, accounts) in owners.sorted(by: { $0.key.description < $1.key.description }) {
            var items: [[String: String]] = []
            for (account, _, name) in accounts {
                do {
                    let (report, _) = try await drift(of: account, owner: owner)
                    for line in report.lines + [report.cash] where line.outsideBand {
                        var item = [
                            "symbol": line.symbol ?? line.assetClass?.rawValue ?? "cash", "target": "\(line.targetPercent ?? .zero)%",
                            "actual": "\(line.currentPercent)%", "drift": "\(line.driftPoints.isPositive ? "+" : "")\(line.driftPoints) points",
                        ]
                        // With targets on more than one account, each line says whose it is (a symbol may be in both).
                        if accounts.count > 1 { item["account"] = name }
                        items.append(item)
                    }
                } catch {
                    logger.warning("drift for the digest failed", metadata: ["account_id": .string(account.description), "error": .string("\(error)")])
                }
            }
            guard !items.isEmpty else { continue }
            let dayStart = day.at(hour: 0, minute: 0), lines = items
            try await database.transaction { db in
                guard try await !notifications.store.exists(kind: .driftDigest, of: owner.uuid, since: dayStart, on: db) else { return }
                try await notifications.notify(owner.uuid, .driftDigest, MailVariables(["count": String(lines.count), "count_text": lines.count == 1 ? "1 holding is" : "\(lines.count) holdings are"], items: lines), on: db)
            }
        }
    }

    struct PlanRequest: Sendable {
        var accountID: AccountID?
        var options: RebalanceOptions
        var priceTolerancePercent: Ratio
    }

    struct Planned: Sendable {
        var account: AccountState
        var targets: StoredTargets
        /// The targets by symbol the plan used (class weights shared out).
        var resolved: TargetAllocation
        var plan: RebalancePlan
        var request: PlanRequest
        /// A run of this account still going: this plan cannot start until it ends.
        var activeRun: RebalanceRunID?
    }

    func plan(_ request: PlanRequest, owner: UserID, defaultAccount: AccountID?) async throws -> Planned {
        var accountID = request.accountID ?? defaultAccount
        if accountID == nil { accountID = try await store.defaultAccountID(of: owner) }
        guard let accountID, let (account, holdings) = try await held(accountID, owner: owner) else {
            throw request.accountID == nil ? TradingError.accountNotFound : TradingError.unknownAccount
        }
        guard let targets = try await rebalances.targets(of: accountID) else { throw RebalanceError.targetsNotSet }
        let openOrders = try await store.openOrders(of: accountID, on: store.database.sql)
        var options = request.options
        options.marketBuyMargin = marketBuyMargin
        let excluded = options.excluded
        try Self.requireExcludable(excluded, holdings: holdings, allocation: targets.allocation)
        // An excluded symbol needs no current price: it may be the halted one the owner rebalances around. Targets by
        // class share a class's weight by value, an excluded holding's too, so it is valued where a price is known.
        var prices = try await prices(for: Set(holdings.map(\.symbol)).union(targets.allocation.weights.map(\.symbol)).subtracting(excluded))
        if !targets.allocation.classWeights.isEmpty { prices = await pricedWhereKnown(excluded, prices) }
        prices = await withOpenOrders(openOrders, prices)
        let resolved = try await bySymbol(targets.allocation, holdings: holdings, prices: prices, excluded: excluded)
        // The owner's open orders count as the buy phase counts them, so the preview plans what the run will do.
        let counted = try Self.countingOpenOrders(openOrders, holdings: holdings, cash: account.cash, prices: prices)
        let plan = try RebalancePlanner.plan(
            holdings: counted.holdings, quotes: prices, cash: counted.cash, availableCash: account.availableCash,
            allocation: resolved, options: options, outdated: outdated(prices, holdings: holdings, allocation: resolved))
        let activeRun = try await rebalances.activeRun(of: accountID, on: store.database.sql)
        return Planned(account: account, targets: targets, resolved: resolved, plan: plan, request: request, activeRun: activeRun)
    }

    /// Each excluded symbol must be held or targeted: a mistyped one would exclude nothing. Checked on the request,
    /// not by the planner, which a run calls again after the holdings changed (an excluded holding sold meanwhile).
    static func requireExcludable(_ excluded: Set<String>, holdings: [HoldingState], allocation: TargetAllocation) throws {
        let unknown = excluded.filter { symbol in
            allocation.percent(of: symbol) == nil && !holdings.contains { $0.symbol == symbol && $0.quantity.isPositive }
        }.sorted()
        guard !unknown.isEmpty else { return }
        throw TradingError.invalid([.init(
            field: "excluded_symbols", code: "not_in_account",
            message: "\(UserText.list(unknown)) \(unknown.count == 1 ? "is" : "are") neither held in the account nor among its targets.")])
    }

    /// Holdings and cash as a plan counts them: shares marketable open sells hold as the cash they bring,
    /// then shares open buys will bring as held (`PendingSells`, `PendingBuys`).
    static func countingOpenOrders(
        _ openOrders: [OrderState], holdings: [HoldingState], cash: Cash, prices: [String: PriceQuote]
    ) throws -> (holdings: [PricedHolding], cash: Cash) {
        let selling = try PendingSells.counted(openOrders, holdings: holdings.map(PricedHolding.init), cash: cash, prices: prices)
        return try PendingBuys.counted(openOrders, holdings: selling.holdings, cash: selling.cash, prices: prices)
    }

    /// Targets by asset class shared out over the symbols held in each class,
    /// in proportion to their value now. A holding whose class cannot be learned
    /// right now stops the plan (it would otherwise count as `other` and be sold).
    /// An excluded holding takes its share of its class's weight (which the plan then leaves out, as an excluded
    /// symbol's own target) when its price and class are known; otherwise its class's others share all of it.
    func bySymbol(
        _ allocation: TargetAllocation, holdings: [HoldingState], prices: [String: PriceQuote], excluded: Set<String> = []
    ) async throws -> TargetAllocation {
        guard !allocation.classWeights.isEmpty else { return allocation }
        var values: [String: Cash] = [:]
        for holding in holdings where holding.quantity.isPositive {
            if let price = prices[holding.symbol]?.price { values[holding.symbol] = try Money.value(quantity: holding.quantity, price: price) }
        }
        let classes = await quotes.assetClasses(for: values.keys)
        if let unknown = values.keys.sorted().first(where: { classes[$0] == nil && !excluded.contains($0) }) {
            throw quotes.unavailable(.unreachable("the asset class of \(unknown) cannot be learned right now"), .search)
        }
        return try allocation.bySymbol(values: values.filter { classes[$0.key] != nil }, classes: classes)
    }

    /// A quote for every symbol (the last known, marked stale, when the source fails); an unknown symbol or no quote at all stops the plan.
    func prices(for symbols: some Sequence<String>) async throws -> [String: PriceQuote] {
        var found: [String: PriceQuote] = [:]
        // Fresh quotes, as the order path prices with: a plan at a stale price would not fit the reservations.
        for (symbol, lookup) in await quotes.lookups(for: symbols) {
            switch lookup {
            case .found(let quote): found[symbol] = quote
            case .unknown: throw RebalanceError.noPrice(symbol)
            case .unavailable(let reason): throw quotes.unavailable(reason, .quote)
            }
        }
        return found
    }

    /// The held or targeted symbols whose price is from before the latest session opened (a halted or delisted
    /// symbol, a vendor that stopped updating it): a plan sizes no trade by one. An open order's other symbol
    /// is not among them: its buy counts as the cash it holds, whatever the price.
    func outdated(_ prices: [String: PriceQuote], holdings: [HoldingState], allocation: TargetAllocation) -> Set<String> {
        let since = quotes.previousCloseTime()
        return Set(holdings.map(\.symbol)).union(allocation.weights.map(\.symbol)).filter { prices[$0].map { $0.asOf < since } ?? false }
    }

    /// `prices` with quotes for the open orders' other symbols, where they can be had: an open buy of a
    /// symbol without a quote now counts as the cash it holds (`PendingBuys`) rather than stop the plan.
    func withOpenOrders(_ orders: [OrderState], _ prices: [String: PriceQuote]) async -> [String: PriceQuote] {
        await pricedWhereKnown(Set(orders.map(\.symbol)), prices)
    }

    /// `prices` with quotes for `symbols` where they can be had (the last known, marked stale, when the source fails).
    func pricedWhereKnown(_ symbols: Set<String>, _ prices: [String: PriceQuote]) async -> [String: PriceQuote] {
        let missing = symbols.subtracting(prices.keys)
        guard !missing.isEmpty else { return prices }
        var all = prices
        for (symbol, lookup) in await quotes.lookups(for: missing) {
            if case .found(let quote) = lookup { all[symbol] = quote }
        }
        return all
    }

    // MARK: - Starting a run

    /// The first phase's orders, priced outside any transaction: the sells, or the buys when there are none.
    func placements(for planned: Planned) async throws -> [OrderService.PricedPlacement] {
        let plan = planned.plan
        // First: a run holding the cash makes this plan look as if there were nothing to buy with.
        if planned.activeRun != nil { throw RebalanceError.runInProgress }
        guard plan.reason == nil else { throw RebalanceError.noTrades(code: plan.reason!.code, message: plan.reason!.message) }
        let first = plan.sells.isEmpty ? plan.buys : plan.sells
        var priced: [OrderService.PricedPlacement] = []
        for trade in first {
            priced.append(try await orders.price(try placement(trade.symbol, trade.side, trade.quantity, account: planned.account.id, keeping: plan.cashKept)))
        }
        return priced
    }

    /// A market DAY order for a trade, checked as any order is. A buy must leave
    /// `keeping` (the plan's cash kept) available, checked again under the account's
    /// lock when it is placed: an order or withdrawal made since the plan cannot make the run eat into it.
    func placement(_ symbol: String, _ side: OrderSide, _ quantity: Quantity, account: AccountID, keeping: Cash) throws -> OrderService.Placement {
        let draft = OrderDraft(symbol: symbol, side: side, type: .market, timeInForce: .day, quantity: quantity)
        let issues = draft.validate()
        if !issues.isEmpty { throw TradingError.invalid(issues) }
        return OrderService.Placement(draft: draft, accountID: account, clientOrderID: nil, keepingCash: side == .buy ? keeping : .zero)
    }

    /// Creates the run and places its first orders in the caller's transaction, with the job that moves it on.
    func start(_ planned: Planned, placements: [OrderService.PricedPlacement], owner: UserID, context: AuditContext, on db: any SQLDatabase) async throws -> RebalanceRun {
        let accountID = planned.account.id
        // Under the account's lock, so two requests cannot both start a run.
        guard try await store.lockAccount(accountID, owner: owner, on: db) != nil else { throw TradingError.accountNotFound }
        if try await rebalances.activeRun(of: accountID, on: db) != nil { throw RebalanceError.runInProgress }
        let now = ledger.now()
        let buysFirst = planned.plan.sells.isEmpty
        let request = planned.request
        let run = RebalanceRun(
            id: ids.next(RebalanceRunID.self), userID: owner, accountID: accountID, mode: request.options.mode, status: buysFirst ? .buying : .selling,
            instructions: .init(
                targetsVersion: planned.targets.version, cashReserve: request.options.cashReserve, minimumTrade: request.options.minimumTrade,
                allowFractional: request.options.allowFractional, priceTolerancePercent: request.priceTolerancePercent,
                symbolTargets: planned.resolved.classWeights.isEmpty && !planned.targets.allocation.classWeights.isEmpty
                    ? planned.resolved.weights.map { .init(symbol: $0.symbol, percent: $0.percent) } : nil,
                excludedSymbols: request.options.excluded.isEmpty ? nil : request.options.excluded.sorted()),
            plannedTrades: planned.plan.trades.map(RebalanceRun.Trade.init), reasons: [], notes: [], buyRounds: buysFirst ? 1 : 0,
            createdAt: now, updatedAt: now, finishedAt: nil)
        do {
            try await rebalances.insert(run, on: db)
        } catch where DatabaseConstraint(error)?.kind == .unique {
            throw RebalanceError.runInProgress
        }
        let placed = try await place(placements, run: run, round: run.buyRounds, owner: owner, context: context, on: db)
        try await jobs.enqueue(.advanceRebalance(run.id), on: db)
        try await audit("rebalance.started", run: run, actor: owner, context: context, on: db, details: [
            "mode": run.mode.rawValue, "targets_version": String(planned.targets.version), "orders": String(placed),
            "planned_trades": String(planned.plan.trades.count), "estimated_cost": planned.plan.estimatedCost.description,
            "estimated_proceeds": planned.plan.estimatedProceeds.description,
        ])
        return run
    }

    /// Places priced orders for the run and links them to it; returns how many.
    private func place(
        _ placements: [OrderService.PricedPlacement], run: RebalanceRun, round: Int, owner: UserID, context: AuditContext, on db: any SQLDatabase
    ) async throws -> Int {
        var linked: [RunOrder] = []
        for priced in placements {
            let order = try await orders.place(priced, userID: owner, context: context, on: db)
            linked.append(RunOrder(orderID: order.id, phase: order.side, round: round))
        }
        try await rebalances.link(linked, to: run.id, on: db)
        return linked.count
    }

    // MARK: - Moving a run on

    /// How long after its job died a run is taken for orphaned (a slow last attempt may still be running).
    static let orphanGrace: TimeInterval = 300

    /// How long a run may wait for market data before it gives up.
    static let patienceForQuotes: TimeInterval = 24 * 3600

    /// The `advance_rebalance` job: waits while the current phase's orders are
    /// open, then places the buys (or the next round of them), or ends the run.
    /// A run never stays active without a job: when market data is missing it
    /// waits (for a day at most), and on the job's last attempt it ends as failed
    /// (or, when that attempt dies too, the worker's sweep ends it: `settleOrphanedRuns`).
    func advance(_ job: ClaimedJob) async throws -> JobOutcome {
        guard case .advanceRebalance(let runID) = job.payload, let run = try await rebalances.run(runID), !run.status.isFinished else { return .done }
        do {
            return try await advance(run)
        } catch let error as MarketDataUnavailable where clock.now().timeIntervalSince(run.createdAt) < Self.patienceForQuotes {
            logger.info("rebalance run waits for market data", metadata: ["run_id": .string(run.id.description), "error": .string("\(error.reason)")])
            return .later(clock.now().addingTimeInterval(60))
        } catch where job.attempts >= job.maxAttempts || error is MarketDataUnavailable || error is RebalanceError {
            var failed = run
            failed.reasons.append("The run stopped: \(Self.describe(error))")
            return try await finish(failed, from: run, orders: try await orders(of: run))
        }
    }

    /// Ends, as failed, each run whose job gave up without finishing it (the
    /// worker died during its last attempt, or the last attempt's own ending
    /// failed): nothing else would, and the run would hold its account
    /// against every later rebalance and against erasure.
    func settleOrphanedRuns() async throws {
        for run in try await rebalances.activeRuns() {
            let job = try await jobs.state(of: .advanceRebalance(run.id))
            // A job declared dead when its lease ran out may still have a worker finishing its last attempt: give it time.
            guard !job.live, let error = job.deadError, let since = job.deadSince, clock.now().timeIntervalSince(since) > Self.orphanGrace else { continue }
            var failed = run
            failed.reasons.append("The run stopped: its job gave up (\(error)).")
            _ = try await finish(failed, from: run, orders: try await orders(of: run))
        }
    }

    private func orders(of run: RebalanceRun) async throws -> [OrderState] {
        try await store.orders(try await rebalances.orders(of: run.id).map(\.orderID), on: database.sql)
    }

    private func advance(_ run: RebalanceRun) async throws -> JobOutcome {
        let linked = try await rebalances.orders(of: run.id)
        let placed = Dictionary(try await store.orders(linked.map(\.orderID), on: database.sql).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let round = run.status == .selling ? 0 : run.buyRounds
        let current = linked.filter { $0.round == round }.compactMap { placed[$0.orderID] }
        if current.contains(where: \.status.isOpen) { return .later(nextLook(at: run)) }

        var next = run
        next.reasons += current.compactMap(Self.shortfall)
        let all = Array(placed.values)
        switch run.status {
        case .selling:
            guard run.mode != .sellOnly else { return try await finish(next, from: run, orders: all) }
            if let stop = try await stopReason(run, current: current) {
                next.reasons.append(stop.reason)
                return try await finish(next, from: run, orders: all, stopped: stop.cause)
            }
            await pauses.reach(.rebalanceBeforeBuys)
            let sold = Set(linked.filter { $0.phase == .sell }.compactMap { placed[$0.orderID]?.symbol })
            return try await placeBuys(next, from: run, round: 1, orders: all, sold: sold)
        case .buying:
            // A round that filled whole may have left the margin's cash unspent: top it up.
            guard current.allSatisfy({ $0.status == .filled }), run.buyRounds < Self.maximumBuyRounds else {
                return try await finish(next, from: run, orders: all)
            }
            if let stop = try await stopReason(run, current: current) {
                next.reasons.append(stop.reason)
                return try await finish(next, from: run, orders: all, stopped: stop.cause)
            }
            let sold = Set(linked.filter { $0.phase == .sell }.compactMap { placed[$0.orderID]?.symbol })
            return try await placeBuys(next, from: run, round: run.buyRounds + 1, orders: all, sold: sold)
        case .done, .partiallyDone, .failed:
            return .done
        }
    }

    /// Why the run places nothing more, or nil to go on. Cancelling a run's
    /// order is how its owner stops it (an operator's cancel, for an erasure,
    /// too; not the broker ending a DAY order's rest at the close), and a run
    /// works towards the targets it started with: when they changed meanwhile,
    /// its buys would spend the cash on targets the owner no longer wants.
    private func stopReason(_ run: RebalanceRun, current: [OrderState]) async throws -> (cause: Stop, reason: String)? {
        if let canceled = current.first(where: Self.canceledOnPurpose) {
            return (.canceled, "The run stopped because its \(canceled.side.rawValue) \(canceled.symbol) was canceled: nothing more was placed.")
        }
        return try await retargeted(run, on: database.sql).map { (.targetsChanged, Self.retargetedReason($0)) }
    }

    /// Why a run was stopped before its end, as its `rebalance.finished` event says (`stopped`), for its notice.
    enum Stop: String {
        case canceled
        case targetsChanged = "targets_changed"
    }

    static func canceledOnPurpose(_ order: OrderState) -> Bool {
        order.status == .canceled && [OrderState.canceledByUser, OrderService.canceledByOperator].contains(order.rejectReason)
    }

    static func retargetedReason(_ version: Int) -> String {
        "The run stopped because the targets changed (to version \(version)) while it was under way: nothing more was placed. Preview a run for the new targets."
    }

    /// The newest targets' version when what the run's trades aim at (the weights and the cash's) differs from
    /// the targets it started with; nil otherwise: the same weights saved again, or another drift band, stop nothing.
    private func retargeted(_ run: RebalanceRun, on db: any SQLDatabase) async throws -> Int? {
        guard let latest = try await rebalances.targets(of: run.accountID, on: db), latest.version != run.instructions.targetsVersion else { return nil }
        guard let started = try await rebalances.targets(of: run.accountID, version: run.instructions.targetsVersion, on: db) else { return latest.version }
        return Self.digest(latest.allocation) == Self.digest(started.allocation) ? nil : latest.version
    }

    /// When to look again at orders still open: soon at first, then less and less often.
    func nextLook(at run: RebalanceRun) -> Date {
        let now = clock.now()
        let age = now.timeIntervalSince(run.createdAt)
        let wait: TimeInterval = age < 10 ? 0.5 : age < 120 ? 2 : min(60, age / 10)
        return now.addingTimeInterval(wait)
    }

    /// Why an order of the run did not do all it was meant to; nil when it filled whole.
    static func shortfall(_ order: OrderState) -> String? {
        let what = "\(order.side.rawValue) \(order.quantity?.description ?? "?") \(order.symbol)"
        switch order.status {
        case .filled: return nil
        case .rejected: return "\(what) was rejected: \(order.rejectReason ?? "no reason given")."
        case .canceled, .expired:
            let filled = order.filledQuantity.isPositive ? " after \(order.filledQuantity) filled" : ""
            return "\(what) was \(order.status.rawValue)\(filled)\(order.rejectReason.map { ": \($0)" } ?? "")."
        default: return "\(what) ended \(order.status.rawValue)."
        }
    }

    /// Plans the buys from the cash and holdings the account has now and
    /// places them as round `round`; ends the run when there is nothing to buy.
    /// Nothing this run sold is bought back. The first round keeps the plan's
    /// quantities while every quote is within the tolerance and the cash
    /// covers them, each capped at what the account is short now (so a
    /// purchase made meanwhile is not bought twice); otherwise, and in later
    /// rounds, the fresh plan's. A placement refused for want of buying power
    /// (a quote rose between planning and pricing) is planned once more.
    private func placeBuys(_ next: RebalanceRun, from run: RebalanceRun, round: Int, orders placedOrders: [OrderState], sold: Set<String>) async throws -> JobOutcome {
        var next = next
        var refusal: TradingError?
        for attempt in 0..<2 {
            guard let (account, holdings) = try await held(run.accountID, owner: run.userID),
                  let targets = try await rebalances.targets(of: run.accountID, version: run.instructions.targetsVersion)
            else {
                next.reasons.append("The account or its targets no longer exist.")
                return try await finish(next, from: run, orders: placedOrders)
            }
            let instructions = run.instructions
            let options = RebalanceOptions(
                mode: .buyOnly, cashReserve: instructions.cashReserve, minimumTrade: instructions.minimumTrade,
                allowFractional: instructions.allowFractional, marketBuyMargin: marketBuyMargin, excluded: Set(instructions.excludedSymbols ?? []))
            // Targets by class are the ones the plan shared out, so the buys aim where the sells did.
            let allocation = try instructions.symbolTargets.map { stored in
                try TargetAllocation(
                    weights: stored.map { TargetWeight(symbol: $0.symbol, percent: $0.percent) }, cashPercent: targets.allocation.cashPercent,
                    band: targets.allocation.band)
            } ?? targets.allocation
            // Shares on their way (the owner's own open buys) count as far as their reserved cash buys them,
            // so the run neither buys them a second time nor takes a limit far below the market for shares held;
            // shares a marketable open sell holds count as the cash they bring.
            let openOrders = try await store.openOrders(of: run.accountID, on: store.database.sql)
            let prices = await withOpenOrders(
                openOrders, try await prices(for: Set(holdings.map(\.symbol)).union(allocation.weights.map(\.symbol)).subtracting(options.excluded)))
            let counted = try Self.countingOpenOrders(openOrders, holdings: holdings, cash: account.cash, prices: prices)
            let fresh = try RebalancePlanner.plan(
                holdings: counted.holdings, quotes: prices, cash: counted.cash, availableCash: account.availableCash,
                allocation: allocation, options: options,
                outdated: outdated(prices, holdings: holdings, allocation: allocation))
            // A symbol stopped trading while the sells waited (for the open, say): the buys are not sized by its old price.
            if let reason = fresh.reason, reason.code == RebalancePlanner.outdatedPrice {
                next.reasons.append("The buys were not placed: \(reason.message)")
                return try await finish(next, from: run, orders: placedOrders)
            }
            let short = Dictionary(fresh.buys.map { ($0.symbol, $0.quantity) }, uniquingKeysWith: { a, _ in a })
            var buys = fresh.buys.filter { !sold.contains($0.symbol) }.map { ($0.symbol, $0.quantity) }
            if round == 1, attempt == 0 {
                let planned = run.plannedTrades.filter { $0.side == .buy }
                let budget = try account.availableCash - fresh.cashKept
                if try !planned.isEmpty && Self.fits(planned, prices: prices, tolerance: instructions.priceTolerancePercent, budget: budget, margin: marketBuyMargin) {
                    buys = planned.compactMap { trade in
                        let quantity = Quantity.min(trade.quantity, short[trade.symbol] ?? .zero)
                        return quantity.isPositive ? (trade.symbol, quantity) : nil
                    }
                } else if !planned.isEmpty || !buys.isEmpty {
                    next.notes.append(
                        "The buys were planned again from the cash the sales left and the current quotes (a quote moved more than \(instructions.priceTolerancePercent) % or the cash differs from the plan).")
                }
            }
            guard !buys.isEmpty else {
                // The plan promised buys and none is placed: the run says so rather than end as if all went to plan.
                if round == 1, run.plannedTrades.contains(where: { $0.side == .buy }) {
                    next.notes.append(
                        "None of the planned buys was placed: planned again from the account as it is now, it needs none\(fresh.reason.map { " (\($0.message))" } ?? "").")
                }
                return try await finish(next, from: run, orders: placedOrders)
            }

            var priced: [OrderService.PricedPlacement] = []
            for (symbol, quantity) in buys { priced.append(try await orders.price(try placement(symbol, .buy, quantity, account: run.accountID, keeping: fresh.cashKept))) }
            var ready = next
            ready.status = .buying
            ready.buyRounds = round
            let now = ledger.now(), rebalances = self.rebalances, moving = ready, placements = priced, store = self.store
            enum Placed { case placed, movedByAnother, retargeted(Int) }
            do {
                let placed = try await database.transaction { db -> Placed in
                    // Under the account's lock, which saving targets takes too: targets changed since the look above
                    // (while the buys were priced) stop the run here, not after it has spent the cash on the old ones.
                    _ = try await store.lockAccount(run.accountID, owner: nil, on: db)
                    if let version = try await retargeted(run, on: db) { return .retargeted(version) }
                    guard try await rebalances.advance(moving, from: run.status, rounds: run.buyRounds, now: now, on: db) else { return .movedByAnother }
                    let count = try await place(placements, run: moving, round: round, owner: run.userID, context: .none, on: db)
                    try await audit("rebalance.buying", run: moving, actor: nil, context: .none, on: db, details: ["round": String(round), "orders": String(count)])
                    return .placed
                }
                switch placed {
                case .placed: return .later(nextLook(at: run))
                // Another worker moved the run first (this one's lease ran out): look again.
                case .movedByAnother: return .later(clock.now().addingTimeInterval(0.5))
                case .retargeted(let version):
                    next.reasons.append(Self.retargetedReason(version))
                    return try await finish(next, from: run, orders: placedOrders, stopped: .targetsChanged)
                }
            } catch let error as TradingError {
                // A stale price (a quote from before the close: a halted symbol, most likely) ends the run with that
                // reason (`describe`): waiting for a price that may not come would hold the account's run a day.
                refusal = error
                if case .insufficientBuyingPower = error { continue }
                break
            }
        }
        // The account changed under the run (another order took the cash, say): end it, saying why.
        next.reasons.append("The buys could not be placed: \(Self.describe(refusal ?? .insufficientBuyingPower(needed: .zero, available: .zero)))")
        return try await finish(next, from: run, orders: placedOrders)
    }

    /// True when the planned buys are still what the plan meant: every quote
    /// within the tolerance of the plan's price, and their reservations within the cash.
    static func fits(_ planned: [RebalanceRun.Trade], prices: [String: PriceQuote], tolerance: Ratio, budget: Cash, margin: Ratio) throws -> Bool {
        var reserved = Cash.zero
        for trade in planned {
            guard let now = prices[trade.symbol]?.price else { return false }
            // |now − planned| × 100 ÷ planned, rounded up: the move in percent.
            let movedTimesHundred = Price(uncheckedUnits: (now.units - trade.price.units) * 100).magnitude
            let percent = try Ratio.quotient(movedTimesHundred, trade.price, places: Percent.places, rounding: .up)
            if percent > tolerance { return false }
            reserved = try reserved + TradingRules.buyReservation(
                OrderDraft(symbol: trade.symbol, side: .buy, type: .market, quantity: trade.quantity), price: now, margin: margin)
        }
        return reserved <= budget
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case TradingError.insufficientBuyingPower(let needed, let available, _): "they need \(Display.money(needed, .up)) of buying power; \(Display.money(available, .down)) is available."
        case TradingError.insufficientShares(let symbol, let available, _): "only \(available) \(symbol) can be sold."
        case TradingError.unknownSymbol(let symbol), RebalanceError.noPrice(let symbol): "the market data does not know \(symbol)."
        case let error as MarketDataUnavailable: "market data is unavailable (\(error.reason.plainWords))."
        case TradingError.stalePrice(let symbol): "there is no current price for \(symbol) to set its buy's cash aside by."
        default:
            // What a request would be told of it (the one table), never Swift's name for the error; an error of Folio's
            // own is said so (the log names it).
            if let problem = ProblemMapping.appError(for: error), problem.status.code < 500 { problem.detail } else {
                "something went wrong on Folio's side; the log has the details."
            }
        }
    }

    /// Ends the run: done when every order did all it was meant to, failed
    /// when none filled at all, partially done otherwise, with the reasons.
    private func finish(_ next: RebalanceRun, from run: RebalanceRun, orders: [OrderState], stopped: Stop? = nil) async throws -> JobOutcome {
        var next = next
        let filledAny = orders.contains { $0.filledQuantity.isPositive }
        let allFilled = orders.allSatisfy { $0.status == .filled }
        next.status = next.reasons.isEmpty && allFilled ? .done : filledAny ? .partiallyDone : .failed
        let now = ledger.now()
        next.finishedAt = now
        let rebalances = self.rebalances, finished = next
        var details = [
            "status": finished.status.rawValue, "orders": String(orders.count),
            "filled": String(orders.filter { $0.status == .filled }.count), "reasons": String(finished.reasons.count),
        ]
        if let stopped {
            details["stopped"] = stopped.rawValue
            // Whether any sale brought cash (a canceled sell may have filled in part): the notice says it stays as cash.
            details["sold"] = String(orders.contains { $0.side == .sell && $0.filledQuantity.isPositive })
        }
        let moved = try await database.transaction { [details] db -> Bool in
            guard try await rebalances.advance(finished, from: run.status, rounds: run.buyRounds, now: now, on: db) else { return false }
            try await audit("rebalance.finished", run: finished, actor: nil, context: .none, on: db, details: details)
            return true
        }
        // Another worker moved the run first: look again at where it is now.
        guard moved else { return .later(clock.now().addingTimeInterval(0.5)) }
        logger.info("rebalance run finished", metadata: [
            "run_id": .string(run.id.description), "status": .string(finished.status.rawValue), "orders": .stringConvertible(orders.count)])
        return .done
    }

    /// An event about the run on its account's audit chain.
    private func audit(
        _ action: String, run: RebalanceRun, actor: UserID?, context: AuditContext, on db: any SQLDatabase, details: [String: String]
    ) async throws {
        guard var open = try await ledger.open(account: run.accountID, owner: nil, on: db) else { return }
        var posting = Posting()
        posting.events = [AuditNote(action: action, actorID: actor, subjectType: "rebalance", subjectID: run.id.description, details: details)]
        open.books.record(posting)
        try await ledger.commit(open, context: context, on: db)
    }
}
