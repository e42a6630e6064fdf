import FolioDomain
import Foundation
import Logging
import SQLKit

/// Places, executes and cancels orders. The money moves themselves are the
/// trading rules' postings, applied by the `Ledger` under the account's lock;
/// this service prices orders, talks to the broker and chooses what to post.
struct OrderService: Sendable {
    let store: TradingStore
    let ledger: Ledger
    let jobs: JobQueue
    /// Each account's broker: the paper broker, or the broker the account is linked to.
    let brokers: Brokers
    /// When DAY orders end: the exchange's real close, early closes included.
    let calendar: ExchangeCalendar
    let quotes: QuoteService
    let clock: AppClock
    let ids: IDSource
    /// Extra cash a market buy reserves above the current price.
    let marketBuyMargin: Ratio
    /// Open orders one account may have (`MAX_OPEN_ORDERS`).
    var maximumOpenOrders = TradingRules.maximumOpenOrders
    let logger: Logger
    var pauses: PausePoints = .none
    /// Paces placements to the fills of this process's worker.
    var pace: SubmissionPace? = nil
    /// Refuses placements while too many orders wait for any worker.
    var backlog: OrderBacklog? = nil

    var database: FolioDatabase { store.database }

    struct Placement: Sendable {
        var draft: OrderDraft
        var accountID: AccountID?
        var clientOrderID: String?
        /// Cash a buy must leave available (a rebalance's reserve), checked under the account's lock.
        var keepingCash: Cash = .zero
    }

    // MARK: - Placing

    /// A placement checked and priced, ready to be written.
    struct PricedPlacement: Sendable {
        var placement: Placement
        var draft: OrderDraft
        var quote: PriceQuote
    }

    /// Prices a validated placement, once the worker has room for it (see
    /// `SubmissionPace`). Call it before opening the transaction:
    /// a quote may need the database or a vendor call, and neither should
    /// wait inside a transaction (on SQLite it would wait for itself).
    func price(_ placement: Placement) async throws -> PricedPlacement {
        await pace?.turn()
        try await backlog?.check()
        var draft = placement.draft
        guard let symbol = OrderDraft.normalizedSymbol(draft.symbol) else {
            throw TradingError.invalid(field: "symbol", code: "invalid", message: "symbol must be a ticker such as AAPL.")
        }
        draft.symbol = symbol
        if draft.notional != nil, draft.side == .sell {
            throw TradingError.invalid(field: "notional", code: "buy_only", message: "notional is allowed on buy orders only; sell a quantity.")
        }
        guard let quote = try await quotes.quote(for: draft.symbol) else { throw TradingError.unknownSymbol(draft.symbol) }
        return PricedPlacement(placement: placement, draft: draft, quote: quote)
    }

    /// Places a priced order inside the caller's transaction `db`, with the
    /// job that submits it (transactional outbox).
    /// `defaultAccount` is the user's default account when the caller knows it
    /// already (the request's identity does), sparing a query.
    func place(
        _ priced: PricedPlacement, userID: UserID, defaultAccount: AccountID? = nil, context: AuditContext, on db: any SQLDatabase
    ) async throws -> OrderState {
        let accountID = try await account(of: priced.placement, userID: userID, defaultAccount: defaultAccount, on: db)
        let placed = try await place([Placing(priced: priced, context: context)], account: accountID, userID: userID, on: db)
        return try placed[0].get()
    }

    /// When orders placed now on the account wait for the market: the next open while the exchange is
    /// closed and the account's broker keeps its hours (Alpaca always does; the paper broker when told
    /// to); nil when they are worked at once.
    func waitsUntil(account accountID: AccountID) async throws -> Date? {
        let now = clock.now()
        let exchange = calendar.current
        switch try await brokers.route(for: accountID) {
        case .paper where !brokers.paper.waitsForOpen(), .unlinked: return nil
        case .paper, .alpaca:
            // Closed, the session in progress or next is the next one: its open is ahead.
            return exchange.isOpen(at: now) ? nil : exchange.currentOrNextSession(at: now).open
        }
    }

    /// The account a placement goes to: the one it names, or the user's default.
    func account(of placement: Placement, userID: UserID, defaultAccount: AccountID?, on db: any SQLDatabase) async throws -> AccountID {
        if let id = placement.accountID ?? defaultAccount { return id }
        guard let id = try await store.defaultAccountID(of: userID, on: db) else { throw TradingError.accountNotFound }
        return id
    }

    /// One order to place with others on the same account.
    struct Placing: Sendable {
        var priced: PricedPlacement
        /// Who asked, for the audit trail.
        var context: AuditContext
        /// What else the placement writes in its commit once its order is
        /// known (its request's idempotency record).
        var alsoWrite: (@Sendable (OrderState, inout WriteBatch) throws -> Void)? = nil
    }

    /// Places orders on one account of `userID` inside the caller's
    /// transaction `db`: the account is locked once, each order is checked
    /// against the books as the ones before it left them, and all are written
    /// in one commit, each with its submit job (transactional outbox). Each
    /// placement's order, or the error that refused it alone (no such
    /// account, too little cash, a client order id taken); the others go on.
    /// Throws when the writing fails, for all of them.
    func place(_ placings: [Placing], account accountID: AccountID, userID: UserID, on db: any SQLDatabase) async throws -> [Result<OrderState, any Error>] {
        var answers = [Result<OrderState, any Error>?](repeating: nil, count: placings.count)
        for (index, placing) in placings.enumerated() {
            guard let client = placing.priced.placement.clientOrderID else { continue }
            if try await store.clientOrderIDExists(client, userID: userID, on: db) { answers[index] = .failure(TradingError.duplicateClientOrderID) }
        }
        // A buy changes no holding; a sell reserves shares of one.
        let symbols = Set(placings.filter { $0.priced.draft.side == .sell }.map(\.priced.draft.symbol))
        guard var open = try await ledger.open(account: accountID, owner: userID, need: .init(symbols: Array(symbols), openOrders: true), on: db) else {
            return zip(placings, answers).map { placing, answer in
                answer ?? .failure(placing.priced.placement.accountID == nil ? TradingError.accountNotFound : TradingError.unknownAccount)
            }
        }
        let route = try await brokers.route(for: accountID, on: db)
        if case .unlinked = route { return answers.map { $0 ?? .failure(BrokerageError.unlinked) } }
        let atABroker = if case .alpaca = route { true } else { false }
        let waitsForOpen = !atABroker && brokers.paper.waitsForOpen()
        var placed: [(index: Int, order: OrderState, context: AuditContext)] = []
        // Client order ids this batch has placed: a later placement with one is a duplicate, as it would be one commit later.
        var placedClientOrderIDs: Set<String> = []
        let now = ledger.now()
        for (index, placing) in placings.enumerated() where answers[index] == nil {
            let priced = placing.priced
            if let client = priced.placement.clientOrderID, placedClientOrderIDs.contains(client) {
                answers[index] = .failure(TradingError.duplicateClientOrderID)
                continue
            }
            // Closed: the order would be canceled at its submission, after the person was told it was placed.
            if waitsForOpen, priced.draft.timeInForce == .immediateOrCancel || priced.draft.timeInForce == .fillOrKill {
                answers[index] = .failure(TradingError.invalid(
                    field: "time_in_force", code: "market_closed",
                    message: "The market is closed: an IOC or FOK order cannot wait for the open. Choose DAY or GTC to have it wait."))
                continue
            }
            if let count = open.openOrders, count + placed.count >= maximumOpenOrders {
                answers[index] = .failure(TradingError.tooManyOpenOrders(limit: maximumOpenOrders))
                continue
            }
            // validate() checked the tick from a dollar up; a broker also asks four places below it.
            if atABroker, case let issues = priced.draft.tickIssues(placesBelowADollar: 4), !issues.isEmpty {
                answers[index] = .failure(TradingError.invalid(issues))
                continue
            }
            // A market or stop buy sets aside cash from the quote, and a broker that holds orders fills it at whatever the
            // market then is: a quote from before the last close (a symbol that stopped trading, a vendor down for a day)
            // could set aside far too little. One a vendor's brief outage left stale is of this session: the margin covers it.
            // (The paper broker fills only at a fresh price, and checks it against the reservation.)
            // (The close is worked out last, only for such a buy: the paper path pays nothing for the check.)
            if atABroker, priced.quote.isStale, priced.draft.side == .buy, priced.draft.notional == nil,
               priced.draft.type == .market || priced.draft.type == .stop, priced.quote.asOf < quotes.previousCloseTime() {
                answers[index] = .failure(TradingError.stalePrice(symbol: priced.draft.symbol))
                continue
            }
            do {
                let posting = try TradingRules.place(
                    priced.draft, orderID: ids.next(OrderID.self), clientOrderID: priced.placement.clientOrderID, account: open.books.account,
                    holding: open.books.holding(priced.draft.symbol), price: priced.quote.price, marketBuyMargin: marketBuyMargin,
                    keepingCash: priced.placement.keepingCash, now: now)
                open.books.record(posting)
                placed.append((index, posting.order!, placing.context))
                if let client = priced.placement.clientOrderID { placedClientOrderIDs.insert(client) }
            } catch {
                answers[index] = .failure(error)
            }
        }
        if !placed.isEmpty {
            // The submit jobs go with the orders, in the commit's one statement (transactional outbox).
            var writes = WriteBatch(for: database.kind)
            jobs.enqueue(placed.map { .submitOrder($0.order.id) }, into: &writes)
            for (index, order, _) in placed {
                try placings[index].alsoWrite?(order, &writes)
                answers[index] = .success(order)
            }
            do {
                try await ledger.commit(open, contexts: placed.map(\.context), adding: writes, on: db)
            } catch where placings.count == 1 && placings[0].priced.placement.clientOrderID != nil && DatabaseConstraint(error)?.kind == .unique {
                // Another account's placement with the same client order id won the race.
                throw TradingError.duplicateClientOrderID
            }
        }
        return answers.map { $0! }
    }

    // MARK: - Executing

    /// The submit jobs of a batch: each `new` order goes to the broker (an
    /// order already past `new` was submitted before, by a retry after a
    /// crash: nothing to do), and the broker's answers are applied per
    /// account, all of an account's in one transaction.
    func submit(_ batch: [ClaimedJob]) async -> [JobID: JobOutcome] {
        await pauses.reach(.afterClaim)
        var outcomes: [JobID: JobOutcome] = [:]
        let orderIDs = batch.compactMap(\.payload.orderID)
        let orders: [OrderID: OrderState]
        do {
            orders = Dictionary(try await store.orders(orderIDs, on: database.sql).map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        } catch {
            for job in batch { outcomes[job.id] = .failed(error) }
            return outcomes
        }
        var reports: [Report] = []
        // Orders at a broker that holds them may have had a cancel requested while on their way.
        var held: [OrderID] = []
        for job in batch {
            guard let id = job.payload.orderID, var order = orders[id], order.status == .new else {
                outcomes[job.id] = .done
                continue
            }
            // A DAY order whose submission was delayed past the close must not fill tomorrow.
            if order.timeInForce == .day, clock.now() >= calendar.current.dayEnd(for: order.createdAt) {
                // An earlier attempt may have reached a broker that holds orders: it is canceled there first, never just ended here.
                if job.attempts > 1, let broker = try? await brokers.broker(for: order.accountID), broker.holdsOrders,
                   await mayHaveBeenSent(order, by: job) {
                    do {
                        guard let current = try await stillOurs(job, order) else {
                            outcomes[job.id] = .done
                            continue
                        }
                        order = current
                        // Canceled there (or never there): the day ended it. Fills that came first stand. Not listed
                        // there yet after the earlier send, the job fails and looks again.
                        var sent = BrokerOrder(order)
                        sent.retried = true
                        let report: BrokerReport = switch try await broker.cancel(sent) {
                        case .canceled: .expired
                        case .filledThenCanceled(let fills, _): .filledThenCanceled(fills, reason: "day order past the close")
                        case let other: other
                        }
                        reports.append(Report(job: job.id, order: order, report: report))
                    } catch {
                        outcomes[job.id] = .failed("a DAY order past the close: \(error)")
                    }
                    continue
                }
                reports.append(Report(job: job.id, order: order, report: .expired))
                continue
            }
            do {
                // Canceled while on its way: cancel it where it is, at the broker or nowhere yet.
                let broker = try await brokers.broker(for: order.accountID)
                if broker.holdsOrders {
                    guard let current = try await stillOurs(job, order) else {
                        outcomes[job.id] = .done
                        continue
                    }
                    order = current
                }
                var submission = BrokerOrder(order)
                submission.retried = job.attempts > 1
                if broker.holdsOrders {
                    // Marked before it is first sent: not listed at the broker later means "never sent" only without the
                    // mark, and without an earlier attempt that failed (a worker of a build before the mark, during an
                    // upgrade, sends unmarked; a worker that took over a stalled one's job has neither).
                    let marked = try await store.mayHaveBeenSent(order.id)
                    submission.retried = marked || (job.attempts > 1 && job.lastError != nil)
                    if order.cancelRequestedAt == nil {
                        // Not sent from an account whose books take nothing more: its fills could not be booked.
                        try await ledger.requireRecordable(order.accountID)
                        if !marked { try await store.markSent(order.id, at: clock.now()) }
                    }
                }
                let report = order.cancelRequestedAt != nil ? try await broker.cancel(submission) : try await broker.submit(submission)
                reports.append(Report(job: job.id, order: order, report: report))
                if broker.holdsOrders { held.append(order.id) }
            } catch let error as MarketDataError {
                outcomes[job.id] = .failed(Self.marketDataFailure + ": \(error)")
            } catch let error as AuditChain.UnsignedHead {
                outcomes[job.id] = .failed(Self.frozenChainFailure + ": \(error)")
            } catch let error as AuditChain.MissingHead {
                outcomes[job.id] = .failed(Self.frozenChainFailure + ": \(error)")
            } catch {
                outcomes[job.id] = .failed(error)
            }
        }
        if !reports.isEmpty { await pauses.reach(.afterBrokerSubmit) }
        for (job, outcome) in await apply(reports) { if let job { outcomes[job] = outcome } }
        if !held.isEmpty { await settleRequestedCancels(held) }
        if !reports.isEmpty { await pauses.reach(.afterApply) }
        return outcomes
    }

    /// Whether an earlier attempt of `job` may have sent `order`: it failed (a worker of a build before `sent_at`
    /// sends unmarked), or the order is marked sent; when that cannot be read, it may have.
    private func mayHaveBeenSent(_ order: OrderState, by job: ClaimedJob) async -> Bool {
        if job.lastError != nil { return true }
        return (try? await store.mayHaveBeenSent(order.id)) != false
    }

    /// The order as it is now, when the job is still this worker's and the order still waits to be sent; nil
    /// otherwise. Asked just before a broker that holds orders is called: the batch read its orders when it began,
    /// and while its earlier jobs waited on the broker this job's lease may have run out and another worker taken
    /// it over (and carried out a cancel the user asked for meanwhile). Sending the order from the stale copy then
    /// would leave it live at the broker while Folio shows it canceled, its cash free.
    private func stillOurs(_ job: ClaimedJob, _ order: OrderState) async throws -> OrderState? {
        guard try await jobs.stillHeld(job) else { return nil }
        guard let current = try await store.orders([order.id], on: database.sql).first, current.status == .new else { return nil }
        return current
    }

    /// How long after its submit job died an order at a broker that holds orders is looked for there and ended.
    static let deadSubmitGrace: TimeInterval = 300
    /// The reason of an order ended because its broker no longer lists it (`Brokers.unlistedAtBroker`).
    static let goneAtBroker = "Alpaca no longer lists this order (its account was reset, or the order deleted there): it is ended, and what it set aside is free"

    /// How a submit that failed for want of a price starts its job's last error.
    static let marketDataFailure = "market data unavailable"

    /// How a submit held back because the account's audit chain takes no more events starts its job's last error.
    static let frozenChainFailure = "the account's audit trail takes no more events"

    /// Why an order whose submit job died is rejected, named from the job's last error.
    static func deadSubmitReason(_ lastError: String?, symbol: String) -> String {
        if lastError?.hasPrefix(marketDataFailure) == true { return "market data unavailable: no fresh price for \(symbol)" }
        if lastError?.hasPrefix(frozenChainFailure) == true { return "not sent: the account's audit trail takes no more events (an operator is looking)" }
        return "the broker could not be reached"
    }

    /// A broker's answer about one order, and the job that asked, if any.
    struct Report: Sendable {
        var job: JobID?
        var order: OrderState
        var report: BrokerReport
        /// What the report was built on (an operator's, `folio broker record-fills`): applied only while the
        /// locked books still have the order open with this much filled, and with this event beside it.
        var expectedFilled: Quantity? = nil
        var note: AuditNote? = nil
    }

    /// The locked books no longer have the order as the report was built on.
    struct BooksMoved: Error, CustomStringConvertible {
        var description: String { "the order's fills moved while the broker was asked" }
    }

    /// Applies reports: every account's in one transaction, the accounts
    /// locked one after another in the order of their ids (so two batches
    /// never wait on each other in a cycle), which pays one commit for the
    /// batch instead of one per account. When that fails (an overfill, say),
    /// each account's reports are applied in a transaction of their own, and
    /// then one by one, so that only the faulty report fails.
    func apply(_ reports: [Report]) async -> [(JobID?, JobOutcome)] {
        let groups = Dictionary(grouping: reports, by: \.order.accountID)
        if groups.count > 1 {
            do {
                try await applyTogether(groups)
                return reports.map { ($0.job, .done) }
            } catch {
                logger.debug("a batch of accounts failed together; applying them one by one", metadata: ["error": .string(String(describing: error))])
            }
        }
        var outcomes: [(JobID?, JobOutcome)] = []
        for (account, group) in groups {
            do {
                try await apply(group, account: account)
                outcomes += group.map { ($0.job, .done) }
            } catch where group.count > 1 {
                for report in group {
                    do {
                        try await apply([report], account: account)
                        outcomes.append((report.job, .done))
                    } catch {
                        outcomes.append((report.job, .failed(error)))
                    }
                }
            } catch {
                outcomes += group.map { ($0.job, .failed(error)) }
            }
        }
        return outcomes
    }

    func apply(_ reports: [Report], account: AccountID) async throws {
        try await applyTogether([account: reports])
    }

    /// All the reports in one transaction: the accounts locked together in
    /// the order of their ids, and (on PostgreSQL) their changes written in
    /// one statement, so a batch costs the same handful of round trips
    /// however many accounts it touches, and holds their locks that briefly.
    private func applyTogether(_ groups: [AccountID: [Report]]) async throws {
        let now = ledger.now(), ids = self.ids, ledger = self.ledger, jobs = self.jobs
        let reports = groups.values.flatMap { $0 }
        let need = Ledger.Need(orders: reports.map(\.order.id), brokerFills: reports.flatMap(\.report.fills).map(\.id))
        let endedBeyond = try await database.transaction { db in
            var opened = try await ledger.open(accounts: Array(groups.keys), need: need, on: db)
            for index in opened.indices {
                for report in groups[opened[index].books.account.id] ?? [] {
                    if let expected = report.expectedFilled {
                        guard let order = opened[index].books.orders[report.order.id], order.status.isOpen, order.filledQuantity == expected else { throw BooksMoved() }
                    }
                    try opened[index].books.apply(
                        report.report, to: report.order.id, heldAtBroker: opened[index].ordersHeldAtBroker, ids: ids, now: now)
                    if let note = report.note {
                        var posting = Posting()
                        posting.events = [note]
                        opened[index].books.record(posting)
                    }
                }
            }
            // What is left at the broker of an order the books ended is canceled there by a job committed with
            // the end: left open, it would go on buying with cash the books now show as free, and its later
            // fills would be ignored here. A job, so a broker or network that fails now does not leave it open.
            let beyond = opened.flatMap { Self.endedBeyondTheBooks($0.books) }
            // Thirty tries, the later ones ten minutes apart: an Alpaca outage of some three and a half hours.
            if !beyond.isEmpty { try await jobs.enqueue(beyond.map { .cancelAtBroker($0.order) }, maxAttempts: 30, on: db) }
            try await ledger.commit(opened, context: .none, on: db)
            return beyond
        }
        // A fill the broker made that the books could not take: the order ended here, and an operator should know.
        for ended in endedBeyond {
            logger.error(
                "the broker filled an order beyond what the books can take: the order was ended here, the rest is canceled at the broker and the fill left to reconciliation (docs/OPERATIONS.md)",
                metadata: ["order_id": "\(ended.order)", "reason": .string(ended.reason)])
        }
    }

    struct NoBrokerToAsk: Error, CustomStringConvertible {
        var description: String { "the account's brokerage link is removed: cancel the order at Alpaca by hand" }
    }

    struct StillOpenAtBroker: Error, CustomStringConvertible {
        var description: String { "the order is still open at its broker (a cancel it has yet to confirm): asked again" }
    }

    /// The orders these postings ended for a fill the broker made that the books could not take.
    private static func endedBeyondTheBooks(_ books: Books) -> [(order: OrderID, reason: String)] {
        books.postings.flatMap(\.events).compactMap { note in
            guard note.action == "order.broker_fill_not_recorded", let id = OrderID(note.subjectID) else { return nil }
            return (id, note.details["reason"] ?? "")
        }
    }

    /// The `cancel_at_broker` job: asks the order's broker to cancel what is left of it. Done once the broker
    /// says the order has ended there; while it is still open there (a cancel Alpaca has yet to confirm), or the
    /// broker cannot be reached, the job fails and is tried again with back-off. What it filled meanwhile is
    /// not applied (the order ended here): reconciliation brings the account to the broker's.
    /// Only Alpaca is asked: once the account's link is removed no broker answers for it here (an unlinked
    /// account's broker "cancels" everything at once), so the job fails, and dies for an operator to see.
    func cancelRestAtBroker(_ id: OrderID) async throws {
        guard let order = try await store.orders([id], on: database.sql).first else { throw TradingError.orderNotFound }
        guard case .alpaca(let alpaca) = try await brokers.route(for: order.accountID) else { throw NoBrokerToAsk() }
        guard try await alpaca.cancelRest(BrokerOrder(order)) else { throw StillOpenAtBroker() }
        logger.info("the rest of an order ended here is canceled at its broker", metadata: ["order_id": "\(id)"])
    }

    /// Applies an operator's report about one order only while the books still have it as the report was built on
    /// (`expecting`: open, with that much filled), with the operator's event in the same transaction.
    func apply(_ report: BrokerReport, to order: OrderState, expecting filled: Quantity, note: AuditNote) async throws {
        try await apply([Report(job: nil, order: order, report: report, expectedFilled: filled, note: note)], account: order.accountID)
    }

    /// Applies one report about one order (tests, and the cancel path).
    func apply(_ report: BrokerReport, to orderID: OrderID) async throws {
        guard let order = try await store.order(orderID) else { return }
        try await apply([Report(job: nil, order: order, report: report)], account: order.accountID)
    }

    /// Looks at every resting order once: fills the ones the market reached,
    /// expires the old ones; and rejects orders whose submit job died, so they
    /// do not hold their reservation forever. Orders at Alpaca are looked at
    /// account by account, in two calls each, when that account's poll is due
    /// (the trade stream brings fills between polls). A failure at one account
    /// or order is logged and stops no other.
    func recheckRestingOrders() async throws {
        var reports: [Report] = []
        var requested: [OrderID] = []
        var remote: [AccountID: (broker: AlpacaBroker, orders: [OrderState])] = [:]
        for order in try await store.restingOrders() {
            do {
                let route = try await brokers.route(for: order.accountID)
                if case .alpaca(let alpaca) = route {
                    remote[order.accountID, default: (alpaca, [])].orders.append(order)
                } else if order.cancelRequestedAt != nil {
                    requested.append(order.id)
                } else if let report = try await brokers.broker(for: order.accountID).recheck(BrokerOrder(order)) {
                    reports.append(Report(job: nil, order: order, report: report))
                }
            } catch {
                logger.warning("looking at a resting order failed", metadata: ["order_id": "\(order.id)", "error": "\(error)"])
            }
        }
        for (account, held) in remote where brokers.pollDue(account) {
            do {
                let looks = try await held.broker.look(at: try await store.brokerOrders(held.orders))
                brokers.polled(account)
                let now = clock.now()
                for order in held.orders {
                    if looks.unlisted.contains(order.id) {
                        // Alpaca took it, and lists it nowhere now, look after look: it is gone there (a reset of a
                        // paper account deletes every order). Kept open, it would hold its reservation for ever,
                        // and stop the account's reconciliation and unlinking; what it filled was booked, and
                        // reconciliation brings in anything else.
                        if order.status != .new, brokers.unlistedAtBroker(order.id, now: now) {
                            logger.warning("an order Alpaca took is listed nowhere there any more: it is ended", metadata: ["order_id": "\(order.id)"])
                            reports.append(Report(job: nil, order: order, report: .canceled(reason: Self.goneAtBroker)))
                        }
                        continue
                    }
                    brokers.listedAtBroker(order.id)
                    guard let look = looks.byOrder[order.id] else { continue }
                    if order.cancelRequestedAt != nil, look.status != "pending_cancel", AlpacaBroker.openStatuses.contains(look.status) {
                        requested.append(order.id)  // the cancel never reached Alpaca: ask again
                    } else if look.report != .accepted, look.report.isEnd || look.filledQuantity != order.filledQuantity {
                        reports.append(Report(job: nil, order: order, report: look.report))
                    }
                }
            } catch {
                logger.warning("looking at an account's orders at the broker failed", metadata: ["account_id": "\(account)", "error": "\(error)"])
            }
        }
        if !requested.isEmpty { await settleRequestedCancels(requested) }
        if !reports.isEmpty { await pauses.reach(.afterRecheck) }
        for dead in try await store.ordersOfDeadSubmitJobs() {
            guard let order = try await store.order(dead.id) else { continue }
            let rejected = BrokerReport.rejected(reason: Self.deadSubmitReason(dead.lastError, symbol: order.symbol))
            do {
                // At a broker that holds orders an attempt may have got through: canceled there (or found never to have
                // arrived) before it is rejected here; while the broker cannot be asked, the order waits.
                let broker = try await brokers.broker(for: order.accountID)
                guard broker.holdsOrders else {
                    reports.append(Report(job: nil, order: order, report: rejected))
                    continue
                }
                // Its last attempt may have sent it a moment ago (its answer lost): looked at only once the broker's
                // look-up has had time to list it. By then, an order still not listed never reached it.
                guard clock.now().timeIntervalSince(dead.diedAt) >= Self.deadSubmitGrace else { continue }
                let report: BrokerReport = switch try await broker.cancel(BrokerOrder(order)) {
                case .canceled: order.cancelRequestedAt != nil ? .canceled(reason: OrderState.canceledByUser) : rejected
                case let other: other
                }
                reports.append(Report(job: nil, order: order, report: report))
            } catch {
                logger.warning("an order whose submission died waits for its broker", metadata: ["order_id": "\(order.id)", "error": "\(error)"])
            }
        }
        for (_, outcome) in await apply(reports) {
            if case .failed(let error, _) = outcome { logger.warning("applying a broker report failed", metadata: ["error": .string(error)]) }
        }
    }

    // MARK: - Canceling

    /// Cancels an open order. One that reached the broker is canceled there
    /// first, outside any transaction; what the broker answers (a fill that
    /// beat the cancel, say) is applied before the order ends. A `new` order
    /// at a broker that holds orders may be on its way there, and a broker
    /// may take a while to confirm a cancel (Alpaca's `pending_cancel`): then
    /// the cancel is recorded as requested (shown as `pending_cancel`), the
    /// order keeps its reservation, and the submit job or the next look at
    /// resting orders finishes it at the broker (or here, if it never left).
    /// The reason an order an operator canceled (for an erasure) ended with, where Folio ends it itself.
    static let canceledByOperator = "canceled by an operator"

    func cancel(orderID: OrderID, userID: UserID, context: AuditContext, byOperator: Bool = false) async throws -> OrderState {
        // An operator's cancel (an erasure's) names no person as its actor: the person did not ask for it.
        let actor: UserID? = byOperator ? nil : userID
        for _ in 0..<3 {
            guard let seen = try await store.order(orderID, owner: userID) else { throw TradingError.orderNotFound }
            if seen.status == .new, try await brokers.broker(for: seen.accountID).holdsOrders {
                if let requested = try await requestCancel(seen, userID: userID, actor: actor, context: context) { return requested }
                continue  // it moved on meanwhile: cancel it as it is now
            }
            if seen.status == .accepted || seen.status == .partiallyFilled {
                // At a broker that holds orders the request is recorded before the broker is asked: its
                // own report of the cancel (the trade stream can beat this answer) is then known as the user's.
                var requested: OrderState? = seen.cancelRequestedAt == nil ? nil : seen
                if requested == nil, try await brokers.broker(for: seen.accountID).holdsOrders {
                    guard let recorded = try await requestCancel(seen, userID: userID, actor: actor, context: context) else { continue }
                    requested = recorded
                }
                let ended: Bool
                do {
                    ended = try await cancelAtBroker(seen)
                } catch let error as BrokerError {
                    // Once recorded, the cancel is under way whatever this answer: the next look at the broker finishes it.
                    guard let requested else { throw error }
                    logger.warning("the broker could not be asked to cancel; the next look does", metadata: ["order_id": "\(orderID)", "error": "\(error)"])
                    return requested
                }
                guard ended else {
                    if let requested = try await requestCancel(seen, userID: userID, actor: actor, context: context) { return requested }
                    continue
                }
            }
            let now = ledger.now(), ledger = self.ledger
            let canceled: OrderState? = try await database.transaction { db in
                guard var open = try await ledger.open(account: seen.accountID, owner: userID, need: .init(orders: [orderID]), on: db),
                      let order = open.books.orders[orderID]
                else { throw TradingError.orderNotFound }
                // A `new` order a submit job took to the broker meanwhile must be canceled there first.
                if seen.status == .new && order.status != .new && order.status.isCancelable { return nil }
                // The broker's report of this very cancel got here first: it is done as asked.
                if order.status == .canceled, order.cancelRequestedAt != nil { return order }
                open.books.record(try TradingRules.cancel(order, actor: actor, reason: byOperator ? Self.canceledByOperator : OrderState.canceledByUser, account: open.books.account, holding: open.books.holding(order.symbol), now: now))
                try await ledger.commit(open, context: context, on: db)
                return open.books.orders[orderID]!
            }
            if let canceled { return canceled }
        }
        throw TradingError.orderNotFound
    }

    /// Cancels every open order of the user (of one account, or one symbol,
    /// when named), one order at a time as `cancel` does, oldest first. Each
    /// answer is the order as it is after its cancel (ended, or still open
    /// with the cancel requested while the broker confirms), or why it could
    /// not be asked; one that ended meanwhile is reported as it ended.
    func cancelAll(userID: UserID, accountID: AccountID?, symbol: String?, context: AuditContext, byOperator: Bool = false) async throws -> [(id: OrderID, outcome: Result<OrderState, any Error>)] {
        var outcomes: [(id: OrderID, outcome: Result<OrderState, any Error>)] = []
        for order in try await store.openOrders(of: userID, accountID: accountID, symbol: symbol) {
            do {
                outcomes.append((order.id, .success(try await cancel(orderID: order.id, userID: userID, context: context, byOperator: byOperator))))
            } catch {
                // It filled or ended another way between the list and its cancel: nothing is left to cancel.
                if let now = try? await store.order(order.id, owner: userID), !now.status.isOpen {
                    outcomes.append((order.id, .success(now)))
                } else {
                    outcomes.append((order.id, .failure(error)))
                }
            }
        }
        return outcomes
    }

    /// Records a requested cancel on an order still as it was seen; nil when it has moved on (or was asked already).
    private func requestCancel(_ seen: OrderState, userID: UserID, actor: UserID?, context: AuditContext) async throws -> OrderState? {
        let now = ledger.now(), ledger = self.ledger
        return try await database.transaction { db in
            guard var open = try await ledger.open(account: seen.accountID, owner: userID, need: .init(orders: [seen.id]), on: db),
                  let order = open.books.orders[seen.id], order.status == seen.status
            else { return nil }
            if order.cancelRequestedAt != nil { return order }
            open.books.record(try TradingRules.requestCancel(order, actor: actor, now: now))
            try await ledger.commit(open, context: context, on: db)
            return open.books.orders[seen.id]!
        }
    }

    /// Asks the broker to cancel and applies what it says happened: fills
    /// that beat the cancel stand. True when the order has ended there (or
    /// the broker confirms the cancel); false while the broker has yet to.
    private func cancelAtBroker(_ order: OrderState) async throws -> Bool {
        let answer = try await brokers.broker(for: order.accountID).cancel(try await store.brokerOrder(order))
        switch answer {
        case .canceled:
            return true
        case .filledThenCanceled(let fills, _):
            // The fills stand; the order ends as the user asked, below.
            try await apply([Report(job: nil, order: order, report: .partiallyFilled(fills))], account: order.accountID)
            return true
        case .accepted:
            return false
        case .partiallyFilled, .triggered:
            try await apply([Report(job: nil, order: order, report: answer)], account: order.accountID)
            return false
        default:
            try await apply([Report(job: nil, order: order, report: answer)], account: order.accountID)
            return true
        }
    }

    /// Orders whose cancel was requested while a submit job took them to the
    /// broker, or that the broker has yet to confirm canceled: asked again,
    /// with whatever filled applied; one that fails is logged and asked again
    /// at the next look.
    func settleRequestedCancels(_ ids: [OrderID]) async {
        let orders: [OrderState]
        do { orders = try await store.orders(ids, on: database.sql) } catch {
            logger.warning("reading orders with a requested cancel failed", metadata: ["error": "\(error)"])
            return
        }
        for order in orders where order.cancelRequestedAt != nil && order.status.isOpen && order.status != .new {
            do {
                // Still open there (the broker has yet to confirm): fills so far are applied, and the next look asks again.
                let answer = try await brokers.broker(for: order.accountID).cancel(try await store.brokerOrder(order))
                try await apply([Report(job: nil, order: order, report: answer)], account: order.accountID)
            } catch {
                logger.warning("a requested cancel failed; it is asked again at the next look", metadata: ["order_id": "\(order.id)", "error": "\(error)"])
            }
        }
    }
}
