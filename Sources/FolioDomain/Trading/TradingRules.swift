import Foundation

/// Every rule that moves money or shares, as pure functions: each takes the
/// account's current state and returns a `Posting` (the new balances, the
/// ledger rows, the fill, the audit events). Nothing here reads or writes a
/// database; `Books` chains postings and the server's `Ledger` applies them.
///
/// Rounding is always against the customer and never creates cash: a buy's
/// cost rounds up to the cent, a sale's proceeds down. Every resulting
/// balance is checked against its column: a request beyond it is refused
/// (`balanceLimitExceeded`), a fill beyond it rejects the order.
public enum TradingRules {
    /// The largest single deposit, withdrawal, dividend or fee.
    public static let maximumMovement: Cash = 1_000_000_000_000

    // MARK: - Cash movements

    public enum CashMovement: String, Sendable, CaseIterable {
        case deposit, withdrawal, dividend, fee

        var kind: LedgerKind {
            switch self {
            case .deposit: .deposit
            case .withdrawal: .withdrawal
            case .dividend: .dividend
            case .fee: .fee
            }
        }

        var addsCash: Bool { self == .deposit || self == .dividend }
    }

    /// A deposit or dividend (cash in), a withdrawal or fee (cash out).
    /// `amount` is positive, in cents; cash out may not touch reserved cash.
    public static func move(
        _ movement: CashMovement, amount: Cash, account: AccountState, description: String?, symbol: String? = nil,
        actor: UserID?, entryID: EntryID, now: Date
    ) throws(TradingError) -> Posting {
        try move(movement, amount: amount, places: Cash.centPlaces, account: account, description: description, symbol: symbol, actor: actor, entryID: entryID, now: now)
    }

    /// Cash that moved at an outside broker, mirrored in Folio's books exactly:
    /// to every place the cash column keeps, not only whole cents, since a
    /// broker's balance may carry fractions of a cent (fractional-share trades).
    public static func mirror(
        _ movement: CashMovement, amount: Cash, account: AccountState, description: String, actor: UserID?, entryID: EntryID, now: Date
    ) throws(TradingError) -> Posting {
        try move(movement, amount: amount, places: CashScale.fractionDigits, account: account, description: description, symbol: nil, actor: actor, entryID: entryID, now: now)
    }

    private static func move(
        _ movement: CashMovement, amount: Cash, places: Int, account: AccountState, description: String?, symbol: String?,
        actor: UserID?, entryID: EntryID, now: Date
    ) throws(TradingError) -> Posting {
        if let issue = AmountCheck.positive(amount, field: "amount", places: places, maximum: maximumMovement).first {
            throw .invalid([issue])
        }
        // An empty description is none: a field with no value is left out of the answer.
        let description = description?.isEmpty == true ? nil : description
        if let description, UserText.length(description) > 200 {
            throw .invalid(field: "description", code: "too_long", message: "description may have at most 200 characters.")
        }
        if let description, UserText.hasHiddenCharacters(description) {
            throw .invalid(field: "description", code: "invalid_characters", message: "description may not contain control or text-direction characters.")
        }
        let signed = movement.addsCash ? amount : -amount
        guard let cash = try? account.cash + signed else { throw .balanceLimitExceeded(field: "amount") }
        if cash < account.reservedCash { throw .insufficientFunds(available: account.availableCash) }
        var after = account
        after.cash = cash
        var posting = Posting()
        posting.account = after
        posting.entries = [LedgerLine(id: entryID, kind: movement.kind, amount: signed, symbol: symbol, description: description, occurredAt: now)]
        posting.events = [AuditNote(
            action: "ledger.\(movement.kind.rawValue)", actorID: actor, subjectType: "account", subjectID: account.id.description,
            details: ["amount": signed.description, "cash_after": cash.description, "transaction_id": entryID.description])]
        return posting
    }

    // MARK: - Placing

    /// Open orders one account may have at a time, unless the operator says
    /// otherwise (`MAX_OPEN_ORDERS`): every resting order is looked at on each
    /// pass of the worker, so one account must not fill that pass for everyone
    /// (a thousand one-cent limit buys tie up only $10).
    public static let maximumOpenOrders = 1_000

    /// Places a validated draft (symbol normalized) priced at `price`: sets
    /// aside buying power for a buy, shares for a sell, and creates the order
    /// as `new`.
    /// A stop waits for the price to cross it: a buy stop above the last price, a sell stop below.
    /// One on the other side would trigger at once and trade at the market, which is not what a
    /// stop is for (someone who meant a limit would sell now): refused, as brokers refuse it.
    static func checkStopSide(_ draft: OrderDraft, price: Price) throws(TradingError) {
        guard draft.type.needsStopPrice, let stop = draft.stopPrice else { return }
        switch draft.side {
        case .buy where stop <= price:
            throw .invalid(
                field: "stop_price", code: "wrong_side",
                message: "stop_price must be above the last price, \(price): a buy stop waits for the price to rise to it; at or below it, it would buy at once. To cap the price, use a limit order.")
        case .sell where stop >= price:
            throw .invalid(
                field: "stop_price", code: "wrong_side",
                message: "stop_price must be below the last price, \(price): a sell stop waits for the price to fall to it; at or above it, it would sell at once. To sell no lower than a price, use a limit order.")
        default:
            return
        }
    }

    public static func place(
        _ draft: OrderDraft, orderID: OrderID, clientOrderID: String?, account: AccountState, holding: HoldingState?,
        price: Price, marketBuyMargin: Ratio, keepingCash: Cash = .zero, now: Date
    ) throws(TradingError) -> Posting {
        if draft.notional != nil, draft.side == .sell {
            throw .invalid(field: "notional", code: "buy_only", message: "notional is allowed on buy orders only; sell a quantity.")
        }
        try checkStopSide(draft, price: price)
        var order = OrderState(
            id: orderID, accountID: account.id, userID: account.userID, clientOrderID: clientOrderID, symbol: draft.symbol,
            side: draft.side, type: draft.type, timeInForce: draft.timeInForce, quantity: draft.quantity, notional: draft.notional,
            limitPrice: draft.limitPrice, stopPrice: draft.stopPrice, status: .new, filledQuantity: .zero, averageFillPrice: nil,
            reservedCash: .zero, reservedQuantity: .zero, rejectReason: nil,
            keepingCash: draft.side == .buy ? keepingCash : .zero, createdAt: now, updatedAt: now)
        var posting = Posting()
        switch draft.side {
        case .buy:
            // What the buy may use: the available cash less what the caller keeps (a rebalance's cash reserve).
            let usable = keepingCash.isZero ? account.availableCash : Cash(uncheckedUnits: max(0, account.availableCash.units - keepingCash.units))
            guard let reserve = try? buyReservation(draft, price: price, margin: marketBuyMargin), reserve <= usable else {
                let needed = (try? buyReservation(draft, price: price, margin: marketBuyMargin)) ?? .max
                throw .insufficientBuyingPower(needed: needed, available: usable, field: draft.notional == nil ? "quantity" : "notional")
            }
            var after = account
            after.reservedCash = Cash(uncheckedUnits: account.reservedCash.units + reserve.units)
            order.reservedCash = reserve
            posting.account = after
        case .sell:
            let quantity = draft.quantity!
            guard var held = holding, quantity <= held.availableQuantity else {
                throw .insufficientShares(symbol: draft.symbol, available: holding?.availableQuantity ?? .zero, reserved: holding?.reservedQuantity ?? .zero)
            }
            held.reservedQuantity = Quantity(uncheckedUnits: held.reservedQuantity.units + quantity.units)
            order.reservedQuantity = quantity
            posting.holding = held
        }
        posting.order = order
        posting.createsOrder = true
        posting.events = [AuditNote(
            action: "order.placed", actorID: account.userID, subjectType: "order", subjectID: orderID.description,
            details: ["symbol": draft.symbol, "side": draft.side.rawValue, "type": draft.type.rawValue,
                      "reserved_cash": order.reservedCash.description, "reserved_quantity": order.reservedQuantity.description])]
        return posting
    }

    /// Cash a buy sets aside, rounded up to the cent: the notional; the
    /// quantity at the limit for limit orders; above the market (or the stop)
    /// by the margin otherwise. Computed exactly before the one rounding.
    public static func buyReservation(_ draft: OrderDraft, price: Price, margin: Ratio) throws(MoneyError) -> Cash {
        if let notional = draft.notional { return notional }
        let quantity = draft.quantity!
        switch draft.type {
        case .limit, .stopLimit:
            return try Cash.product(quantity, draft.limitPrice!, places: Cash.centPlaces, rounding: .up)
        case .market, .stop:
            let base = Price.max(price, draft.stopPrice ?? .zero)
            // (1 + margin) × price at 14 places is exact; then × quantity, rounded once.
            let factor = try Ratio(units: Int128(Ratio.one) + margin.units)
            let basis = try Fixed<WideScale>.product(base, factor, rounding: .up)
            return try Cash.product(quantity, basis, places: Cash.centPlaces, rounding: .up)
        }
    }

    // MARK: - Executing

    /// The broker took the order: `new` becomes `accepted` (a late acceptance
    /// of an order canceled meanwhile changes nothing).
    public static func accept(_ order: OrderState, now: Date) -> Posting? {
        guard order.status.canTransition(to: .accepted) else { return nil }
        return try? transition(order, to: .accepted, now: now)
    }

    /// Marks an open stop order's stop price as reached (once): the broker
    /// treats it as a market or limit order from then on. No money moves.
    public static func trigger(_ order: OrderState, now: Date) -> Posting? {
        guard order.status.isOpen, order.triggeredAt == nil, order.type.needsStopPrice else { return nil }
        var after = order
        after.triggeredAt = now
        after.updatedAt = now
        var posting = Posting()
        posting.order = after
        posting.events = [AuditNote(
            action: "order.triggered", subjectType: "order", subjectID: order.id.description,
            details: ["stop_price": order.stopPrice?.description ?? ""])]
        return posting
    }

    /// Applies one fill, whole or partial. Nil when the order has already
    /// ended. A buy whose price ran past what was reserved, a sale of shares
    /// no longer held, or a fill whose result would exceed a column stops the
    /// order instead: rejected, or canceled for the rest once part of it
    /// filled (what filled stands). A fill of nothing, or at no price, is an
    /// error: it is never silently dropped.
    /// `finishesOrder`: the broker says this is the order's last fill; it
    /// decides when a notional order (which has no quantity) is filled.
    /// `heldAtBroker`: the broker holds the order and the fill already
    /// happened there. One the books cannot take still ends the order here
    /// (kept open, it would hold its reservation and keep reconciliation
    /// off the account for good), with a reason that says it filled at the
    /// broker and an `order.broker_fill_not_recorded` event: reconciliation
    /// then brings the account's cash and shares to the broker's.
    /// `filledValue`: the exact value of the order's earlier fills, from which
    /// the fill's cash is the change of the rounded running total (see `Money.cost`).
    public static func fill(
        _ fill: BrokerFill, order: OrderState, account: AccountState, holding: HoldingState?, finishesOrder: Bool = true,
        heldAtBroker: Bool = false, filledValue: FillValue = .zero, fillID: FillID, entryID: EntryID, now: Date
    ) throws(TradingError) -> Posting? {
        guard order.status.isOpen else { return nil }
        guard fill.quantity.isPositive else { throw .unusableFill(orderID: order.id, fill: fill.id) }
        // An order of a quantity fills up to it; a notional order until the broker says it is done.
        let remaining = order.remainingQuantity ?? fill.quantity
        let completes = order.quantity == nil ? finishesOrder : fill.quantity == remaining
        // The books date a fill when it executed: never before its order was placed
        // (a broker's clock a little ahead of ours) and never after it is applied.
        let executedAt = fill.executedAt.map { min(now, max(order.createdAt, $0)) } ?? now
        var posting = Posting()
        var after = order
        var account = account
        let held = holding ?? .empty(order.symbol)
        // An open order can always be canceled; one that has not filled yet is rejected instead.
        func stop(_ reason: String) -> Posting? {
            if heldAtBroker {
                let why = "filled at the broker, beyond what the books can take (\(reason)): reconciliation records it"
                guard var ended = end(order, as: order.status == .partiallyFilled ? .canceled : .rejected, reason: why, account: account, holding: holding, now: now)
                else { return nil }
                ended.events.append(AuditNote(
                    action: "order.broker_fill_not_recorded", subjectType: "order", subjectID: order.id.description,
                    details: ["reason": reason, "quantity": fill.quantity.description, "price": fill.price.description, "broker_fill_id": fill.id]))
                return ended
            }
            return end(order, as: order.status == .partiallyFilled ? .canceled : .rejected, reason: reason, account: account, holding: holding, now: now)
        }
        // A broker that reports more than the order has left, or a price of nothing, is wrong or ahead of the
        // books: an error to ask again about, unless the fill already happened at the broker, where asking
        // again gives the same answer for good.
        guard fill.price.isPositive else {
            if heldAtBroker { return stop("a fill at no price") }
            throw .unusableFill(orderID: order.id, fill: fill.id)
        }
        guard fill.quantity <= remaining else {
            if heldAtBroker { return stop("a fill of \(fill.quantity) with \(remaining) left") }
            throw .overfill(orderID: order.id, remaining: remaining, fill: fill.quantity)
        }
        let line: LedgerLine
        switch order.side {
        case .buy:
            // This fill's share of the reservation in whole cents, but never less
            // than it costs; all that is left on the last fill. A notional order's
            // share is what the part cost.
            guard var cost = try? Money.cost(quantity: fill.quantity, price: fill.price, after: filledValue),
                  let share = order.quantity == nil ? cost
                      : try? order.reservedCash.scaled(by: fill.quantity, over: remaining, places: Cash.centPlaces, rounding: .down)
            else { return stop("the fill's cost is beyond what an account can hold") }
            // A notional buy costs at most what is left of its notional: the broker fills the amount asked for, but
            // its quantity cut to 9 places at a price cut to 8 can come to a hair over it (1.006711410 @ 99.33333333
            // is 100.0000000566), which rounding up would make a cent more than the person asked to spend. Only
            // that cent: a fill worth more than the notional is the broker's error, and stays one.
            if order.quantity == nil, cost > order.reservedCash, cost.units - order.reservedCash.units <= Money.oneCent.units {
                cost = order.reservedCash
            }
            var release = completes ? order.reservedCash : Cash.min(order.reservedCash, Cash.max(share, cost))
            // A limit buy keeps back what the rest can still cost at its limit, and frees the remainder: a part below
            // the limit must not free a cent the last part at the limit then needs. A part above the limit (the
            // broker's error, but it happened) is paid over its share from available cash, never from the rest's.
            if !completes, order.type == .limit || order.type == .stopLimit, let limit = order.limitPrice, let quantity = order.quantity,
               let value = try? filledValue.adding(fill.quantity, fill.price),
               let rest = try? Money.cost(quantity: Quantity(uncheckedUnits: quantity.units - order.filledQuantity.units - fill.quantity.units), price: limit, after: value),
               let kept = try? order.reservedCash - rest
            {
                release = Cash.min(order.reservedCash, kept)
                if release.units < 0 {
                    // The rest needs more than the order holds (a part above the limit moved the running total's
                    // rounding by a cent): the difference is reserved from available cash, as far as there is any,
                    // and never a reason to refuse a fill that can be paid.
                    let spare = account.cash.units - cost.units - account.reservedCash.units
                    release = Cash(uncheckedUnits: Swift.max(release.units, -Swift.max(0, spare)))
                }
            }
            let reservedAfter = Cash(uncheckedUnits: account.reservedCash.units - release.units)
            guard let cashAfter = try? account.cash - cost, cashAfter >= reservedAfter else {
                return stop("insufficient cash at the fill price")
            }
            // What the fill costs beyond what it frees of its reservation comes from available cash, but never from
            // the cash the order was placed to keep (a rebalance's reserve). A broker that holds the order has filled
            // it already: that fill is booked as it happened (the books follow the broker).
            if !heldAtBroker, !order.keepingCash.isZero, cost > release, cashAfter.units - reservedAfter.units < order.keepingCash.units {
                return stop("the fill price would spend the cash kept aside (\(order.keepingCash))")
            }
            guard let position = try? held.position.buying(fill.quantity, for: cost) else {
                return stop("the holding would exceed what an account can hold")
            }
            account.cash = cashAfter
            account.reservedCash = reservedAfter
            after.reservedCash = Cash(uncheckedUnits: order.reservedCash.units - release.units)
            var holdingAfter = held
            holdingAfter.quantity = position.quantity
            holdingAfter.costBasis = position.costBasis
            posting.holding = holdingAfter
            line = LedgerLine(
                id: entryID, kind: .buy, amount: -cost, symbol: order.symbol, quantity: fill.quantity, price: fill.price, orderID: order.id,
                description: "buy \(fill.quantity) \(order.symbol) @ \(fill.price)", occurredAt: executedAt)
        case .sell:
            guard let sold = held.position.selling(fill.quantity) else {
                return stop("shares no longer held")
            }
            guard let proceeds = try? Money.proceeds(quantity: fill.quantity, price: fill.price, after: filledValue),
                  let cashAfter = try? account.cash + proceeds
            else {
                return stop("the proceeds would exceed what an account can hold")
            }
            let release = completes ? order.reservedQuantity : Quantity.min(order.reservedQuantity, fill.quantity)
            account.cash = cashAfter
            after.reservedQuantity = Quantity(uncheckedUnits: order.reservedQuantity.units - release.units)
            var holdingAfter = held
            holdingAfter.quantity = sold.position.quantity
            holdingAfter.costBasis = sold.position.costBasis
            holdingAfter.reservedQuantity = Quantity(uncheckedUnits: held.reservedQuantity.units - release.units)
            posting.holding = holdingAfter
            line = LedgerLine(
                id: entryID, kind: .sell, amount: proceeds, symbol: order.symbol, quantity: -fill.quantity, price: fill.price, orderID: order.id,
                description: "sell \(fill.quantity) \(order.symbol) @ \(fill.price)", occurredAt: executedAt)
        }
        posting.account = account
        posting.entries = [line]
        posting.fill = FillLine(id: fillID, orderID: order.id, brokerFillID: fill.id, quantity: fill.quantity, price: fill.price, occurredAt: executedAt)
        let filledAfter = Quantity(uncheckedUnits: order.filledQuantity.units + fill.quantity.units)
        after.filledQuantity = filledAfter
        // From the exact value of every fill when the earlier ones' is known (a first fill, or books that
        // loaded it): an average rebuilt from the last rounded one drifts by a unit with each part.
        if !order.filledQuantity.isPositive || filledValue != .zero, let value = try? filledValue.adding(fill.quantity, fill.price) {
            after.averageFillPrice = value.average(over: filledAfter)
        } else {
            after.averageFillPrice = averagePrice(before: order.averageFillPrice ?? .zero, filledBefore: order.filledQuantity, fill: fill, filledAfter: filledAfter)
        }
        after.updatedAt = now
        var events: [AuditNote] = []
        if after.status == .new, let accepted = try? transition(after, to: .accepted, now: now) {
            after = accepted.order!
            events += accepted.events
        }
        // A paper stop order fills only once its stop was reached: if no look before saw it reached (it filled at
        // the first price past its stop), it was reached when it filled. (A broker that holds the order keeps the
        // trigger itself; an order that filled before triggers were recorded is left as it was.)
        if !heldAtBroker, order.type.needsStopPrice, order.triggeredAt == nil, order.filledQuantity.isZero {
            after.triggeredAt = executedAt
            events.append(AuditNote(
                action: "order.triggered", subjectType: "order", subjectID: order.id.description,
                details: ["stop_price": order.stopPrice?.description ?? ""]))
        }
        if let moved = try? transition(after, to: completes ? .filled : .partiallyFilled, now: now) {
            after = moved.order!
            events += moved.events
        }
        events.append(AuditNote(
            action: "order.fill", subjectType: "order", subjectID: order.id.description,
            details: ["quantity": fill.quantity.description, "price": fill.price.description, "amount": line.amount.magnitude.description,
                      "transaction_id": entryID.description]))
        posting.order = after
        posting.events = events
        return posting
    }

    /// The volume-weighted average of all fills so far, 8 places, half to even,
    /// from the last average (when the exact value of the earlier fills is not known).
    static func averagePrice(before: Price, filledBefore: Quantity, fill: BrokerFill, filledAfter: Quantity) -> Price {
        let old = FixedMath.multiply(before.units.magnitude, filledBefore.units.magnitude)
        let new = FixedMath.multiply(fill.price.units.magnitude, fill.quantity.units.magnitude)
        let (low, carry) = old.low.addingReportingOverflow(new.low)
        let high = old.high &+ new.high &+ (carry ? 1 : 0)
        // Quantities cancel: (price × quantity) ÷ quantity is a price at 8 places.
        let units = (try? FixedMath.divide(high: high, low: low, by: filledAfter.units.magnitude, negative: false, rule: .halfEven)) ?? 0
        return Price(uncheckedUnits: Int128(units))
    }

    // MARK: - Ending

    /// Ends an order (`canceled`, `rejected`, `expired`) and gives back what
    /// it set aside. Nil when the order cannot move to that status any more.
    public static func end(
        _ order: OrderState, as status: OrderStatus, reason: String?, account: AccountState, holding: HoldingState?, now: Date
    ) -> Posting? {
        guard order.status.canTransition(to: status) else { return nil }
        var posting = Posting()
        if order.reservedCash.isPositive {
            var after = account
            after.reservedCash = Cash(uncheckedUnits: account.reservedCash.units - order.reservedCash.units)
            posting.account = after
        }
        if order.reservedQuantity.isPositive, var held = holding {
            held.reservedQuantity = Quantity(uncheckedUnits: held.reservedQuantity.units - order.reservedQuantity.units)
            posting.holding = held
        }
        var ended = order
        ended.reservedCash = .zero
        ended.reservedQuantity = .zero
        ended.rejectReason = reason
        guard let moved = try? transition(ended, to: status, now: now) else { return nil }
        posting.order = moved.order
        posting.events = moved.events
        return posting
    }

    /// A cancel of an order Folio still holds open: the user's, or an operator's (`actor` nil, and its own `reason`).
    public static func cancel(
        _ order: OrderState, actor: UserID?, reason: String = OrderState.canceledByUser, account: AccountState, holding: HoldingState?, now: Date
    ) throws(TradingError) -> Posting {
        guard order.status.isCancelable, var posting = end(order, as: .canceled, reason: reason, account: account, holding: holding, now: now) else {
            throw .orderNotCancelable(order.status)
        }
        // A request recorded before the broker was asked (`requestCancel`) is not recorded twice.
        if order.cancelRequestedAt == nil {
            posting.events.append(AuditNote(action: "order.cancel_requested", actorID: actor, subjectType: "order", subjectID: order.id.description))
        }
        return posting
    }

    /// A user's cancel of an order that may be on its way to a broker that
    /// holds orders: the order stays `new` and keeps its reservation until
    /// the submit job has canceled it at the broker (or here, if it never left).
    public static func requestCancel(_ order: OrderState, actor: UserID?, now: Date) throws(TradingError) -> Posting {
        guard order.status.isCancelable else { throw .orderNotCancelable(order.status) }
        var after = order
        after.cancelRequestedAt = after.cancelRequestedAt ?? now
        after.updatedAt = now
        var posting = Posting()
        posting.order = after
        posting.events = [AuditNote(action: "order.cancel_requested", actorID: actor, subjectType: "order", subjectID: order.id.description)]
        return posting
    }

    /// Moves an order through the status machine with its audit event
    /// (another partial fill keeps `partially_filled`, and is recorded too).
    static func transition(_ order: OrderState, to status: OrderStatus, now: Date) throws(TradingError) -> Posting {
        var posting = Posting()
        var after = order
        after.updatedAt = now
        guard order.status != status || status == .partiallyFilled else {
            posting.order = after
            return posting
        }
        guard order.status.canTransition(to: status) else { throw .impossibleTransition(from: order.status, to: status) }
        after.status = status
        posting.order = after
        posting.events = [AuditNote(
            action: "order.\(status.rawValue)", subjectType: "order", subjectID: order.id.description,
            details: ["from": order.status.rawValue, "to": status.rawValue])]
        return posting
    }
}

/// 18 fraction digits, 38 in all: for exact intermediate products (a price
/// times a margin) that are rounded once at the end.
public enum WideScale: FixedScale {
    public static var fractionDigits: Int { 18 }
    public static var precision: Int { 38 }
    public static var minimumDisplayDigits: Int { 0 }
}
