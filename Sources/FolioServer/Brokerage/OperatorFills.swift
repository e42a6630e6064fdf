import FolioDomain
import Foundation

/// `folio broker record-fills`: an operator books what an Alpaca order filled when Folio cannot read
/// Alpaca's own record of its fills (a FILL activity without its quantity or price, or the order's fills
/// more than 5,000 activities back), so the order stays open with its cash or shares reserved
/// (FolioOrdersOverdue). Only an order Alpaca says has ended, with `filled_qty` ahead of the books, and
/// only the whole rest at once: the operator names the rest's quantity (a check against the wrong order)
/// and its price as Alpaca shows it. The fill goes through the same report and `Ledger` as the worker's,
/// and carries the id Alpaca's last FILL activity of the order would give it (`alpaca:<order>:<filled_qty>`),
/// so the worker never books it a second time; the order ends as it ended at Alpaca. A rest made of fills
/// at several prices is booked at one price (their average, which must make Alpaca's average of the whole order
/// with what was booked, to the rounding of the figures): a cent of rounding is then left to
/// `folio broker reconcile`, which posts it as an explained correction.
public enum OperatorFills {
    public struct Outcome: Sendable {
        public var orderID: String
        /// Alpaca's status, `filled_qty` and `filled_avg_price` of the order.
        public var alpacaStatus: String
        public var alpacaFilled: String
        public var alpacaAveragePrice: String?
        /// What Folio had booked of it before, and what is (or would be) booked now.
        public var booked: String
        public var quantity: String
        public var price: String
        /// The order's status in Folio after the fill (what it would be, on a dry run).
        public var status: String
        public var applied: Bool
        /// What the books have filled of the order after the command (less than Alpaca's when the books could not take
        /// the fill: the order then ends here, and reconciliation brings the account to Alpaca's).
        public var filledAfter: String? = nil
    }

    /// Why nothing was booked, in words an operator acts on.
    public struct Refusal: CommandRefusal {
        public let description: String
    }

    public static func record(
        orderID text: String, quantity quantityText: String, price priceText: String, dryRun: Bool, services: FolioServices
    ) async throws -> Outcome {
        guard let orderID = OrderID(text) else { throw Refusal(description: "the order id must be a UUID") }
        let quantity: Quantity, price: Price
        do { quantity = try Quantity(parsing: quantityText) } catch { throw Refusal(description: "--quantity: \(error)") }
        do { price = try Price(parsing: priceText) } catch { throw Refusal(description: "--price: \(error)") }
        guard quantity.isPositive else { throw Refusal(description: "--quantity must be more than zero") }
        guard price.isPositive else { throw Refusal(description: "--price must be more than zero") }

        guard let order = try await services.store.order(orderID) else { throw Refusal(description: "no order has that id") }
        guard order.status.isOpen else { throw Refusal(description: "the order has ended already (\(order.status.rawValue)): nothing to book") }
        guard case .alpaca(let alpaca) = try await services.brokers.route(for: order.accountID) else {
            throw Refusal(description: "the order's account is not linked to Alpaca (a paper account, or its link is removed)")
        }
        guard let remote = try await alpaca.find(order.id) else {
            throw Refusal(description: "Alpaca has no order with this client_order_id: it never reached Alpaca")
        }
        func says() -> String { "Alpaca says \(remote.status), \(remote.filledQuantity) filled" }
        guard AlpacaBroker.endedStatuses.contains(remote.status) else {
            throw Refusal(description: "\(says()): the order is still open there, and its fills are booked as they come; wait until it ends")
        }
        let booked = order.filledQuantity
        guard remote.filledQuantity > booked else {
            throw Refusal(description: "\(says()) and Folio has booked \(booked): nothing is missing, and the worker's next look ends the order")
        }
        let rest = try remote.filledQuantity - booked
        guard quantity == rest else {
            throw Refusal(description: "\(says()) and Folio has booked \(booked): --quantity must be the rest, \(rest)")
        }
        // Nothing booked yet: the rest is the whole order, and its price is Alpaca's average (a typo is refused).
        if booked.isZero, let average = remote.averagePrice, average != price {
            throw Refusal(description: "\(says()) at an average of \(average), and Folio has booked none of it: --price must be \(average)")
        }
        // Part booked: the rest's price must make Alpaca's average together with what was booked.
        if !booked.isZero, let average = remote.averagePrice, let bookedAverage = order.averageFillPrice,
           let implied = try Self.comparing({ try restPriceMismatch(
               price, rest: rest, booked: booked, bookedAverage: bookedAverage, filled: remote.filledQuantity, alpacaAverage: average) }) {
            throw Refusal(description: """
                \(says()) at an average of \(average), and Folio has booked \(booked) at an average of \(bookedAverage): \
                the rest's price that makes Alpaca's average is about \(implied), not \(price)
                """)
        }
        let fill = BrokerFill(
            id: AlpacaBroker.fillID(order: remote.id, cumulative: remote.filledQuantity), quantity: rest, price: price,
            executedAt: remote.filledAt ?? remote.updatedAt)
        let report = AlpacaBroker.report(remote, fills: [fill], applied: booked)
        var outcome = Outcome(
            orderID: orderID.description, alpacaStatus: remote.status, alpacaFilled: remote.filledQuantity.description,
            alpacaAveragePrice: remote.averagePrice?.description, booked: booked.description, quantity: rest.description,
            price: price.description, status: Self.status(after: report, of: order).rawValue, applied: false)
        guard !dryRun else { return outcome }

        // Applied only while the locked books still have the order where Alpaca's figures were compared with them
        // (a fill the worker booked meanwhile would make this one an overfill), with the operator's event beside it.
        let note = AuditNote(
            action: "order.fills_recorded_by_operator", subjectType: "order", subjectID: orderID.description,
            details: [
                "quantity": rest.description, "price": price.description, "alpaca_status": remote.status,
                "alpaca_filled_qty": remote.filledQuantity.description, "broker_fill_id": fill.id, "booked_before": booked.description,
            ])
        do {
            try await services.orders.apply(report, to: order, expecting: booked, note: note)
        } catch is OrderService.BooksMoved {
            throw Refusal(description: "the order's fills moved while Alpaca was asked: run the command again")
        }
        let after = try await services.store.order(orderID)
        outcome.status = after?.status.rawValue ?? outcome.status
        outcome.applied = true
        outcome.filledAfter = (after?.filledQuantity ?? booked).description
        services.logger.notice(
            "an operator recorded an order's fills", metadata: ["order_id": "\(orderID)", "quantity": "\(rest)", "status": "\(outcome.status)"])
        return outcome
    }

    /// Nil when `price` for the `rest` of an order, with what was booked before, makes Alpaca's average of
    /// everything `filled`, give or take the rounding of the figures compared; otherwise the price that would.
    /// Alpaca's average is taken as rounded to the digits it shows, and to cents at least (an average rounded to
    /// fewer digits than a cent would be a coarser figure than the prices it averages); Folio's booked average to
    /// its 8 places. The products are formed at 6 places. A typo (84 for 48) is refused. How close the price must
    /// be follows from the digits Alpaca shows: to cents, a rest of a few shares of a large order may be off by
    /// more than a cent; to 7 places, the rest's own average to as many places is needed (the refusal names it).
    static func restPriceMismatch(
        _ price: Price, rest: Quantity, booked: Quantity, bookedAverage: Price, filled: Quantity, alpacaAverage: Price
    ) throws -> Price? {
        let whole = try Ratio.product(alpacaAverage, filled, rounding: .halfEven)
        let before = try Ratio.product(bookedAverage, booked, rounding: .halfEven)
        let restValue = try Ratio.product(price, rest, rounding: .halfEven)
        let expected = try whole - before
        let gap = (try restValue - expected).magnitude
        // Half a unit of the last digit Alpaca shows (cents at least), on every share it averages; a unit of 8 places
        // on every share of the books' average and of the price; and the rounding of the three products and the sum.
        let shown = max(alpacaAverage.places, 2)
        let halfShownUnit = Price(uncheckedUnits: Swift.max(1, Int128(FixedMath.powerOfTen(PriceScale.fractionDigits - shown)) / 2))
        let tolerance = try Ratio.product(halfShownUnit, filled, rounding: .up)
            + Ratio.product(Price(uncheckedUnits: 1), try booked + rest, rounding: .up)
            + Ratio(uncheckedUnits: 4)
        guard gap > tolerance else { return nil }
        return try Price.quotient(expected, rest, places: Swift.min(shown + 2, PriceScale.fractionDigits), rounding: .halfEven)
    }

    /// Figures too large to compare are a refusal in words, not a bare arithmetic error.
    static func comparing<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as MoneyError {
            throw Refusal(description: "the order's figures are too large to compare with Alpaca's (\(error)); nothing was booked")
        }
    }

    /// Where a report leaves the order (for the dry run's answer).
    static func status(after report: BrokerReport, of order: OrderState) -> OrderStatus {
        switch report {
        case .accepted: order.status
        case .triggered: order.status == .new ? .accepted : order.status
        case .partiallyFilled: .partiallyFilled
        case .filled: .filled
        case .filledThenCanceled, .canceled: .canceled
        case .rejected: .rejected
        case .expired: .expired
        }
    }
}
