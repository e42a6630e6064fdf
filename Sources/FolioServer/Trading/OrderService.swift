import FluentKit
import FolioDomain
import Foundation
import Logging
import SQLKit

/// Places, executes and cancels orders. Every change of an order and what it
/// moves (reservations, holding, cash, ledger rows, audit event) is one
/// database transaction with the account row locked.
struct OrderService: Sendable {
    let database: FolioDatabase
    let clock: AppClock
    let audit: AuditLog
    let jobs: JobQueue
    let broker: any Broker
    let quotes: QuoteService
    /// Extra cash a market buy reserves above the current price.
    let marketBuyMargin: Decimal

    static let submitJob = "submit_order"

    struct Placement: Sendable {
        var draft: OrderDraft
        var accountID: UUID?
        var clientOrderID: String?
    }

    // MARK: - Placing

    /// A placement checked and priced, ready to be written.
    struct PricedPlacement: Sendable {
        var placement: Placement
        var draft: OrderDraft
        var quote: PriceQuote
    }

    /// Validates the placement and prices it. Call it before opening the
    /// transaction: a quote may need the database or a vendor call, and neither
    /// should wait inside a transaction (on SQLite it would wait for itself).
    func price(_ placement: Placement) async throws -> PricedPlacement {
        let issues = placement.draft.validate()
        if !issues.isEmpty { throw AppError.validation(issues) }
        var draft = placement.draft
        draft.symbol = OrderDraft.normalizedSymbol(draft.symbol)!
        if draft.notional != nil, draft.side == .sell {
            throw AppError.validation(field: "notional", code: "buy_only", message: "notional is allowed on buy orders only; sell a quantity.")
        }
        guard let quote = try await quotes.quote(for: draft.symbol) else {
            throw AppError(.unprocessableContent, code: "unknown_symbol", detail: "Unknown symbol \(draft.symbol).",
                           errors: [.init(field: "symbol", code: "unknown_symbol", message: "No market quotes \(draft.symbol).")])
        }
        return PricedPlacement(placement: placement, draft: draft, quote: quote)
    }

    /// Places a priced order inside the caller's transaction `db`.
    func place(_ priced: PricedPlacement, userID: UUID, ip: String?, requestID: String?, on db: any Database) async throws -> Order {
        let placement = priced.placement, draft = priced.draft, quote = priced.quote
        let now = clock.now()
        do {
            do {
                let account = try await account(placement.accountID, userID: userID, on: db)
                let order = Order()
                order.id = UUID()
                order.userID = userID
                order.accountID = account.id!
                order.clientOrderID = placement.clientOrderID
                order.symbol = draft.symbol
                order.side = draft.side.rawValue
                order.type = draft.type.rawValue
                order.timeInForce = draft.timeInForce.rawValue
                order.quantity = draft.quantity.map(StoredDecimal.init)
                order.notional = draft.notional.map(StoredDecimal.init)
                order.limitPrice = draft.limitPrice.map(StoredDecimal.init)
                order.stopPrice = draft.stopPrice.map(StoredDecimal.init)
                order.status = OrderStatus.new.rawValue
                order.filledQuantity = StoredDecimal(0)
                order.reservedCash = StoredDecimal(0)
                order.reservedQuantity = StoredDecimal(0)
                order.createdAt = now
                order.updatedAt = now

                switch draft.side {
                case .buy:
                    let reserve = buyReservation(draft, price: quote.price)
                    guard reserve <= account.availableCash else {
                        throw AppError(.unprocessableContent, code: "insufficient_buying_power",
                                       detail: "This order needs \(Cash.text(reserve)) of buying power; \(Cash.text(account.availableCash)) is available.",
                                       errors: [.init(field: "quantity", code: "insufficient_buying_power", message: "Not enough buying power for this order.")])
                    }
                    order.reservedCash = StoredDecimal(reserve)
                    account.reservedCash = StoredDecimal(account.reservedCash.value + reserve)
                    account.updatedAt = now
                    try await account.save(on: db)
                case .sell:
                    let quantity = draft.quantity!
                    let holding = try await Holding.query(on: db).filter(\.$accountID == account.id!).filter(\.$symbol == draft.symbol).first()
                    let available = holding.map { $0.quantity.value - $0.reservedQuantity.value } ?? 0
                    guard let holding, quantity <= available else {
                        throw AppError(.unprocessableContent, code: "insufficient_shares",
                                       detail: "You can sell at most \(ExactDecimal.format(available)) \(draft.symbol).",
                                       errors: [.init(field: "quantity", code: "insufficient_shares", message: "More shares than you hold unreserved.")])
                    }
                    order.reservedQuantity = StoredDecimal(quantity)
                    holding.reservedQuantity = StoredDecimal(holding.reservedQuantity.value + quantity)
                    holding.updatedAt = now
                    try await holding.save(on: db)
                }
                try await order.create(on: db)
                // Transactional outbox: the job that submits the order commits with it.
                try await jobs.enqueue(kind: Self.submitJob, payload: ["order_id": order.id!.uuidString], on: db)
                try await audit.record(
                    .init(action: "order.placed", actorID: userID, subjectType: "order", subjectID: order.id?.uuidString, userID: userID,
                          details: ["symbol": draft.symbol, "side": draft.side.rawValue, "type": draft.type.rawValue,
                                    "reserved_cash": ExactDecimal.format(order.reservedCash.value), "reserved_quantity": ExactDecimal.format(order.reservedQuantity.value)]),
                    ip: ip, requestID: requestID, on: db)
                return order
            }
        } catch let error as any DatabaseError where error.isConstraintFailure && placement.clientOrderID != nil
            && (String(reflecting: error).contains("orders_user_id_client_order_id_key") || String(reflecting: error).contains("orders.client_order_id")) {
            throw AppError(.conflict, code: "duplicate_client_order_id", detail: "An order with this client_order_id exists.",
                           errors: [.init(field: "client_order_id", code: "duplicate", message: "client_order_id must be unique.")])
        }
    }

    /// Cash a buy sets aside: at the limit for limit orders; above the market by a margin otherwise.
    func buyReservation(_ draft: OrderDraft, price: Decimal) -> Decimal {
        if let notional = draft.notional { return notional }
        let quantity = draft.quantity!
        let basis: Decimal
        switch draft.type {
        case .limit, .stopLimit: basis = draft.limitPrice!
        case .market, .stop: basis = max(price, draft.stopPrice ?? 0) * (1 + marketBuyMargin)
        }
        return ExactDecimal.rounded(quantity * basis, scale: Money.cashScale, mode: .up)
    }

    func account(_ id: UUID?, userID: UUID, on db: any Database) async throws -> Account {
        let accountID: UUID
        if let id {
            accountID = id
        } else {
            guard let first = try await Account.query(on: db).filter(\.$userID == userID).sort(\.$createdAt).first() else { throw AppError.notFound("account") }
            accountID = first.id!
        }
        guard let account = try await database.lockedAccount(accountID, userID: userID, on: db) else {
            throw AppError(.unprocessableContent, code: "unknown_account", detail: "No such account.",
                           errors: [.init(field: "account_id", code: "not_found", message: "No account of yours has this id.")])
        }
        return account
    }

    // MARK: - Executing

    /// The job: submit a new order to the broker and apply its answer. An order
    /// already past `new` was submitted before (a retry after a crash): nothing to do.
    func submit(orderID: UUID) async throws {
        guard let order = try await Order.find(orderID, on: database.db), order.orderStatus == .new else { return }
        // A DAY order whose submission was delayed past the close must not fill tomorrow.
        if order.tif == .day, clock.now() >= PaperBroker.dayEnd(for: order.createdAt) {
            try await apply(.expired, to: orderID)
            return
        }
        let report = try await broker.submit(Self.brokerOrder(order))
        try await apply(report, to: orderID)
    }

    /// Looks at every resting order once: fills the ones the market reached, expires the old ones.
    func recheckRestingOrders() async throws {
        let resting = try await Order.query(on: database.db).filter(\.$status ~~ [OrderStatus.accepted.rawValue, OrderStatus.partiallyFilled.rawValue]).all()
        for order in resting {
            if let report = try await broker.recheck(Self.brokerOrder(order)) { try await apply(report, to: order.id!) }
        }
        // An order whose submission job gave up would otherwise hold its reservation forever.
        let stuck = try await Order.query(on: database.db).filter(\.$status == OrderStatus.new.rawValue)
            .filter(\.$createdAt < clock.now().addingTimeInterval(-60)).all()
        for order in stuck {
            let payload = String(decoding: try FolioJSON.encode(["order_id": order.id!.uuidString]), as: UTF8.self)
            if try await Job.query(on: database.db).filter(\.$kind == Self.submitJob).filter(\.$payload == payload).filter(\.$status == "dead").first() != nil {
                try await apply(.rejected(reason: "the broker could not be reached"), to: order.id!)
            }
        }
    }

    static func brokerOrder(_ order: Order) -> BrokerOrder {
        BrokerOrder(
            id: order.id!, symbol: order.symbol, side: order.orderSide, type: order.orderType, timeInForce: order.tif,
            quantity: order.quantity?.value, notional: order.notional?.value, limitPrice: order.limitPrice?.value,
            stopPrice: order.stopPrice?.value, createdAt: order.createdAt, filledQuantity: order.filledQuantity.value)
    }

    /// Applies a broker report in one transaction. Applying the same fill twice changes nothing.
    func apply(_ report: BrokerReport, to orderID: UUID) async throws {
        try await database.db.transaction { db in
            guard let unlocked = try await Order.find(orderID, on: db) else { return }
            let account = try await self.account(unlocked.accountID, userID: unlocked.userID, on: db)
            // Re-read under the account lock: another worker may have moved it on.
            guard let order = try await Order.find(orderID, on: db) else { return }
            let now = clock.now()
            switch report {
            case .accepted:
                // Canceled meanwhile: the broker's late acceptance changes nothing.
                if order.orderStatus.canTransition(to: .accepted) { try await transition(order, to: .accepted, on: db, now: now) }
            case .filled(let fills):
                for fill in fills { try await applyFill(fill, to: order, account: account, on: db, now: now) }
            case .filledThenCanceled(let fills, let reason):
                for fill in fills { try await applyFill(fill, to: order, account: account, on: db, now: now) }
                try await end(order, as: .canceled, reason: reason, account: account, on: db, now: now)
            case .canceled(let reason):
                try await end(order, as: .canceled, reason: reason, account: account, on: db, now: now)
            case .rejected(let reason):
                try await end(order, as: .rejected, reason: reason, account: account, on: db, now: now)
            case .expired:
                try await end(order, as: .expired, reason: "day order past the close", account: account, on: db, now: now)
            }
        }
    }

    func transition(_ order: Order, to status: OrderStatus, on db: any Database, now: Date) async throws {
        guard order.orderStatus != status || status == .partiallyFilled else { return }
        guard order.orderStatus.canTransition(to: status) else { throw OrderError.impossibleTransition(from: order.orderStatus, to: status) }
        let before = order.status
        order.status = status.rawValue
        order.updatedAt = now
        try await order.save(on: db)
        try await audit.record(
            .init(action: "order.\(status.rawValue)", subjectType: "order", subjectID: order.id?.uuidString, userID: order.userID,
                  details: ["from": before, "to": status.rawValue]),
            ip: nil, requestID: nil, on: db)
    }

    enum OrderError: Error {
        case impossibleTransition(from: OrderStatus, to: OrderStatus)
        /// A broker reported more than the order has left: refused, and the job fails loudly.
        case overfill(orderID: UUID, remaining: Decimal, fill: Decimal)
    }

    /// Applies one fill, whole or partial. The order's reservation is released
    /// in proportion to the quantity filled (all of what is left on the last fill).
    func applyFill(_ fill: BrokerFill, to order: Order, account: Account, on db: any Database, now: Date) async throws {
        if try await Fill.query(on: db).filter(\.$brokerFillID == fill.id).first() != nil { return }
        guard order.orderStatus.isOpen, fill.quantity > 0, fill.price > 0 else { return }
        let filledBefore = order.filledQuantity.value
        // An order of a quantity fills up to it; a notional order fills in one go.
        let remaining = order.quantity.map { $0.value - filledBefore } ?? fill.quantity
        guard fill.quantity <= remaining else { throw OrderError.overfill(orderID: order.id!, remaining: remaining, fill: fill.quantity) }
        let completes = fill.quantity == remaining
        let amount = order.orderSide == .buy
            ? Money.cost(quantity: fill.quantity, price: fill.price)
            : Money.proceeds(quantity: fill.quantity, price: fill.price)
        let holding = try await Holding.query(on: db).filter(\.$accountID == account.id!).filter(\.$symbol == order.symbol).first()
        switch order.orderSide {
        case .buy:
            // Release this fill's share of the reservation, then pay; a price that ran past the margin must not overdraw.
            let release = completes ? order.reservedCash.value
                : min(order.reservedCash.value, ExactDecimal.rounded(order.reservedCash.value * fill.quantity / remaining, scale: 4, mode: .down))
            let reservedAfter = account.reservedCash.value - release
            guard account.cash.value - amount >= reservedAfter else {
                try await end(order, as: .rejected, reason: "insufficient cash at the fill price", account: account, on: db, now: now)
                return
            }
            account.cash = StoredDecimal(account.cash.value - amount)
            account.reservedCash = StoredDecimal(reservedAfter)
            order.reservedCash = StoredDecimal(order.reservedCash.value - release)
            let position = Position(quantity: holding?.quantity.value ?? 0, costBasis: holding?.costBasis.value ?? 0).buying(fill.quantity, for: amount)
            try await saveHolding(holding, position: position, reserved: holding?.reservedQuantity.value ?? 0, order: order, on: db, now: now)
            try await ledgerRow(order, type: .buy, quantity: fill.quantity, price: fill.price, amount: -amount, on: db, now: now)
        case .sell:
            guard let holding, let (position, _) = Position(quantity: holding.quantity.value, costBasis: holding.costBasis.value).selling(fill.quantity) else {
                try await end(order, as: .rejected, reason: "shares no longer held", account: account, on: db, now: now)
                return
            }
            let release = completes ? order.reservedQuantity.value : min(order.reservedQuantity.value, fill.quantity)
            account.cash = StoredDecimal(account.cash.value + amount)
            order.reservedQuantity = StoredDecimal(order.reservedQuantity.value - release)
            try await saveHolding(holding, position: position, reserved: holding.reservedQuantity.value - release, order: order, on: db, now: now)
            try await ledgerRow(order, type: .sell, quantity: -fill.quantity, price: fill.price, amount: amount, on: db, now: now)
        }
        account.updatedAt = now
        try await account.save(on: db)
        let record = Fill()
        record.id = UUID()
        record.orderID = order.id!
        record.userID = order.userID
        record.brokerFillID = fill.id
        record.quantity = StoredDecimal(fill.quantity)
        record.price = StoredDecimal(fill.price)
        record.occurredAt = now
        try await record.create(on: db)
        let filledAfter = filledBefore + fill.quantity
        let averageBefore = order.averageFillPrice?.value ?? 0
        order.filledQuantity = StoredDecimal(filledAfter)
        order.averageFillPrice = StoredDecimal(ExactDecimal.rounded((averageBefore * filledBefore + fill.price * fill.quantity) / filledAfter, scale: 8))
        if order.orderStatus == .new { try await transition(order, to: .accepted, on: db, now: now) }
        try await transition(order, to: completes ? .filled : .partiallyFilled, on: db, now: now)
        try await audit.record(
            .init(action: "order.fill", subjectType: "order", subjectID: order.id?.uuidString, userID: order.userID,
                  details: ["quantity": ExactDecimal.format(fill.quantity), "price": ExactDecimal.format(fill.price), "amount": ExactDecimal.format(amount)]),
            ip: nil, requestID: nil, on: db)
    }

    func saveHolding(_ existing: Holding?, position: Position, reserved: Decimal, order: Order, on db: any Database, now: Date) async throws {
        let holding = existing ?? {
            let created = Holding()
            created.id = UUID()
            created.accountID = order.accountID
            created.userID = order.userID
            created.symbol = order.symbol
            created.createdAt = now
            return created
        }()
        holding.quantity = StoredDecimal(position.quantity)
        holding.costBasis = StoredDecimal(position.costBasis)
        holding.reservedQuantity = StoredDecimal(reserved)
        holding.updatedAt = now
        try await holding.save(on: db)
    }

    func ledgerRow(_ order: Order, type: LedgerEntry.Kind, quantity: Decimal, price: Decimal, amount: Decimal, on db: any Database, now: Date) async throws {
        let entry = LedgerEntry()
        entry.id = UUID()
        entry.accountID = order.accountID
        entry.userID = order.userID
        entry.type = type.rawValue
        entry.symbol = order.symbol
        entry.quantity = StoredDecimal(quantity)
        entry.price = StoredDecimal(price)
        entry.amount = StoredDecimal(amount)
        entry.orderID = order.id
        entry.entryDescription = "\(type.rawValue) \(ExactDecimal.format(abs(quantity))) \(order.symbol) @ \(ExactDecimal.format(price))"
        entry.occurredAt = now
        entry.createdAt = now
        try await entry.create(on: db)
    }

    /// Ends an order and gives back what it reserved.
    func end(_ order: Order, as status: OrderStatus, reason: String?, account: Account, on db: any Database, now: Date) async throws {
        guard order.orderStatus.canTransition(to: status) else { return }
        if order.reservedCash.value > 0 {
            account.reservedCash = StoredDecimal(account.reservedCash.value - order.reservedCash.value)
            account.updatedAt = now
            try await account.save(on: db)
        }
        if order.reservedQuantity.value > 0,
           let holding = try await Holding.query(on: db).filter(\.$accountID == order.accountID).filter(\.$symbol == order.symbol).first() {
            holding.reservedQuantity = StoredDecimal(holding.reservedQuantity.value - order.reservedQuantity.value)
            holding.updatedAt = now
            try await holding.save(on: db)
        }
        order.reservedCash = StoredDecimal(0)
        order.reservedQuantity = StoredDecimal(0)
        order.rejectReason = reason
        try await transition(order, to: status, on: db, now: now)
    }

    // MARK: - Canceling

    /// Cancels an open order. One that reached the broker is canceled there
    /// first, outside any transaction; what the broker answers (a fill that
    /// beat the cancel, say) is applied before the order ends.
    func cancel(orderID: UUID, userID: UUID, ip: String?, requestID: String?) async throws -> Order {
        guard let current = try await Order.query(on: database.db).filter(\.$id == orderID).filter(\.$userID == userID).first() else {
            throw AppError.notFound("order")
        }
        if current.orderStatus == .accepted || current.orderStatus == .partiallyFilled {
            let answer = try await broker.cancel(Self.brokerOrder(current))
            switch answer {
            case .canceled: break
            case .filled(let fills), .filledThenCanceled(let fills, _):
                try await apply(.filled(fills), to: orderID)
            default:
                try await apply(answer, to: orderID)
            }
        }
        return try await database.db.transaction { db in
            guard let found = try await Order.query(on: db).filter(\.$id == orderID).filter(\.$userID == userID).first() else {
                throw AppError.notFound("order")
            }
            let account = try await account(found.accountID, userID: userID, on: db)
            let order = try await Order.find(orderID, on: db)!
            guard order.orderStatus.isCancelable else {
                throw AppError(.conflict, code: "order_not_cancelable", detail: "A \(order.status) order cannot be canceled.")
            }
            try await end(order, as: .canceled, reason: "canceled by user", account: account, on: db, now: clock.now())
            try await audit.record(.init(action: "order.cancel_requested", actorID: userID, subjectType: "order", subjectID: order.id?.uuidString, userID: userID),
                                   ip: ip, requestID: requestID, on: db)
            return order
        }
    }
}
