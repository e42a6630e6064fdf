import FolioDomain
import Foundation
import Hummingbird

/// Targets, drift and rebalancing:
/// `GET/PUT /api/accounts/{id}/targets`, `GET /api/accounts/{id}/targets/versions`,
/// `GET /api/portfolio/drift`, `POST /api/portfolio/rebalance`,
/// `GET /api/portfolio/rebalances` and `GET /api/portfolio/rebalances/{id}`.
/// Percentages are strings of percent ("60" is sixty percent); another user's account or run is 404.
struct RebalanceController: Sendable {
    let rebalancing: RebalanceService
    let store: TradingStore
    let idempotency: Idempotency

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let api = router.group("/api", context: AuthenticatedContext.self)
        // Saving or reading targets checks their symbols, and drift values them: a person looking things up, on
        // lookups' share of the market-data calls (the rest is kept for pricing orders).
        api.get("/accounts/:id/targets", use: MarketDataController.lookingUp(showTargets))
        api.put("/accounts/:id/targets", use: MarketDataController.lookingUp(setTargets))
        api.get("/accounts/:id/targets/versions", use: targetVersions)
        api.get("/portfolio/drift", use: MarketDataController.lookingUp(drift))
        api.post("/portfolio/rebalance", use: rebalance)
        api.get("/portfolio/rebalances", use: runs)
        api.get("/portfolio/rebalances/:id", use: showRun)
    }

    // MARK: - Targets

    /// A percentage as a person enters one. Too many places is refused with the places a target may
    /// have (`Percent.places`), not with what a `Ratio` could hold: one rule, stated once.
    struct EnteredPercent: Decodable {
        var value: Ratio

        init(from decoder: any Decoder) throws {
            do {
                value = try Ratio(from: decoder)
            } catch let issue as FieldIssue where issue.code == "too_precise" {
                throw FieldIssue(field: issue.field, code: issue.code, message: "\(issue.field) may have at most \(Percent.places) decimal places.")
            }
        }
    }

    struct TargetsRequest: Decodable {
        struct Weight: Decodable {
            var symbol: String
            var percent: EnteredPercent
        }

        struct Band: Decodable {
            var absolutePoints: EnteredPercent?
            var relativePercent: EnteredPercent?
        }

        struct ClassTarget: Decodable {
            var assetClass: String
            var percent: EnteredPercent
        }

        var targets: [Weight]?
        var assetClasses: [ClassTarget]?
        var cashPercent: EnteredPercent?
        var driftBand: Band?

        /// More than a person plans by hand: each target costs a quote whenever the targets are saved, read or planned.
        static let maximumTargets = 1_000

        func allocation() throws -> TargetAllocation {
            if (targets?.count ?? 0) > Self.maximumTargets {
                throw TradingError.invalid(field: "targets", code: "too_many", message: "At most \(Self.maximumTargets) targets.")
            }
            if (assetClasses?.count ?? 0) > AssetClass.allCases.count {
                throw TradingError.invalid(field: "asset_classes", code: "too_many", message: "At most one weight per asset class.")
            }
            var classes: [ClassWeight] = []
            for (index, target) in (assetClasses ?? []).enumerated() {
                // Cash has its own weight, cash_percent.
                guard let assetClass = AssetClass(rawValue: target.assetClass.lowercased()), assetClass != .cash else {
                    throw TradingError.invalid(
                        field: "asset_classes[\(index)].asset_class", code: "invalid",
                        message: "asset_class must be one of \(AssetClass.allCases.filter { $0 != .cash }.map(\.rawValue).joined(separator: ", ")); cash has cash_percent.")
                }
                classes.append(ClassWeight(assetClass: assetClass, percent: target.percent.value))
            }
            return try TargetAllocation(
                weights: (targets ?? []).map { TargetWeight(symbol: $0.symbol, percent: $0.percent.value) }, classWeights: classes, cashPercent: cashPercent?.value ?? .zero,
                band: DriftBand(
                    absolutePoints: driftBand?.absolutePoints?.value ?? DriftBand.standard.absolutePoints,
                    relativePercent: driftBand?.relativePercent?.value ?? DriftBand.standard.relativePercent))
        }
    }

    struct WeightResponse: Encodable, Sendable {
        var symbol: String
        var percent: Ratio
    }

    struct ClassWeightResponse: Encodable, Sendable {
        var assetClass: AssetClass
        var percent: Ratio
    }

    struct BandResponse: Encodable, Sendable {
        var absolutePoints: Ratio
        var relativePercent: Ratio

        init(_ band: DriftBand) {
            absolutePoints = band.absolutePoints
            relativePercent = band.relativePercent
        }
    }

    /// Something about the targets the user should know, though nothing was refused.
    struct Warning: Encodable, Sendable {
        var field: String
        var code: String
        var message: String
    }

    struct TargetsResponse: ResponseEncodable {
        var accountID: AccountID
        /// 0 while the account has no targets.
        var version: Int
        var targets: [WeightResponse]
        var assetClasses: [ClassWeightResponse]
        var cashPercent: Ratio
        var driftBand: BandResponse
        var createdBy: UserID?
        var createdAt: Date?
        /// Class weights a rebalance cannot share out yet (`nothing_held`): the account holds nothing of that class.
        var warnings: [Warning]

        init(accountID: AccountID, _ stored: StoredTargets?, unheldClasses: [AssetClass] = []) {
            self.accountID = accountID
            version = stored?.version ?? 0
            targets = stored?.allocation.weights.map { WeightResponse(symbol: $0.symbol, percent: $0.percent) } ?? []
            assetClasses = stored?.allocation.classWeights.map { ClassWeightResponse(assetClass: $0.assetClass, percent: $0.percent) } ?? []
            cashPercent = stored?.allocation.cashPercent ?? .zero
            driftBand = BandResponse(stored?.allocation.band ?? .standard)
            createdBy = stored?.createdBy
            createdAt = stored?.createdAt
            let classes = assetClasses
            warnings = unheldClasses.compactMap { unheld in
                classes.firstIndex { $0.assetClass == unheld }.map { index in
                    Warning(
                        field: "asset_classes[\(index)].asset_class", code: "nothing_held",
                        message: "Nothing of class \(unheld.rawValue) is held, so a rebalance cannot share its weight out yet: buy a symbol of it first, or set targets by symbol.")
                }
            }
        }
    }

    /// The response for stored targets, with the warnings they need today.
    func targetsResponse(_ accountID: AccountID, _ stored: StoredTargets?, owner: UserID) async throws -> TargetsResponse {
        var unheld: [AssetClass] = []
        if let stored { unheld = try await rebalancing.unheldClasses(of: stored.allocation, account: accountID, owner: owner) }
        return TargetsResponse(accountID: accountID, stored, unheldClasses: unheld)
    }

    func pathAccount(_ context: AuthenticatedContext) throws -> AccountID {
        guard let id = context.parameters.get("id").flatMap(AccountID.init) else { throw TradingError.accountNotFound }
        return id
    }

    /// The newest targets, or `?version=N`.
    @Sendable func showTargets(_ request: Request, context: AuthenticatedContext) async throws -> TargetsResponse {
        let accountID = try pathAccount(context)
        var version: Int?
        if let raw = request.query["version"] {
            guard let number = Int(raw), number > 0 else { throw TradingError.invalid(field: "version", code: "invalid", message: "version must be a positive whole number.") }
            version = number
        }
        let stored = try await rebalancing.targets(of: accountID, owner: context.identity.userID, version: version)
        if version != nil, stored == nil { throw AppError.notFound("targets version") }
        return try await targetsResponse(accountID, stored, owner: context.identity.userID)
    }

    /// Replaces the targets with a new version; the old ones are kept.
    @Sendable func setTargets(_ request: Request, context: AuthenticatedContext) async throws -> TargetsResponse {
        let accountID = try pathAccount(context)
        let body = try await request.decodeBody(as: TargetsRequest.self, context: context)
        let stored = try await rebalancing.setTargets(
            try body.allocation(), account: accountID, owner: context.identity.userID, given: (body.targets ?? []).map(\.symbol), context: context.auditContext)
        return try await targetsResponse(accountID, stored, owner: context.identity.userID)
    }

    struct VersionResponse: Encodable, Sendable {
        var version: Int
        var createdBy: UserID?
        var createdAt: Date
    }

    struct VersionList: ResponseEncodable {
        var data: [VersionResponse]
    }

    @Sendable func targetVersions(_ request: Request, context: AuthenticatedContext) async throws -> VersionList {
        let versions = try await rebalancing.targetVersions(of: try pathAccount(context), owner: context.identity.userID)
        return VersionList(data: versions.map { VersionResponse(version: $0.version, createdBy: $0.createdBy, createdAt: $0.createdAt) })
    }

    // MARK: - Drift

    struct DriftLineResponse: Encodable, Sendable {
        var symbol: String?
        var assetClass: AssetClass?
        var planned: Bool
        var quantity: Quantity
        var value: Cash
        var currentPercent: Ratio
        var targetPercent: Ratio
        var targetValue: Cash
        var driftPoints: Ratio
        var driftRelativePercent: Ratio?
        var outsideBand: Bool
        var stale: Bool

        init(_ line: DriftLine) {
            symbol = line.symbol
            assetClass = line.assetClass
            planned = line.planned
            quantity = line.quantity
            value = line.value
            currentPercent = line.currentPercent
            targetPercent = line.targetPercent ?? .zero
            targetValue = line.targetValue
            driftPoints = line.driftPoints
            driftRelativePercent = line.driftRelativePercent
            outsideBand = line.outsideBand
            stale = line.stale
        }
    }

    struct DriftResponse: ResponseEncodable {
        var accountID: AccountID
        var targetsVersion: Int
        var totalValue: Cash
        var driftBand: BandResponse
        var outsideBand: Bool
        var stale: Bool
        var cash: DriftLineResponse
        /// By symbol, or by asset class for targets by class.
        var data: [DriftLineResponse]
        var byClass: [DriftLineResponse]
        var valuedAt: Date
    }

    @Sendable func drift(_ request: Request, context: AuthenticatedContext) async throws -> DriftResponse {
        let accountID = try PortfolioController.accountID(request, identity: context.identity)
        let (report, targets) = try await rebalancing.drift(of: accountID, owner: context.identity.userID)
        return DriftResponse(
            accountID: accountID, targetsVersion: targets.version, totalValue: report.totalValue, driftBand: BandResponse(targets.allocation.band),
            outsideBand: report.outsideBand, stale: report.stale, cash: DriftLineResponse(report.cash), data: report.lines.map(DriftLineResponse.init),
            byClass: report.byClass.map(DriftLineResponse.init),
            valuedAt: rebalancing.clock.now())
    }

    // MARK: - Plans and runs

    struct RebalanceRequest: Decodable {
        var accountID: AccountID?
        var mode: String?
        var cashReserve: Cash?
        var minTradeAmount: Cash?
        var allowFractional: Bool?
        var priceTolerancePercent: Ratio?
        var execute: Bool?
        /// With `execute`: the plan previewed was of this version of the targets (`targets_version` of the plan).
        var targetsVersion: Int?
        /// With `execute`: the previewed plan's `estimated_cost`; a run that would now cost more than the
        /// price tolerance above it is refused.
        var previewedEstimatedCost: Cash?
        /// Symbols to leave as they are (a halted holding, one the owner means to keep).
        var excludedSymbols: [String]?

        /// More than an account could sensibly hold aside; it bounds the work a request asks for.
        static let maximumExcluded = 100

        func planRequest() throws -> RebalanceService.PlanRequest {
            var issues: [FieldIssue] = []
            let mode = RebalanceMode(rawValue: (self.mode ?? "full").lowercased())
            if mode == nil { issues.append(.init(field: "mode", code: "invalid", message: "mode must be full, buy_only or sell_only.")) }
            if previewedEstimatedCost?.isNegative == true {
                issues.append(.init(field: "previewed_estimated_cost", code: "negative", message: "previewed_estimated_cost may not be negative."))
            }
            for (value, field) in [(cashReserve, "cash_reserve"), (minTradeAmount, "min_trade_amount")] {
                guard let value else { continue }
                if value.isNegative { issues.append(.init(field: field, code: "negative", message: "\(field) may not be negative.")) }
                if value.places > Cash.centPlaces { issues.append(.init(field: field, code: "too_precise", message: "\(field) may have at most 2 decimal places.")) }
            }
            if let tolerance = priceTolerancePercent {
                if !tolerance.isPositive || tolerance > 50 {
                    issues.append(.init(field: "price_tolerance_percent", code: "invalid", message: "price_tolerance_percent must be above 0 and at most 50."))
                } else if tolerance.places > Percent.places {
                    issues.append(.init(
                        field: "price_tolerance_percent", code: "too_precise", message: "price_tolerance_percent may have at most \(Percent.places) decimal places."))
                }
            }
            var excluded = Set<String>()
            if let excludedSymbols, excludedSymbols.count > Self.maximumExcluded {
                issues.append(.init(field: "excluded_symbols", code: "too_many", message: "At most \(Self.maximumExcluded) symbols may be excluded."))
            } else {
                for (index, symbol) in (excludedSymbols ?? []).enumerated() {
                    let field = "excluded_symbols[\(index)]"
                    guard let normalized = OrderDraft.normalizedSymbol(symbol) else {
                        issues.append(.init(field: field, code: "invalid", message: "\(field) must be a ticker such as VTI."))
                        continue
                    }
                    if !excluded.insert(normalized).inserted {
                        issues.append(.init(field: field, code: "duplicate", message: "\(normalized) is listed more than once."))
                    }
                }
            }
            guard let mode, issues.isEmpty else { throw TradingError.invalid(issues) }
            return RebalanceService.PlanRequest(
                accountID: accountID,
                options: RebalanceOptions(
                    mode: mode, cashReserve: cashReserve ?? .zero, minimumTrade: minTradeAmount ?? .zero, allowFractional: allowFractional ?? false,
                    excluded: excluded),
                priceTolerancePercent: priceTolerancePercent ?? RebalanceService.defaultPriceTolerance)
        }

        /// A run places the plan worked out when it starts, not the one on the caller's screen: it is refused when that
        /// plan is not the one previewed (the targets changed since, or prices moved its buys past the tolerance).
        func expectPreviewed(_ planned: RebalanceService.Planned) throws {
            if let expected = targetsVersion, expected != planned.targets.version {
                throw RebalanceError.planChanged(
                    field: "targets_version",
                    message: "The targets changed after this plan was previewed (it was for version \(expected); they are now version \(planned.targets.version)). Preview the plan again.")
            }
            let cost = planned.plan.estimatedCost, tolerance = planned.request.priceTolerancePercent
            guard let previewed = previewedEstimatedCost, cost > previewed else { return }
            // (cost − previewed) × 100 ÷ previewed, rounded up: how far above the preview, in percent.
            guard !previewed.isZero else {
                throw RebalanceError.planChanged(
                    field: "previewed_estimated_cost",
                    message: "The plan previewed bought nothing; it would now buy for about \(Display.money(cost, .up)). Preview the plan again.")
            }
            let above = try Ratio.quotient(Cash(uncheckedUnits: (cost.units - previewed.units) * 100), previewed, places: Percent.places, rounding: .up)
            if above <= tolerance { return }
            throw RebalanceError.planChanged(
                field: "previewed_estimated_cost",
                message: "Prices moved after this plan was previewed: its buys would now cost about \(Display.money(cost, .up)), more than \(tolerance) % above the \(Display.money(previewed)) previewed. Preview the plan again.")
        }
    }

    struct TradeResponse: Encodable, Sendable {
        var symbol: String
        var side: OrderSide
        var quantity: Quantity
        var price: String
        var estimatedAmount: Cash
        var reservation: Cash?

        init(symbol: String, side: OrderSide, quantity: Quantity, price: Price, estimatedAmount: Cash, reservation: Cash?) {
            self.symbol = symbol
            self.side = side
            self.quantity = quantity
            self.price = price.formatted(minimumFractionDigits: 2)
            self.estimatedAmount = estimatedAmount
            self.reservation = reservation
        }

        /// A buy shows what placing it sets aside.
        init(_ trade: PlannedTrade) {
            self.init(
                symbol: trade.symbol, side: trade.side, quantity: trade.quantity, price: trade.price, estimatedAmount: trade.estimatedAmount,
                reservation: trade.side == .buy ? trade.reservation : nil)
        }

        init(_ trade: RebalanceRun.Trade) {
            self.init(symbol: trade.symbol, side: trade.side, quantity: trade.quantity, price: trade.price, estimatedAmount: trade.estimatedAmount, reservation: nil)
        }
    }

    struct PlanLineResponse: Encodable, Sendable {
        var symbol: String
        var planned: Bool
        var price: String
        var stale: Bool
        var quantity: Quantity
        var value: Cash
        var currentPercent: Ratio
        var targetPercent: Ratio
        var trade: TradeResponse?
        var quantityAfter: Quantity
        var valueAfter: Cash
        var percentAfter: Ratio
        var driftAfterPoints: Ratio
        var outsideBandAfter: Bool
    }

    struct ReasonResponse: Encodable, Sendable {
        var code: String
        var message: String
    }

    struct PlanResponse: ResponseEncodable {
        var accountID: AccountID
        var targetsVersion: Int
        var mode: RebalanceMode
        var totalValue: Cash
        var cashBefore: Cash
        var availableCashBefore: Cash
        var cashAfter: Cash
        var cashPercentAfter: Ratio
        var cashTargetPercent: Ratio
        var cashKept: Cash
        var estimatedCost: Cash
        var estimatedProceeds: Cash
        var buyReservation: Cash
        var orderCount: Int
        var stale: Bool
        /// Symbols left as they are and out of the plan's sums (`excluded_symbols` of the request), in symbol order.
        var excludedSymbols: [String]
        var reason: ReasonResponse?
        /// A run of this account still going (its orders hold cash and shares): executing is refused until it ends.
        var activeRunID: RebalanceRunID?
        /// What a run of this plan would do that its trades do not show.
        var notes: [String]
        var trades: [TradeResponse]
        var lines: [PlanLineResponse]

        /// A plan previewed while a run is going (its orders hold the cash): its trades cannot be placed yet.
        static let runningNote = "A rebalance of this account is still running: its orders hold the cash and shares it needs. Preview again once it has finished."
        /// Market buys reserve a margin above the price; a run buys again with what the margin left.
        static let moreRoundsNote = "What the market-buy margin leaves unspent is bought in up to \(RebalanceService.maximumBuyRounds - 1) more rounds, so less cash may be left than planned."
        /// One order holds at most `OrderDraft.maximumQuantity` shares.
        static func excludedNote(_ symbols: [String]) -> String {
            return "\(UserText.list(symbols)) \(symbols.count == 1 ? "is" : "are") left as \(symbols.count == 1 ? "it is" : "they are"): the plan rebalances the rest of the account, "
                + "whose value is its 100 %, towards the other targets, each scaled up in proportion."
        }
        static let orderSizeNote =
            "A trade was cut to 1,000,000,000 shares, the most one order may have: rebalance again once this run has finished to go further."

        init(_ planned: RebalanceService.Planned) {
            let plan = planned.plan
            accountID = planned.account.id
            targetsVersion = planned.targets.version
            mode = plan.mode
            totalValue = plan.totalValue
            cashBefore = plan.cashBefore
            availableCashBefore = plan.availableCashBefore
            cashAfter = plan.cashAfter
            cashPercentAfter = plan.cashPercentAfter
            cashTargetPercent = plan.cashTargetPercent
            cashKept = plan.cashKept
            estimatedCost = plan.estimatedCost
            estimatedProceeds = plan.estimatedProceeds
            buyReservation = plan.buyReservation
            orderCount = plan.trades.count
            stale = plan.stale
            excludedSymbols = planned.request.options.excluded.sorted()
            // While a run goes, its note is why nothing can be traded: the plan's own reason (computed without the run's orders) would mislead.
            reason = planned.activeRun != nil ? nil : plan.reason.map { ReasonResponse(code: $0.code, message: $0.message) }
            activeRunID = planned.activeRun
            notes = planned.activeRun != nil ? [Self.runningNote] : plan.buys.isEmpty ? [] : [Self.moreRoundsNote]
            if planned.activeRun == nil && plan.limitedByOrderSize { notes.append(Self.orderSizeNote) }
            if !excludedSymbols.isEmpty { notes.append(Self.excludedNote(excludedSymbols)) }
            trades = plan.trades.map(TradeResponse.init)
            lines = plan.lines.map { line in
                PlanLineResponse(
                    symbol: line.symbol, planned: line.targetPercent != nil, price: line.price.formatted(minimumFractionDigits: 2), stale: line.stale,
                    quantity: line.quantity, value: line.value, currentPercent: line.currentPercent, targetPercent: line.targetPercent ?? .zero,
                    trade: line.trade.map(TradeResponse.init), quantityAfter: line.quantityAfter, valueAfter: line.valueAfter, percentAfter: line.percentAfter,
                    driftAfterPoints: line.driftAfterPoints, outsideBandAfter: line.outsideBandAfter)
            }
        }
    }

    /// `execute: false` (the default) answers the plan; `execute: true`, with
    /// an `Idempotency-Key`, starts a run and answers 202 with it.
    @Sendable func rebalance(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let body = try await request.decodeBody(as: RebalanceRequest.self, context: context)
        let planRequest = try body.planRequest()
        let identity = context.identity, rebalancing = self.rebalancing, audit = context.auditContext
        guard body.execute == true else {
            let planned = try await rebalancing.plan(planRequest, owner: identity.userID, defaultAccount: identity.defaultAccountID)
            return try PlanResponse(planned).response(from: request, context: context)
        }
        guard request.headers[Idempotency.header] != nil else {
            throw FieldIssue(field: "Idempotency-Key", code: "required", message: "Executing a rebalance needs an Idempotency-Key header, so a retry cannot start it twice.")
        }
        let store = self.store
        return try await idempotency.run(
            request, userID: identity.userID, status: .accepted, location: { (run: RunResponse) in "/api/portfolio/rebalances/\(run.id)" },
            prepare: {
                let planned = try await rebalancing.plan(planRequest, owner: identity.userID, defaultAccount: identity.defaultAccountID)
                try body.expectPreviewed(planned)
                return (planned, try await rebalancing.placements(for: planned))
            },
            perform: { prepared, db in
                let run = try await rebalancing.start(prepared.0, placements: prepared.1, owner: identity.userID, context: audit, on: db)
                let linked = try await rebalancing.rebalances.orders(of: run.id, on: db)
                return RunResponse(run, linked: linked, orders: try await store.orders(linked.map(\.orderID), on: db))
            })
    }

    struct RunOrderResponse: Encodable, Sendable {
        var orderID: OrderID
        var phase: String
        var round: Int
        var symbol: String
        var side: OrderSide
        var quantity: Quantity?
        var status: OrderStatus
        var filledQuantity: Quantity
        var averageFillPrice: Price?
        var rejectReason: String?
    }

    struct RunResponse: ResponseEncodable, Encodable, Sendable {
        var id: RebalanceRunID
        var accountID: AccountID
        var mode: RebalanceMode
        var status: RebalanceRun.Status
        var targetsVersion: Int
        /// Symbols the run leaves as they are, in symbol order.
        var excludedSymbols: [String]
        var buyRounds: Int
        var reasons: [String]
        var notes: [String]
        var plannedTrades: [TradeResponse]
        var orders: [RunOrderResponse]
        var createdAt: Date
        var updatedAt: Date
        var finishedAt: Date?

        init(_ run: RebalanceRun, linked: [RunOrder], orders: [OrderState]) {
            id = run.id
            accountID = run.accountID
            mode = run.mode
            status = run.status
            targetsVersion = run.instructions.targetsVersion
            excludedSymbols = run.instructions.excludedSymbols ?? []
            buyRounds = run.buyRounds
            reasons = run.reasons
            notes = run.notes
            plannedTrades = run.plannedTrades.map(TradeResponse.init)
            let byID = Dictionary(orders.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
            self.orders = linked.compactMap { link in
                byID[link.orderID].map { order in
                    RunOrderResponse(
                        orderID: order.id, phase: link.phase == .sell ? "sell" : "buy", round: link.round, symbol: order.symbol, side: order.side,
                        quantity: order.quantity, status: order.status, filledQuantity: order.filledQuantity,
                        averageFillPrice: order.averageFillPrice, rejectReason: order.rejectReason)
                }
            }
            createdAt = run.createdAt
            updatedAt = run.updatedAt
            finishedAt = run.finishedAt
        }
    }

    func runResponse(_ run: RebalanceRun) async throws -> RunResponse {
        let linked = try await rebalancing.rebalances.orders(of: run.id)
        return RunResponse(run, linked: linked, orders: try await store.orders(linked.map(\.orderID), on: store.database.sql))
    }

    @Sendable func showRun(_ request: Request, context: AuthenticatedContext) async throws -> RunResponse {
        guard let id = context.parameters.get("id").flatMap({ RebalanceRunID($0) }),
              let run = try await rebalancing.rebalances.run(id, owner: context.identity.userID)
        else { throw RebalanceError.runNotFound }
        return try await runResponse(run)
    }

    struct RunList: ResponseEncodable {
        var data: [RunResponse]
    }

    /// The account's runs, newest first (`limit`, at most 100).
    @Sendable func runs(_ request: Request, context: AuthenticatedContext) async throws -> RunList {
        let accountID = try PortfolioController.accountID(request, identity: context.identity)
        let limit = try Pagination.pageSize(request, maximum: 100)
        let runs = try await rebalancing.rebalances.runs(of: accountID, owner: context.identity.userID, limit: limit)
        // No runs may mean no such account of the user's: 404, as every account's route answers.
        if runs.isEmpty, try await store.account(accountID, of: context.identity.userID) == nil { throw TradingError.accountNotFound }
        var data: [RunResponse] = []
        for run in runs { data.append(try await runResponse(run)) }
        return RunList(data: data)
    }
}
