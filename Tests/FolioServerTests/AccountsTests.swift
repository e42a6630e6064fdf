import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SQLKit
import Testing

@testable import FolioServer

func accounts(_ client: some TestClientProtocol, _ tokens: [String: Any]) async throws -> [[String: Any]] {
    try #require(try json(try await client.execute(uri: "/api/accounts", method: .get, headers: bearer(tokens)))["data"] as? [[String: Any]])
}

@Suite("Accounts and the ledger")
struct AccountsTests {
    @Test("a new user has a paper account funded with the starting cash, recorded in the ledger", arguments: TestDatabaseKind.all)
    func paperAccount(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "new@example.com")
            let list = try await accounts(client, tokens)
            #expect(list.count == 1)
            #expect(list[0]["kind"] as? String == "paper")
            #expect(list[0]["cash"] as? String == "100000.00")
            #expect(list[0]["available_cash"] as? String == "100000.00")
            let ledger = try json(try await client.execute(uri: "/api/transactions", method: .get, headers: bearer(tokens)))
            let rows = try #require(ledger["data"] as? [[String: Any]])
            #expect(rows.count == 1)
            #expect(rows[0]["type"] as? String == "deposit")
            #expect(rows[0]["amount"] as? String == "100000.00")
        }
    }

    @Test("deposits and withdrawals move cash exactly; an overdraft is 422 and writes nothing", arguments: TestDatabaseKind.all)
    func movements(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "mover@example.com")
            let id = try #require(try await accounts(client, tokens).first?["id"] as? String)
            let deposit = try await post(client, "/api/accounts/\(id)/deposits", ["amount": "0.10", "description": "dime"], headers: bearer(tokens))
            #expect(deposit.status == .created)
            #expect(try json(deposit)["amount"] as? String == "0.10")
            #expect(try await post(client, "/api/accounts/\(id)/deposits", ["amount": 0.2], headers: bearer(tokens)).status == .created)
            let withdrawal = try await post(client, "/api/accounts/\(id)/withdrawals", ["amount": "50000.30"], headers: bearer(tokens))
            #expect(withdrawal.status == .created)
            #expect(try json(withdrawal)["amount"] as? String == "-50000.30")
            #expect(try await accounts(client, tokens).first?["cash"] as? String == "50000.00")

            let overdraft = try await post(client, "/api/accounts/\(id)/withdrawals", ["amount": "50000.01"], headers: bearer(tokens))
            #expect(overdraft.status == .unprocessableContent)
            #expect(try problem(overdraft).code == "insufficient_funds")
            #expect(try problem(overdraft).errors?.first?.field == "amount")
            #expect(try await accounts(client, tokens).first?["cash"] as? String == "50000.00")
            #expect(try await env.entries().count == 4)
            try await env.expectConsistent()
        }
    }

    @Test("an amount string with a NUL in it is refused for its characters, not as if it were no string", arguments: TestDatabaseKind.all)
    func amountWithNUL(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "nul-amount@example.com")
            let id = try #require(try await accounts(client, tokens).first?["id"] as? String)
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"
            for (route, body) in [("deposits", #"{"amount":"1\u0000"}"#), ("withdrawals", #"{"amount":"\u00001.00"}"#)] {
                let refused = try await client.execute(uri: "/api/accounts/\(id)/\(route)", method: .post, headers: headers, body: ByteBuffer(string: body))
                #expect(refused.status == .unprocessableContent)
                let errors = try #require(try problem(refused).errors)
                #expect(errors.map(\.field) == ["amount"] && errors.map(\.code) == ["invalid_characters"], "\(route): \(errors)")
            }
            #expect(try await env.entries().count == 1)
        }
    }

    @Test("amounts must be positive cents", arguments: [("0", "not_positive"), ("-5", "not_positive"), ("1.001", "too_precise"), ("10000000000000", "too_large")])
    func amountValidation(amount: String, code: String) async throws {
        try await withTestAppOnEachDatabase { client, env in
            let tokens = try await signUp(client, env, email: "validate@example.com")
            let id = try #require(try await accounts(client, tokens).first?["id"] as? String)
            let response = try await post(client, "/api/accounts/\(id)/deposits", ["amount": amount], headers: bearer(tokens))
            #expect(response.status == .unprocessableContent)
            let errors = try #require(try problem(response).errors)
            #expect(errors.map(\.field) == ["amount"])
            #expect(errors.map(\.code) == [code])
            let malformed = try await post(client, "/api/accounts/\(id)/deposits", ["amount": "ten"], headers: bearer(tokens))
            #expect(try problem(malformed).errors?.first?.field == "amount")
        }
    }

    @Test("a deposit or withdrawal with too many places names the cent limit, however many places it has", arguments: ["1.001", "1.2345", "1.23456", "1e-5"])
    func centLimitSaid(amount: String) async throws {
        try await withTestAppOnEachDatabase { client, env in
            let tokens = try await signUp(client, env, email: "cents@example.com")
            let id = try #require(try await accounts(client, tokens).first?["id"] as? String)
            for movement in ["deposits", "withdrawals"] {
                let response = try await post(client, "/api/accounts/\(id)/\(movement)", ["amount": amount], headers: bearer(tokens))
                let issue = try #require(try problem(response).errors?.first)
                #expect(issue.code == "too_precise" && issue.field == "amount")
                #expect(issue.message.contains("at most 2 decimal places"), "\(movement) \(amount): \(issue.message)")
            }
        }
    }

    @Test("another user's account is 404 for reading and for moving money", arguments: TestDatabaseKind.all)
    func isolation(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let alice = try await signUp(client, env, email: "alice@example.com")
            let bob = try await signUp(client, env, email: "bob@example.com")
            let bobAccount = try #require(try await accounts(client, bob).first?["id"] as? String)
            #expect(try await client.execute(uri: "/api/accounts/\(bobAccount)", method: .get, headers: bearer(alice)).status == .notFound)
            #expect(try await post(client, "/api/accounts/\(bobAccount)/withdrawals", ["amount": "1"], headers: bearer(alice)).status == .notFound)
            // A list filtered by another's account is 404 too, not a page that looks like an empty ledger.
            for list in ["/api/transactions", "/api/transactions.csv", "/api/orders"] {
                let filtered = try await client.execute(uri: "\(list)?account_id=\(bobAccount)", method: .get, headers: bearer(alice))
                #expect(filtered.status == .notFound, "\(list)")
                #expect(try problem(filtered).code == "not_found", "\(list)")
            }
            #expect(try await accounts(client, bob).first?["cash"] as? String == "100000.00")
        }
    }

    @Test("fifty concurrent withdrawals never overdraw", arguments: TestDatabaseKind.all)
    func concurrentWithdrawals(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "race@example.com")
            let id = try #require(try await accounts(client, tokens).first?["id"] as? String)
            let headers = bearer(tokens)
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for _ in 0..<50 {
                    group.addTask { try await post(client, "/api/accounts/\(id)/withdrawals", ["amount": "3000.00"], headers: headers).status }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == .created }.count == 33)
            #expect(statuses.filter { $0 == .unprocessableContent }.count == 17)
            #expect(try await accounts(client, tokens).first?["cash"] as? String == "1000.00")
            try await env.expectConsistent()
        }
    }

    @Test("a cursor whose row is gone, or was never the user's, is refused, not taken for the end of the list", arguments: TestDatabaseKind.all)
    func cursorNamingNoRow(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "pager@example.com")
            let other = try await signUp(client, env, email: "other-pager@example.com")
            let othersRow = try #require(try json(try await client.execute(uri: "/api/transactions", method: .get, headers: bearer(other)))["data"] as? [[String: Any]])
            let othersID = try #require((othersRow.first?["id"] as? String).flatMap { UUID(uuidString: $0) })
            for list in ["/api/transactions", "/api/orders", "/api/notifications"] {
                for id in [UUID(), othersID] {
                    let answer = try await client.execute(uri: "\(list)?cursor=\(Pagination.cursor(after: id))", method: .get, headers: bearer(tokens))
                    #expect(answer.status == .unprocessableContent, "\(list)")
                    #expect(try problem(answer).errors?.map(\.field) == ["cursor"], "\(list)")
                }
            }
            // A cursor at the last row is the end of the list, not an error.
            let own = try #require(try json(try await client.execute(uri: "/api/transactions", method: .get, headers: bearer(tokens)))["data"] as? [[String: Any]])
            let last = try #require((own.last?["id"] as? String).flatMap { UUID(uuidString: $0) })
            let end = try await client.execute(uri: "/api/transactions?cursor=\(Pagination.cursor(after: last))", method: .get, headers: bearer(tokens))
            #expect(end.status == .ok)
            #expect((try json(end)["data"] as? [[String: Any]])?.isEmpty == true)
        }
    }

    @Test("the ledger lists with filters and cursor pages, and as CSV", arguments: TestDatabaseKind.all)
    func ledgerListing(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock) { client, env in
            let tokens = try await signUp(client, env, email: "books@example.com")
            let id = try #require(try await accounts(client, tokens).first?["id"] as? String)
            for index in 1...5 {
                clock.advance(by: 60)
                _ = try await post(client, "/api/accounts/\(id)/deposits", ["amount": "\(index).00", "description": "=cmd|' /C calc'!A0, \"quoted\""], headers: bearer(tokens))
            }
            let first = try json(try await client.execute(uri: "/api/transactions?limit=4", method: .get, headers: bearer(tokens)))
            let firstRows = try #require(first["data"] as? [[String: Any]])
            #expect(firstRows.map { $0["amount"] as? String } == ["5.00", "4.00", "3.00", "2.00"])
            let cursor = try #require(first["next_cursor"] as? String)
            let second = try json(try await client.execute(uri: "/api/transactions?limit=4&cursor=\(cursor)", method: .get, headers: bearer(tokens)))
            #expect((second["data"] as? [[String: Any]])?.map { $0["amount"] as? String } == ["1.00", "100000.00"])
            #expect(second["next_cursor"] == nil)

            let deposits = try json(try await client.execute(uri: "/api/transactions?type=withdrawal", method: .get, headers: bearer(tokens)))
            #expect((deposits["data"] as? [[String: Any]])?.isEmpty == true)
            // In capitals as order sides are written: the same filter.
            let upper = try json(try await client.execute(uri: "/api/transactions?type=DEPOSIT", method: .get, headers: bearer(tokens)))
            let lower = try json(try await client.execute(uri: "/api/transactions?type=deposit", method: .get, headers: bearer(tokens)))
            #expect((upper["data"] as? [[String: Any]])?.count == (lower["data"] as? [[String: Any]])?.count && (lower["data"] as? [[String: Any]])?.isEmpty == false)
            let bad = try await client.execute(uri: "/api/transactions?type=loan&from=yesterday", method: .get, headers: bearer(tokens))
            #expect(Set(try problem(bad).errors?.map(\.field) ?? []) == ["type", "from"])
            // Days a month lacks and hour 24 are refused, not rolled into the next day.
            let rolled = try await client.execute(uri: "/api/transactions?from=2026-02-30&to=2026-01-31T24:00:00Z", method: .get, headers: bearer(tokens))
            #expect(rolled.status == .unprocessableContent)
            #expect(Set(try problem(rolled).errors?.map(\.field) ?? []) == ["from", "to"])
            let leap = try await client.execute(uri: "/api/transactions?from=2024-02-29&to=2099-12-31T23:59:59Z", method: .get, headers: bearer(tokens))
            #expect(leap.status == .ok)
            // A range that ends before it starts is said so, not answered with an empty page.
            let inverted = try await client.execute(uri: "/api/transactions?from=2026-11-24&to=2026-11-01", method: .get, headers: bearer(tokens))
            #expect(inverted.status == .unprocessableContent)
            #expect(try problem(inverted).errors?.map(\.code) == ["before_from"])
            // The day before `from`, though it ends at from's midnight, is before it too.
            let adjacent = try await client.execute(uri: "/api/transactions?from=2026-11-25&to=2026-11-24", method: .get, headers: bearer(tokens))
            #expect(adjacent.status == .unprocessableContent)
            // The rest of a day, from a time in it to the day itself, is a range with rows in it.
            let restOfDay = try await client.execute(uri: "/api/transactions?from=2026-11-24T00:00:01Z&to=2026-11-24", method: .get, headers: bearer(tokens))
            #expect(restOfDay.status == .ok)
            // A day as `to` takes the whole day, as "to November 24" reads; a time ends there.
            let day = try json(try await client.execute(uri: "/api/transactions?from=2026-11-24&to=2026-11-24", method: .get, headers: bearer(tokens)))
            #expect((day["data"] as? [[String: Any]])?.count == 6)
            let dayBefore = try json(try await client.execute(uri: "/api/transactions?to=2026-11-23", method: .get, headers: bearer(tokens)))
            #expect((dayBefore["data"] as? [[String: Any]])?.isEmpty == true)
            let morning = try json(try await client.execute(uri: "/api/transactions?to=2026-11-24T00:00:00Z", method: .get, headers: bearer(tokens)))
            #expect((morning["data"] as? [[String: Any]])?.isEmpty == true)
            // Days in the reader's time zone: the rows of 15:30 UTC on the 24th are on the 25th in Tokyo (UTC+9).
            let tokyo24 = try json(try await client.execute(uri: "/api/transactions?from=2026-11-24&to=2026-11-24&tz=Asia/Tokyo", method: .get, headers: bearer(tokens)))
            #expect((tokyo24["data"] as? [[String: Any]])?.isEmpty == true)
            let tokyo25 = try json(try await client.execute(uri: "/api/transactions?from=2026-11-25&to=2026-11-25&tz=Asia/Tokyo", method: .get, headers: bearer(tokens)))
            #expect((tokyo25["data"] as? [[String: Any]])?.count == 6)
            let tokyoCSV = try await client.execute(uri: "/api/transactions.csv?from=2026-11-25&tz=Asia/Tokyo", method: .get, headers: bearer(tokens))
            #expect(String(buffer: tokyoCSV.body).split(separator: "\n").count == 7)
            let nowhere = try await client.execute(uri: "/api/transactions?from=2026-11-25&tz=Mars/Olympus", method: .get, headers: bearer(tokens))
            #expect(try nowhere.status == .unprocessableContent && problem(nowhere).errors?.map(\.field) == ["tz"])

            let csv = try await client.execute(uri: "/api/transactions.csv?type=deposit", method: .get, headers: bearer(tokens))
            #expect(csv.status == .ok)
            #expect(csv.headers[.contentType] == "text/csv; charset=utf-8")
            let lines = String(buffer: csv.body).split(separator: "\n")
            #expect(lines.count == 7)
            #expect(lines[0] == "id,occurred_at,account_id,type,symbol,quantity,price,amount,order_id,description")
            #expect(lines[1].contains(",deposit,,,,5.00,,\"'=cmd|' /C calc'!A0, \"\"quoted\"\"\""))

            // A row stored at a fraction of a second shows its time to the second; that time as both bounds finds it.
            clock.advance(by: 1.75)
            #expect(try await post(client, "/api/accounts/\(id)/deposits", ["amount": "7.00", "description": ""], headers: bearer(tokens)).status == .created)
            let newest = try #require((try json(try await client.execute(uri: "/api/transactions?limit=1", method: .get, headers: bearer(tokens)))["data"] as? [[String: Any]])?.first)
            #expect(newest["description"] == nil, "an empty description is none, and left out")
            let shown = try #require(newest["occurred_at"] as? String)
            let copied = try json(try await client.execute(uri: "/api/transactions?from=\(shown)&to=\(shown)", method: .get, headers: bearer(tokens)))
            #expect((copied["data"] as? [[String: Any]])?.map { $0["amount"] as? String } == ["7.00"], "\(shown)")
        }
    }

    @Test("ledger verify finds a balance changed behind the ledger's back", arguments: TestDatabaseKind.all)
    func verifyFindsTampering(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await signUp(client, env, email: "tamper@example.com")
            try await env.expectConsistent()
            try await env.database.sql.raw("UPDATE accounts SET cash = '100000.01'").run()
            let result = try await LedgerVerifier(services: env.services).verify()
            #expect(result.differences.count == 1)
            #expect(result.differences.first?.description.contains("cash is 100000.01 but the ledger sums to 100000") == true)
        }
    }

    @Test("PostgreSQL: the seed's query lists the money columns of holdings, transactions and orders as numeric", .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func seedNumericQuery() async throws {
        try await withTestDatabase(.postgres) { database, _ in
            struct Column: Decodable, Hashable {
                var table_name: String
                var column_name: String
                var numeric_precision: Int
                var numeric_scale: Int
            }
            let columns = try await database.sql.raw("""
                SELECT table_name, column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns
                WHERE table_name IN ('holdings','transactions','orders') AND data_type = 'numeric'
                """).all(decoding: Column.self)
            #expect(Set(columns) == [
                Column(table_name: "holdings", column_name: "quantity", numeric_precision: 28, numeric_scale: 9),
                Column(table_name: "holdings", column_name: "reserved_quantity", numeric_precision: 28, numeric_scale: 9),
                Column(table_name: "holdings", column_name: "cost_basis", numeric_precision: 20, numeric_scale: 4),
                Column(table_name: "transactions", column_name: "quantity", numeric_precision: 28, numeric_scale: 9),
                Column(table_name: "transactions", column_name: "price", numeric_precision: 20, numeric_scale: 8),
                Column(table_name: "transactions", column_name: "amount", numeric_precision: 20, numeric_scale: 4),
                Column(table_name: "orders", column_name: "quantity", numeric_precision: 28, numeric_scale: 9),
                Column(table_name: "orders", column_name: "filled_quantity", numeric_precision: 28, numeric_scale: 9),
                Column(table_name: "orders", column_name: "reserved_quantity", numeric_precision: 28, numeric_scale: 9),
                Column(table_name: "orders", column_name: "notional", numeric_precision: 20, numeric_scale: 4),
                Column(table_name: "orders", column_name: "reserved_cash", numeric_precision: 20, numeric_scale: 4),
                Column(table_name: "orders", column_name: "limit_price", numeric_precision: 20, numeric_scale: 8),
                Column(table_name: "orders", column_name: "stop_price", numeric_precision: 20, numeric_scale: 8),
                Column(table_name: "orders", column_name: "average_fill_price", numeric_precision: 20, numeric_scale: 8),
                // 024: the cash a rebalance's buy keeps, at cash scale.
                Column(table_name: "orders", column_name: "keep_cash", numeric_precision: 20, numeric_scale: 4),
            ])
        }
    }

    @Test("the database refuses a negative balance or a malformed ledger row even if code let one through", arguments: TestDatabaseKind.all)
    func constraints(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await signUp(client, env, email: "rules@example.com")
            let sql = env.database.sql
            await expectConstraintViolation(.check) { try await sql.raw("UPDATE accounts SET cash = '-1'").run() }
            await expectConstraintViolation(.check) { try await sql.raw("UPDATE accounts SET reserved_cash = '200000'").run() }
            // The same statements with allowed values pass: the refusals above were the checks, not the SQL.
            try await sql.raw("UPDATE accounts SET cash = '100000.01'").run()
            try await sql.raw("UPDATE accounts SET reserved_cash = '0.01'").run()
            let account = try await env.firstAccount()
            func insert(_ type: String, amount: String, quantity: String?) async throws {
                try await sql.raw("""
                    INSERT INTO transactions (id, account_id, user_id, type, symbol, quantity, amount, occurred_at, created_at)
                    VALUES (\(bind: UUID()), \(bind: account.id), \(bind: account.userID), \(bind: type), 'AAPL', \(bind: try quantity.map { try Quantity(parsing: $0) }), \(bind: try Cash(parsing: amount)), \(bind: Date()), \(bind: Date()))
                    """).run()
            }
            await expectConstraintViolation(.check) { try await insert("deposit", amount: "-5", quantity: nil) }
            try await insert("deposit", amount: "5", quantity: nil)
            await expectConstraintViolation(.check) { try await insert("buy", amount: "-5", quantity: "-1") }
            try await insert("buy", amount: "-5", quantity: "1")
            await expectConstraintViolation(.check) { try await insert("loan", amount: "5", quantity: nil) }
            try await insert("dividend", amount: "5", quantity: nil)
        }
    }
}
