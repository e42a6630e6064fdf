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
        (OrderType.limit, nil as Decimal?, nil as Decimal?, ["limit_price"]),
        (.stop, nil, nil, ["stop_price"]),
        (.stopLimit, nil, nil, ["limit_price", "stop_price"]),
        (.stopLimit, 10, nil, ["stop_price"]),
        (.market, 10, nil, ["limit_price"]),
        (.market, nil, 10, ["stop_price"]),
        (.limit, 10, 10, ["stop_price"]),
        (.limit, 10, nil, []),
        (.stopLimit, 10, 9, []),
    ])
    func prices(type: OrderType, limit: Decimal?, stop: Decimal?, fields: [String]) {
        let issues = OrderDraft(symbol: "AAPL", side: .buy, type: type, quantity: 1, limitPrice: limit, stopPrice: stop).validate()
        #expect(issues.map(\.field) == fields)
    }

    @Test("quantity or notional, positive, not too precise; notional only on market orders")
    func amounts() {
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market).validate().map(\.code) == ["required"])
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market, quantity: 1, notional: 10).validate().map(\.code) == ["conflict"])
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market, quantity: 0).validate().map(\.code) == ["not_positive"])
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market, quantity: -2).validate().map(\.code) == ["not_positive"])
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market, quantity: try! ExactDecimal.parse("0.0000000001")).validate().map(\.code) == ["too_precise"])
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market, quantity: try! ExactDecimal.parse("0.000000001")).validate().isEmpty)
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .limit, notional: 100, limitPrice: 5).validate().map(\.code) == ["market_only"])
        #expect(OrderDraft(symbol: "AAPL", side: .buy, type: .market, timeInForce: .fillOrKill, notional: 100).validate().map(\.code) == ["unsupported"])
    }

    @Test("symbols are tickers", arguments: [("aapl", "AAPL"), ("BRK.B", "BRK.B"), (" msft ", "MSFT")])
    func symbols(input: String, normalized: String) {
        #expect(OrderDraft.normalizedSymbol(input) == normalized)
    }

    @Test("malformed symbols are refused", arguments: ["", "1ABC", "TOOLONGSYMBOL", "A B", "AAPL;", "ÄPFEL"])
    func badSymbols(input: String) {
        #expect(OrderDraft.normalizedSymbol(input) == nil)
    }
}

@Suite("Positions and valuation")
struct PositionTests {
    func d(_ text: String) -> Decimal { try! ExactDecimal.parse(text) }

    @Test("buying adds exact cost; selling part removes proportional cost; selling all removes all")
    func buyAndSell() throws {
        var position = Position.empty.buying(d("3"), for: d("100.00"))
        position = position.buying(d("1"), for: d("40.01"))
        #expect(position.quantity == 4)
        #expect(position.costBasis == d("140.01"))
        #expect(position.averageCost == d("35.0025"))
        let partial = try #require(position.selling(d("1")))
        #expect(partial.costSold == d("35.00"))
        #expect(partial.position.costBasis == d("105.01"))
        let all = try #require(partial.position.selling(d("3")))
        #expect(all.position == .empty)
        #expect(all.costSold == d("105.01"))
        #expect(position.selling(d("5")) == nil)
        #expect(position.selling(0) == nil)
    }

    @Test("amounts are rounded half to even, in cents")
    func amounts() {
        #expect(Money.amount(quantity: d("1"), price: d("189.125")) == d("189.12"))
        #expect(Money.amount(quantity: d("1"), price: d("189.135")) == d("189.14"))
        #expect(Money.amount(quantity: d("0.5"), price: d("0.01")) == d("0"))
        #expect(Money.amount(quantity: d("123456789.123456789"), price: d("12345.12345678")) == d("1524089303306.73"))  // checked with Python's decimal module
    }

    @Test("a portfolio is valued in one pass: values, P&L, day change and weights")
    func valuation() {
        let now = Date()
        let valuation = PortfolioValuation(
            cash: d("500.00"), availableCash: d("400.00"),
            holdings: [("AAPL", Position(quantity: 2, costBasis: d("300.00"))), ("MSFT", Position(quantity: 1, costBasis: d("400.00"))), ("GONE", .empty)],
            quotes: ["AAPL": PriceQuote(symbol: "AAPL", price: d("200.00"), previousClose: d("190.00"), asOf: now),
                     "MSFT": PriceQuote(symbol: "MSFT", price: d("100.00"), previousClose: nil, asOf: now, isStale: true)])
        #expect(valuation.positions.map(\.symbol) == ["AAPL", "MSFT"])
        let aapl = valuation.positions[0]
        #expect(aapl.marketValue == d("400.00"))
        #expect(aapl.unrealizedPnL == d("100.00"))
        #expect(aapl.unrealizedPnLPercent == d("33.3333"))
        #expect(aapl.dayChange == d("20.00"))
        #expect(aapl.averageCost == d("150"))
        #expect(valuation.marketValue == d("500.00"))
        #expect(valuation.totalValue == d("1000.00"))
        #expect(aapl.weight == d("0.4"))
        #expect(valuation.positions[1].quote?.isStale == true)
        #expect(valuation.unrealizedPnL == d("-200.00"))
        #expect(valuation.dayChange == d("20.00"))
    }
}
