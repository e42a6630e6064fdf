import FluentKit
import Foundation

/// A brokerage account: cash, part of it reserved by open orders.
final class Account: Model, @unchecked Sendable {
    static let schema = "accounts"

    enum Kind: String, Codable, Sendable {
        case paper, brokerage
    }

    @ID(key: .id) var id: UUID?
    @Field(key: "user_id") var userID: UUID
    @Field(key: "name") var name: String
    @Field(key: "kind") var kind: String
    @Field(key: "currency") var currency: String
    @Field(key: "cash") var cash: StoredDecimal
    @Field(key: "reserved_cash") var reservedCash: StoredDecimal
    @Field(key: "created_at") var createdAt: Date
    @Field(key: "updated_at") var updatedAt: Date

    init() {}

    init(userID: UUID, name: String, kind: Kind, now: Date) {
        self.id = UUID()
        self.userID = userID
        self.name = name
        self.kind = kind.rawValue
        self.currency = "USD"
        self.cash = StoredDecimal(0)
        self.reservedCash = StoredDecimal(0)
        self.createdAt = now
        self.updatedAt = now
    }

    var availableCash: Decimal { cash.value - reservedCash.value }
}

/// Shares of one symbol in one account, part of them reserved by open sell orders.
final class Holding: Model, @unchecked Sendable {
    static let schema = "holdings"

    @ID(key: .id) var id: UUID?
    @Field(key: "account_id") var accountID: UUID
    @Field(key: "user_id") var userID: UUID
    @Field(key: "symbol") var symbol: String
    @Field(key: "quantity") var quantity: StoredDecimal
    @Field(key: "reserved_quantity") var reservedQuantity: StoredDecimal
    @Field(key: "cost_basis") var costBasis: StoredDecimal
    @Field(key: "created_at") var createdAt: Date
    @Field(key: "updated_at") var updatedAt: Date

    init() {}
}

/// One immutable row of the ledger: a movement of cash, of shares, or both.
/// A mistake is corrected by a new row, never by changing this one.
final class LedgerEntry: Model, @unchecked Sendable {
    static let schema = "transactions"

    enum Kind: String, Codable, Sendable, CaseIterable {
        case deposit, withdrawal, buy, sell, dividend, fee, correction
    }

    @ID(key: .id) var id: UUID?
    @Field(key: "account_id") var accountID: UUID
    @Field(key: "user_id") var userID: UUID
    @Field(key: "type") var type: String
    @OptionalField(key: "symbol") var symbol: String?
    @OptionalField(key: "quantity") var quantity: StoredDecimal?
    @OptionalField(key: "price") var price: StoredDecimal?
    @Field(key: "amount") var amount: StoredDecimal
    @OptionalField(key: "order_id") var orderID: UUID?
    @OptionalField(key: "description") var entryDescription: String?
    @Field(key: "occurred_at") var occurredAt: Date
    @Field(key: "created_at") var createdAt: Date

    init() {}

    init(account: Account, kind: Kind, amount: Decimal, description: String?, now: Date) {
        self.id = UUID()
        self.accountID = account.id!
        self.userID = account.userID
        self.type = kind.rawValue
        self.amount = StoredDecimal(amount)
        self.entryDescription = description
        self.occurredAt = now
        self.createdAt = now
    }
}
