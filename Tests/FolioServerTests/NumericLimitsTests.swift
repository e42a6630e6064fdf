import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SQLKit
import Testing

@testable import FolioServer

/// The numeric edges an outside test of the money path found: long JSON
/// numbers cut instead of refused, balances past their columns, and cash
/// shown off its scale.
@Suite("Numbers at the edges")
struct NumericLimitsTests {
    func raw(_ client: some TestClientProtocol, _ uri: String, _ body: String, tokens: [String: Any], key: String? = nil) async throws -> TestResponse {
        var headers = bearer(tokens)
        headers[.contentType] = "application/json"
        if let key { headers[Idempotency.header] = key }
        return try await client.execute(uri: uri, method: .post, headers: headers, body: ByteBuffer(string: body))
    }

    @Test("a JSON number with more digits than an amount holds is refused like the same string, and nothing is stored", arguments: TestDatabaseKind.all)
    func longNumbers(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "digits@example.com")
            let account = try await env.firstAccount().id
            let uri = "/api/accounts/\(account)/deposits"
            let number = try await raw(client, uri, #"{"amount": 100.00000000000000000000000000000000000001}"#, tokens: tokens)
            let string = try await raw(client, uri, #"{"amount": "100.00000000000000000000000000000000000001"}"#, tokens: tokens)
            for response in [number, string] {
                #expect(response.status == .unprocessableContent)
                #expect(try problem(response).errors?.first?.field == "amount")
                #expect(try problem(response).errors?.first?.code == "too_precise")
            }
            // 39 significant digits that are all whole: too large, as a number and as a string.
            let large = try await raw(client, uri, #"{"amount": 123456789012345678901234567890123456789}"#, tokens: tokens)
            #expect(try problem(large).errors?.first?.code == "too_large")
            let order = try await raw(client, "/api/orders", #"{"symbol":"AAPL","side":"BUY","order_type":"MARKET","quantity":1.0000000000000000000000000000000000000001}"#, tokens: tokens)
            #expect(order.status == .unprocessableContent)
            #expect(try problem(order).errors?.first?.field == "quantity")
            #expect(try await env.entries().count == 1, "only the starting deposit")
            #expect(try await env.orders().isEmpty)
            // Trailing zeros past the scale hold nothing and are accepted, as a number too.
            let zeros = try await raw(client, uri, #"{"amount": 100.000000000000000000000000000000000000000}"#, tokens: tokens)
            #expect(zeros.status == .created)
            #expect(try json(zeros)["amount"] as? String == "100.00")
        }
    }

    @Test("the idempotency fingerprint sees every digit: two bodies that differ past the 38th digit are two requests", arguments: TestDatabaseKind.all)
    func exactFingerprint(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "fingerprint@example.com")
            let uri = "/api/accounts/\(try await env.firstAccount().id)/deposits"
            // `reference` is not a field deposits read; it is part of the request all the same.
            let first = try await raw(client, uri, #"{"amount":"1.00","reference":1.000000000000000000000000000000000000001}"#, tokens: tokens, key: "long-1")
            #expect(first.status == .created)
            let same = try await raw(client, uri, #"{"reference":1.0000000000000000000000000000000000000010, "amount":"1.00"}"#, tokens: tokens, key: "long-1")
            #expect(same.status == .created, "the same value, other spelling and key order: a replay")
            #expect(String(buffer: same.body) == String(buffer: first.body))
            let other = try await raw(client, uri, #"{"amount":"1.00","reference":1.000000000000000000000000000000000000002}"#, tokens: tokens, key: "long-1")
            #expect(other.status == .unprocessableContent)
            #expect(try problem(other).code == "idempotency_key_reused")
            #expect(try await env.entries(.deposit).count == 2)

            // An amount means the same as a string or a number: a client that writes it again another way gets the replay.
            let written = try await raw(client, uri, #"{"amount":"1000.00"}"#, tokens: tokens, key: "spelled")
            #expect(written.status == .created)
            for spelling in [#"{"amount":1000}"#, #"{"amount":"1000"}"#, #"{"amount":1e3}"#, #"{"amount":"1000.0"}"#] {
                let again = try await raw(client, uri, spelling, tokens: tokens, key: "spelled")
                #expect(again.status == .created, "\(spelling)")
                #expect(String(buffer: again.body) == String(buffer: written.body), "\(spelling)")
            }
            #expect(try await raw(client, uri, #"{"amount":"1000.01"}"#, tokens: tokens, key: "spelled").status == .unprocessableContent)
            #expect(try await raw(client, uri, #"{"amount":" 1000"}"#, tokens: tokens, key: "spelled").status == .unprocessableContent, "not a number as it stands")
            #expect(try await env.entries(.deposit).count == 3)
            #expect(CanonicalJSON.text(of: Array(#"{"cash_reserve":"100","execute":true}"#.utf8)) == CanonicalJSON.text(of: Array(#"{"execute":true,"cash_reserve":100.00}"#.utf8)))
            // Other strings stay as written: a description of "1.50" is not one of "1.5".
            #expect(CanonicalJSON.text(of: Array(#"{"description":"1.50"}"#.utf8)) != CanonicalJSON.text(of: Array(#"{"description":"1.5"}"#.utf8)))
        }
    }

    @Test("an exponent at or past Int's limits, in any member of a keyed request, is read exactly (it stopped the server with an overflow)", arguments: TestDatabaseKind.all)
    func extremeExponents(kind: TestDatabaseKind) async throws {
        // The canonical form adds the digits' shift to the written exponent exactly, however long it is.
        let cases: [(String, String)] = [
            ("10e9223372036854775807", "1e9223372036854775808"), ("0.1e-9223372036854775808", "1e-9223372036854775809"),
            ("-100e+99999999999999999999999999999999999999", "-1e100000000000000000000000000000000000001"),
            ("0.001e100000000000000000000000000000000000002", "1e99999999999999999999999999999999999999"),
            ("1.5e-000000000000000000000000000000000000003", "15e-4"), ("1500", "15e2"), ("0.0e99999999999999999999", "0"), ("7e-0", "7e0"),
        ]
        for (written, canonical) in cases { #expect(CanonicalJSON.number(written) == canonical, "\(written)") }
        #expect(CanonicalJSON.number("10e9223372036854775807") == CanonicalJSON.number("1e9223372036854775808"))
        #expect(CanonicalJSON.number("1e9223372036854775807") != CanonicalJSON.number("1e9223372036854775806"))

        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "exponent@example.com")
            let uri = "/api/accounts/\(try await env.firstAccount().id)/deposits"
            let deposit = try await raw(client, uri, #"{"amount":"1.00","x":10e9223372036854775807}"#, tokens: tokens, key: "exp-1")
            #expect(deposit.status == .created, "\(String(buffer: deposit.body))")
            let again = try await raw(client, uri, #"{"x":1e9223372036854775808,"amount":1}"#, tokens: tokens, key: "exp-1")
            #expect(String(buffer: again.body) == String(buffer: deposit.body), "the same value: a replay")
            let order = try await raw(
                client, "/api/orders", #"{"symbol":"AAPL","quantity":"1","side":"BUY","order_type":"MARKET","x":0.1e-9223372036854775808}"#, tokens: tokens, key: "exp-2")
            #expect(order.status == .created, "\(String(buffer: order.body))")
            let huge = try await raw(client, uri, #"{"amount":10e9223372036854775807}"#, tokens: tokens, key: "exp-3")
            let hugeCode = try problem(huge).code
            #expect(huge.status == .unprocessableContent && hugeCode == "validation_failed" && String(buffer: huge.body).contains(#""field":"amount""#), "\(String(buffer: huge.body)) \(hugeCode)")
            #expect(try await env.entries(.deposit).count == 2)
        }
    }

    /// Brings the account's cash to `cash` with a correction row, so the books
    /// still balance. Written behind Folio's back, so only the ledger is checked afterwards.
    func setCash(_ env: TestEnvironment, to cash: Cash) async throws {
        let account = try await env.firstAccount()
        let delta = try cash - account.cash
        try await env.database.sql.raw("UPDATE accounts SET cash = \(bind: cash) WHERE id = \(bind: account.id)").run()
        try await env.database.sql.raw("""
            INSERT INTO transactions (id, account_id, user_id, type, amount, description, occurred_at, created_at)
            VALUES (\(bind: UUID()), \(bind: account.id), \(bind: account.userID), 'correction', \(bind: delta), 'test: near the limit', \(bind: env.clock.now), \(bind: env.clock.now))
            """).run()
    }

    @Test("a deposit that would take cash past its column is 422 balance_limit_exceeded on both databases, and writes nothing", arguments: TestDatabaseKind.all)
    func depositOverflow(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "rich@example.com")
            let id = try await env.firstAccount().id
            try await setCash(env, to: try Cash(parsing: "9999999999999000.00"))
            let over = try await post(client, "/api/accounts/\(id)/deposits", ["amount": "1000.00"], headers: bearer(tokens))
            #expect(over.status == .unprocessableContent)
            #expect(try problem(over).code == "balance_limit_exceeded")
            #expect(try problem(over).errors?.first?.field == "amount")
            #expect(try await env.firstAccount().cash == (try Cash(parsing: "9999999999999000.00")))
            // Up to the limit itself is fine.
            let exact = try await post(client, "/api/accounts/\(id)/deposits", ["amount": "999.9999"], headers: bearer(tokens))
            #expect(exact.status == .unprocessableContent, "deposits are in cents")
            let last = try await post(client, "/api/accounts/\(id)/deposits", ["amount": "999.99"], headers: bearer(tokens))
            #expect(last.status == .created)
            #expect(try await env.firstAccount().cash == (try Cash(parsing: "9999999999999999.99")))
            #expect(try await env.ledgerDifferences().isEmpty)
        }
    }

    @Test("a portfolio worth more than cash can hold answers 422 amount_out_of_range, never 500, and everyone else's close snapshots are still taken", arguments: TestDatabaseKind.all)
    func valueOverflow(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let rich = try await signUp(client, env, email: "overflow@example.com")
            let bought = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "10", "side": "BUY", "order_type": "MARKET"], headers: bearer(rich))
            #expect(bought.status == .created)
            await env.worker.drain()
            // Cash at its very limit (deposits can take it there), with shares on top: the total is past what cash holds.
            try await setCash(env, to: try Cash(parsing: "9999999999999999.00"))
            let ordinary = try await signUp(client, env, email: "ordinary@example.com")
            for uri in ["/api/portfolio", "/api/portfolio/history?range=1M", "/api/portfolio/performance?range=1M"] {
                let read = try await client.execute(uri: uri, method: .get, headers: bearer(rich))
                #expect(read.status == .unprocessableContent, "\(uri)")
                #expect(read.headers[.contentType] == "application/problem+json")
                #expect(try problem(read).code == "amount_out_of_range", "\(uri)")
            }
            #expect(try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(ordinary)).status == .ok)
            #expect(env.logs.lines.contains { $0.contains("a computed amount is out of range") }, "logged for operators")

            // The close snapshot job skips the account it cannot value, and takes the others'.
            try await env.services.snapshots.snapshotAll(day: TradingDay(env.clock.now))
            let accounts = try await env.accounts()
            let snapshotted = try await env.database.sql.raw("SELECT account_id FROM portfolio_snapshots").all().map { try $0.decode(column: "account_id", as: UUID.self) }
            let richAccount = try #require(accounts.first { $0.cash == (try? Cash(parsing: "9999999999999999.00")) })
            #expect(snapshotted.count == 1 && !snapshotted.contains(richAccount.id.uuid))
            #expect(env.logs.lines.contains { $0.contains("its snapshot is skipped") })
        }
    }

    @Test("a sale whose proceeds would take cash past its column rejects the order with a reason; its job ends done, not dead", arguments: TestDatabaseKind.all)
    func saleOverflow(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "seller@example.com")
            let bought = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "10", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
            #expect(bought.status == .created)
            await env.worker.drain()
            try await setCash(env, to: try Cash(parsing: "9999999999999999.00"))
            let sell = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "10", "side": "SELL", "order_type": "MARKET"], headers: bearer(tokens))
            #expect(sell.status == .created)
            let id = try #require(try json(sell)["id"] as? String)
            await env.worker.drain()
            let shown = try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))
            #expect(shown["status"] as? String == "rejected")
            #expect((shown["reject_reason"] as? String)?.contains("exceed what an account can hold") == true)
            #expect(try await env.jobs().map(\.status) == ["done", "done"])
            #expect(try await env.holding("AAPL")?.quantity == 10, "the shares stay")
            #expect(try await env.holding("AAPL")?.reservedQuantity == 0, "and are free again")
            #expect(try await env.ledgerDifferences().isEmpty)
        }
    }

    @Test("a buy whose holding would pass its column is refused at placement when its cost is too large to reserve", arguments: TestDatabaseKind.all)
    func reservationOverflow(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "huge@example.com")
            let response = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1000000000", "side": "BUY", "order_type": "LIMIT", "limit_price": "1000000000"], headers: bearer(tokens))
            #expect(response.status == .unprocessableContent)
            #expect(try problem(response).code == "insufficient_buying_power")
            #expect(try await env.orders().isEmpty)
        }
    }
}
