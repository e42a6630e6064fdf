import Foundation
import Testing

@testable import FolioDomain

@Suite("Order status machine")
struct OrderStatusTests {
    static let allowed: Set<String> = [
        "new→accepted", "new→rejected", "new→canceled", "new→expired",
        "accepted→partially_filled", "accepted→filled", "accepted→canceled", "accepted→expired", "accepted→rejected",
        "partially_filled→partially_filled", "partially_filled→filled", "partially_filled→canceled", "partially_filled→expired",
    ]

    @Test("every pair of statuses is allowed exactly when listed", arguments: OrderStatus.allCases)
    func transitions(from: OrderStatus) {
        for to in OrderStatus.allCases {
            #expect(from.canTransition(to: to) == Self.allowed.contains("\(from.rawValue)→\(to.rawValue)"), "\(from) → \(to)")
        }
    }

    @Test("filled, canceled, rejected and expired are terminal; a filled order cannot be canceled")
    func terminal() {
        #expect(OrderStatus.allCases.filter(\.isTerminal) == [.filled, .canceled, .rejected, .expired])
        #expect(!OrderStatus.filled.isCancelable)
        #expect(OrderStatus.partiallyFilled.isCancelable)
    }
}

@Suite("Order drafts")
struct OrderDraftTests {
    @Test("the seed's market order is valid")
    func seedOrder() {
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market, quantity: 1).validate().isEmpty)
    }

    @Test("each order type requires and refuses the right prices", arguments: [
        (OrderType.limit, nil as Price?, nil as Price?, ["limit_price"]),
        (.stop, nil, nil, ["stop_price"]),
        (.stopLimit, nil, nil, ["limit_price", "stop_price"]),
        (.stopLimit, 10, nil, ["stop_price"]),
        (.market, 10, nil, ["limit_price"]),
        (.market, nil, 10, ["stop_price"]),
        (.limit, 10, 10, ["stop_price"]),
        (.limit, 10, nil, []),
        (.stopLimit, 10, 9, []),
    ])
    func prices(type: OrderType, limit: Price?, stop: Price?, fields: [String]) {
        let issues = OrderDraft(symbol: "AAPL", side: .buy, type: type, quantity: 1, limitPrice: limit, stopPrice: stop).validate()
        #expect(issues.map(\.field) == fields)
    }

    @Test("limit and stop prices of a dollar or more are in whole cents; below a dollar finer prices stay")
    func subPenny() throws {
        func codes(limit: String? = nil, stop: String? = nil, type: OrderType) throws -> [String] {
            try OrderDraft(
                symbol: "AAPL", side: .buy, type: type, quantity: 1,
                limitPrice: limit.map { try Price(parsing: $0) }, stopPrice: stop.map { try Price(parsing: $0) }
            ).validate().map(\.code)
        }
        #expect(try codes(limit: "250.123", type: .limit) == ["sub_penny"])
        #expect(try codes(limit: "1.00001", type: .limit) == ["sub_penny"])
        #expect(try codes(limit: "250.12", type: .limit).isEmpty)
        #expect(try codes(limit: "250.120", type: .limit).isEmpty, "trailing zeros are whole cents")
        #expect(try codes(limit: "0.99999999", type: .limit).isEmpty)
        #expect(try codes(limit: "10.00", stop: "9.995", type: .stopLimit) == ["sub_penny"])
        #expect(try codes(stop: "12.3456", type: .stop) == ["sub_penny"])
    }

    @Test("a refused limit reads with its digits grouped")
    func limitsGrouped() {
        let tooMany = OrderDraft(symbol: "AAPL", side: .buy, type: .market, quantity: 2_000_000_000).validate()
        #expect(tooMany.map(\.message) == ["quantity must be at most 1,000,000,000."])
        #expect(AmountCheck.grouped(1_000_000_000_000 as Cash) == "1,000,000,000,000.00")
        #expect(AmountCheck.grouped(-1234 as Cash) == "-1,234.00" && AmountCheck.grouped(999 as Quantity) == "999")
        #expect(AmountCheck.grouped(Price(uncheckedUnits: 123_456_789)) == "1.23456789")
    }

    @Test("quantity or notional, positive, not too precise; notional only on market orders")
    func amounts() {
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market).validate().map(\.code) == ["required"])
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market, quantity: 1, notional: 10).validate().map(\.code) == ["conflict"])
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market, quantity: 0).validate().map(\.code) == ["not_positive"])
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market, quantity: -2).validate().map(\.code) == ["not_positive"])
        // A quantity finer than 9 places cannot even be read: the parse refuses it with the same code.
        #expect(throws: MoneyParseError.tooPrecise) { try Quantity(parsing: "0.0000000001") }
        #expect(FieldIssue.amount(.tooPrecise, field: "quantity", scale: 9).code == "too_precise")
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market, quantity: qty("0.000000001")).validate().isEmpty)
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market, notional: cash("10.001")).validate().map(\.code) == ["too_precise"])
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .limit, notional: 100, limitPrice: 5).validate().map(\.code) == ["market_only"])
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market, timeInForce: .fillOrKill, notional: 100).validate().map(\.code) == ["unsupported"])
    }

    @Test("symbols are tickers", arguments: [("aapl", "AAPL"), ("BRK.B", "BRK.B"), (" msft ", "MSFT")])
    func symbols(input: String, normalized: String) {
        #expect(OrderDraft.normalizedSymbol(input) == normalized)
    }

    @Test("malformed symbols are refused", arguments: ["", "1ABC", "TOOLONGSYMBOL", "A B", "AAPL;", "ÄPFEL", "ſpy", "spı"])
    func badSymbols(input: String) {
        #expect(OrderDraft.normalizedSymbol(input) == nil)
    }
}

@Suite("Positions and valuation")
struct PositionTests {
    @Test("buying adds exact cost; selling part removes proportional cost; selling all removes all")
    func buyAndSell() throws {
        var position = try Position.empty.buying(qty("3"), for: cash("100.00"))
        position = try position.buying(qty("1"), for: cash("40.01"))
        #expect(position.quantity == 4)
        #expect(position.costBasis == cash("140.01"))
        #expect(position.averageCost == px("35.0025"))
        let partial = try #require(position.selling(qty("1")))
        #expect(partial.costSold == cash("35.00"))
        #expect(partial.position.costBasis == cash("105.01"))
        let all = try #require(partial.position.selling(qty("3")))
        #expect(all.position == .empty)
        #expect(all.costSold == cash("105.01"))
        #expect(position.selling(qty("5")) == nil)
        #expect(position.selling(0) == nil)
    }

    @Test("amounts are rounded half to even, in cents")
    func amounts() throws {
        #expect(try Money.value(quantity: qty("1"), price: px("189.125")) == cash("189.12"))
        #expect(try Money.value(quantity: qty("1"), price: px("189.135")) == cash("189.14"))
        #expect(try Money.value(quantity: qty("0.5"), price: px("0.01")) == cash("0"))
        #expect(try Money.value(quantity: qty("123456789.123456789"), price: px("12345.12345678")) == cash("1524089303306.73"))  // checked with Python's decimal module
    }

    @Test("a portfolio is valued in one pass: values, P&L, day change and weights")
    func valuation() throws {
        let now = Date(timeIntervalSince1970: 1_795_534_200)
        let valuation = try PortfolioValuation(
            cash: cash("500.00"), availableCash: cash("400.00"),
            holdings: [("AAPL", Position(quantity: 2, costBasis: cash("300.00"))), ("MSFT", Position(quantity: 1, costBasis: cash("400.00"))), ("GONE", .empty)],
            quotes: ["AAPL": PriceQuote(symbol: "AAPL", price: px("200.00"), previousClose: px("190.00"), asOf: now),
                     "MSFT": PriceQuote(symbol: "MSFT", price: px("100.00"), previousClose: nil, asOf: now, isStale: true)])
        #expect(valuation.positions.map(\.symbol) == ["AAPL", "MSFT"])
        let aapl = valuation.positions[0]
        #expect(aapl.marketValue == cash("400.00"))
        #expect(aapl.unrealizedPnL == cash("100.00"))
        #expect(aapl.unrealizedPnLPercent == (try Ratio(parsing: "33.3333")))
        #expect(aapl.dayChange == cash("20.00"))
        #expect(aapl.averageCost == px("150"))
        #expect(valuation.marketValue == cash("500.00"))
        #expect(valuation.totalValue == cash("1000.00"))
        #expect(aapl.weight == (try Ratio(parsing: "0.4")))
        #expect(valuation.positions[1].quote?.isStale == true)
        #expect(valuation.unrealizedPnL == cash("-200.00"))
        #expect(valuation.dayChange == cash("20.00"))
        // MSFT's day's change is not known: the total covers AAPL only, and says so.
        #expect(!valuation.dayChangeComplete)
        let known = try PortfolioValuation(
            cash: cash("500.00"), availableCash: cash("400.00"), holdings: [("AAPL", Position(quantity: 2, costBasis: cash("300.00")))],
            quotes: ["AAPL": PriceQuote(symbol: "AAPL", price: px("200.00"), previousClose: px("190.00"), asOf: now)])
        #expect(known.dayChangeComplete && known.dayChange == cash("20.00"))
    }

    @Test("the day's change counts shares bought today from their cost and shares sold today to their proceeds")
    func dayChangeWithTrades() throws {
        let now = Date(timeIntervalSince1970: 1_795_534_200)
        let quote = PriceQuote(symbol: "AAPL", price: px("200.00"), previousClose: px("190.00"), asOf: now)
        // 2 held at the close, 3 bought today at 198: 2 × 10 + 3 × 2.
        var valuation = try PortfolioValuation(
            cash: cash("0"), availableCash: cash("0"), holdings: [("AAPL", Position(quantity: 5, costBasis: cash("894.00")))],
            quotes: ["AAPL": quote], dayTrades: ["AAPL": DayTrades(quantity: 3, cash: cash("-594.00"))])
        #expect(valuation.positions[0].dayChange == cash("26.00"))
        #expect(valuation.dayChange == cash("26.00"))
        // 5 held at the close, 2 sold today at 195: 3 × 10 now, plus 2 × 5 taken.
        valuation = try PortfolioValuation(
            cash: cash("390.00"), availableCash: cash("390.00"), holdings: [("AAPL", Position(quantity: 3, costBasis: cash("450.00")))],
            quotes: ["AAPL": quote], dayTrades: ["AAPL": DayTrades(quantity: -2, cash: cash("390.00"))])
        #expect(valuation.positions[0].dayChange == cash("40.00"))
        // Sold out today (4 at 185, held at 190 at the close): no position, but the day lost 20.
        let msft = PriceQuote(symbol: "MSFT", price: px("180.00"), previousClose: px("190.00"), asOf: now)
        valuation = try PortfolioValuation(
            cash: cash("740.00"), availableCash: cash("740.00"), holdings: [("AAPL", Position(quantity: 1, costBasis: cash("150.00"))), ("MSFT", .empty)],
            quotes: ["AAPL": quote, "MSFT": msft], dayTrades: ["MSFT": DayTrades(quantity: -4, cash: cash("740.00"))])
        #expect(valuation.positions.map(\.symbol) == ["AAPL"])
        #expect(valuation.dayChange == cash("-10.00"), "AAPL +10, MSFT's sale -20")
        // Bought and sold within the day: only the round trip's gain or loss.
        valuation = try PortfolioValuation(
            cash: cash("0"), availableCash: cash("0"), holdings: [("AAPL", Position(quantity: 1, costBasis: cash("150.00")))],
            quotes: ["AAPL": quote], dayTrades: ["AAPL": DayTrades(quantity: 0, cash: cash("3.50"))])
        #expect(valuation.positions[0].dayChange == cash("13.50"))
        // The trades took out more than is held now plus what they bought (shares left another way): no figure rather than a wrong one.
        valuation = try PortfolioValuation(
            cash: cash("0"), availableCash: cash("0"), holdings: [("AAPL", Position(quantity: 1, costBasis: cash("150.00")))],
            quotes: ["AAPL": quote], dayTrades: ["AAPL": DayTrades(quantity: 2, cash: cash("-396.00"))])
        #expect(valuation.positions[0].dayChange == nil)
        #expect(valuation.dayChange == cash("0"))
        // Shares corrected without a trade today (a reconciliation): what was held at the close is not known.
        valuation = try PortfolioValuation(
            cash: cash("0"), availableCash: cash("0"), holdings: [("AAPL", Position(quantity: 12, costBasis: cash("1800.00")))],
            quotes: ["AAPL": quote], dayTrades: ["AAPL": DayTrades(quantity: 2, cash: cash("-396.00"), corrected: true)])
        #expect(valuation.positions[0].dayChange == nil)
        // A quote of an earlier session (served stale) measures another day than the trades were read for: no figure.
        let closeBefore = Date(timeIntervalSince1970: 1_795_467_600)
        var earlier = quote
        earlier.previousCloseAt = closeBefore.addingTimeInterval(-86_400)
        valuation = try PortfolioValuation(
            cash: cash("0"), availableCash: cash("0"), holdings: [("AAPL", Position(quantity: 5, costBasis: cash("894.00"))), ("MSFT", .empty)],
            quotes: ["AAPL": earlier, "MSFT": msft], dayTrades: ["AAPL": DayTrades(quantity: 3, cash: cash("-594.00"))], tradesSince: closeBefore)
        #expect(valuation.positions[0].dayChange == nil)
        #expect(valuation.dayChange == cash("0"))
        // The quote's day is the trades' day: counted as above.
        var current = quote
        current.previousCloseAt = closeBefore
        valuation = try PortfolioValuation(
            cash: cash("0"), availableCash: cash("0"), holdings: [("AAPL", Position(quantity: 5, costBasis: cash("894.00")))],
            quotes: ["AAPL": current], dayTrades: ["AAPL": DayTrades(quantity: 3, cash: cash("-594.00"))], tradesSince: closeBefore)
        #expect(valuation.positions[0].dayChange == cash("26.00"))
    }
}
