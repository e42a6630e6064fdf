import Foundation
import Testing

@testable import FolioDomain

/// The trading rules on their own: state in, posting out, no database.
@Suite("Trading rules")
struct TradingRulesTests {
    let now = Date(timeIntervalSince1970: 1_795_534_200)
    let ids = IDSource.random

    func account(cash: String, reserved: String = "0") -> AccountState {
        AccountState(id: AccountID(), userID: UserID(), cash: cash_(cash), reservedCash: cash_(reserved))
    }

    func cash_(_ text: String) -> Cash { try! Cash(parsing: text) }

    /// A limit buy placed and accepted, on fresh books.
    func placedBuy(quantity: String, limit: String, cash: String) throws -> Books {
        let account = account(cash: cash)
        let draft = OrderDraft(symbol: "TINY", side: .buy, type: .limit, timeInForce: .goodTillCanceled, quantity: qty(quantity), limitPrice: px(limit))
        var books = Books(account: account, holdings: [], orders: [])
        let placed = try TradingRules.place(draft, orderID: OrderID(), clientOrderID: nil, account: account, holding: nil, price: px(limit), marketBuyMargin: 0, now: now)
        books.record(placed)
        books.record(try #require(TradingRules.accept(placed.order!, now: now)))
        return books
    }

    func fill(_ books: inout Books, _ quantity: String, at price: String, id: String) throws {
        let order = try #require(books.orders.values.first)
        try books.apply(.filled([BrokerFill(id: id, quantity: qty(quantity), price: px(price))]), to: order.id, ids: ids, now: now)
    }

    @Test("a notional order whose last fill came as a partial fill ends when the broker says it is done, its leftover reservation freed")
    func notionalDoneLater() throws {
        let account = account(cash: "1000.00")
        let draft = OrderDraft(symbol: "TINY", side: .buy, type: .market, notional: 100)
        var books = Books(account: account, holdings: [], orders: [])
        let placed = try TradingRules.place(draft, orderID: OrderID(), clientOrderID: nil, account: account, holding: nil, price: px("10"), marketBuyMargin: 0, now: now)
        books.record(placed)
        let id = placed.order!.id
        let last = BrokerFill(id: "alpaca:o:9.5", quantity: qty("9.5"), price: px("10"))
        try books.apply(.partiallyFilled([last]), to: id, ids: ids, now: now)
        #expect(books.orders[id]?.status == .partiallyFilled)
        #expect(books.account.reservedCash.isPositive)
        // The broker's "filled" brings no new fill: the order ends all the same.
        try books.apply(.filled([last]), to: id, ids: ids, now: now)
        #expect(books.orders[id]?.status == .filled)
        #expect(books.account.reservedCash == 0)
        #expect(books.account.cash == 905)
    }

    @Test("a notional buy the broker filled for its amount costs the notional, not a cent more: a quantity cut to 9 places at a price cut to 8 comes to a hair over it")
    func notionalFillAHairOver() throws {
        for (cash, notional, parts) in [("100.00", "100.00", ["1.006711410"]), ("1000.00", "50.00", ["0.503355705"]), ("100.00", "100.00", ["0.503355705", "0.503355705"])] {
            let account = account(cash: cash)
            let draft = OrderDraft(symbol: "AAPL", side: .buy, type: .market, notional: cash_(notional))
            var books = Books(account: account, holdings: [], orders: [])
            let placed = try TradingRules.place(draft, orderID: OrderID(), clientOrderID: nil, account: account, holding: nil, price: px("99.33333333"), marketBuyMargin: 0, now: now)
            books.record(placed)
            let id = placed.order!.id
            books.record(try #require(TradingRules.accept(placed.order!, now: now)))
            for (index, part) in parts.enumerated() {
                let fill = BrokerFill(id: "alpaca:\(index)", quantity: qty(part), price: px("99.33333333"))
                try books.apply(index == parts.count - 1 ? .filled([fill]) : .partiallyFilled([fill]), to: id, heldAtBroker: true, ids: ids, now: now)
            }
            #expect(books.orders[id]?.status == .filled, "\(notional) in \(parts.count)")
            #expect(books.account.cash == (try cash_(cash) - cash_(notional)), "\(notional) in \(parts.count): \(books.account.cash)")
            #expect(books.account.reservedCash == 0)
        }
        // More than a cent over the notional is the broker's error: not booked as if it were the notional.
        let account = account(cash: "1000.00")
        let draft = OrderDraft(symbol: "AAPL", side: .buy, type: .market, notional: 100)
        var books = Books(account: account, holdings: [], orders: [])
        let placed = try TradingRules.place(draft, orderID: OrderID(), clientOrderID: nil, account: account, holding: nil, price: px("10"), marketBuyMargin: 0, now: now)
        books.record(placed)
        books.record(try #require(TradingRules.accept(placed.order!, now: now)))
        try books.apply(.filled([BrokerFill(id: "alpaca:over", quantity: qty("10.002"), price: px("10"))]), to: placed.order!.id, heldAtBroker: true, ids: ids, now: now)
        #expect(books.account.cash == (try cash_("1000.00") - cash_("100.02")))
    }

    @Test("a broker's fill is dated when it executed: not before its order was placed, not after it is applied")
    func fillDatedWhenExecuted() throws {
        let applied = now.addingTimeInterval(3600)
        for (executed, dated) in [
            (now.addingTimeInterval(1800.25), now.addingTimeInterval(1800.25)),  // as the broker says
            (now.addingTimeInterval(-5), now),  // the broker's clock a little behind ours: the order's placing
            (applied.addingTimeInterval(2), applied),  // ahead of ours: when it is applied
            (nil, applied),  // no time given (the paper broker): when it is applied
        ] as [(Date?, Date)] {
            var books = try placedBuy(quantity: "2", limit: "10", cash: "100.00")
            let order = try #require(books.orders.values.first)
            try books.apply(.partiallyFilled([BrokerFill(id: "f1", quantity: qty("1"), price: px("9.5"), executedAt: executed)]), to: order.id, ids: ids, now: applied)
            let posting = try #require(books.postings.last)
            #expect(posting.entries.map(\.occurredAt) == [dated])
            #expect(posting.fill?.occurredAt == dated)
            #expect(posting.order?.updatedAt == applied, "the order itself changed when the fill was applied")
        }
    }

    @Test("a deposit adds cash; a withdrawal may not touch reserved cash; a movement past the column is refused")
    func movements() throws {
        let start = account(cash: "100.00", reserved: "60.00")
        let deposit = try TradingRules.move(.deposit, amount: 5, account: start, description: nil, actor: nil, entryID: EntryID(), now: now)
        #expect(deposit.account?.cash == 105)
        #expect(deposit.entries.map(\.amount) == [5])
        #expect(throws: TradingError.insufficientFunds(available: 40)) {
            try TradingRules.move(.withdrawal, amount: cash_("40.01"), account: start, description: nil, actor: nil, entryID: EntryID(), now: now)
        }
        #expect(throws: TradingError.balanceLimitExceeded(field: "amount")) {
            try TradingRules.move(.deposit, amount: 1, account: AccountState(id: AccountID(), userID: UserID(), cash: .max, reservedCash: 0), description: nil, actor: nil, entryID: EntryID(), now: now)
        }
        #expect(throws: TradingError.self, "control characters cannot reach a text column") {
            try TradingRules.move(.deposit, amount: 1, account: start, description: "a\u{0}b", actor: nil, entryID: EntryID(), now: now)
        }
        #expect(throws: TradingError.self, "a right-to-left override would show the description reversed") {
            try TradingRules.move(.deposit, amount: 1, account: start, description: "Refund \u{202E}exe.fdp", actor: nil, entryID: EntryID(), now: now)
        }
        // An emoji sequence's zero-width joiner is no trick: kept.
        let emoji = try TradingRules.move(.deposit, amount: 1, account: start, description: "Rent 👨‍👩‍👧", actor: nil, entryID: EntryID(), now: now)
        #expect(emoji.entries.first?.description == "Rent 👨‍👩‍👧")
    }

    @Test("a description's 200 characters are counted in code points: one letter with thousands of accents is not one character")
    func descriptionLength() throws {
        let start = account(cash: "100.00")
        let accents = "e" + String(repeating: "\u{301}", count: 1_000)
        #expect(accents.count == 1)
        #expect(throws: TradingError.invalid(field: "description", code: "too_long", message: "description may have at most 200 characters.")) {
            try TradingRules.move(.deposit, amount: 1, account: start, description: accents, actor: nil, entryID: EntryID(), now: now)
        }
        // 200 accented letters written apart (400 code points) are too long too; 100 are fine.
        let written = String(repeating: "e\u{301}", count: 100)
        #expect(try TradingRules.move(.deposit, amount: 1, account: start, description: written, actor: nil, entryID: EntryID(), now: now).entries.first?.description == written)
        #expect(throws: TradingError.self) {
            try TradingRules.move(.deposit, amount: 1, account: start, description: written + "e", actor: nil, entryID: EntryID(), now: now)
        }
    }

    @Test("each partial fill releases at least what it costs; an order filled in parts costs what it would in one (0.999 → 1.00, not 0.67 + 0.34)")
    func partialReleaseCoversCost() throws {
        // 3 at 0.333 reserves 1.00. Two cost 0.67 (0.666 up to the cent), more than their third-by-two share, 0.66.
        var books = try placedBuy(quantity: "3", limit: "0.333", cash: "2.00")
        try fill(&books, "2", at: "0.333", id: "f1")
        let order = try #require(books.orders.values.first)
        #expect(order.status == .partiallyFilled)
        #expect(books.account.cash == cash_("1.33"))
        #expect(order.reservedCash == cash_("0.33"))
        #expect(books.account.reservedCash == cash_("0.33"))
        // The last share costs 1.00 − 0.67: the whole order's 0.999 up to the cent, as one fill of 3 would.
        // (Each part rounded on its own charged 0.34, 1.01 in all.)
        try fill(&books, "1", at: "0.333", id: "f2")
        #expect(books.orders.values.first?.status == .filled)
        #expect(books.account.cash == cash_("1.00"))
        #expect(books.account.reservedCash == 0)
    }

    @Test("an order that holds exactly its cost fills in parts: the parts never cost more than the reservation (1 @ 0.3333 three times is 1.00)")
    func partsFitTheReservation() throws {
        var books = try placedBuy(quantity: "3", limit: "0.3333", cash: "1.00")
        #expect(books.account.availableCash == 0)
        try fill(&books, "2", at: "0.3333", id: "f1")
        try fill(&books, "1", at: "0.3333", id: "f2")
        let order = try #require(books.orders.values.first)
        #expect(order.status == .filled && order.filledQuantity == 3)
        #expect(books.account.cash == 0 && books.account.reservedCash == 0)
        #expect(books.entries.map(\.amount) == [cash_("-0.67"), cash_("-0.33")])
        #expect(books.holding("TINY")?.costBasis == cash_("1.00"))
    }

    @Test("the average fill price is worked from the exact value of every part, not from the last rounded average")
    func averageFromExactValue() throws {
        var books = try placedBuy(quantity: "3", limit: "2", cash: "10.00")
        for (index, price) in ["1.00000001", "1.00000000", "1.00000001"].enumerated() {
            try fill(&books, "1", at: price, id: "a\(index)")
        }
        // 3.00000002 ÷ 3 = 1.000000006…, half to even at 8 places: 1.00000001 (rebuilt part by part it was 1.00000000).
        #expect(books.orders.values.first?.averageFillPrice == px("1.00000001"))
    }

    @Test("a limit buy's parts below the limit free no cent that the last part at the limit needs")
    func partsBelowTheLimitKeepEnough() throws {
        // 3.327 at 16.90 reserves 56.23, all the cash there is.
        var books = try placedBuy(quantity: "3.327", limit: "16.90", cash: "56.23")
        try fill(&books, "2.877", at: "16.90", id: "l1")
        try fill(&books, "0.199", at: "16.87", id: "l2")
        // What the rest (0.251) can still cost at the limit stays reserved: 56.23 − ceil(51.98… + 4.2419) … = 4.25.
        let order = try #require(books.orders.values.first)
        #expect(order.reservedCash == cash_("4.25"), "\(order.reservedCash)")
        try fill(&books, "0.251", at: "16.90", id: "l3")
        #expect(books.orders.values.first?.status == .filled)
        #expect(books.account.reservedCash == 0 && !books.account.cash.isNegative)
    }

    @Test("a buy part worth less than its share of a cent still costs a cent: a buy's ledger row is a debit")
    func tinyBuyPartsCostACent() throws {
        var books = try placedBuy(quantity: "3", limit: "0.0033", cash: "1.00")
        for index in 0..<3 { try fill(&books, "1", at: "0.0033", id: "t\(index)") }
        #expect(books.orders.values.first?.status == .filled)
        #expect(books.entries.map(\.amount) == [cash_("-0.01"), cash_("-0.01"), cash_("-0.01")])
    }

    @Test("a sale filled in parts is paid what one fill would pay: 5 @ 0.0033 in parts of 3, 1 and 1 pays 0.01, not nothing")
    func salePartsPaidInFull() throws {
        let account = account(cash: "0")
        let holding = HoldingState(symbol: "PENNY", quantity: 5, reservedQuantity: 0, costBasis: cash_("0.02"))
        let draft = OrderDraft(symbol: "PENNY", side: .sell, type: .market, quantity: 5)
        var books = Books(account: account, holdings: [holding], orders: [])
        let placed = try TradingRules.place(draft, orderID: OrderID(), clientOrderID: nil, account: account, holding: holding, price: px("0.0033"), marketBuyMargin: 0, now: now)
        books.record(placed)
        for (index, part) in ["3", "1", "1"].enumerated() {
            try books.apply(.partiallyFilled([BrokerFill(id: "p\(index)", quantity: qty(part), price: px("0.0033"))]), to: placed.order!.id, ids: ids, now: now)
        }
        #expect(books.orders[placed.order!.id]?.status == .filled)
        #expect(books.account.cash == cash_("0.01"))
        // 0.0099 → 0.00; 0.0132 → 0.01; 0.0165 → 0.01.
        #expect(books.entries.map(\.amount) == [0, cash_("0.01"), 0])
    }

    @Test("a part that cannot be paid cancels the rest of a partly filled order, with its reason; nothing is dropped silently")
    func unpayablePart() throws {
        // 4 at 0.022 reserves 0.09 of the 0.10 held. The parts at the limit cost 0.05 and 0.02 (0.066 up, less 0.05);
        // the last comes above the limit, 0.04 (0.106 up, less 0.07), more than the 0.03 left.
        var books = try placedBuy(quantity: "4", limit: "0.022", cash: "0.10")
        try fill(&books, "2", at: "0.022", id: "f1")
        try fill(&books, "1", at: "0.022", id: "f2")
        #expect(books.orders.values.first?.status == .partiallyFilled)
        try fill(&books, "1", at: "0.04", id: "f3")
        let order = try #require(books.orders.values.first)
        #expect(order.status == .canceled)
        #expect(order.filledQuantity == 3)
        #expect(order.rejectReason == "insufficient cash at the fill price")
        #expect(books.account.reservedCash == 0)
        #expect(books.account.cash == cash_("0.03"))
        #expect(books.fills.map(\.brokerFillID) == ["f1", "f2"])
    }

    @Test("a fill a broker that holds the order made, which the books cannot take, ends the order with a reason naming the broker's fill, and an event for the operator; no fill is recorded")
    func unpayableAtBroker() throws {
        var books = try placedBuy(quantity: "1", limit: "10", cash: "10.00")
        let order = try #require(books.orders.values.first)
        try books.apply(.filled([BrokerFill(id: "f1", quantity: qty("1"), price: px("11"))]), to: order.id, heldAtBroker: true, ids: ids, now: now)
        let ended = try #require(books.orders[order.id])
        #expect(ended.status == .rejected)
        #expect(ended.rejectReason == "filled at the broker, beyond what the books can take (insufficient cash at the fill price): reconciliation records it")
        #expect(books.fills.isEmpty)
        #expect(books.account.reservedCash == 0 && books.account.cash == cash_("10.00"))
        let note = try #require(books.postings.last?.events.first { $0.action == "order.broker_fill_not_recorded" })
        #expect(note.details == ["reason": "insufficient cash at the fill price", "quantity": "1", "price": "11.00", "broker_fill_id": "f1"])
    }

    @Test("a broker that holds the order and reports more than is left, or a fill at no price, ends the order for reconciliation instead of failing every poll for good")
    func overfillAtBroker() throws {
        var books = try placedBuy(quantity: "2", limit: "10", cash: "100.00")
        let order = try #require(books.orders.values.first)
        try books.apply(.filled([BrokerFill(id: "over", quantity: qty("3"), price: px("9"))]), to: order.id, heldAtBroker: true, ids: ids, now: now)
        let ended = try #require(books.orders[order.id])
        #expect(ended.status == .rejected)
        #expect(ended.rejectReason == "filled at the broker, beyond what the books can take (a fill of 3 with 2 left): reconciliation records it")
        #expect(books.fills.isEmpty && books.account.reservedCash == 0 && books.account.cash == cash_("100.00"))
        #expect(books.postings.last?.events.contains { $0.action == "order.broker_fill_not_recorded" } == true)

        var priceless = try placedBuy(quantity: "2", limit: "10", cash: "100.00")
        let second = try #require(priceless.orders.values.first)
        try priceless.apply(.filled([BrokerFill(id: "part", quantity: qty("1"), price: px("9"))]), to: second.id, heldAtBroker: true, ids: ids, now: now)
        try priceless.apply(.filled([BrokerFill(id: "free", quantity: qty("1"), price: 0)]), to: second.id, heldAtBroker: true, ids: ids, now: now)
        let canceled = try #require(priceless.orders[second.id])
        #expect(canceled.status == .canceled && canceled.filledQuantity == 1)
        #expect(canceled.rejectReason == "filled at the broker, beyond what the books can take (a fill at no price): reconciliation records it")
        #expect(priceless.account.reservedCash == 0 && priceless.account.cash == cash_("91.00"))
    }

    @Test("a part of a limit buy filled above its limit is paid from available cash; the rest stays reserved at the limit, so its fill can still be paid")
    func partAboveTheLimit() throws {
        // 2 at 10 reserves 20.00. The broker fills 1 at 12: the 2.00 over comes out of available cash,
        // and the 10.00 the last share can cost at the limit stays reserved.
        var books = try placedBuy(quantity: "2", limit: "10", cash: "100.00")
        let id = try #require(books.orders.values.first).id
        try books.apply(.partiallyFilled([BrokerFill(id: "above", quantity: qty("1"), price: px("12"))]), to: id, heldAtBroker: true, ids: ids, now: now)
        #expect(books.orders[id]?.status == .partiallyFilled)
        #expect(books.orders[id]?.reservedCash == 10)
        #expect(books.account.cash == 88 && books.account.reservedCash == 10)
        #expect(books.account.availableCash == 78)
        // All that is available taken out, the last share at the limit is still paid for.
        let withdrawal = try TradingRules.move(.withdrawal, amount: books.account.availableCash, account: books.account, description: nil, actor: nil, entryID: EntryID(), now: now)
        books.record(withdrawal)
        try books.apply(.filled([BrokerFill(id: "last", quantity: qty("1"), price: px("10"))]), to: id, heldAtBroker: true, ids: ids, now: now)
        #expect(books.orders[id]?.status == .filled)
        #expect(books.account.cash == 0 && books.account.reservedCash == 0)

        // A tiny part above the limit moves the rest's rounded cost up a cent past what the order holds: 1.009 at
        // 1.00 reserves 1.01; 0.005 at 1.00 leaves 1.00 held; 0.001 at 4.00 makes the rest cost 1.01. The cent is
        // reserved from available cash, so the last part at the limit is paid after everything else was taken out.
        var tiny = try placedBuy(quantity: "1.009", limit: "1.00", cash: "10.00")
        let order = try #require(tiny.orders.values.first).id
        try tiny.apply(.partiallyFilled([BrokerFill(id: "a", quantity: qty("0.005"), price: px("1.00"))]), to: order, heldAtBroker: true, ids: ids, now: now)
        try tiny.apply(.partiallyFilled([BrokerFill(id: "b", quantity: qty("0.001"), price: px("4.00"))]), to: order, heldAtBroker: true, ids: ids, now: now)
        #expect(tiny.orders[order]?.reservedCash == cash_("1.01"), "\(tiny.orders[order]?.reservedCash.description ?? "")")
        tiny.record(try TradingRules.move(.withdrawal, amount: tiny.account.availableCash, account: tiny.account, description: nil, actor: nil, entryID: EntryID(), now: now))
        try tiny.apply(.filled([BrokerFill(id: "c", quantity: qty("1.003"), price: px("1.00"))]), to: order, heldAtBroker: true, ids: ids, now: now)
        #expect(tiny.orders[order]?.status == .filled, "\(tiny.orders[order]?.rejectReason ?? "")")
        #expect(tiny.account.cash == 0 && tiny.account.reservedCash == 0, "\(tiny.account.cash) \(tiny.account.reservedCash)")
    }

    @Test("an order that has not filled is rejected when its first fill cannot be paid")
    func unpayableFirst() throws {
        var books = try placedBuy(quantity: "1", limit: "10", cash: "10.00")
        // The broker reports a fill above the limit the reservation was made at.
        try fill(&books, "1", at: "10.01", id: "f1")
        #expect(books.orders.values.first?.status == .rejected)
        #expect(books.account.cash == 10)
        #expect(books.account.reservedCash == 0)
    }

    @Test("a fill of nothing or at no price is an error, not a silent no-op")
    func unusableFills() throws {
        var books = try placedBuy(quantity: "1", limit: "10", cash: "10.00")
        let order = try #require(books.orders.values.first)
        #expect(throws: TradingError.unusableFill(orderID: order.id, fill: "zero")) {
            try books.apply(.filled([BrokerFill(id: "zero", quantity: 1, price: 0)]), to: order.id, ids: ids, now: now)
        }
        #expect(throws: TradingError.overfill(orderID: order.id, remaining: 1, fill: 2)) {
            try books.apply(.filled([BrokerFill(id: "over", quantity: 2, price: 1)]), to: order.id, ids: ids, now: now)
        }
    }

    @Test("a partial sell's cost basis leaves with its share, and the last share takes the rest exactly")
    func sells() throws {
        let account = account(cash: "0")
        let holding = HoldingState(symbol: "XYZ", quantity: 3, reservedQuantity: 0, costBasis: cash_("100.00"))
        let draft = OrderDraft(symbol: "XYZ", side: .sell, type: .market, quantity: 3)
        var books = Books(account: account, holdings: [holding], orders: [])
        let placed = try TradingRules.place(draft, orderID: OrderID(), clientOrderID: nil, account: account, holding: holding, price: 10, marketBuyMargin: 0, now: now)
        books.record(placed)
        #expect(books.holding("XYZ")?.reservedQuantity == 3)
        try books.apply(.filled([BrokerFill(id: "s1", quantity: 1, price: px("10.005"))]), to: placed.order!.id, ids: ids, now: now)
        #expect(books.account.cash == cash_("10.00"), "proceeds round down")
        #expect(books.holding("XYZ")?.costBasis == cash_("66.67"))
        try books.apply(.filled([BrokerFill(id: "s2", quantity: 2, price: 10)]), to: placed.order!.id, ids: ids, now: now)
        #expect(books.holding("XYZ") == HoldingState(symbol: "XYZ", quantity: 0, reservedQuantity: 0, costBasis: 0))
    }
}
