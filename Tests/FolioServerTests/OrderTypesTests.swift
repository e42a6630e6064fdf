import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOConcurrencyHelpers
import Testing

@testable import FolioServer

/// A market whose prices the test sets. Quotes are as of the test clock's now,
/// so with a one-second quote lifetime a price set after `clock.advance(by: 2)`
/// is the one every order sees next.
final class PriceBoard: MarketDataProvider, Sendable {
    let name = "board"
    let clock: TestClock
    private let prices = NIOLockedValueBox<[String: Price]>([:])
    /// While true, every quote fails as an unreachable vendor's would.
    let failing = NIOLockedValueBox(false)

    init(clock: TestClock, _ prices: [String: String]) {
        self.clock = clock
        for (symbol, price) in prices { set(symbol, price) }
    }

    func set(_ symbol: String, _ price: String) {
        prices.withLockedValue { $0[symbol] = Price(price)! }
    }

    func quote(for symbol: String) async throws -> PriceQuote? {
        if failing.withLockedValue({ $0 }) { throw MarketDataError.unreachable("the board is down") }
        return prices.withLockedValue { $0[symbol] }.map { PriceQuote(symbol: symbol, price: $0, previousClose: nil, asOf: clock.now) }
    }

    func search(_ query: String) async throws -> [SymbolMatch] { [] }
    func dailyHistory(for symbol: String, days: Int) async throws -> [DailyClose] { [] }
    func previousCloseTime(at date: Date, calendar: MarketCalendar) -> Date { calendar.previousClose(before: date) }
}

@Suite("Order types at the paper broker: stops, notional orders, slippage, the reserved margin")
struct OrderTypesTests {
    func withBoard(
        _ kind: TestDatabaseKind, _ prices: [String: String], configure: @escaping @Sendable (inout AppConfiguration) -> Void = { _ in },
        _ body: @escaping @Sendable (any TestClientProtocol, TestEnvironment, PriceBoard, [String: Any]) async throws -> Void
    ) async throws {
        let clock = TestClock()
        let board = PriceBoard(clock: clock, prices)
        try await withTestApp(kind, clock: clock, configure: { $0.quoteTimeToLive = 1; configure(&$0) }, dependencies: { $0.marketData = board }) { client, env in
            let tokens = try await signUp(client, env, email: "types@example.com")
            try await body(client, env, board, tokens)
            try await env.expectConsistent()
        }
    }

    /// Moves the market: the new price, and time enough for every cached quote to be refreshed.
    func move(_ board: PriceBoard, _ env: TestEnvironment, _ symbol: String, to price: String) async throws {
        board.set(symbol, price)
        env.clock.advance(by: 2)
        try await OrderService.recheckFor(env)
    }

    func place(_ client: some TestClientProtocol, _ tokens: [String: Any], _ body: [String: Any]) async throws -> String {
        let response = try await post(client, "/api/orders", body, headers: bearer(tokens))
        #expect(response.status == .created, "\(String(buffer: response.body))")
        return try #require(try json(response)["id"] as? String)
    }

    func show(_ client: some TestClientProtocol, _ tokens: [String: Any], _ id: String) async throws -> [String: Any] {
        try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))
    }

    func price(_ value: Any?) -> Price? { (value as? String).flatMap { Price($0) } }

    @Test("a stop on the wrong side of the last price is refused, not filled at once: a buy stop must be above it, a sell stop below; nothing is reserved", arguments: TestDatabaseKind.all)
    func stopOnTheWrongSide(kind: TestDatabaseKind) async throws {
        try await withBoard(kind, ["XYZ": "100.00"]) { client, env, board, tokens in
            _ = try await place(client, tokens, ["symbol": "XYZ", "quantity": "20", "side": "BUY", "order_type": "MARKET"])
            await env.worker.drain()
            let cashBefore = try await env.accounts().first?.reservedCash
            for (side, type, stop) in [("BUY", "STOP", "100"), ("BUY", "STOP", "10"), ("BUY", "STOP_LIMIT", "99.99"), ("SELL", "STOP", "100"), ("SELL", "STOP", "1000"), ("SELL", "STOP_LIMIT", "100.01")] {
                var body = ["symbol": "XYZ", "quantity": "1", "side": side, "order_type": type, "stop_price": stop]
                if type == "STOP_LIMIT" { body["limit_price"] = stop }
                let refused = try await post(client, "/api/orders", body, headers: bearer(tokens))
                #expect(refused.status == .unprocessableContent, "\(side) \(type) \(stop)")
                let issue = try problem(refused).errors?.first
                #expect(issue?.field == "stop_price" && issue?.code == "wrong_side", "\(side) \(type) \(stop)")
                #expect(issue?.message.contains("the last price, 100") == true, "\(issue?.message ?? "")")
            }
            let orders = try json(try await client.execute(uri: "/api/orders", method: .get, headers: bearer(tokens)))["data"] as? [[String: Any]]
            #expect(orders?.count == 1, "only the first market order")
            let account = try #require(try await env.accounts().first)
            #expect(account.reservedCash == cashBefore)
            let held = try await env.store.holdings(of: account.id)
            #expect(held.first?.reservedQuantity == .zero)
        }
    }

    @Test("a stop filled in part was triggered: the rest fills at the market (a stop-limit within its limit) though the price is back behind the stop", arguments: TestDatabaseKind.all)
    func partlyFilledStopStaysTriggered(kind: TestDatabaseKind) async throws {
        try await withBoard(kind, ["XYZ": "100.00"], configure: { $0.paperPartialFills = true }) { client, env, board, tokens in
            let bought = try await place(client, tokens, ["symbol": "XYZ", "quantity": "20", "side": "BUY", "order_type": "MARKET"])
            await env.worker.drain()
            for _ in 0..<6 { try await move(board, env, "XYZ", to: "100.00") }
            #expect(try await show(client, tokens, bought)["status"] as? String == "filled")
            let stop = try await place(client, tokens, ["symbol": "XYZ", "quantity": "10", "side": "BUY", "order_type": "STOP", "stop_price": "105", "time_in_force": "GTC"])
            let stopLimit = try await place(client, tokens, ["symbol": "XYZ", "quantity": "10", "side": "SELL", "order_type": "STOP_LIMIT", "stop_price": "95", "limit_price": "90", "time_in_force": "GTC"])
            await env.worker.drain()
            try await move(board, env, "XYZ", to: "106.00")
            #expect(try await show(client, tokens, stop)["filled_quantity"] as? String == "5", "half fills at the trigger")
            try await move(board, env, "XYZ", to: "94.00")
            #expect(try await show(client, tokens, stopLimit)["filled_quantity"] as? String == "5")
            // Back behind both stops: the rest of each still fills (half a time), the stop at the market, the stop-limit within its limit.
            try await move(board, env, "XYZ", to: "100.00")
            for _ in 0..<3 { try await move(board, env, "XYZ", to: "100.00") }
            let filledStop = try await show(client, tokens, stop)
            #expect(filledStop["status"] as? String == "filled" && filledStop["filled_quantity"] as? String == "10", "\(filledStop)")
            let filledStopLimit = try await show(client, tokens, stopLimit)
            #expect(filledStopLimit["status"] as? String == "filled" && filledStopLimit["filled_quantity"] as? String == "10", "\(filledStopLimit)")
        }
    }

    @Test("stop orders rest until the price crosses the stop, then fill at the market; a stop-limit fills only within its limit", arguments: TestDatabaseKind.all)
    func stops(kind: TestDatabaseKind) async throws {
        try await withBoard(kind, ["XYZ": "100.00"]) { client, env, board, tokens in
            _ = try await place(client, tokens, ["symbol": "XYZ", "quantity": "20", "side": "BUY", "order_type": "MARKET"])
            await env.worker.drain()
            let buyStop = try await place(client, tokens, ["symbol": "XYZ", "quantity": "10", "side": "BUY", "order_type": "STOP", "stop_price": "105"])
            let buyStopLimit = try await place(client, tokens, ["symbol": "XYZ", "quantity": "3", "side": "BUY", "order_type": "STOP_LIMIT", "stop_price": "105", "limit_price": "106"])
            let sellStop = try await place(client, tokens, ["symbol": "XYZ", "quantity": "5", "side": "SELL", "order_type": "STOP", "stop_price": "95"])
            let sellStopLimit = try await place(client, tokens, ["symbol": "XYZ", "quantity": "2", "side": "SELL", "order_type": "STOP_LIMIT", "stop_price": "95", "limit_price": "94"])
            await env.worker.drain()
            for id in [buyStop, buyStopLimit, sellStop, sellStopLimit] { #expect(try await show(client, tokens, id)["status"] as? String == "accepted") }

            // Close to the stops, not at them: nothing moves.
            try await move(board, env, "XYZ", to: "104.99")
            try await move(board, env, "XYZ", to: "95.01")
            for id in [buyStop, buyStopLimit, sellStop, sellStopLimit] { #expect(try await show(client, tokens, id)["status"] as? String == "accepted") }

            // A jump past the buy stop and past the stop-limit's limit: the stop fills at the market, the stop-limit waits.
            try await move(board, env, "XYZ", to: "110.00")
            let filledStop = try await show(client, tokens, buyStop)
            #expect(filledStop["status"] as? String == "filled")
            #expect(price(filledStop["average_fill_price"]) == Price("110"))
            // It filled at the first price past its stop: that is when its stop was reached.
            #expect(filledStop["triggered_at"] is String && filledStop["triggered_at"] as? String == filledStop["updated_at"] as? String, "\(filledStop)")
            #expect(try await show(client, tokens, buyStopLimit)["status"] as? String == "accepted")
            // Back within the limit, still past the stop: it fills at the market price.
            try await move(board, env, "XYZ", to: "105.50")
            let filledStopLimit = try await show(client, tokens, buyStopLimit)
            #expect(filledStopLimit["status"] as? String == "filled")
            #expect(price(filledStopLimit["average_fill_price"]) == Price("105.5"))

            // Down through the sell stops: the stop fills at the market; the stop-limit only at or above 94.
            try await move(board, env, "XYZ", to: "93.00")
            let filledSellStop = try await show(client, tokens, sellStop)
            #expect(filledSellStop["status"] as? String == "filled")
            #expect(filledSellStop["triggered_at"] is String, "\(filledSellStop)")
            #expect(price(filledSellStop["average_fill_price"]) == Price("93"))
            #expect(try await show(client, tokens, sellStopLimit)["status"] as? String == "accepted")
            try await move(board, env, "XYZ", to: "94.50")
            let filledSellStopLimit = try await show(client, tokens, sellStopLimit)
            #expect(filledSellStopLimit["status"] as? String == "filled")
            #expect(price(filledSellStopLimit["average_fill_price"]) == Price("94.5"))

            // 20 + 10 + 3 − 5 − 2 shares; cash moved by exactly each fill.
            #expect(try await env.holding("XYZ")?.quantity == Quantity(26))
            let spent = try Cash("2000.00")! + Cash("1100.00")! + Cash("316.50")! - Cash("465.00")! - Cash("189.00")!
            #expect(try await env.firstAccount().cash == (try env.configuration.startingCash - spent))
            #expect(try await env.firstAccount().reservedCash == .zero)
        }
    }

    @Test("a stop-limit whose price jumped past its stop and its limit is a limit order from then on: it fills back within the limit though the price is behind the stop again, and shows when its stop was reached", arguments: TestDatabaseKind.all)
    func triggeredStopLimitRemembers(kind: TestDatabaseKind) async throws {
        try await withBoard(kind, ["XYZ": "100.00"]) { client, env, board, tokens in
            _ = try await place(client, tokens, ["symbol": "XYZ", "quantity": "20", "side": "BUY", "order_type": "MARKET"])
            await env.worker.drain()
            let buy = try await place(client, tokens, ["symbol": "XYZ", "quantity": "3", "side": "BUY", "order_type": "STOP_LIMIT", "stop_price": "105", "limit_price": "106", "time_in_force": "GTC"])
            let sell = try await place(client, tokens, ["symbol": "XYZ", "quantity": "2", "side": "SELL", "order_type": "STOP_LIMIT", "stop_price": "95", "limit_price": "94", "time_in_force": "GTC"])
            let untouched = try await place(client, tokens, ["symbol": "XYZ", "quantity": "1", "side": "BUY", "order_type": "STOP", "stop_price": "150", "time_in_force": "GTC"])
            await env.worker.drain()
            for id in [buy, sell, untouched] { #expect(try await show(client, tokens, id)["triggered_at"] == nil) }

            // Past the buy's stop and its limit: reached, not filled.
            try await move(board, env, "XYZ", to: "110.00")
            let reached = try await show(client, tokens, buy)
            #expect(reached["status"] as? String == "accepted" && reached["triggered_at"] is String, "\(reached)")
            // Back under the stop, within the limit: a limit order fills, as at a broker.
            try await move(board, env, "XYZ", to: "103.00")
            let filledBuy = try await show(client, tokens, buy)
            #expect(filledBuy["status"] as? String == "filled" && price(filledBuy["average_fill_price"]) == Price("103"), "\(filledBuy)")
            #expect(filledBuy["triggered_at"] as? String == reached["triggered_at"] as? String, "reached once")

            // The sale: through its stop and its limit, then back above the stop.
            try await move(board, env, "XYZ", to: "90.00")
            #expect(try await show(client, tokens, sell)["status"] as? String == "accepted")
            try await move(board, env, "XYZ", to: "97.00")
            let filledSell = try await show(client, tokens, sell)
            #expect(filledSell["status"] as? String == "filled" && price(filledSell["average_fill_price"]) == Price("97"), "\(filledSell)")

            let stillWaiting = try await show(client, tokens, untouched)
            #expect(stillWaiting["status"] as? String == "accepted" && stillWaiting["triggered_at"] == nil)
            // Each trigger is on the audit trail, once.
            let triggers = try await env.database.sql.raw("SELECT subject_id FROM audit_events WHERE action = 'order.triggered'").all()
                .map { try $0.decode(column: "subject_id", as: String.self) }
            #expect(triggers.sorted() == [buy, sell].sorted(), "\(triggers)")
        }
    }

    @Test("a notional buy fills the whole shares and fraction the amount buys, pays at most the amount, and frees the rest of its reservation", arguments: TestDatabaseKind.all)
    func notional(kind: TestDatabaseKind) async throws {
        try await withBoard(kind, ["XYZ": "123.45"]) { client, env, board, tokens in
            let id = try await place(client, tokens, ["symbol": "XYZ", "notional": "1000.00", "side": "BUY", "order_type": "MARKET"])
            let placed = try await show(client, tokens, id)
            #expect(placed["notional"] as? String == "1000.00")
            #expect(placed["quantity"] == nil || placed["quantity"] is NSNull)
            #expect(try await env.firstAccount().reservedCash == Cash("1000.00"), "a notional buy reserves its amount")
            await env.worker.drain()
            let filled = try await show(client, tokens, id)
            #expect(filled["status"] as? String == "filled")
            // 1000 ÷ 123.45 = 8.100445524…, cut to 9 places; its cost rounds up to the cent and stays within the amount.
            let shares = try #require(Quantity("8.100445524"))
            #expect((filled["filled_quantity"] as? String).flatMap { Quantity($0) } == shares)
            let cost = try Money.cost(quantity: shares, price: #require(Price("123.45")))
            #expect(cost == Cash("1000.00"))
            #expect(try await env.firstAccount().cash == (try env.configuration.startingCash - cost))
            #expect(try await env.firstAccount().reservedCash == .zero)
            #expect(try await env.holding("XYZ")?.quantity == shares)

            // A notional beyond the buying power is refused whole; a notional with more than cents is refused too.
            let tooMuch = try await post(client, "/api/orders", ["symbol": "XYZ", "notional": "5000000.00", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
            #expect(tooMuch.status == .unprocessableContent)
            #expect(try problem(tooMuch).code == "insufficient_buying_power")
            #expect(try problem(tooMuch).errors?.map(\.field) == ["notional"], "the field the order asked by")
            let fine = try await post(client, "/api/orders", ["symbol": "XYZ", "notional": "10.001", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
            #expect(fine.status == .unprocessableContent)
            #expect(try problem(fine).errors?.first?.field == "notional")
        }
    }

    @Test("PAPER_SLIPPAGE_BPS moves market fills against the customer, at the market's tick; limit orders get no slippage", arguments: TestDatabaseKind.all)
    func slippage(kind: TestDatabaseKind) async throws {
        try await withBoard(kind, ["XYZ": "100.00", "PENNY": "0.5000"], configure: { $0.paperSlippageBasisPoints = Ratio(uncheckedUnits: 25_000_000) }) { client, env, board, tokens in
            let buy = try await place(client, tokens, ["symbol": "XYZ", "quantity": "10", "side": "BUY", "order_type": "MARKET"])
            let limit = try await place(client, tokens, ["symbol": "XYZ", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "100.00"])
            let penny = try await place(client, tokens, ["symbol": "PENNY", "quantity": "1000", "side": "BUY", "order_type": "MARKET"])
            await env.worker.drain()
            let sell = try await place(client, tokens, ["symbol": "XYZ", "quantity": "4", "side": "SELL", "order_type": "MARKET"])
            await env.worker.drain()
            // 100 × 1.0025 = 100.25 up for the buy; 100 × 0.9975 = 99.75 down for the sale.
            #expect(price(try await show(client, tokens, buy)["average_fill_price"]) == Price("100.25"))
            #expect(price(try await show(client, tokens, sell)["average_fill_price"]) == Price("99.75"))
            #expect(price(try await show(client, tokens, limit)["average_fill_price"]) == Price("100"))
            // Below a dollar the tick is a hundredth of a cent: 0.50125 rounds up to 0.5013.
            #expect(price(try await show(client, tokens, penny)["average_fill_price"]) == Price("0.5013"))
            let spent = try Cash("1002.50")! + Cash("100.00")! + Cash("501.30")! - Cash("399.00")!
            #expect(try await env.firstAccount().cash == (try env.configuration.startingCash - spent))
        }
    }

    @Test("slippage never moves a sale's price below a tick: a stock at 0.0001 sells at 0.0001, instead of at nothing (which never fills)", arguments: TestDatabaseKind.all)
    func slippageFloor(kind: TestDatabaseKind) async throws {
        try await withBoard(kind, ["TINY": "0.0001"], configure: { $0.paperSlippageBasisPoints = Ratio(uncheckedUnits: 25_000_000) }) { client, env, board, tokens in
            let buy = try await place(client, tokens, ["symbol": "TINY", "quantity": "1000", "side": "BUY", "order_type": "MARKET"])
            await env.worker.drain()
            #expect(price(try await show(client, tokens, buy)["average_fill_price"]) == Price("0.0002"), "0.00010025 rounds up to the tick")
            let sell = try await place(client, tokens, ["symbol": "TINY", "quantity": "1000", "side": "SELL", "order_type": "MARKET"])
            await env.worker.drain()
            let sold = try await show(client, tokens, sell)
            #expect(sold["status"] as? String == "filled", "\(sold)")
            #expect(price(sold["average_fill_price"]) == Price("0.0001"))
            try await env.expectConsistent()
        }
    }

    @Test("a market buy whose price runs past its reserved margin pays the excess from available cash, never from another order's reservation, and is rejected when there is none", arguments: TestDatabaseKind.all)
    func pastTheMargin(kind: TestDatabaseKind) async throws {
        try await withBoard(kind, ["XYZ": "100.00"]) { client, env, board, tokens in
            let account = try await env.firstAccount().id.description
            let id = try await place(client, tokens, ["symbol": "XYZ", "quantity": "10", "side": "BUY", "order_type": "MARKET"])
            // 10 × 100 × 1.05: the default margin of 5 %. Then every other cent leaves the account.
            #expect(try await env.firstAccount().reservedCash == Cash("1050.00"))
            // A resting limit buy holds 2 × 50.00 of its own, which the market order may not touch.
            let resting = try await place(client, tokens, ["symbol": "XYZ", "quantity": "2", "side": "BUY", "order_type": "LIMIT", "limit_price": "50.00"])
            #expect(try await env.firstAccount().reservedCash == Cash("1150.00"))
            let available = try env.configuration.startingCash - Cash("1150.00")!
            let withdrawal = try await post(client, "/api/accounts/\(account)/withdrawals", ["amount": available.description], headers: bearer(tokens))
            #expect(withdrawal.status == .created)

            // 10 × 105.01 costs 1,050.10: ten cents more than the account holds beside the limit order's reservation.
            board.set("XYZ", "105.01")
            env.clock.advance(by: 2)
            await env.worker.drain()
            let order = try await show(client, tokens, id)
            #expect(order["status"] as? String == "rejected")
            #expect(order["reject_reason"] as? String == "insufficient cash at the fill price")
            #expect(try await env.firstAccount().reservedCash == Cash("100.00"))
            #expect(try await env.firstAccount().cash == Cash("1150.00"))
            #expect(try await env.fills().isEmpty)
            #expect(try await env.holding("XYZ") == nil)

            // With cash beside the reservation, a price past the margin is paid from it.
            #expect(try await post(client, "/api/accounts/\(account)/deposits", ["amount": "100.00"], headers: bearer(tokens)).status == .created)
            let within = try await place(client, tokens, ["symbol": "XYZ", "quantity": "10", "side": "BUY", "order_type": "MARKET"])
            #expect(try await env.firstAccount().reservedCash == Cash("1202.61"), "10 × 105.01 × 1.05 = 1,102.605, up to the cent, beside the limit order's 100.00")
            board.set("XYZ", "110.50")
            env.clock.advance(by: 2)
            await env.worker.drain()
            #expect(try await show(client, tokens, within)["status"] as? String == "filled")
            #expect(try await env.firstAccount().cash == Cash("145.00"), "1,250.00 − 1,105.00")
            #expect(try await env.firstAccount().reservedCash == Cash("100.00"), "the limit order still holds its own")
            #expect(try await show(client, tokens, resting)["status"] as? String == "accepted", "resting at the broker, untouched")
            try await env.expectConsistent()
        }
    }

    @Test("with market hours on, paper orders placed while the market is closed wait for the open, IOC and FOK are refused as they are placed, and a DAY order expires at an early close", arguments: TestDatabaseKind.all)
    func marketHours(kind: TestDatabaseKind) async throws {
        // Saturday 28 November 2026, noon in New York.
        let clock = TestClock(start: TradingDay(year: 2026, month: 11, day: 28).at(hour: 12, minute: 0))
        try await withTestApp(kind, clock: clock, configure: { $0.paperMarketHours = true }) { client, env in
            let tokens = try await signUp(client, env, email: "hours@example.com")
            let clockAnswer = try json(try await client.execute(uri: "/api/market/clock", method: .get, headers: bearer(tokens)))
            #expect(clockAnswer["is_open"] as? Bool == false && clockAnswer["session_day"] as? String == "2026-11-30", "\(clockAnswer)")

            let placed = try json(try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": 2, "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens)))
            // IOC and FOK cannot wait: refused at once, with the reason, rather than canceled after "placed".
            for timeInForce in ["IOC", "FOK"] {
                let refused = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET", "time_in_force": timeInForce], headers: bearer(tokens))
                #expect(refused.status == .unprocessableContent)
                #expect(try problem(refused).errors?.first?.field == "time_in_force" && problem(refused).errors?.first?.code == "market_closed")
            }
            #expect(try await env.orders().count == 1)
            // The order page says so before anyone places one.
            let session = try await WebAppTests.signInWithoutJavaScript(client, email: "hours@example.com")
            let page = WebAppTests.text(try await client.execute(uri: "/orders", method: .get, headers: [.cookie: try #require(session[.cookie])]))
            #expect(page.contains("Orders placed now wait for it to open, Monday 30 November, 09:30 New York time (14:30 UTC)"), "\(page)")
            #expect(page.contains(#"<option value="IOC" disabled>Immediate or cancel (market closed)</option>"#), "closed: IOC cannot be picked")
            await env.worker.drain()
            try await env.orders.recheckRestingOrders()
            let waiting = try json(try await client.execute(uri: "/api/orders/\(placed["id"] as! String)", method: .get, headers: bearer(tokens)))
            #expect(waiting["status"] as? String == "accepted")

            // Monday 9:31: it fills at the open's price.
            clock.advance(by: MarketCalendar.nyse.currentOrNextSession(at: clock.now).open.timeIntervalSince(clock.now) + 60)
            let again = try await post(client, "/api/auth/login", ["email": "hours@example.com", "password": strongPassword])
            let fresh = try json(again)
            try await env.orders.recheckRestingOrders()
            let filled = try json(try await client.execute(uri: "/api/orders/\(placed["id"] as! String)", method: .get, headers: bearer(fresh)))
            #expect(filled["status"] as? String == "filled", "\(filled)")
            let openSession = try await WebAppTests.signInWithoutJavaScript(client, email: "hours@example.com")
            let openPage = WebAppTests.text(try await client.execute(uri: "/orders", method: .get, headers: [.cookie: try #require(openSession[.cookie])]))
            #expect(!openPage.contains("id=\"market-closed\""), "open: no note")
            #expect(openPage.contains(#"<option value="IOC">Immediate or cancel</option>"#), "open: IOC can be picked")
            try await env.expectConsistent()
        }
    }

    @Test("a DAY order placed on the day after Thanksgiving expires at its 13:00 close", arguments: TestDatabaseKind.all)
    func earlyClose(kind: TestDatabaseKind) async throws {
        let friday = TradingDay(year: 2026, month: 11, day: 27)
        let clock = TestClock(start: friday.at(hour: 10, minute: 0))
        try await withTestApp(kind, clock: clock, configure: { $0.paperMarketHours = true }) { client, env in
            let tokens = try await signUp(client, env, email: "early@example.com")
            let placed = try json(try await post(client, "/api/orders", [
                "symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "DAY",
            ], headers: bearer(tokens)))
            await env.worker.drain()
            clock.advance(by: friday.at(hour: 13, minute: 0).timeIntervalSince(clock.now) + 1)
            try await env.orders.recheckRestingOrders()
            let tokensAfter = try json(try await post(client, "/api/auth/login", ["email": "early@example.com", "password": strongPassword]))
            let expired = try json(try await client.execute(uri: "/api/orders/\(placed["id"] as! String)", method: .get, headers: bearer(tokensAfter)))
            #expect(expired["status"] as? String == "expired", "\(expired)")
            try await env.expectConsistent()
        }
    }
}
