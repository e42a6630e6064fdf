import Crypto
import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOConcurrencyHelpers
import SQLKit
import Testing

@testable import FolioServer

/// Linking banks and brokerages through Plaid, against a fake Plaid on
/// loopback: link token, exchange, accounts with exact balances, paged
/// transaction sync, holdings, net worth, removal, and webhooks verified as
/// Plaid documents them (and refused otherwise).
@Suite("Plaid links")
struct PlaidTests {
    static let checking = FakePlaid.Account(id: "acc-checking", name: "Checking", type: "depository", subtype: "checking", current: "9007199254740993.01")
    static let card = FakePlaid.Account(id: "acc-card", name: "Card", type: "credit", subtype: "credit card", current: "410.25")
    static let brokerage = FakePlaid.Account(id: "acc-invest", name: "Brokerage", type: "investment", subtype: "brokerage", current: "1523.4567")

    /// Plaid's sign: positive amounts are money out.
    static let changes: [FakePlaid.Change] = [
        .added(id: "tx-1", account: "acc-checking", amount: "12.34", date: "2026-11-20", name: "Coffee"),
        .added(id: "tx-2", account: "acc-checking", amount: "-2500.00", date: "2026-11-21", name: "Payroll"),
        .added(id: "tx-3", account: "acc-card", amount: "89.99", date: "2026-11-22", name: "Books"),
        .added(id: "tx-4", account: "acc-checking", amount: "5.5", date: "2026-11-23", name: "Parking"),
        .modified(id: "tx-1", account: "acc-checking", amount: "12.35", date: "2026-11-20", name: "Coffee House"),
        .removed(id: "tx-4"),
    ]

    static let holdings: [FakePlaid.Holding] = [
        .init(account: "acc-invest", securityID: "sec-vti", ticker: "VTI", quantity: "3.123456789", price: "240.12345678", value: "749.9283", costBasis: "700.00"),
    ]

    static let accounts = [checking, card, brokerage]

    func withPlaidApp(
        _ kind: TestDatabaseKind, clock: TestClock = TestClock(),
        _ body: @escaping @Sendable (any TestClientProtocol, TestEnvironment, FakePlaid) async throws -> Void
    ) async throws {
        try await withFakePlaid { fake in
            try await withTestApp(kind, clock: clock, configure: { $0.plaid = fake.settings; $0.opsToken = String(repeating: "o", count: 40) }) { client, env in
                try await body(client, env, fake)
            }
        }
    }

    func get(_ client: some TestClientProtocol, _ uri: String, _ tokens: [String: Any]) async throws -> TestResponse {
        try await client.execute(uri: uri, method: .get, headers: bearer(tokens))
    }

    func webhook(_ client: some TestClientProtocol, _ body: String, header: String?) async throws -> TestResponse {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let header { headers[HTTPField.Name("Plaid-Verification")!] = header }
        return try await client.execute(uri: "/webhooks/plaid", method: .post, headers: headers, body: ByteBuffer(string: body))
    }

    func link(_ client: some TestClientProtocol, _ tokens: [String: Any], _ fake: FakePlaid, accounts: [FakePlaid.Account] = [checking, card, brokerage],
              changes: [FakePlaid.Change] = changes) async throws -> (item: [String: Any], plaidItemID: String) {
        let issued = fake.issuePublicToken(accounts: accounts, changes: changes, holdings: Self.holdings)
        let exchanged = try await post(client, "/api/links/plaid/exchange", ["public_token": issued.publicToken], headers: bearer(tokens))
        #expect(exchanged.status == .created)
        return (try json(exchanged), issued.itemID)
    }

    /// The item's login breaks at Plaid, and Plaid's ITEM_LOGIN_REQUIRED webhook says so.
    func breakLogin(_ client: some TestClientProtocol, _ env: TestEnvironment, _ fake: FakePlaid, _ plaidItemID: String) async throws {
        fake.update(item: plaidItemID) { $0.errorCode = "ITEM_LOGIN_REQUIRED" }
        let body = FakePlaid.webhookBody(
            type: "ITEM", code: "ERROR", itemID: plaidItemID,
            extra: #""error":{"display_message":null,"error_code":"ITEM_LOGIN_REQUIRED","error_message":"the login details of this item have changed","error_type":"ITEM_ERROR","status":400}"#)
        #expect(try json(try await webhook(client, body, header: fake.sign(body, iat: env.clock.now)))["action"] as? String == "needs_login")
        await env.worker.drain()
    }

    func count(_ env: TestEnvironment, _ table: String) async throws -> Int {
        try await env.database.sql.raw("SELECT COUNT(*) AS n FROM \(ident: table)").first()?.decode(column: "n", as: Int.self) ?? -1
    }

    @Test("a bank linked while an erasure removes the others at Plaid stops it (409, nothing erased); erasing again removes that one too", arguments: TestDatabaseKind.all)
    func linkedWhileErasing(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "leaving@example.com")
            _ = try await link(client, tokens, fake)
            let second = fake.issuePublicToken(accounts: [Self.checking], institutionID: "ins_second_bank").publicToken
            let headers = bearer(tokens)
            // Another tab links a second bank while the erasure waits for Plaid's answer on the first.
            fake.duringNextRemove {
                let exchanged = try await post(client, "/api/links/plaid/exchange", ["public_token": second], headers: headers)
                #expect(exchanged.status == .created, "\(String(buffer: exchanged.body))")
            }
            var erase = bearer(tokens)
            erase[.contentType] = "application/json"
            let body = ByteBuffer(string: #"{"password": "\#(strongPassword)"}"#)
            let refused = try await client.execute(uri: "/api/me", method: .delete, headers: erase, body: body)
            #expect(refused.status == .conflict)
            #expect(try problem(refused).code == "linked_while_erasing")
            #expect(try await count(env, "plaid_items") == 1, "the bank linked meanwhile is still there, and so is the person")
            let erased = try await client.execute(uri: "/api/me", method: .delete, headers: erase, body: body)
            #expect(erased.status == .noContent, "\(String(buffer: erased.body))")
            #expect(try await count(env, "plaid_items") == 0)
            #expect(fake.removeCalls == 2)
        }
    }

    @Test("two erasures of one person at once (the second while the first waits for Plaid): one goes through, the other is 409 already_erased, and the accounts stay closed", arguments: TestDatabaseKind.all)
    func erasedTwiceAtOnce(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "twice@example.com")
            _ = try await link(client, tokens, fake)
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"
            let erase = headers, body = ByteBuffer(string: #"{"password": "\#(strongPassword)"}"#)
            let second = NIOLockedValueBox<HTTPResponse.Status?>(nil)
            // Another tab's erasure runs to its end while the first waits for Plaid's answer.
            fake.duringNextRemove {
                let answer = try await client.execute(uri: "/api/me", method: .delete, headers: erase, body: body)
                second.withLockedValue { $0 = answer.status }
            }
            let first = try await client.execute(uri: "/api/me", method: .delete, headers: erase, body: body)
            #expect(second.withLockedValue { $0 } == .noContent)
            #expect(first.status == .conflict, "\(String(buffer: first.body))")
            #expect(try problem(first).code == "already_erased")
            let erasures = try await env.database.sql.raw("SELECT COUNT(*) AS n FROM audit_events WHERE action = 'user.erased'").first()?.decode(column: "n", as: Int.self)
            #expect(erasures == 1)
            let open = try await env.database.sql.raw("SELECT COUNT(*) AS n FROM accounts WHERE closed_at IS NULL").first()?.decode(column: "n", as: Int.self)
            #expect(open == 0, "the refused erasure does not open the erased person's accounts again")
            try await env.expectConsistent()
        }
    }

    @Test("an order placed while an erasure removes the banks at Plaid finds no account (they are held closed), and the erasure goes through; Plaid unreachable, nothing is erased and the accounts are open again", arguments: TestDatabaseKind.all)
    func orderWhileErasing(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "quitting@example.com")
            _ = try await link(client, tokens, fake)
            let headers = bearer(tokens)
            var erase = bearer(tokens)
            erase[.contentType] = "application/json"
            let body = ByteBuffer(string: #"{"password": "\#(strongPassword)"}"#)
            // Plaid cannot be told: nothing is erased, and the person trades on.
            fake.duringNextRemove { throw PlaidError.unreachable("down") }
            let unavailable = try await client.execute(uri: "/api/me", method: .delete, headers: erase, body: body)
            #expect(unavailable.status == .serviceUnavailable, "\(String(buffer: unavailable.body))")
            #expect(try await count(env, "plaid_items") == 1)
            #expect(try await env.database.sql.raw("SELECT COUNT(*) AS n FROM accounts WHERE closed_at IS NOT NULL").first()?.decode(column: "n", as: Int.self) == 0)
            let resting = ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "1", "time_in_force": "GTC"]
            let placed = try await post(client, "/api/orders", resting, headers: headers)
            #expect(placed.status == .created || placed.status == .accepted, "\(String(buffer: placed.body))")
            let orderID = try #require(try json(placed)["id"] as? String)
            #expect(try await client.execute(uri: "/api/orders/\(orderID)", method: .delete, headers: headers).status == .ok)
            // Another tab places a resting order while the erasure waits for Plaid.
            fake.duringNextRemove {
                let late = try await post(client, "/api/orders", resting, headers: headers)
                #expect(late.status == .notFound, "\(String(buffer: late.body))")
            }
            let erased = try await client.execute(uri: "/api/me", method: .delete, headers: erase, body: body)
            #expect(erased.status == .noContent, "\(String(buffer: erased.body))")
            #expect(try await count(env, "plaid_items") == 0)
            #expect(try await count(env, "orders") == 1, "only the order canceled before")
            try await env.expectConsistent()
        }
    }

    // MARK: - Not configured

    @Test("without Plaid settings linking answers 503 plaid_not_configured and every webhook is refused")
    func notConfigured() async throws {
        try await withTestApp(.sqlite) { client, env in
            let tokens = try await signUp(client, env, email: "noplaid@example.com")
            let token = try await post(client, "/api/links/plaid/link-token", [:], headers: bearer(tokens))
            #expect(token.status == .serviceUnavailable)
            #expect(try problem(token).code == "plaid_not_configured")
            let exchange = try await post(client, "/api/links/plaid/exchange", ["public_token": "public-sandbox-x"], headers: bearer(tokens))
            #expect(try problem(exchange).code == "plaid_not_configured")
            let body = FakePlaid.webhookBody(type: "TRANSACTIONS", code: "SYNC_UPDATES_AVAILABLE", itemID: "item-1")
            let forged = try await webhook(client, body, header: "eyJhbGciOiJFUzI1NiJ9.e30.AAAA")
            #expect(forged.status == .unauthorized)
            #expect(try problem(forged).code == "webhook_unverified")
            #expect(forged.headers[.wwwAuthenticate] == "Plaid-Verification", "a 401 names what authenticates the request")
            #expect(env.services.webhookRejections.all["plaid:not_configured"] == 1)
            #expect(try await get(client, "/api/links", tokens).status == .ok, "the list works, empty")
        }
    }

    // MARK: - End to end

    @Test("a bank's text with line breaks or bidirectional controls is kept as shown: one CSV row each, no formula, no reversed name", arguments: TestDatabaseKind.all)
    func bankText(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "banktext@example.com")
            // As Plaid's JSON carries them: escaped control characters.
            let changes: [FakePlaid.Change] = [
                .added(id: "tx-forged", account: "acc-checking", amount: "1.00", date: "2026-11-20", name: #"PAYMENT\r\n=cmd|' /C calc'!A0"#),
                .added(id: "tx-bidi", account: "acc-checking", amount: "2.00", date: "2026-11-21", name: #"Refund \u202Egpj.exe"#),
            ]
            // An account's subtype and currency code with hidden characters are kept as shown too.
            var checking = Self.checking
            checking.subtype = #"checking\u202E\u0007"#
            checking.currency = #"US\u202ED"#
            let (item, _) = try await link(client, tokens, fake, accounts: [checking], changes: changes)
            let account = try #require((item["accounts"] as? [[String: Any]])?.first)
            #expect(account["subtype"] as? String == "checking", "\(account)")
            #expect(account["currency"] as? String == "USD", "\(account)")
            await env.worker.drain()
            let listed = try #require(try json(try await get(client, "/api/links/transactions", tokens))["data"] as? [[String: Any]])
            let names = Dictionary(uniqueKeysWithValues: listed.map { ($0["transaction_id"] as! String, $0["name"] as! String) })
            #expect(names == ["tx-forged": "PAYMENT  =cmd|' /C calc'!A0", "tx-bidi": "Refund gpj.exe"])
            let rows = HardeningTests.csvCells(String(buffer: try await get(client, "/api/links/transactions.csv", tokens).body))
            #expect(rows.count == 3, "a header and one row per transaction: \(rows)")
            #expect(rows.dropFirst().allSatisfy { $0.count == rows.first?.count })
            for cell in rows.joined() { #expect(!UserText.hasHiddenCharacters(cell), "\(cell.debugDescription)") }
        }
    }

    @Test("a forged cursor with a time no row can have (seconds at Int64's ends, or past year 9999) is a 422 naming cursor, not a crash", arguments: TestDatabaseKind.all)
    func forgedCursor(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, _ in
            let tokens = try await signUp(client, env, email: "cursor@example.com")
            let id = UUID().uuidString.lowercased()
            for seconds in ["9223372036854775807", "-9223372036854775808", "253402300800", "-62135596801"] {
                let cursor = SecureToken.base64URL(Data("\(seconds):\(id)".utf8))
                let answer = try await get(client, "/api/links/transactions?cursor=\(cursor)", tokens)
                #expect(answer.status == .unprocessableContent, "\(seconds)")
                #expect(try problem(answer).errors?.first?.field == "cursor")
            }
            // A time within the years a row can have is a cursor like any other: an empty page here.
            let cursor = SecureToken.base64URL(Data("1795000000:\(id)".utf8))
            let answer = try await get(client, "/api/links/transactions?cursor=\(cursor)", tokens)
            #expect(answer.status == .ok)
            #expect((try json(answer)["data"] as? [Any])?.isEmpty == true)
        }
    }

    @Test("link, exchange, accounts, paged sync with added, modified and removed, holdings, net worth, webhook, removal", arguments: TestDatabaseKind.all)
    func endToEnd(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "plaid@example.com")
            let me = try json(try await get(client, "/api/auth/me", tokens))
            let userID = try #require(me["id"] as? String)
            let cashBefore = try await env.accounts().map(\.cash)
            let entriesBefore = try await env.entries().count

            // The link token names the user, both products and the webhook.
            let tokenAnswer = try await post(client, "/api/links/plaid/link-token", [:], headers: bearer(tokens))
            #expect(tokenAnswer.status == .ok)
            #expect((try json(tokenAnswer)["link_token"] as? String)?.hasPrefix("link-sandbox-") == true)
            let request = try #require(fake.linkTokenRequests.last)
            #expect(request["user"]?["client_user_id"]?.string == userID)
            #expect(request["products"]?.elements.compactMap(\.string) == ["transactions"])
            #expect(request["required_if_supported_products"]?.elements.compactMap(\.string) == ["investments"])
            #expect(request["webhook"]?.string == "https://folio.example.com/webhooks/plaid")
            #expect(request["secret"] == nil && request["client_id"] == nil, "credentials travel in headers only")

            // A public token Plaid does not know: refused, nothing stored.
            let bad = try await post(client, "/api/links/plaid/exchange", ["public_token": "public-sandbox-unknown"], headers: bearer(tokens))
            #expect(bad.status == .unprocessableContent)
            #expect(try problem(bad).errors?.first?.field == "public_token")
            #expect(try await count(env, "plaid_items") == 0)

            let (item, plaidItemID) = try await link(client, tokens, fake)
            let itemID = try #require(item["id"] as? String)
            #expect(item["institution_name"] as? String == "First Platypus Bank")
            #expect(item["status"] as? String == "active")
            let accounts = try #require(item["accounts"] as? [[String: Any]])
            #expect(accounts.count == 3)
            // A balance Double cannot hold (2^53 + 1, and cents), kept exactly.
            #expect(accounts.first { $0["name"] as? String == "Checking" }?["current_balance"] as? String == "9007199254740993.01")
            #expect(accounts.first { $0["name"] as? String == "Brokerage" }?["current_balance"] as? String == "1523.4567")
            let text = String(buffer: try await post(client, "/api/links/plaid/link-token", [:], headers: bearer(tokens)).body)
                + String(buffer: try await get(client, "/api/links", tokens).body)
            #expect(!text.contains("access-sandbox-"), "the access token is never returned")
            let sealed = try #require(try await env.database.sql.raw("SELECT sealed_access_token FROM plaid_items").first()?
                .decode(column: "sealed_access_token", as: String.self))
            #expect(!sealed.contains("access-sandbox-") && env.services.identity.secretBox.open(sealed) == fake.accessToken(of: plaidItemID))

            // The sync and holdings jobs: three pages of two changes each.
            fake.pageSize = 2
            await env.worker.drain()
            #expect(fake.syncCursors == [nil, "cursor-2", "cursor-4"])
            let page = try json(try await get(client, "/api/links/transactions?limit=2", tokens))
            let firstPage = try #require(page["data"] as? [[String: Any]])
            #expect(firstPage.count == 2)
            let next = try #require(page["next_cursor"] as? String)
            let rest = try #require(try json(try await get(client, "/api/links/transactions?cursor=\(next)", tokens))["data"] as? [[String: Any]])
            let all = firstPage + rest
            #expect(all.map { $0["transaction_id"] as? String } == ["tx-3", "tx-2", "tx-1"], "newest first; tx-4 removed")
            // Folio's sign: money in is positive.
            #expect(all.first { $0["transaction_id"] as? String == "tx-2" }?["amount"] as? String == "2500.00")
            let coffee = try #require(all.first { $0["transaction_id"] as? String == "tx-1" })
            #expect(coffee["amount"] as? String == "-12.35" && coffee["name"] as? String == "Coffee House", "the modification applied")
            #expect(coffee["category"] as? String == "GENERAL_MERCHANDISE")

            // Filters: one account, a date range; an unknown account is named.
            let checkingID = try #require(accounts.first { $0["name"] as? String == "Checking" }?["id"] as? String)
            let checkingOnly = try json(try await get(client, "/api/links/transactions?account_id=\(checkingID)&from=2026-11-21", tokens))
            #expect((checkingOnly["data"] as? [[String: Any]])?.map { $0["transaction_id"] as? String } == ["tx-2"])
            let outflows = try json(try await get(client, "/api/links/transactions?type=outflow", tokens))
            #expect((outflows["data"] as? [[String: Any]])?.map { $0["transaction_id"] as? String } == ["tx-3", "tx-1"])
            #expect(try problem(try await get(client, "/api/links/transactions?type=sideways", tokens)).errors?.first?.field == "type")
            let unknown = try await get(client, "/api/links/transactions?account_id=\(UUID())", tokens)
            #expect(try problem(unknown).errors?.first?.field == "account_id")
            let csv = try await get(client, "/api/links/transactions.csv", tokens)
            #expect(csv.headers[.contentType] == "text/csv; charset=utf-8")
            #expect(String(buffer: csv.body).split(separator: "\n").count == 4)
            #expect(String(buffer: csv.body).contains(",-12.35,USD,Coffee House,"))

            // Holdings: quantity, price, value and cost basis exact.
            let holdings = try #require(try json(try await get(client, "/api/links/holdings", tokens))["data"] as? [[String: Any]])
            #expect(holdings.count == 1)
            #expect(holdings.first?["ticker"] as? String == "VTI")
            #expect(holdings.first?["quantity"] as? String == "3.123456789")
            #expect(holdings.first?["institution_price"] as? String == "240.12345678")
            #expect(holdings.first?["institution_value"] as? String == "749.9283")
            #expect(holdings.first?["cost_basis"] as? String == "700.00")

            // Linked holdings are not Folio positions; net worth adds the linked accounts, the card as a debt.
            let portfolio = try json(try await get(client, "/api/portfolio", tokens))
            #expect((portfolio["positions"] as? [Any])?.isEmpty == true)
            let worth = try json(try await get(client, "/api/portfolio?view=net_worth", tokens))
            let paperValue = try #require(cashBefore.first)
            let expectedLinked = try Cash(parsing: "9007199254740993.01") + Cash(parsing: "1523.4567") - Cash(parsing: "410.25")
            #expect(worth["linked_total"] as? String == expectedLinked.description)
            #expect(worth["total"] as? String == (try expectedLinked + paperValue).description)
            #expect(worth["liabilities"] as? String == "410.2500" || worth["liabilities"] as? String == "410.25")
            let sources = (worth["accounts"] as? [[String: Any]])?.map { $0["source"] as? String }
            #expect(sources == ["folio", "plaid", "plaid", "plaid"])
            #expect(try problem(try await get(client, "/api/portfolio?view=everything", tokens)).errors?.first?.field == "view")

            // New transactions: Plaid's webhook, verified, queues a sync.
            fake.update(item: plaidItemID) { $0.changes.append(.added(id: "tx-5", account: "acc-checking", amount: "1.00", date: "2026-11-28", name: "Gum")) }
            let body = FakePlaid.webhookBody(type: "TRANSACTIONS", code: "SYNC_UPDATES_AVAILABLE", itemID: plaidItemID, extra: #""historical_update_complete":true,"initial_update_complete":true"#)
            let received = try await webhook(client, body, header: fake.sign(body, iat: env.clock.now))
            #expect(received.status == .ok)
            #expect(try json(received)["action"] as? String == "sync")
            await env.worker.drain()
            #expect(fake.syncCursors.last == "cursor-6", "the sync went on from the saved cursor")
            // Plaid sends the same body for the next news: within the replay window it changes nothing, but still gets its sync.
            let again = try await webhook(client, body, header: fake.sign(body, iat: env.clock.now))
            #expect(try json(again)["duplicate"] as? Bool == true)
            #expect(try json(again)["action"] as? String == "sync")
            await env.worker.drain()
            #expect(fake.syncCursors.last == "cursor-7")
            let afterWebhook = try #require(try json(try await get(client, "/api/links/transactions", tokens))["data"] as? [[String: Any]])
            #expect(afterWebhook.map { $0["transaction_id"] as? String } == ["tx-5", "tx-3", "tx-2", "tx-1"])

            // None of this moved Folio's books.
            #expect(try await env.accounts().map(\.cash) == cashBefore)
            #expect(try await env.entries().count == entriesBefore)
            try await env.expectConsistent()

            // Another user sees none of it.
            let other = try await signUp(client, env, email: "other@example.com")
            #expect((try json(try await get(client, "/api/links", other))["data"] as? [Any])?.isEmpty == true)
            #expect((try json(try await get(client, "/api/links/transactions", other))["data"] as? [Any])?.isEmpty == true)
            let othersDelete = try await client.execute(uri: "/api/links/\(itemID)", method: .delete, headers: bearer(other))
            #expect(othersDelete.status == .notFound)

            // Removal: Plaid is told, and everything kept about the item goes.
            let removed = try await client.execute(uri: "/api/links/\(itemID)", method: .delete, headers: bearer(tokens))
            #expect(removed.status == .noContent)
            #expect(fake.removeCalls == 1)
            for table in ["plaid_items", "linked_accounts", "linked_transactions", "linked_holdings"] {
                #expect(try await count(env, table) == 0, "\(table) emptied")
            }

            // No access token, public token or secret in any log line.
            let logs = env.logs.lines.joined(separator: "\n")
            #expect(!logs.contains("access-sandbox-"))
            #expect(!logs.contains("public-sandbox-"))
            #expect(!logs.contains(FakePlaid.secret) && !logs.contains(FakePlaid.clientID))
            #expect(fake.badCredentials == 0)
        }
    }

    // MARK: - Sync under trouble

    @Test("a mutation during pagination restarts the run from the cursor it began with", arguments: TestDatabaseKind.all)
    func mutationDuringPagination(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "mutation@example.com")
            fake.pageSize = 2
            fake.mutateDuringPagination(onCall: 2)
            _ = try await link(client, tokens, fake)
            await env.worker.drain()
            #expect(fake.syncCursors == [nil, "cursor-2", nil, "cursor-2", "cursor-4"], "the second page failed; the run began again from nil")
            let data = try #require(try json(try await get(client, "/api/links/transactions", tokens))["data"] as? [[String: Any]])
            #expect(data.map { $0["transaction_id"] as? String } == ["tx-3", "tx-2", "tx-1"])
            #expect(try await count(env, "linked_transactions") == 3)
        }
    }

    @Test("a pending charge that posts under a new id while a run pages is not kept twice: the restarted run's list is the truth", arguments: TestDatabaseKind.all)
    func mutationReplacesPending(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "posted@example.com")
            fake.pageSize = 1
            let payroll = FakePlaid.Change.added(id: "tx-2", account: "acc-checking", amount: "-2500.00", date: "2026-11-21", name: "Payroll")
            // The first page saves the pending charge; it posts (a new id) before the second page, so the log
            // from the first cursor no longer holds it, and Plaid never names it as removed.
            fake.mutateDuringPagination(onCall: 2) { item in
                item.changes = [.added(id: "tx-1-posted", account: "acc-checking", amount: "12.34", date: "2026-11-20", name: "Coffee"), payroll]
            }
            _ = try await link(client, tokens, fake, changes: [
                .added(id: "tx-1-pending", account: "acc-checking", amount: "12.34", date: "2026-11-20", name: "Coffee"), payroll,
            ])
            await env.worker.drain()
            #expect(fake.syncCursors == [nil, "cursor-1", nil, "cursor-1"])
            let data = try #require(try json(try await get(client, "/api/links/transactions", tokens))["data"] as? [[String: Any]])
            #expect(data.compactMap { $0["transaction_id"] as? String }.sorted() == ["tx-1-posted", "tx-2"])
            #expect(try await count(env, "linked_transactions") == 2)
        }
    }

    @Test("a transaction held before a run, which the run changed before a mutation and the restarted run no longer names, is kept: only what a cut-short run added can go", arguments: TestDatabaseKind.all)
    func mutationKeepsWhatWasHeld(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "held@example.com")
            fake.pageSize = 2
            let coffee = FakePlaid.Change.added(id: "tx-1", account: "acc-checking", amount: "5.00", date: "2026-11-20", name: "Coffee")
            let lunch = FakePlaid.Change.added(id: "tx-2", account: "acc-checking", amount: "6.00", date: "2026-11-20", name: "Lunch")
            let (item, plaidItemID) = try await link(client, tokens, fake, changes: [coffee, lunch])
            await env.worker.drain()
            #expect(try await count(env, "linked_transactions") == 2)
            // The next run's first page changes tx-1; the data changes under it, and the log from the run's
            // first cursor then changes tx-2 and adds tx-3, with no word of tx-1.
            fake.pageSize = 1
            fake.update(item: plaidItemID) { item in
                item.changes += [
                    .modified(id: "tx-1", account: "acc-checking", amount: "5.50", date: "2026-11-20", name: "Coffee"),
                    .modified(id: "tx-2", account: "acc-checking", amount: "6.50", date: "2026-11-20", name: "Lunch"),
                ]
            }
            fake.mutateDuringPagination(onCall: 2) { item in
                item.changes = [coffee, lunch,
                    .modified(id: "tx-2", account: "acc-checking", amount: "6.50", date: "2026-11-20", name: "Lunch"),
                    .added(id: "tx-3", account: "acc-checking", amount: "8.00", date: "2026-11-21", name: "Books")]
            }
            #expect(try await post(client, "/api/links/\(try #require(item["id"] as? String))/sync", [:], headers: bearer(tokens)).status == .accepted)
            await env.worker.drain()
            #expect(fake.syncCursors.suffix(4) == ["cursor-2", "cursor-3", "cursor-2", "cursor-3"])
            let data = try #require(try json(try await get(client, "/api/links/transactions", tokens))["data"] as? [[String: Any]])
            #expect(data.compactMap { $0["transaction_id"] as? String }.sorted() == ["tx-1", "tx-2", "tx-3"])
            #expect(data.first { $0["transaction_id"] as? String == "tx-2" }?["amount"] as? String == "-6.50")
        }
    }

    @Test("a Plaid whose cursors go round in a circle is refused once a cursor comes back, not paged for ever", arguments: [TestDatabaseKind.sqlite])
    func cursorsInACircle(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "circle@example.com")
            fake.cursorCircle = ["cursor-a", "cursor-b"]
            _ = try await link(client, tokens, fake)
            await env.worker.drain()
            #expect(fake.syncCursors == [nil, "cursor-a", "cursor-b"], "the cursor after cursor-b was cursor-a again, and the run stopped")
            let job = try #require(try await env.jobs().first { $0.kind == JobPayload.Kind.syncPlaidItem.rawValue })
            #expect(job.lastError?.contains("a cursor it had already sent") == true, "\(job)")
        }
    }

    @Test("a sync cut short resumes after the last saved page, with nothing missed and nothing twice", arguments: TestDatabaseKind.all)
    func interruptedSyncResumes(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withPlaidApp(kind, clock: clock) { client, env, fake in
            let tokens = try await signUp(client, env, email: "resume@example.com")
            fake.pageSize = 2
            fake.failSync(onCall: 2)
            let (item, _) = try await link(client, tokens, fake)
            await env.worker.drain()
            // Page one was saved with its cursor; page two failed, so the job waits to retry.
            let saved = try await env.database.sql.raw("SELECT sync_cursor, error_code FROM plaid_items").first()
            #expect(try saved?.decode(column: "sync_cursor", as: String?.self) == "cursor-2")
            #expect(try await count(env, "linked_transactions") == 2)
            let listed = try #require((try json(try await get(client, "/api/links", tokens))["data"] as? [[String: Any]])?.first)
            #expect(listed["id"] as? String == item["id"] as? String)
            #expect(listed["error_code"] as? String == "INTERNAL_SERVER_ERROR", "the failure shows on the item")
            #expect(listed["status"] as? String == "active", "a passing failure does not need the user")
            clock.advance(by: 600)
            await env.worker.drain()
            #expect(fake.syncCursors == [nil, "cursor-2", "cursor-2", "cursor-4"], "resumed at the saved cursor, not from the start")
            let data = try #require(try json(try await get(client, "/api/links/transactions", try await relogin(client, env, tokens)))["data"] as? [[String: Any]])
            #expect(data.map { $0["transaction_id"] as? String } == ["tx-3", "tx-2", "tx-1"])
            #expect(try await count(env, "linked_transactions") == 3)
        }
    }

    func savedTransactions(_ env: TestEnvironment) async throws -> [String] {
        try await env.database.sql.raw("SELECT plaid_transaction_id FROM linked_transactions ORDER BY plaid_transaction_id").all()
            .map { try $0.decode(column: "plaid_transaction_id", as: String.self) }
    }

    @Test("a run cut short after a mutation restart starts again from the run's first cursor, and still drops the pending charge that posted under a new id", arguments: TestDatabaseKind.all, [3, 4])
    func cutAfterMutation(kind: TestDatabaseKind, failingCall: Int) async throws {
        let clock = TestClock()
        try await withPlaidApp(kind, clock: clock) { client, env, fake in
            let tokens = try await signUp(client, env, email: "cut-after-mutation@example.com")
            fake.pageSize = 1
            let payroll = FakePlaid.Change.added(id: "tx-2", account: "acc-checking", amount: "-2500.00", date: "2026-11-21", name: "Payroll")
            fake.mutateDuringPagination(onCall: 2) { item in
                item.changes = [.added(id: "tx-1-posted", account: "acc-checking", amount: "12.34", date: "2026-11-20", name: "Coffee"), payroll]
            }
            // The restarted run's first page (3) or second (4) fails: the job ends there and is tried again later.
            fake.failSync(onCall: failingCall)
            _ = try await link(client, tokens, fake, changes: [
                .added(id: "tx-1-pending", account: "acc-checking", amount: "12.34", date: "2026-11-20", name: "Coffee"), payroll,
            ])
            await env.worker.drain()
            clock.advance(by: 600)
            await env.worker.drain()
            if failingCall == 3 {
                #expect(fake.syncCursors == [nil, "cursor-1", nil, nil, "cursor-1"], "the retry starts from the run's first cursor, not from the page the cut run saved")
            } else {
                #expect(fake.syncCursors == [nil, "cursor-1", nil, "cursor-1", "cursor-1"], "the retry goes on after the restarted run's saved page")
            }
            #expect(try await savedTransactions(env) == ["tx-1-posted", "tx-2"], "the posted charge, once; the pending one gone")
            #expect(try await count(env, "plaid_sync_listed") == 0, "the finished run leaves no notes")
            let item = try await env.database.sql.raw("SELECT sync_cursor, sync_run_start FROM plaid_items").first()
            #expect(try item?.decode(column: "sync_cursor", as: String?.self) == "cursor-2")
            #expect(try item?.decode(column: "sync_run_start", as: String?.self) == nil)
        }
    }

    @Test("a run resumed after a crash and then told of a mutation starts again from the last complete sync's cursor, not from where it resumed", arguments: TestDatabaseKind.all)
    func mutationAfterResume(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withPlaidApp(kind, clock: clock) { client, env, fake in
            let tokens = try await signUp(client, env, email: "resume-mutation@example.com")
            fake.pageSize = 1
            fake.failSync(onCall: 2)
            fake.mutateDuringPagination(onCall: 3)
            _ = try await link(client, tokens, fake)
            await env.worker.drain()
            clock.advance(by: 600)
            await env.worker.drain()
            #expect(fake.syncCursors == [nil, "cursor-1", "cursor-1", nil, "cursor-1", "cursor-2", "cursor-3", "cursor-4", "cursor-5"])
            #expect(try await savedTransactions(env) == ["tx-1", "tx-2", "tx-3"])
        }
    }

    @Test("a run that lost the item and is then told of a mutation changes nothing: the notes of the run that took it over stand", arguments: TestDatabaseKind.all)
    func restartAfterLostLease(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "lost-restart@example.com")
            fake.pageSize = 1
            fake.mutateDuringPagination(onCall: 2)
            let database = env.database
            // While the second page is asked for, a newer run takes the item over and saves a page of its own.
            fake.beforeNextAccountsAnswer {
                fake.beforeNextSyncAnswer {
                    fake.beforeNextSyncAnswer {
                        try await database.sql.raw("UPDATE plaid_items SET locked_by = 'a-newer-run', locked_until = \(bind: Date().addingTimeInterval(3600))").run()
                        let item = try #require(try await database.sql.raw("SELECT id FROM plaid_items").first()?.decode(column: "id", as: UUID.self))
                        try await database.sql.raw("INSERT INTO plaid_sync_listed (item_id, plaid_transaction_id, current) VALUES (\(bind: item), 'tx-newer', \(bind: true))").run()
                    }
                }
            }
            _ = try await link(client, tokens, fake)
            await env.worker.drain()
            let notes = try await database.sql.raw("SELECT plaid_transaction_id, current FROM plaid_sync_listed ORDER BY plaid_transaction_id").all()
                .map { (try $0.decode(column: "plaid_transaction_id", as: String.self), try $0.decode(column: "current", as: Bool.self)) }
            #expect(notes.map(\.0) == ["tx-1", "tx-newer"])
            #expect(notes.filter { !$0.1 }.isEmpty, "no note of the newer run marked as left behind: \(notes)")
        }
    }

    @Test("a Plaid that answers has_more without moving the cursor is refused, not paged for ever", arguments: TestDatabaseKind.all)
    func stuckCursor(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "stuck@example.com")
            fake.stuckCursor = true
            _ = try await link(client, tokens, fake)
            await env.worker.drain()
            #expect(fake.syncCursors == [nil, "cursor-0"], "one page moved the cursor; the next did not, and the run stopped")
            let job = try #require(try await env.jobs().first { $0.kind == JobPayload.Kind.syncPlaidItem.rawValue })
            #expect(job.lastError?.contains("has_more with the cursor it was sent") == true, "\(job)")
        }
    }

    @Test("a history longer than one job's 500 pages is saved by the next job, from the page the first saved last", arguments: TestDatabaseKind.all)
    func longHistory(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "long-history@example.com")
            fake.pageSize = 1
            let changes = (1...501).map { FakePlaid.Change.added(id: "tx-\($0)", account: "acc-checking", amount: "1.00", date: "2026-11-20", name: "Coffee") }
            _ = try await link(client, tokens, fake, changes: changes)
            let database = env.database
            let between = NIOLockedValueBox<(calls: Int, saved: Int, cursor: String?, runStart: String?, synced: Bool)?>(nil)
            // The second job's first call: what the first job left.
            fake.beforeNextAccountsAnswer {
                fake.beforeNextAccountsAnswer {
                    let item = try #require(try await database.sql.raw("SELECT sync_cursor, sync_run_start, last_synced_at FROM plaid_items").first())
                    let saved = try await database.sql.raw("SELECT COUNT(*) AS n FROM linked_transactions").first()?.decode(column: "n", as: Int.self) ?? -1
                    between.withLockedValue {
                        $0 = (fake.syncCursors.count, saved, try? item.decode(column: "sync_cursor", as: String?.self),
                              try? item.decode(column: "sync_run_start", as: String?.self), (try? item.decode(column: "last_synced_at", as: Date?.self)) != nil)
                    }
                }
            }
            await env.worker.drain()
            let first = try #require(between.withLockedValue { $0 }, "a second job ran")
            #expect(first.calls == 500 && first.saved == 500, "the first job saved 500 pages and stopped: \(first)")
            #expect(first.cursor == "cursor-500" && first.runStart == "", "saved with the cursor after them, the run still under way: \(first)")
            #expect(!first.synced, "not yet called synced")
            #expect(fake.syncCursors.count == 501 && fake.syncCursors.last == "cursor-500", "the second job went on from the saved page")
            #expect(try await count(env, "linked_transactions") == 501)
            let item = try #require(try await database.sql.raw("SELECT sync_cursor, sync_run_start, last_synced_at FROM plaid_items").first())
            #expect(try item.decode(column: "sync_cursor", as: String?.self) == "cursor-501")
            #expect(try item.decode(column: "sync_run_start", as: String?.self) == nil)
            #expect(try item.decode(column: "last_synced_at", as: Date?.self) != nil)
            #expect(try await count(env, "plaid_sync_listed") == 0)
        }
    }

    @Test("a link whose audit event cannot be written is not kept, here or at Plaid: never a linked item without its audit event", arguments: TestDatabaseKind.all)
    func linkWithoutAudit(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "audit-down@example.com")
            let sql = env.database.sql
            if kind == .postgres {
                try await sql.raw("CREATE FUNCTION refuse_link_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit down'; END $$ LANGUAGE plpgsql").run()
                try await sql.raw("""
                    CREATE TRIGGER refuse_link_audit BEFORE INSERT ON audit_events FOR EACH ROW WHEN (NEW.action = 'plaid.item_linked') EXECUTE FUNCTION refuse_link_audit()
                    """).run()
            } else {
                try await sql.raw("""
                    CREATE TRIGGER refuse_link_audit BEFORE INSERT ON audit_events WHEN NEW.action = 'plaid.item_linked' BEGIN SELECT RAISE(ABORT, 'audit down'); END
                    """).run()
            }
            let issued = fake.issuePublicToken(accounts: [Self.checking], changes: Self.changes, holdings: [])
            let answer = try await post(client, "/api/links/plaid/exchange", ["public_token": issued.publicToken], headers: bearer(tokens))
            // PostgreSQL's raised exception is a 500; SQLite reports a trigger's abort as a constraint (409). Either way, refused.
            #expect(answer.status.code >= 409, "\(answer.status)")
            #expect(answer.headers[.contentType] == "application/problem+json")
            #expect(try await count(env, "plaid_items") == 0, "nothing kept here")
            #expect(try await count(env, "linked_accounts") == 0)
            #expect(try await env.jobs().isEmpty, "no sync queued for an item that is not kept")
            #expect(fake.removeCalls == 1, "and Plaid told to forget the item")
        }
    }

    @Test("a sync that lost its hold on the item before writing the accounts writes nothing: an older list never removes an account a newer run synced", arguments: TestDatabaseKind.all)
    func staleAccountsList(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "stale-accounts@example.com")
            let (item, plaidItemID) = try await link(client, tokens, fake)
            await env.worker.drain()
            #expect(try await count(env, "linked_accounts") == 3)
            let transactions = try await count(env, "linked_transactions")
            // The card is closed at the bank; while this run waits for Plaid's answer, another run takes the item over.
            fake.update(item: plaidItemID) { $0.accounts.removeAll { $0.id == "acc-card" } }
            let database = env.database
            fake.beforeNextAccountsAnswer {
                try await database.sql.raw("UPDATE plaid_items SET locked_by = 'a-newer-run', locked_until = \(bind: Date().addingTimeInterval(3600))").run()
            }
            #expect(try await post(client, "/api/links/\(try #require(item["id"] as? String))/sync", [:], headers: bearer(tokens)).status == .accepted)
            await env.worker.drain()
            #expect(try await count(env, "linked_accounts") == 3, "the run that lost the item removed no account")
            #expect(try await count(env, "linked_transactions") == transactions)
        }
    }

    @Test("an account gone from one listing takes its transactions; when it comes back, so do they (the item's transactions are read again from the start)", arguments: TestDatabaseKind.all)
    func accountBack(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "account-back@example.com")
            let (item, plaidItemID) = try await link(client, tokens, fake)
            await env.worker.drain()
            func cardTransactions() async throws -> Int {
                try await env.database.sql.raw("SELECT COUNT(*) AS n FROM linked_transactions WHERE plaid_account_id = 'acc-card'").first()?.decode(column: "n", as: Int.self) ?? 0
            }
            let before = try await cardTransactions(), all = try await count(env, "linked_transactions")
            #expect(before > 0)
            let path = "/api/links/\(try #require(item["id"] as? String))/sync"

            fake.update(item: plaidItemID) { $0.accounts.removeAll { $0.id == "acc-card" } }
            #expect(try await post(client, path, [:], headers: bearer(tokens)).status == .accepted)
            await env.worker.drain()
            #expect(try await cardTransactions() == 0)
            #expect(try await count(env, "linked_accounts") == 2)

            fake.update(item: plaidItemID) { $0.accounts.append(Self.card) }
            env.clock.advance(by: 60)
            #expect(try await post(client, path, [:], headers: bearer(tokens)).status == .accepted)
            await env.worker.drain()
            #expect(try await count(env, "linked_accounts") == 3)
            #expect(try await cardTransactions() == before, "the card's transactions are back")
            #expect(try await count(env, "linked_transactions") == all, "and nothing twice")

            // The brokerage account leaves the listing as a transaction of it arrives: not kept. When it comes back, the
            // holdings import may list it first; the sync after it still reads the transactions from the start.
            fake.update(item: plaidItemID) { item in
                item.accounts.removeAll { $0.id == "acc-invest" }
                item.changes.append(.added(id: "tx-5", account: "acc-invest", amount: "-100.00", date: "2026-11-24", name: "Transfer in"))
            }
            env.clock.advance(by: 60)
            #expect(try await post(client, path, [:], headers: bearer(tokens)).status == .accepted)
            await env.worker.drain()
            #expect(try await count(env, "linked_transactions") == all, "tx-5 is not kept while its account is not listed")
            fake.update(item: plaidItemID) { $0.accounts.append(Self.brokerage) }
            env.clock.advance(by: 60)
            #expect(try await env.services.plaid.refreshHoldings(try #require(UUID(uuidString: item["id"] as? String ?? ""))) == .done)
            #expect(try await count(env, "linked_accounts") == 3)
            #expect(try await post(client, path, [:], headers: bearer(tokens)).status == .accepted)
            await env.worker.drain()
            #expect(try await count(env, "linked_transactions") == all + 1, "tx-5 came with its account")
        }
    }

    @Test("Plaid's message for the user is kept and shown without control or text-direction characters, and at most 300 characters")
    func shownPlaidMessage() {
        let hostile = "Locked\u{202E}\r\nFAKE LOG LINE <img src=x>\u{7}" + String(repeating: "A", count: 2000)
        let shown = try? #require(PlaidError.shown(hostile))
        #expect(shown?.count == 300)
        #expect(shown?.unicodeScalars.contains { $0.properties.isBidiControl || $0.properties.generalCategory == .control } == false, "\(shown ?? "")")
        #expect(shown?.hasPrefix("Locked") == true && shown?.hasSuffix("…") == true)
        #expect(PlaidError.shown("  ") == nil && PlaidError.shown(nil) == nil)
        #expect(PlaidError.shown("Sign in again.") == "Sign in again.")
    }

    func relogin(_ client: some TestClientProtocol, _ env: TestEnvironment, _ tokens: [String: Any]) async throws -> [String: Any] {
        try json(try await post(client, "/api/auth/login", ["email": "resume@example.com", "password": strongPassword]))
    }

    @Test("ITEM_LOGIN_REQUIRED by webhook marks the item, mails its user once, and pauses syncing until re-linked")
    func loginRequired() async throws {
        try await withPlaidApp(.sqlite) { client, env, fake in
            let tokens = try await signUp(client, env, email: "relogin@example.com")
            let (item, plaidItemID) = try await link(client, tokens, fake)
            let itemID = try #require(item["id"] as? String)
            await env.worker.drain()
            try await breakLogin(client, env, fake, plaidItemID)
            let listed = try #require((try json(try await get(client, "/api/links", tokens))["data"] as? [[String: Any]])?.first)
            #expect(listed["status"] as? String == "login_required")
            #expect(listed["error_code"] as? String == "ITEM_LOGIN_REQUIRED")
            let mails = try await env.outbox(kind: "plaid_login_required")
            #expect(mails.count == 1)
            #expect(mails.first?.recipient == "relogin@example.com")
            // A sync meanwhile is skipped, not failed, and asks Plaid nothing.
            let calls = fake.syncCursors.count
            #expect(try await post(client, "/api/links/\(itemID)/sync", [:], headers: bearer(tokens)).status == .accepted)
            await env.worker.drain()
            #expect(fake.syncCursors.count == calls)
            // Update mode: a link token for the item, then the item syncs again.
            #expect(try await post(client, "/api/links/plaid/link-token", ["item_id": itemID], headers: bearer(tokens)).status == .ok)
            #expect(fake.linkTokenRequests.last?["access_token"]?.string == fake.accessToken(of: plaidItemID))
            fake.update(item: plaidItemID) { $0.errorCode = nil }
            #expect(try await post(client, "/api/links/\(itemID)/relinked", [:], headers: bearer(tokens)).status == .accepted)
            await env.worker.drain()
            #expect(fake.syncCursors.count > calls)
            let after = try #require((try json(try await get(client, "/api/links", tokens))["data"] as? [[String: Any]])?.first)
            #expect(after["status"] as? String == "active" && after["error_code"] == nil)
            // A second login-required webhook body (a new delivery) does not mail twice for one break.
            let mailsAfter = try await env.outbox(kind: "plaid_login_required").count
            #expect(mailsAfter == 1)
        }
    }

    @Test("an item reported signed in again while Plaid still needs its login is 409 login_still_required: nothing changes, nothing syncs, no mail again", arguments: TestDatabaseKind.all)
    func relinkedBeforeTheLoginIsRepaired(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "notyet@example.com")
            let (item, plaidItemID) = try await link(client, tokens, fake)
            let itemID = try #require(item["id"] as? String)
            await env.worker.drain()
            try await breakLogin(client, env, fake, plaidItemID)
            let calls = fake.syncCursors.count
            for _ in 0..<4 {
                let early = try await post(client, "/api/links/\(itemID)/relinked", [:], headers: bearer(tokens))
                #expect(early.status == .conflict)
                #expect(try problem(early).code == "login_still_required")
                await env.worker.drain()
            }
            let listed = try #require((try json(try await get(client, "/api/links", tokens))["data"] as? [[String: Any]])?.first)
            #expect(listed["status"] as? String == "login_required")
            #expect(fake.syncCursors.count == calls)
            #expect(try await env.outbox(kind: "plaid_login_required").count == 1)
            // Signed in at last: the report is taken.
            fake.update(item: plaidItemID) { $0.errorCode = nil }
            #expect(try await post(client, "/api/links/\(itemID)/relinked", [:], headers: bearer(tokens)).status == .accepted)
        }
    }

    @Test("a login error other than ITEM_LOGIN_REQUIRED (a locked login) still there when the user says they signed in again: 409, no sync, no mail again", arguments: TestDatabaseKind.all)
    func relinkedWhileLocked(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "locked@example.com")
            let (item, plaidItemID) = try await link(client, tokens, fake)
            let itemID = try #require(item["id"] as? String)
            await env.worker.drain()
            fake.update(item: plaidItemID) { $0.errorCode = "ITEM_LOCKED" }
            let body = FakePlaid.webhookBody(
                type: "ITEM", code: "ERROR", itemID: plaidItemID,
                extra: #""error":{"display_message":null,"error_code":"ITEM_LOCKED","error_message":"the account is locked","error_type":"ITEM_ERROR","status":400}"#)
            #expect(try json(try await webhook(client, body, header: fake.sign(body, iat: env.clock.now)))["action"] as? String == "needs_login")
            await env.worker.drain()
            let calls = fake.syncCursors.count
            for _ in 0..<3 {
                let early = try await post(client, "/api/links/\(itemID)/relinked", [:], headers: bearer(tokens))
                #expect(early.status == .conflict)
                await env.worker.drain()
            }
            #expect(fake.syncCursors.count == calls)
            #expect(try await env.outbox(kind: "plaid_login_required").count == 1)
        }
    }

    @Test("the login breaking again after a repair, told by the same ERROR body as before (a repeat by its hash): a sync finds it", arguments: TestDatabaseKind.all)
    func loginBrokenAgain(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "again@example.com")
            let (item, plaidItemID) = try await link(client, tokens, fake)
            let itemID = try #require(item["id"] as? String)
            await env.worker.drain()
            try await breakLogin(client, env, fake, plaidItemID)
            fake.update(item: plaidItemID) { $0.errorCode = nil }
            let repaired = FakePlaid.webhookBody(type: "ITEM", code: "LOGIN_REPAIRED", itemID: plaidItemID)
            _ = try await webhook(client, repaired, header: fake.sign(repaired, iat: env.clock.now))
            await env.worker.drain()
            func status() async throws -> String? {
                (try json(try await get(client, "/api/links", tokens))["data"] as? [[String: Any]])?.first { $0["id"] as? String == itemID }?["status"] as? String
            }
            #expect(try await status() == "active")
            // Broken again; Plaid sends the very same body.
            env.clock.advance(by: 60)
            try await breakLogin(client, env, fake, plaidItemID)
            #expect(try await status() == "login_required")
        }
    }

    @Test("removing an item while Plaid refuses the operator's keys is 503 plaid_unavailable (the operator's to fix, not the user's), and the item stays; removed once Plaid answers", arguments: TestDatabaseKind.all)
    func removalWithTheOperatorsKeysRefused(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "keys@example.com")
            let (item, _) = try await link(client, tokens, fake)
            let itemID = try #require(item["id"] as? String)
            await env.worker.drain()
            fake.refuseRemoves("INVALID_API_KEYS")
            let refused = try await client.execute(uri: "/api/links/\(itemID)", method: .delete, headers: bearer(tokens))
            #expect(refused.status == .serviceUnavailable)
            #expect(try problem(refused).code == "plaid_unavailable")
            #expect(refused.headers[.retryAfter] != nil)
            #expect(try await count(env, "plaid_items") == 1, "nothing removed")
            // The same for a code that is the user's own business: still a refusal they are told about.
            fake.refuseRemoves("INVALID_FIELD")
            let invalid = try await client.execute(uri: "/api/links/\(itemID)", method: .delete, headers: bearer(tokens))
            #expect(invalid.status == .unprocessableContent)
            #expect(try problem(invalid).code == "plaid_refused")
            fake.refuseRemoves(nil)
            #expect(try await client.execute(uri: "/api/links/\(itemID)", method: .delete, headers: bearer(tokens)).status == .noContent)
            #expect(try await count(env, "plaid_items") == 0)
        }
    }

    @Test("holdings are imported again by the daily backstop and after LOGIN_REPAIRED, not only by their own webhook or Sync now", arguments: TestDatabaseKind.all)
    func holdingsCaughtUp(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "holdings@example.com")
            let (_, plaidItemID) = try await link(client, tokens, fake)
            await env.worker.drain()
            func quantity() async throws -> String? {
                (try json(try await get(client, "/api/links/holdings", tokens))["data"] as? [[String: Any]])?.first?["quantity"] as? String
            }
            #expect(try await quantity() == "3.123456789")
            // The HOLDINGS webhook is missed; the daily job runs.
            fake.update(item: plaidItemID) { $0.holdings[0].quantity = "4"; $0.holdings[0].value = "960.4938" }
            try await env.services.plaid.enqueueSyncOfAll()
            await env.worker.drain()
            #expect(try await quantity() == "4")
            // The login breaks, holdings change meanwhile, the login is repaired.
            try await breakLogin(client, env, fake, plaidItemID)
            fake.update(item: plaidItemID) { $0.errorCode = nil; $0.holdings[0].quantity = "5"; $0.holdings[0].value = "1200.6172" }
            let repaired = FakePlaid.webhookBody(type: "ITEM", code: "LOGIN_REPAIRED", itemID: plaidItemID)
            _ = try await webhook(client, repaired, header: fake.sign(repaired, iat: env.clock.now))
            await env.worker.drain()
            #expect(try await quantity() == "5")
        }
    }

    @Test("Plaid's webhooks out of order: an ERROR that arrives after the LOGIN_REPAIRED which followed it is checked with Plaid, and the working item syncs on, with no mail", arguments: TestDatabaseKind.all)
    func loginErrorAfterRepair(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "late@example.com")
            let (_, plaidItemID) = try await link(client, tokens, fake)
            await env.worker.drain()
            // The login broke and was repaired at the institution; Plaid's two webhooks come in the wrong order.
            let repaired = FakePlaid.webhookBody(type: "ITEM", code: "LOGIN_REPAIRED", itemID: plaidItemID)
            #expect(try json(try await webhook(client, repaired, header: fake.sign(repaired, iat: env.clock.now)))["action"] as? String == "login_repaired")
            let late = FakePlaid.webhookBody(
                type: "ITEM", code: "ERROR", itemID: plaidItemID,
                extra: #""error":{"display_message":null,"error_code":"ITEM_LOGIN_REQUIRED","error_message":"the login details of this item have changed","error_type":"ITEM_ERROR","status":400}"#)
            #expect(try json(try await webhook(client, late, header: fake.sign(late, iat: env.clock.now)))["action"] as? String == "needs_login")
            let syncs = fake.syncCursors.count
            await env.worker.drain()
            #expect(fake.itemGets == 1, "checked with Plaid once")
            let listed = try #require((try json(try await get(client, "/api/links", try await relogin(client, email: "late@example.com")))["data"] as? [[String: Any]])?.first)
            #expect(listed["status"] as? String == "active")
            #expect(listed["error_code"] == nil)
            #expect(try await env.outbox(kind: "plaid_login_required").isEmpty)
            #expect(fake.syncCursors.count > syncs, "the item syncs on")
            // A break Plaid confirms is mailed as before.
            fake.update(item: plaidItemID) { $0.errorCode = "ITEM_LOGIN_REQUIRED" }
            let broken = FakePlaid.webhookBody(
                type: "ITEM", code: "ERROR", itemID: plaidItemID,
                extra: #""error":{"display_message":null,"error_code":"ITEM_LOGIN_REQUIRED","error_message":"the login details of this item have changed at last","error_type":"ITEM_ERROR","status":400}"#)
            #expect(try json(try await webhook(client, broken, header: fake.sign(broken, iat: env.clock.now)))["action"] as? String == "needs_login")
            await env.worker.drain()
            #expect(try await env.outbox(kind: "plaid_login_required").count == 1)
            let after = try #require((try json(try await get(client, "/api/links", try await relogin(client, email: "late@example.com")))["data"] as? [[String: Any]])?.first)
            #expect(after["status"] as? String == "login_required")
        }
    }

    @Test("a late login error Plaid cannot confirm is mailed (Plaid answers 500 to /item/get); one whose consent ends within seven days goes back to pending_expiration and says so", arguments: TestDatabaseKind.all)
    func loginErrorUnconfirmedOrExpiring(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "unsure@example.com")
            let (_, plaidItemID) = try await link(client, tokens, fake)
            await env.worker.drain()
            func lateLoginError(_ message: String) async throws {
                let body = FakePlaid.webhookBody(
                    type: "ITEM", code: "ERROR", itemID: plaidItemID,
                    extra: #""error":{"display_message":null,"error_code":"ITEM_LOGIN_REQUIRED","error_message":"\#(message)","error_type":"ITEM_ERROR","status":400}"#)
                #expect(try json(try await webhook(client, body, header: fake.sign(body, iat: env.clock.now)))["action"] as? String == "needs_login")
                await env.worker.drain()
            }
            func listed() async throws -> [String: Any] {
                try #require((try json(try await get(client, "/api/links", try await relogin(client, email: "unsure@example.com")))["data"] as? [[String: Any]])?.first)
            }
            // Plaid cannot be asked: the user is told anyway, and the item waits for them.
            fake.itemGetFails = true
            try await lateLoginError("the login details of this item have changed")
            #expect(fake.itemGets == 1)
            #expect(try await env.outbox(kind: "plaid_login_required").count == 1)
            #expect(try await listed()["status"] as? String == "login_required")

            // Repaired; then a late error again, while the consent ends in three days: the expiry warning comes back.
            fake.itemGetFails = false
            let repaired = FakePlaid.webhookBody(type: "ITEM", code: "LOGIN_REPAIRED", itemID: plaidItemID)
            #expect(try json(try await webhook(client, repaired, header: fake.sign(repaired, iat: env.clock.now)))["action"] as? String == "login_repaired")
            await env.worker.drain()
            fake.update(item: plaidItemID) { $0.consentExpiration = "2026-11-27T00:00:00Z" }
            env.clock.advance(by: 60)
            let syncs = fake.syncCursors.count
            try await lateLoginError("the login details of this item have changed, late")
            #expect(fake.itemGets == 2)
            let item = try await listed()
            #expect(item["status"] as? String == "pending_expiration")
            #expect(item["error_code"] as? String == "PENDING_EXPIRATION")
            #expect((item["error_message"] as? String)?.contains("expires soon") == true)
            // What the links page shows the person is in their export too.
            let exported = try json(try await get(client, "/api/me/export", tokens))
            let exportedItem = (((exported["sections"] as? [String: Any])?["linked_items"] as? [String: Any])?["rows"] as? [[String: Any]])?.first
            #expect((exportedItem?["error_message"] as? String)?.contains("expires soon") == true, "\(exportedItem ?? [:])")
            #expect(exportedItem?["plaid_item_id"] as? String == plaidItemID)
            let mails = try await env.outbox(kind: "plaid_login_required")
            #expect(mails.count == 2)
            #expect(mails.last?.body.contains("expires soon") == true)
            #expect(fake.syncCursors.count > syncs, "the item syncs on")

            // Consent that ends in a month is no news: active, no mail.
            fake.update(item: plaidItemID) { $0.consentExpiration = "2026-12-24T00:00:00Z" }
            try await env.database.sql.raw("UPDATE plaid_items SET status = 'active', error_code = NULL, error_message = NULL").run()
            try await lateLoginError("the login details of this item have changed, later")
            #expect(fake.itemGets == 3)
            #expect(try await listed()["status"] as? String == "active")
            #expect(try await env.outbox(kind: "plaid_login_required").count == 2)
        }
    }

    @Test("a broken login a sync met is mailed without asking Plaid again: the item is not cleared to fail and be marked again in a loop", arguments: TestDatabaseKind.all)
    func loginErrorFromSync(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "syncfail@example.com")
            let (item, _) = try await link(client, tokens, fake)
            await env.worker.drain()
            fake.loginErrorOnSyncOnly = true
            #expect(try await post(client, "/api/links/\(try #require(item["id"] as? String))/sync", [:], headers: bearer(tokens)).status == .accepted)
            await env.worker.drain()
            #expect(fake.itemGets == 0)
            let listed = try #require((try json(try await get(client, "/api/links", try await relogin(client, email: "syncfail@example.com")))["data"] as? [[String: Any]])?.first)
            #expect(listed["status"] as? String == "login_required")
            #expect(try await env.outbox(kind: "plaid_login_required").count == 1)
        }
    }

    func relogin(_ client: some TestClientProtocol, email: String) async throws -> [String: Any] {
        try json(try await post(client, "/api/auth/login", ["email": email, "password": strongPassword]))
    }

    @Test("an exchange whose accounts cannot be read is not kept (the login could not be checked against the links there are): 503, and the item removed at Plaid", arguments: TestDatabaseKind.all)
    func accountsUnreadableAtExchange(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "unread-accounts@example.com")
            _ = try await link(client, tokens, fake)
            await env.worker.drain()
            let again = fake.issuePublicToken(accounts: Self.accounts, changes: Self.changes)
            fake.beforeNextAccountsAnswer { throw CancellationError() }
            let exchanged = try await post(client, "/api/links/plaid/exchange", ["public_token": again.publicToken], headers: bearer(tokens))
            #expect(exchanged.status == .serviceUnavailable, "\(String(buffer: exchanged.body))")
            #expect(try problem(exchanged).code == "plaid_unavailable")
            #expect(fake.removeCalls == 1, "the new item is removed at Plaid")
            #expect(try await count(env, "plaid_items") == 1, "only the first link")
        }
    }

    @Test("a login linked a second time (a new item at Plaid for the same bank and accounts) is 409 already_linked and removed at Plaid: net worth never counts it twice", arguments: TestDatabaseKind.all)
    func sameLoginLinkedTwice(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "twice@example.com")
            let (first, _) = try await link(client, tokens, fake)
            await env.worker.drain()
            let before = try json(try await get(client, "/api/portfolio?view=net_worth", tokens))
            let again = fake.issuePublicToken(accounts: Self.accounts, changes: Self.changes)
            let exchanged = try await post(client, "/api/links/plaid/exchange", ["public_token": again.publicToken], headers: bearer(tokens))
            #expect(exchanged.status == .conflict)
            #expect(try problem(exchanged).code == "already_linked")
            let kept = try #require(first["id"] as? String)
            #expect(try problem(exchanged).detail.contains(kept), "names the link kept")
            #expect(fake.removeCalls == 1, "the new item is removed at Plaid, so nothing syncs or bills that no one sees")
            #expect(try await count(env, "plaid_items") == 1)
            await env.worker.drain()
            let after = try json(try await get(client, "/api/portfolio?view=net_worth", tokens))
            #expect(before["linked_total"] is String && after["linked_total"] as? String == before["linked_total"] as? String)
            // Another person may link the same bank, and the same person another bank with an account named alike.
            let other = try await signUp(client, env, email: "twice-other@example.com")
            _ = try await link(client, other, fake)
            let elsewhere = fake.issuePublicToken(accounts: [Self.checking], institutionID: "ins_second_bank")
            #expect(try await post(client, "/api/links/plaid/exchange", ["public_token": elsewhere.publicToken], headers: bearer(tokens)).status == .created)
            // A login that shares one account with a linked one (a joint account of two people's logins) is another login.
            let joint = fake.issuePublicToken(accounts: [Self.checking, .init(id: "acc-own", name: "Own Savings", type: "depository", subtype: "savings", current: "10.00")])
            #expect(try await post(client, "/api/links/plaid/exchange", ["public_token": joint.publicToken], headers: bearer(tokens)).status == .created)
            // An item that lost its access (revoked at the bank) is mended by linking again: not refused as a duplicate.
            try await env.database.sql.raw("UPDATE plaid_items SET status = 'error' WHERE id = \(bind: try #require(UUID(uuidString: kept)))").run()
            let mended = fake.issuePublicToken(accounts: Self.accounts)
            env.clock.advance(by: 60)  // linked later than the joint login
            let mendedLink = try json(try await post(client, "/api/links/plaid/exchange", ["public_token": mended.publicToken], headers: bearer(tokens)))
            // Until the broken item is removed, its accounts the new link also holds are listed, not counted: the money counts once.
            let mendedWorth = try json(try await get(client, "/api/portfolio?view=net_worth", tokens))
            let listed = try #require(mendedWorth["accounts"] as? [[String: Any]]).filter { $0["source"] as? String == "plaid" }
            let old = listed.filter { $0["item_id"] as? String == kept }, new = listed.filter { $0["item_id"] as? String == mendedLink["id"] as? String }
            #expect(old.count == 3 && old.allSatisfy { $0["superseded"] as? Bool == true && $0["included"] as? Bool == false }, "\(old)")
            #expect(new.count == 3 && new.allSatisfy { $0["superseded"] as? Bool == false }, "\(new)")
            #expect(new.first { $0["name"] as? String == "Card" }?["included"] as? Bool == true, "\(new)")
            // The old item working again (a good sync after a passing error) changes nothing: the newer link still counts them.
            try await env.database.sql.raw("UPDATE plaid_items SET status = 'active' WHERE id = \(bind: try #require(UUID(uuidString: kept)))").run()
            let recovered = try json(try await get(client, "/api/portfolio?view=net_worth", tokens))
            #expect(recovered["linked_total"] as? String == mendedWorth["linked_total"] as? String, "\(recovered)")
            let recoveredOld = try #require(recovered["accounts"] as? [[String: Any]]).filter { $0["item_id"] as? String == kept }
            #expect(recoveredOld.allSatisfy { $0["superseded"] as? Bool == true }, "\(recoveredOld)")
            // Removed, the old item's accounts are gone and the new ones count as before.
            #expect(try await client.execute(uri: "/api/links/\(kept)", method: .delete, headers: bearer(tokens)).status == .noContent)
            let cleared = try json(try await get(client, "/api/portfolio?view=net_worth", tokens))
            #expect(cleared["linked_total"] as? String == mendedWorth["linked_total"] as? String)
        }
    }

    @Test("a garbled answer from Plaid is passing trouble (503, nothing changed, a sync tries again), and an exchange answered without its item_id leaves no item at Plaid", arguments: [TestDatabaseKind.sqlite])
    func garbledAnswers(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "garbled@example.com")
            fake.answerNextWith("/link/token/create", body: "{not json")
            let linkToken = try await post(client, "/api/links/plaid/link-token", [String: String](), headers: bearer(tokens))
            let linkTokenCode = try problem(linkToken).code
            #expect(linkToken.status == .serviceUnavailable && linkTokenCode == "plaid_unavailable")

            let lost = fake.issuePublicToken(accounts: Self.accounts)
            fake.answerNextExchangeWithoutItemID()
            let exchanged = try await post(client, "/api/links/plaid/exchange", ["public_token": lost.publicToken], headers: bearer(tokens))
            let itemsAfterLoss = try await count(env, "plaid_items")
            #expect(exchanged.status.code >= 400 && itemsAfterLoss == 0)
            #expect(fake.isRemoved(itemID: lost.itemID), "the item Plaid made is removed there")

            let (item, _) = try await link(client, tokens, fake)
            let itemID = try #require(item["id"] as? String)
            fake.answerNextWith("/transactions/sync", body: "[]")
            await env.worker.drain()
            let status = try await env.database.sql.raw("SELECT status FROM plaid_items").first(decodingColumn: "status", as: String.self)
            #expect(status == "active", "a garbled page is not the item's error")
            // The removal Plaid carried out but whose answer was garbled: 503, kept; asked again, it goes.
            fake.answerNextWith("/item/remove", body: "<html>")
            let removal = try await client.execute(uri: "/api/links/\(itemID)", method: .delete, headers: bearer(tokens))
            let itemsKept = try await count(env, "plaid_items")
            #expect(removal.status == .serviceUnavailable && itemsKept == 1)
            let again = try await client.execute(uri: "/api/links/\(itemID)", method: .delete, headers: bearer(tokens))
            #expect(again.status == .noContent)
            #expect(try await count(env, "plaid_items") == 0)
        }
    }

    @Test("two links of one person at once are checked one after the other: on PostgreSQL the second's transaction waits for the first's hold, so it sees the first's item", arguments: [TestDatabaseKind.postgres])
    func linksOfOnePersonInTurn(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            _ = try await signUp(client, env, email: "in-turn@example.com")
            let owner = try await env.firstAccount().userID
            let store = env.services.plaid.store
            let second = NIOLockedValueBox(false)
            try await env.database.transaction { db in
                try await store.holdLinking(of: owner, on: db)
                let other = Task {
                    try await env.database.transaction { db in
                        try await store.holdLinking(of: owner, on: db)
                        second.withLockedValue { $0 = true }
                    }
                }
                // The second waits on the first's hold, and does not go on while it lasts.
                try await env.eventuallyWaitingForLock("the second link waits for the first", statementHolding: "hashtextextended")
                #expect(!second.withLockedValue { $0 })
                _ = other
            }
            // Once the first ends, the second goes on.
            try await eventually("the second link goes on") { second.withLockedValue { $0 } }
            // Another person's linking is not held by it.
            let stranger = UserID(UUID())
            try await env.database.transaction { db in
                try await store.holdLinking(of: owner, on: db)
                try await env.database.transaction { other in try await store.holdLinking(of: stranger, on: other) }
            }
        }
    }

    @Test("an expiring consent stays on the item through passing errors; the same item exchanged again is 409 and stays linked at Plaid")
    func expiringConsentAndRelinkedItem() async throws {
        try await withPlaidApp(.sqlite) { client, env, fake in
            let tokens = try await signUp(client, env, email: "expiring@example.com")
            let (_, plaidItemID) = try await link(client, tokens, fake)
            await env.worker.drain()
            let body = FakePlaid.webhookBody(type: "ITEM", code: "PENDING_EXPIRATION", itemID: plaidItemID, extra: #""consent_expiration_time":"2026-12-07T00:00:00Z""#)
            #expect(try json(try await webhook(client, body, header: fake.sign(body, iat: env.clock.now)))["action"] as? String == "needs_login")
            // The item still syncs meanwhile; a passing failure does not replace the warning, nor does a good sync clear it.
            fake.failSync(onCall: 1)
            #expect(try await post(client, "/api/links/\(try #require(try await env.database.sql.raw("SELECT id FROM plaid_items").first()?.decode(column: "id", as: UUID.self)).lowercasedString)/sync", [:], headers: bearer(tokens)).status == .accepted)
            await env.worker.drain()
            env.clock.advance(by: 600)
            await env.worker.drain()
            let tokensAgain = try json(try await post(client, "/api/auth/login", ["email": "expiring@example.com", "password": strongPassword]))
            let listed = try #require((try json(try await get(client, "/api/links", tokensAgain))["data"] as? [[String: Any]])?.first)
            #expect(listed["status"] as? String == "pending_expiration")
            #expect(listed["error_code"] as? String == "PENDING_EXPIRATION")
            #expect((listed["error_message"] as? String)?.contains("expires soon") == true)
            let mails = try await env.outbox(kind: "plaid_login_required")
            #expect(mails.count == 1)
            #expect(mails.first?.body.contains("expires soon") == true, "the mail says what the status says, not the last passing error")

            // Link's update mode gives a public token for the same item: Folio already holds it, and Plaid keeps it.
            let again = try #require(fake.issuePublicToken(forExisting: plaidItemID))
            let exchanged = try await post(client, "/api/links/plaid/exchange", ["public_token": again], headers: bearer(tokensAgain))
            #expect(exchanged.status == .conflict)
            #expect(try problem(exchanged).code == "already_linked")
            #expect(fake.removeCalls == 0, "the item stays at Plaid")
            #expect(try await count(env, "plaid_items") == 1)
        }
    }

    // MARK: - Webhook verification

    @Test("the seed's check: a webhook without a valid Plaid-Verification header is 401, counted and recorded")
    func webhookWithoutHeader() async throws {
        try await withPlaidApp(.sqlite) { client, env, fake in
            let body = FakePlaid.webhookBody(type: "TRANSACTIONS", code: "SYNC_UPDATES_AVAILABLE", itemID: "item-x")
            let missing = try await webhook(client, body, header: nil)
            #expect(missing.status == .unauthorized)
            #expect(try problem(missing).code == "webhook_unverified")
            let garbage = try await webhook(client, body, header: "not a jwt")
            #expect(garbage.status == .unauthorized)
            #expect(env.services.webhookRejections.all == ["plaid:missing_header": 1, "plaid:malformed": 1])
            #expect(env.logs.lines.contains { $0.contains("webhook_verification_failed") && $0.contains("missing_header") })
            // Operators read the counts on /health/detailed.
            let report = try json(try await client.execute(
                uri: "/health/detailed", method: .get, headers: [.authorization: "Bearer " + String(repeating: "o", count: 40)]))
            let webhooks = (report["components"] as? [String: [String: Any]])?["webhooks"]
            #expect(webhooks?["rejected"] as? [String: Int] == ["plaid:missing_header": 1, "plaid:malformed": 1])
            // Cookies, CSRF and bearer tokens play no part: a stale bearer token is not a 401 of its own.
            var headers: HTTPFields = [.contentType: "application/json", .authorization: "Bearer nonsense", .origin: "https://evil.example"]
            headers[HTTPField.Name("Plaid-Verification")!] = fake.sign(body, iat: env.clock.now)
            let withJunk = try await client.execute(uri: "/webhooks/plaid", method: .post, headers: headers, body: ByteBuffer(string: body))
            #expect(withJunk.status == .ok)
            #expect(try await count(env, "jobs") == 0, "an item Folio does not hold queues nothing")
            // A body over the webhook's own limit.
            let huge = try await webhook(client, String(repeating: " ", count: 70_000) + body, header: fake.sign(body, iat: env.clock.now))
            #expect(huge.status == .contentTooLarge)
        }
    }

    @Test("the verifier refuses other algorithms, unknown or expired keys, old tokens, changed bodies, other keys; a replay is processed once", arguments: TestDatabaseKind.all)
    func verifierRefusals(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "hooks@example.com")
            let (_, plaidItemID) = try await link(client, tokens, fake)
            await env.worker.drain()
            let jobsBefore = try await count(env, "jobs")
            let body = FakePlaid.webhookBody(type: "HOLDINGS", code: "DEFAULT_UPDATE", itemID: plaidItemID, extra: #""new_holdings":1,"updated_holdings":0"#)
            let now = env.clock.now

            func refused(_ header: String, _ sentBody: String = body, _ reason: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
                let before = env.services.webhookRejections.all["plaid:\(reason)"] ?? 0
                let answer = try await webhook(client, sentBody, header: header)
                #expect(answer.status == .unauthorized, sourceLocation: sourceLocation)
                #expect(try problem(answer).code == "webhook_unverified", sourceLocation: sourceLocation)
                #expect(env.services.webhookRejections.all["plaid:\(reason)"] == before + 1, "refused for \(reason)", sourceLocation: sourceLocation)
            }
            // Other algorithms, refused before any key is fetched.
            let fetchesBefore = fake.keyFetches.count
            let claims = SecureToken.base64URL(Data(#"{"iat":\#(Int(now.timeIntervalSince1970)),"request_body_sha256":"\#(SHA256.hash(data: Data(body.utf8)).map { String(format: "%02x", $0) }.joined())"}"#.utf8))
            let none = SecureToken.base64URL(Data(#"{"alg":"none","kid":"\#(fake.kid)"}"#.utf8)) + "." + claims + "."
            try await refused(none, body, "wrong_algorithm")
            let hsHeader = SecureToken.base64URL(Data(#"{"alg":"HS256","kid":"\#(fake.kid)"}"#.utf8)) + "." + claims
            let hmac = HMAC<SHA256>.authenticationCode(for: Data(hsHeader.utf8), using: SymmetricKey(data: Data(FakePlaid.secret.utf8)))
            try await refused(hsHeader + "." + SecureToken.base64URL(Data(hmac)), body, "wrong_algorithm")
            let es384 = fake.sign(body, iat: now, alg: "ES384")
            try await refused(es384, body, "wrong_algorithm")
            #expect(fake.keyFetches.count == fetchesBefore, "no key was fetched for a wrong algorithm")

            // An unknown kid whose fetch fails; asking again within the minute does not fetch again.
            try await refused(fake.sign(body, iat: now, kid: "kid-nobody-knows"), body, "unknown_key")
            try await refused(fake.sign(body, iat: now, kid: "kid-nobody-knows"), body, "unknown_key")
            #expect(fake.keyFetches.filter { $0 == "kid-nobody-knows" }.count == 1)

            // An iat older than five minutes.
            try await refused(fake.sign(body, iat: now.addingTimeInterval(-301)), body, "stale")
            // Made-up key ids cannot make Folio hammer Plaid, nor push out the key it holds.
            for n in 0..<20 { try await refused(fake.sign(body, iat: now, kid: "forged-\(n)"), body, "unknown_key") }
            #expect(fake.keyFetches.count <= fetchesBefore + 10)
            // One byte of the body changed.
            let signed = fake.sign(body, iat: now)
            try await refused(signed, body.replacingOccurrences(of: "\"new_holdings\":1", with: "\"new_holdings\":2"), "body_mismatch")
            // Signed by another key.
            try await refused(fake.sign(body, iat: now, signer: P256.Signing.PrivateKey()), body, "bad_signature")
            #expect(try await count(env, "jobs") == jobsBefore, "nothing refused queued any work")

            // The genuine webhook, and its replay: processed once.
            let first = try await webhook(client, body, header: signed)
            #expect(first.status == .ok)
            #expect(try json(first)["duplicate"] as? Bool == false)
            let replay = try await webhook(client, body, header: signed)
            #expect(replay.status == .ok)
            #expect(try json(replay)["duplicate"] as? Bool == true)
            #expect(try await count(env, "jobs") == jobsBefore + 1)
            #expect(try await env.database.sql.raw("SELECT COUNT(*) AS n FROM jobs WHERE kind = 'refresh_plaid_holdings' AND status = 'queued'").first()?
                .decode(column: "n", as: Int.self) == 1)

            // Once Plaid retires the key (after the hour Folio keeps it), webhooks signed with it are refused.
            fake.expireKey()
            env.clock.advance(by: 3601)
            try await refused(fake.sign(body, iat: env.clock.now), body, "expired_key")
        }
    }

    @Test("folio secrets rotate seals Plaid access tokens again under the new SECRET_KEY", arguments: TestDatabaseKind.all)
    func rotation(kind: TestDatabaseKind) async throws {
        try await withPlaidApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "rotate-plaid@example.com")
            let (_, plaidItemID) = try await link(client, tokens, fake)
            let newKey = "rotated-signing-key-" + String(repeating: "p", count: 24)
            var dependencies = env.services.dependencies
            dependencies.configuration.previousSecretKeys = [env.configuration.secretKey]
            dependencies.configuration.secretKey = newKey
            let rotated = await FolioServices(dependencies)
            let outcome = try await SecretRotation.run(services: rotated)
            #expect(outcome.plaidItems == 1 && outcome.unreadable == 0)
            #expect(try await SecretRotation.run(services: rotated).plaidItems == 0, "already under the new key")
            let sealed = try #require(try await env.database.sql.raw("SELECT sealed_access_token FROM plaid_items").first()?
                .decode(column: "sealed_access_token", as: String.self))
            #expect(SecretBox(secretKey: newKey, previousKeys: []).open(sealed) == fake.accessToken(of: plaidItemID), "opens without the old key")
        }
    }

    @Test("the key cache: refreshing a held key never waits on the unknown ids' budget; Plaid down, a held key serves a day, then none")
    func keyCache() async throws {
        let clock = TestClock()
        let calls = NIOLockedValueBox<[String]>([])
        let plaidDown = NIOLockedValueBox(false)
        let cache = PlaidKeyCache(clock: clock.clock) { kid in
            calls.withLockedValue { $0.append(kid) }
            guard kid == "real", !plaidDown.withLockedValue({ $0 }) else { throw PlaidError.unreachable("down") }
            return PlaidVerificationKey(kid: "real", alg: "ES256", crv: "P-256", x: "x", y: "y", expired: false)
        }
        _ = try await cache.key("real")
        // A flood of made-up ids spends the unknown ids' budget…
        for n in 0..<30 { _ = try? await cache.key("forged-\(n)") }
        #expect(calls.withLockedValue { $0.count } == 10, "ten unknown ids a minute, the first sight of the real one among them")
        // …and the held key, due for its hourly refresh, is still fetched.
        clock.advance(by: 3601)
        for n in 30..<60 { _ = try? await cache.key("forged-\(n)") }
        _ = try await cache.key("real")
        #expect(calls.withLockedValue { $0.filter { $0 == "real" }.count } == 2)
        // Plaid unreachable: the held key serves until it is a day old, then nothing verifies.
        plaidDown.withLockedValue { $0 = true }
        clock.advance(by: 3601)
        #expect(try await cache.key("real").kid == "real")
        clock.advance(by: 86_400)
        await #expect(throws: (any Error).self) { try await cache.key("real") }
    }

    @Test("the key cache: one client's forged key ids spend its own budget, not the one that lets Plaid's webhook signed with a newly rotated key be verified; all clients together are held to ten times one's")
    func keyCacheBudgetPerClient() async throws {
        let clock = TestClock()
        let calls = NIOLockedValueBox<[String]>([])
        let cache = PlaidKeyCache(clock: clock.clock) { kid in
            calls.withLockedValue { $0.append(kid) }
            guard kid == "rotated" else { throw PlaidError.unreadable("no such key") }
            return PlaidVerificationKey(kid: "rotated", alg: "ES256", crv: "P-256", x: "x", y: "y", expired: false)
        }
        for n in 0..<30 { _ = try? await cache.key("forged-\(n)", client: "ip:198.51.100.9") }
        #expect(calls.withLockedValue { $0.count } == 10, "ten a minute for the forger")
        #expect(try await cache.key("rotated", client: "ip:52.21.26.131").kid == "rotated", "Plaid's own webhook is verified all the same")
        // Forgers from many addresses: a hundred fetches a minute in all, then none.
        for address in 0..<20 {
            for n in 0..<10 { _ = try? await cache.key("spread-\(address)-\(n)", client: "ip:203.0.113.\(address)") }
        }
        #expect(calls.withLockedValue { $0.count } == 100)
        clock.advance(by: 61)
        _ = try? await cache.key("forged-later", client: "ip:198.51.100.9")
        #expect(calls.withLockedValue { $0.last } == "forged-later", "a minute later the budget is back")
    }

    @Test("a security reported twice in one account (in lots) is one holding, its parts added up; parts in two currencies are unreadable, not a failed import for ever")
    func holdingsInLots() throws {
        func part(_ account: String, _ quantity: String, _ value: String, _ cost: String?, currency: String? = "USD") throws -> PlaidHolding {
            PlaidHolding(
                plaidAccountID: account, securityID: "sec-vti", ticker: "VTI", securityName: "VTI", securityType: "etf", quantity: try Quantity(parsing: quantity),
                costBasis: try cost.map { try Cash(parsing: $0) }, institutionPrice: try Price(parsing: "240.5"), institutionPriceAsOf: nil,
                institutionValue: try Cash(parsing: value), currency: currency)
        }
        let merged = try PlaidClient.merged([
            try part("acc-invest", "1", "240.50", "200.00"), try part("acc-ira", "2", "481.00", nil), try part("acc-invest", "3.5", "841.75", "800.25"),
        ])
        let quantity = try Quantity(parsing: "4.5"), value = try Cash(parsing: "1082.25"), cost = try Cash(parsing: "1000.25")
        #expect(merged.count == 2)
        #expect(merged[0].plaidAccountID == "acc-invest" && merged[0].quantity == quantity)
        #expect(merged[0].institutionValue == value && merged[0].costBasis == cost)
        #expect(merged[1].plaidAccountID == "acc-ira" && merged[1].costBasis == nil)
        let unknownCost = try PlaidClient.merged([try part("acc-invest", "1", "240.50", "200.00"), try part("acc-invest", "1", "240.50", nil)])
        #expect(unknownCost.count == 1 && unknownCost[0].costBasis == nil, "a part's cost unknown, the whole's is too")
        #expect(throws: PlaidError.self) {
            try PlaidClient.merged([try part("acc-invest", "1", "240.50", nil), try part("acc-invest", "1", "240.50", nil, currency: "CAD")])
        }
    }

    // MARK: - Exact amounts

    @Test("Plaid's JSON numbers are read from their text: a value Double cannot hold stays exact; a transaction amount Folio cannot keep exactly is refused; a holding's figure, worked out in floating point at Plaid, is kept to its places and counted")
    func exactAmounts() throws {
        let json = try JSONValue.parse(Array(FakePlaid.transaction("t", "a", "9007199254740993.01", "2026-11-02", "Big").utf8))
        let transaction = try PlaidClient.transaction(json)
        #expect(transaction.amount.description == "-9007199254740993.01")
        #expect(Double("9007199254740993.01")! == 9007199254740994, "the same text through Double loses the cents and moves a unit")
        let tooPrecise = try JSONValue.parse(Array(FakePlaid.transaction("t", "a", "1.00001", "2026-11-02", "Odd").utf8))
        #expect(throws: PlaidError.self) { try PlaidClient.transaction(tooPrecise) }
        let figures = try JSONValue.parse(Array(#"{"institution_price":240.123456789,"institution_value":4357.459999999999,"quantity":0.000000001234567891,"exact":12.5,"huge":1e30}"#.utf8))
        var rounded = 0
        #expect(try PlaidClient.price(figures["institution_price"], rounded: &rounded)?.description == "240.12345679")
        #expect(try PlaidClient.cash(figures["institution_value"], field: "institution_value", rounded: &rounded)?.description == "4357.46")
        #expect(try PlaidClient.quantity(figures["quantity"], rounded: &rounded)?.description == "0.000000001")
        #expect(rounded == 3, "each rounding is counted, and said in the log")
        #expect(try PlaidClient.cash(figures["exact"], field: "exact", rounded: &rounded)?.description == "12.50")
        #expect(rounded == 3, "an exact figure is not counted")
        #expect(throws: PlaidError.self, "a figure too large to keep is refused") { try PlaidClient.cash(figures["huge"], field: "huge", rounded: &rounded) }
        let badDate = try JSONValue.parse(Array(FakePlaid.transaction("t", "a", "1.00", "Nov 2", "Odd date").utf8))
        #expect(throws: PlaidError.self, "a date that is not YYYY-MM-DD is refused") { try PlaidClient.transaction(badDate) }
        let exponent = try JSONValue.parse(Array(FakePlaid.transaction("t", "a", "1.5E2", "2026-11-02", "Exp").utf8))
        #expect(try PlaidClient.transaction(exponent).amount.description == "-150.00")
    }

    @Test("an account's balance worked out in floating point at Plaid is kept to cash's places and counted, not taken as a reason to stop the item's every sync")
    func floatingBalances() throws {
        let list = try JSONValue.parse(Array(#"""
            [{"account_id":"acc1","type":"investment","name":"Brokerage","balances":{"current":4357.459999999999,"available":null,"limit":12.5,"iso_currency_code":"USD"}}]
            """#.utf8))
        var rounded = 0
        let accounts = try PlaidClient.accounts(list, rounded: &rounded)
        #expect(accounts.first?.current?.description == "4357.46")
        #expect(accounts.first?.available == nil)
        #expect(accounts.first?.limit?.description == "12.50")
        #expect(rounded == 1)
        let huge = try JSONValue.parse(Array(#"[{"account_id":"acc1","type":"depository","balances":{"current":1e30}}]"#.utf8))
        #expect(throws: PlaidError.self, "a balance too large to keep is still refused") { try PlaidClient.accounts(huge, rounded: &rounded) }
    }

    // MARK: - Configuration

    @Test("Plaid settings are all or nothing; production needs https and a webhook URL")
    func configuration() throws {
        let base = ["SECRET_KEY": String(repeating: "k9", count: 32)]
        #expect(try ConfigurationLoader.make(from: base).plaid == nil)
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.make(from: base.merging(["PLAID_CLIENT_ID": "abc"]) { $1 }) }
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.make(from: base.merging(["PLAID_ENV": "sandbox"]) { $1 }) }
        let sandbox = try ConfigurationLoader.make(from: base.merging(["PLAID_CLIENT_ID": "client-abc", "PLAID_SECRET": "secret-0123456789"]) { $1 })
        #expect(sandbox.plaid?.baseURL == "https://sandbox.plaid.com")
        #expect(sandbox.secretValues.contains("secret-0123456789"))
        #expect(!"\(sandbox.plaid!)".contains("secret-0123456789"))
        let production = base.merging(["PLAID_CLIENT_ID": "client-abc", "PLAID_SECRET": "secret-0123456789", "PLAID_ENV": "production"]) { $1 }
        do {
            _ = try ConfigurationLoader.make(from: production)
            Issue.record("production without a webhook URL started")
        } catch let error as ConfigurationError {
            #expect(error.problems.contains { $0.contains("PLAID_WEBHOOK_URL is required") })
        }
        let withWebhook = try ConfigurationLoader.make(from: production.merging(["PLAID_WEBHOOK_URL": "https://folio.example.com/webhooks/plaid"]) { $1 })
        #expect(withWebhook.plaid?.baseURL == "https://production.plaid.com")
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.make(from: production.merging(["PLAID_WEBHOOK_URL": "http://folio.example.com/webhooks/plaid"]) { $1 })
        }
    }
}

@Suite("Net worth at the edges")
struct NetWorthEdgeTests {
    @Test("balances that fit one by one but not summed: the one that would overflow is listed, not counted, and the figures still come out")
    func sumPastTheColumn() throws {
        let item = UUID()
        func linked(_ name: String, _ current: String, currency: String? = "USD") -> LinkedAccount {
            LinkedAccount(id: UUID(), itemID: item, account: PlaidAccount(
                plaidAccountID: name, name: name, type: "depository", current: Cash(current)!, currency: currency))
        }
        let worth = try NetWorthResponse.build(
            folio: [], items: [], linked: [linked("a", "9999999999999999.9999"), linked("b", "9999999999999999.9999"), linked("c", "1.00", currency: "EUR")],
            now: Date())
        #expect(worth.accounts.map(\.included) == [true, false, false])
        #expect(worth.total == Cash("9999999999999999.9999")!)
        #expect(worth.assets == worth.total)
        #expect(LinkedView.amount(Cash("1.00")!, currency: "EUR") == "1.00 EUR")
    }

    @Test("a transaction's day must exist as written: no February 30th, no year 1 (which the parser would shift)")
    func daysAsWritten() throws {
        #expect(PlaidStore.midnight("2026-02-28") != nil)
        #expect(PlaidStore.midnight("2024-02-29") != nil)
        for day in ["2026-02-30", "2026-13-01", "0001-01-01", "0000-01-01", "2025-02-29"] {
            #expect(PlaidStore.midnight(day) == nil, "\(day)")
        }
    }
}
