import FluentKit
import FolioDomain
import Foundation

/// An order and what it reserves until it ends.
final class Order: Model, @unchecked Sendable {
    static let schema = "orders"

    @ID(key: .id) var id: UUID?
    @Field(key: "user_id") var userID: UUID
    @Field(key: "account_id") var accountID: UUID
    @OptionalField(key: "client_order_id") var clientOrderID: String?
    @Field(key: "symbol") var symbol: String
    @Field(key: "side") var side: String
    @Field(key: "type") var type: String
    @Field(key: "time_in_force") var timeInForce: String
    @OptionalField(key: "quantity") var quantity: StoredDecimal?
    @OptionalField(key: "notional") var notional: StoredDecimal?
    @OptionalField(key: "limit_price") var limitPrice: StoredDecimal?
    @OptionalField(key: "stop_price") var stopPrice: StoredDecimal?
    @Field(key: "status") var status: String
    @Field(key: "filled_quantity") var filledQuantity: StoredDecimal
    @OptionalField(key: "average_fill_price") var averageFillPrice: StoredDecimal?
    @Field(key: "reserved_cash") var reservedCash: StoredDecimal
    @Field(key: "reserved_quantity") var reservedQuantity: StoredDecimal
    @OptionalField(key: "reject_reason") var rejectReason: String?
    @Field(key: "created_at") var createdAt: Date
    @Field(key: "updated_at") var updatedAt: Date

    init() {}

    var orderStatus: OrderStatus { OrderStatus(rawValue: status)! }
    var orderSide: OrderSide { OrderSide(rawValue: side)! }
    var orderType: OrderType { OrderType(rawValue: type)! }
    var tif: TimeInForce { TimeInForce(rawValue: timeInForce)! }
}

/// A fill as the broker reported it; its broker id makes applying it twice impossible.
final class Fill: Model, @unchecked Sendable {
    static let schema = "fills"

    @ID(key: .id) var id: UUID?
    @Field(key: "order_id") var orderID: UUID
    @Field(key: "user_id") var userID: UUID
    @Field(key: "broker_fill_id") var brokerFillID: String
    @Field(key: "quantity") var quantity: StoredDecimal
    @Field(key: "price") var price: StoredDecimal
    @Field(key: "occurred_at") var occurredAt: Date

    init() {}
}

/// A unit of background work, claimed by one worker at a time.
final class Job: Model, @unchecked Sendable {
    static let schema = "jobs"

    @ID(key: .id) var id: UUID?
    @Field(key: "kind") var kind: String
    @Field(key: "payload") var payload: String
    @Field(key: "status") var status: String
    @Field(key: "attempts") var attempts: Int
    @Field(key: "max_attempts") var maxAttempts: Int
    @Field(key: "run_at") var runAt: Date
    @OptionalField(key: "locked_by") var lockedBy: String?
    @OptionalField(key: "locked_until") var lockedUntil: Date?
    @OptionalField(key: "last_error") var lastError: String?
    @Field(key: "created_at") var createdAt: Date
    @Field(key: "updated_at") var updatedAt: Date

    init() {}

    /// One value of the payload, which `JobQueue.enqueue` writes as a JSON object of strings.
    func payloadValue(_ key: String) -> String? {
        (try? JSONDecoder().decode([String: String].self, from: Data(payload.utf8)))?[key]
    }
}
