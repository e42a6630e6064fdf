import FolioDomain
import Foundation

/// What a commit of the books tells the account's owner, read from the
/// postings' audit events (`order.filled`, `ledger.deposit`…): every change
/// of money goes through `Ledger.commit`, so no path can forget to notify.
extension Notifications {
    static func notices(in books: Books) -> [(MailTemplate, MailVariables)] {
        var orders: [String: OrderState] = [:]
        for (order, _) in books.changedOrders { orders[order.id.description] = order }
        // Opening an account deposits its starting cash: not news to anyone.
        let opening = books.events.contains { $0.action == "account.opened" }
        // One notice per order per commit, from where the order ended: several fills applied together are one "filled".
        // A cancel the user asked for is not news to them; one the broker or Folio made is.
        let askedToCancel = Set(books.events.filter { $0.action == "order.cancel_requested" }.map(\.subjectID))
        // Ended here because the broker filled more than the books could take: the person holds what the broker
        // bought or sold, so it is told as a fill at the broker, never as "rejected" (or a cancel they did not ask for).
        let filledAtBroker = Set(books.events.filter { $0.action == "order.broker_fill_not_recorded" }.map(\.subjectID))
        func told(_ event: AuditNote) -> Bool {
            switch event.action {
            case "order.filled", "order.partially_filled", "order.rejected", "order.expired": true
            case "order.canceled":
                filledAtBroker.contains(event.subjectID)
                    || (orders[event.subjectID]?.cancelRequestedAt == nil && !askedToCancel.contains(event.subjectID))
            default: false
            }
        }
        // A part filled now of an order that had parts filled before and is still open is no news: the first part
        // said the order began to fill, and its end (filled, canceled, expired) will say how it finished. An order
        // filled in fifty parts sends two messages, not fifty-one.
        var filledNow: [String: Quantity] = [:]
        for fill in books.fills { filledNow[fill.orderID.description] = (try? (filledNow[fill.orderID.description] ?? .zero) + fill.quantity) ?? fill.quantity }
        func laterPart(_ event: AuditNote) -> Bool {
            guard event.action == "order.partially_filled", let order = orders[event.subjectID], order.status.isOpen else { return false }
            return order.filledQuantity > (filledNow[event.subjectID] ?? .zero)
        }
        // The last told event of each order: fills before a cancel the user asked for are still news.
        var lastOrderEvent: [String: Int] = [:]
        for (index, event) in books.events.enumerated() where told(event) && !laterPart(event) { lastOrderEvent[event.subjectID] = index }
        var notices: [(MailTemplate, MailVariables)] = []
        for (index, event) in books.events.enumerated() {
            switch event.action {
            case "order.filled", "order.partially_filled", "order.rejected", "order.expired", "order.canceled":
                guard lastOrderEvent[event.subjectID] == index, let order = orders[event.subjectID] else { continue }
                var values = [
                    "side": order.side.rawValue.lowercased(), "symbol": order.symbol, "order_id": order.id.description,
                    "filled_quantity": order.filledQuantity.description,
                    "price": order.averageFillPrice?.description ?? "-",
                    // As people read money (the exact figures above stay in the notification's data).
                    "price_text": order.averageFillPrice.map(Display.price) ?? "-",
                ]
                // A notional order has no quantity: its notices say what filled, not "of" how much.
                if let quantity = order.quantity { values["quantity"] = quantity.description }
                let template: MailTemplate
                switch event.action {
                case "order.filled":
                    template = .orderFilled
                    values["quantity"] = order.filledQuantity.description
                case "order.partially_filled": template = .orderPartiallyFilled
                case _ where filledAtBroker.contains(event.subjectID):
                    // Rejected or canceled here; filled there.
                    template = .orderFilledAtBroker
                    values["reason"] = order.rejectReason ?? "no reason was given"
                case "order.rejected":
                    template = .orderRejected
                    values["reason"] = order.rejectReason ?? "no reason was given"
                case "order.canceled":
                    template = .orderCanceled
                    values["reason"] = order.rejectReason ?? "no reason was given"
                default: template = .orderExpired
                }
                notices.append((template, MailVariables(values)))
            // Cash in or out: a deposit or withdrawal, or a dividend or fee the operator (or a broker's activity) booked.
            case "ledger.deposit" where !opening, "ledger.withdrawal", "ledger.dividend", "ledger.fee":
                let amount = event.details["amount"].map { $0.hasPrefix("-") ? String($0.dropFirst()) : $0 } ?? "-"
                let cashAfter = event.details["cash_after"] ?? "-"
                func text(_ figure: String) -> String { (try? Cash(parsing: figure)).map(Display.money) ?? figure }
                var values = [
                    "amount": amount, "cash_after": cashAfter, "amount_text": text(amount), "cash_after_text": text(cashAfter),
                    "account": "your account",
                ]
                let template: MailTemplate
                switch event.action {
                case "ledger.deposit": template = .cashDeposit
                case "ledger.withdrawal": template = .cashWithdrawal
                default:
                    template = event.action == "ledger.dividend" ? .cashDividend : .cashFee
                    let line = books.postings.lazy.flatMap(\.entries).first { $0.id.description == event.details["transaction_id"] }
                    if let symbol = line?.symbol { values["symbol"] = symbol }
                    if let description = line?.description { values["description"] = description }
                }
                notices.append((template, MailVariables(values)))
            case "rebalance.finished":
                let stopped = event.details["stopped"].flatMap(RebalanceService.Stop.init(rawValue:))
                let outcome = switch (event.details["status"], stopped) {
                case ("done", _): "finished"
                case (_, .some): "was stopped"
                case ("partially_done", nil): "finished in part"
                default: "stopped"
                }
                let filled = event.details["filled"] ?? "0", orders = event.details["orders"] ?? "0"
                // Orders the run placed and filled say nothing of those it could not place: the run's reasons do.
                let reasons = Int(event.details["reasons"] ?? "0") ?? 0
                let kept = event.details["sold"] == "true" ? "; what its sales brought stays as cash" : ""
                let why = switch stopped {
                case .canceled: " One of its orders was canceled, so it placed nothing more\(kept)."
                case .targetsChanged: " Its targets were changed while it ran, so it placed nothing more\(kept). Preview a rebalance for the new targets."
                case nil: reasons == 0 ? "" : " Not everything went as planned: the run in Folio says why."
                }
                notices.append((.rebalanceFinished, MailVariables(["outcome": outcome, "detail": "\(filled) of \(orders) orders filled.\(why)"])))
            default:
                continue
            }
        }
        return notices
    }

    /// The cash notices of an account whose owner has others (`TradingStore.nameAmongSeveral`) say which account.
    static func naming(_ notices: inout [(MailTemplate, MailVariables)], account name: String) {
        for index in notices.indices where notices[index].0.category == .cash {
            notices[index].1.values["account"] = "your account “\(name)”"
            notices[index].1.values["account_name"] = name
        }
    }
}
