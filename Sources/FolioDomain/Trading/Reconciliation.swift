import Foundation

/// A position as an outside broker reports it.
public struct BrokerPosition: Equatable, Sendable {
    public var symbol: String
    public var quantity: Quantity
    /// What the broker says the shares cost each; the cost basis of shares that arrive by reconciliation.
    public var averageEntryPrice: Price?

    public init(symbol: String, quantity: Quantity, averageEntryPrice: Price?) {
        self.symbol = symbol
        self.quantity = quantity
        self.averageEntryPrice = averageEntryPrice
    }
}

/// One figure on which Folio's books and the broker's differ.
public struct ReconciliationDifference: Equatable, Sendable {
    /// `cash`, or a symbol.
    public var what: String
    public var folio: String
    public var broker: String

    public init(what: String, folio: String, broker: String) {
        self.what = what
        self.folio = folio
        self.broker = broker
    }
}

extension TradingRules {
    /// Why an account's books cannot be brought to its broker's figures now.
    public enum ReconciliationBlock: Error, Equatable, Sendable {
        /// Orders are open: fills may be on their way, and the figures would cross.
        case openOrders
        /// The broker reports what Folio's books cannot hold: a short position, negative cash.
        case unsupported(String)
    }

    /// Brings a brokerage account's books to its broker's cash and positions:
    /// one `correction` row per difference, each with an audit event naming
    /// both figures. Cash moves by the difference, to the last place the
    /// column keeps. A position the broker reports with its average entry
    /// price and more shares than Folio's books: shares that arrived cost what
    /// the broker's basis (its shares at that price) is above Folio's
    /// (nothing, for a split's, which keeps the basis and spreads it over more
    /// shares). Shares that left take their share of the basis with them
    /// (a reverse split is not told from a transfer out).
    /// No cash moves with shares: a
    /// transfer or corporate action outside Folio is not a trade. Call it
    /// only with every open order ended (`openOrders` otherwise), or name the
    /// symbols open orders are about in `waiting`: then only the other
    /// symbols' positions are brought to the broker's, and cash waits (a fill
    /// of any order moves it), so a resting order does not hold a deposit or a
    /// transfer at the broker off the books for as long as it rests.
    public static func reconcile(
        account: AccountState, holdings: [String: HoldingState], brokerCash: Cash, brokerPositions: [BrokerPosition],
        brokerName: String, waiting: Set<String>? = nil, ids: () -> EntryID, now: Date
    ) throws(ReconciliationBlock) -> (postings: [Posting], differences: [ReconciliationDifference]) {
        if waiting == nil {
            guard account.reservedCash.isZero, holdings.values.allSatisfy({ $0.reservedQuantity.isZero }) else { throw .openOrders }
        }
        guard !brokerCash.isNegative else { throw .unsupported("\(brokerName) reports negative cash (\(brokerCash)): margin borrowing") }
        if let short = brokerPositions.first(where: { $0.quantity.isNegative }) {
            throw .unsupported("\(brokerName) reports a short position in \(short.symbol)")
        }
        var postings: [Posting] = []
        var differences: [ReconciliationDifference] = []
        var state = account
        func note(_ what: String, folio: String, broker: String, entry: EntryID) -> AuditNote {
            AuditNote(
                action: "reconciliation.adjusted", subjectType: "account", subjectID: account.id.description,
                details: ["what": what, "folio": folio, "broker": broker, "broker_name": brokerName, "transaction_id": entry.description])
        }
        if waiting == nil, brokerCash != account.cash {
            let difference = Cash(uncheckedUnits: brokerCash.units - account.cash.units)
            let entry = ids()
            state.cash = brokerCash
            var posting = Posting()
            posting.account = state
            posting.entries = [LedgerLine(
                id: entry, kind: .correction, amount: difference,
                description: "Reconciliation with \(brokerName): cash there \(brokerCash), here \(account.cash)", occurredAt: now)]
            posting.events = [note("cash", folio: account.cash.description, broker: brokerCash.description, entry: entry)]
            postings.append(posting)
            differences.append(.init(what: "cash", folio: account.cash.description, broker: brokerCash.description))
        }
        let reported = Dictionary(brokerPositions.map { ($0.symbol, $0) }, uniquingKeysWith: { first, _ in first })
        for symbol in Set(reported.keys).union(holdings.keys).sorted() {
            let held = holdings[symbol] ?? .empty(symbol)
            // A symbol an open order is about, or with shares an order holds, waits for it.
            if let waiting, waiting.contains(symbol) || !held.reservedQuantity.isZero { continue }
            let there = reported[symbol]?.quantity ?? .zero
            guard there != held.quantity else { continue }
            let entry = ids()
            var after = held
            let line: LedgerLine
            // What the broker says the whole position cost (its shares at its average entry price): after a split the
            // same basis over more shares, after a transfer in the old basis and the new shares' together.
            let average = reported[symbol]?.averageEntryPrice.flatMap { $0.isPositive ? $0 : nil }
            let brokerBasis = average.flatMap { try? Money.cost(quantity: there, price: $0) }
            if there > held.quantity {
                let arrived = Quantity(uncheckedUnits: there.units - held.quantity.units)
                // The arriving shares cost what the broker's basis is above ours (none, for a split's); the line's price is
                // their cost a share, so their tax lot costs the same.
                let cost = brokerBasis.map { Cash(uncheckedUnits: max(0, $0.units - held.costBasis.units)) } ?? .zero
                let price = average == nil || cost.isZero ? nil : try? Price.quotient(cost, arrived, places: PriceScale.fractionDigits, rounding: .up)
                guard let position = try? held.position.buying(arrived, for: cost) else {
                    throw .unsupported("\(symbol) at \(there) shares is beyond what an account can hold")
                }
                after.quantity = position.quantity
                after.costBasis = position.costBasis
                line = LedgerLine(
                    id: entry, kind: .correction, amount: .zero, symbol: symbol, quantity: arrived, price: price,
                    description: "Reconciliation with \(brokerName): \(there) \(symbol) there, \(held.quantity) here", occurredAt: now)
            } else {
                let left = Quantity(uncheckedUnits: held.quantity.units - there.units)
                guard let sold = held.position.selling(left) else { throw .unsupported("\(symbol) cannot be reduced by \(left)") }
                after.quantity = sold.position.quantity
                // Shares that left take their share of the basis, as their tax lots leave first in, first out: a reverse
                // split is not told from a transfer out here (the lots would have to be scaled, not taken).
                after.costBasis = sold.position.costBasis
                line = LedgerLine(
                    id: entry, kind: .correction, amount: .zero, symbol: symbol, quantity: -left,
                    description: "Reconciliation with \(brokerName): \(there) \(symbol) there, \(held.quantity) here", occurredAt: now)
            }
            var posting = Posting()
            posting.holding = after
            posting.entries = [line]
            posting.events = [note(symbol, folio: held.quantity.description, broker: there.description, entry: entry)]
            postings.append(posting)
            differences.append(.init(what: symbol, folio: held.quantity.description, broker: there.description))
        }
        return (postings, differences)
    }
}
