import Foundation

/// An account's balances as the trading rules see them.
public struct AccountState: Equatable, Sendable {
    public let id: AccountID
    public let userID: UserID
    public var cash: Cash
    /// Set aside by open buy orders.
    public var reservedCash: Cash

    public init(id: AccountID, userID: UserID, cash: Cash, reservedCash: Cash) {
        self.id = id
        self.userID = userID
        self.cash = cash
        self.reservedCash = reservedCash
    }

    /// Cash not set aside: what a withdrawal or a new buy may use.
    public var availableCash: Cash { Cash(uncheckedUnits: cash.units - reservedCash.units) }
}

/// Shares of one symbol in one account; part of them set aside by open sells.
public struct HoldingState: Equatable, Sendable {
    public let symbol: String
    public var quantity: Quantity
    public var reservedQuantity: Quantity
    public var costBasis: Cash

    public init(symbol: String, quantity: Quantity, reservedQuantity: Quantity, costBasis: Cash) {
        self.symbol = symbol
        self.quantity = quantity
        self.reservedQuantity = reservedQuantity
        self.costBasis = costBasis
    }

    public static func empty(_ symbol: String) -> HoldingState {
        HoldingState(symbol: symbol, quantity: .zero, reservedQuantity: .zero, costBasis: .zero)
    }

    public var position: Position { Position(quantity: quantity, costBasis: costBasis) }
    public var availableQuantity: Quantity { Quantity(uncheckedUnits: quantity.units - reservedQuantity.units) }
}

/// An order and what it sets aside until it ends.
public struct OrderState: Equatable, Sendable {
    /// The reason an order its owner canceled ends with, at every broker.
    public static let canceledByUser = "canceled by user"
    public let id: OrderID
    public let accountID: AccountID
    public let userID: UserID
    public let clientOrderID: String?
    public let symbol: String
    public let side: OrderSide
    public let type: OrderType
    public let timeInForce: TimeInForce
    public let quantity: Quantity?
    public let notional: Cash?
    public let limitPrice: Price?
    public let stopPrice: Price?
    public var status: OrderStatus
    public var filledQuantity: Quantity
    public var averageFillPrice: Price?
    public var reservedCash: Cash
    public var reservedQuantity: Quantity
    public var rejectReason: String?
    /// The user asked to cancel while the order may be on its way to a broker
    /// that holds orders: the submit job cancels it there, or here if it never left.
    public var cancelRequestedAt: Date?
    /// When the broker first saw a stop order's stop price reached: from then
    /// on it is a market (stop) or limit (stop-limit) order, whatever the
    /// price does next, as at a broker.
    public var triggeredAt: Date?
    /// Cash a buy must leave available at each fill as when it was placed (a
    /// rebalance's cash kept); zero for most orders.
    public let keepingCash: Cash
    public let createdAt: Date
    public var updatedAt: Date

    public init(
        id: OrderID, accountID: AccountID, userID: UserID, clientOrderID: String?, symbol: String, side: OrderSide, type: OrderType,
        timeInForce: TimeInForce, quantity: Quantity?, notional: Cash?, limitPrice: Price?, stopPrice: Price?, status: OrderStatus,
        filledQuantity: Quantity, averageFillPrice: Price?, reservedCash: Cash, reservedQuantity: Quantity, rejectReason: String?,
        cancelRequestedAt: Date? = nil, triggeredAt: Date? = nil, keepingCash: Cash = .zero, createdAt: Date, updatedAt: Date
    ) {
        self.id = id
        self.accountID = accountID
        self.userID = userID
        self.clientOrderID = clientOrderID
        self.symbol = symbol
        self.side = side
        self.type = type
        self.timeInForce = timeInForce
        self.quantity = quantity
        self.notional = notional
        self.limitPrice = limitPrice
        self.stopPrice = stopPrice
        self.status = status
        self.filledQuantity = filledQuantity
        self.averageFillPrice = averageFillPrice
        self.reservedCash = reservedCash
        self.reservedQuantity = reservedQuantity
        self.rejectReason = rejectReason
        self.cancelRequestedAt = cancelRequestedAt
        self.triggeredAt = triggeredAt
        self.keepingCash = keepingCash
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }

    /// What is left to fill of an order of a quantity; nil for a notional order.
    public var remainingQuantity: Quantity? {
        quantity.map { Quantity(uncheckedUnits: $0.units - filledQuantity.units) }
    }
}

/// A fill as a broker reports it. Its id is the broker's, so the same fill
/// reported twice is applied once.
public struct BrokerFill: Sendable, Equatable {
    public var id: String
    public var quantity: Quantity
    public var price: Price
    /// When the broker executed it, if the broker says; nil when it executes
    /// as it is applied (the paper broker). A fill seconds before the close
    /// applied after it belongs to that day, not the next.
    public var executedAt: Date?

    public init(id: String, quantity: Quantity, price: Price, executedAt: Date? = nil) {
        self.id = id
        self.quantity = quantity
        self.price = price
        self.executedAt = executedAt
    }
}

/// The kinds of ledger rows.
public enum LedgerKind: String, Codable, Sendable, CaseIterable {
    case deposit, withdrawal, buy, sell, dividend, fee, correction
}

/// One immutable row of the ledger: signed cash (in +, out −) and, for
/// trades, signed shares.
public struct LedgerLine: Equatable, Sendable {
    public var id: EntryID
    public var kind: LedgerKind
    public var amount: Cash
    public var symbol: String?
    public var quantity: Quantity?
    public var price: Price?
    public var orderID: OrderID?
    public var description: String?
    public var occurredAt: Date

    public init(
        id: EntryID, kind: LedgerKind, amount: Cash, symbol: String? = nil, quantity: Quantity? = nil, price: Price? = nil,
        orderID: OrderID? = nil, description: String?, occurredAt: Date
    ) {
        self.id = id
        self.kind = kind
        self.amount = amount
        self.symbol = symbol
        self.quantity = quantity
        self.price = price
        self.orderID = orderID
        self.description = description
        self.occurredAt = occurredAt
    }
}

/// A fill as it is recorded against its order.
public struct FillLine: Equatable, Sendable {
    public var id: FillID
    public var orderID: OrderID
    public var brokerFillID: String
    public var quantity: Quantity
    public var price: Price
    public var occurredAt: Date

    public init(id: FillID, orderID: OrderID, brokerFillID: String, quantity: Quantity, price: Price, occurredAt: Date) {
        self.id = id
        self.orderID = orderID
        self.brokerFillID = brokerFillID
        self.quantity = quantity
        self.price = price
        self.occurredAt = occurredAt
    }
}

/// An event for the audit trail; who and from where are added when it is written.
public struct AuditNote: Equatable, Sendable {
    public var action: String
    public var actorID: UserID?
    public var subjectType: String
    public var subjectID: String
    public var details: [String: String]

    public init(action: String, actorID: UserID? = nil, subjectType: String, subjectID: String, details: [String: String] = [:]) {
        self.action = action
        self.actorID = actorID
        self.subjectType = subjectType
        self.subjectID = subjectID
        self.details = details
    }
}

/// What one rule does to one account: the new states of what it touched,
/// and the rows it adds. The ledger applies postings; nothing else writes
/// balances.
public struct Posting: Equatable, Sendable {
    public var account: AccountState?
    public var holding: HoldingState?
    public var order: OrderState?
    /// The order is new and must be inserted.
    public var createsOrder = false
    public var fill: FillLine?
    public var entries: [LedgerLine] = []
    public var events: [AuditNote] = []

    public init() {}
}

/// One locked account's books for the length of a transaction: the states
/// the rules read, kept current as postings are recorded, and everything the
/// ledger must then write.
public struct Books: Sendable {
    public private(set) var account: AccountState
    public private(set) var holdings: [String: HoldingState]
    public private(set) var orders: [OrderID: OrderState]
    public private(set) var postings: [Posting] = []
    /// Broker fill ids already applied, from the database and from this batch.
    public private(set) var appliedFills: Set<String>
    /// The exact value of each partly filled order's fills, from the database
    /// and from this batch: a fill's cash is the change of its rounded total.
    /// An order not listed has no earlier fills (or is priced as if it had none).
    public private(set) var filledValues: [OrderID: FillValue]

    public init(
        account: AccountState, holdings: [HoldingState], orders: [OrderState], appliedFills: Set<String> = [], filledValues: [OrderID: FillValue] = [:]
    ) {
        self.account = account
        self.holdings = Dictionary(holdings.map { ($0.symbol, $0) }, uniquingKeysWith: { first, _ in first })
        self.orders = Dictionary(orders.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        self.appliedFills = appliedFills
        self.filledValues = filledValues
    }

    public func holding(_ symbol: String) -> HoldingState? {
        holdings[symbol]
    }

    public mutating func record(_ posting: Posting) {
        if let account = posting.account { self.account = account }
        if let holding = posting.holding { holdings[holding.symbol] = holding }
        if let order = posting.order { orders[order.id] = order }
        if let fill = posting.fill {
            appliedFills.insert(fill.brokerFillID)
            // A fill the rules took has a value that fits: its cash was worked out from it.
            filledValues[fill.orderID] = try? (filledValues[fill.orderID] ?? .zero).adding(fill.quantity, fill.price)
        }
        postings.append(posting)
    }

    public var isEmpty: Bool { postings.isEmpty }
    public var accountChanged: Bool { postings.contains { $0.account != nil } }

    /// The final state of each holding a posting touched.
    public var changedHoldings: [HoldingState] {
        var seen = Set<String>()
        return postings.compactMap { $0.holding?.symbol }.filter { seen.insert($0).inserted }.compactMap { holdings[$0] }
    }

    /// The final state of each order a posting touched, and whether it is new.
    public var changedOrders: [(order: OrderState, created: Bool)] {
        var created = Set<OrderID>()
        var seen = Set<OrderID>()
        var ids: [OrderID] = []
        for posting in postings {
            guard let order = posting.order else { continue }
            if posting.createsOrder { created.insert(order.id) }
            if seen.insert(order.id).inserted { ids.append(order.id) }
        }
        return ids.compactMap { id in orders[id].map { ($0, created.contains(id)) } }
    }

    public var fills: [FillLine] { postings.compactMap(\.fill) }
    public var entries: [LedgerLine] { postings.flatMap(\.entries) }
    public var events: [AuditNote] { postings.flatMap(\.events) }
}

/// Where new ids come from: random in production, counted in tests.
public struct IDSource: Sendable {
    private let make: @Sendable () -> UUID

    public init(_ make: @escaping @Sendable () -> UUID) {
        self.make = make
    }

    public static let random = IDSource { UUID.random() }

    public func next<Tag>(_: Identifier<Tag>.Type = Identifier<Tag>.self) -> Identifier<Tag> {
        Identifier(make())
    }

    public func uuid() -> UUID {
        make()
    }
}
