import Crypto
import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@testable import FolioServer

/// Notifications, their mail through SendGrid (a loopback fake), the Event
/// Webhook, and the templates.
@Suite("Notifications and mail")
struct NotificationTests {
    static func buy(_ client: some TestClientProtocol, _ env: TestEnvironment, _ tokens: [String: Any], symbol: String = "AAPL", quantity: Int = 2) async throws {
        let placed = try await post(client, "/api/orders", ["symbol": symbol, "quantity": quantity, "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
        #expect(placed.status == .created, "\(String(buffer: placed.body))")
        await env.worker.drain()
    }

    static func get(_ client: some TestClientProtocol, _ uri: String, _ tokens: [String: Any]) async throws -> [String: Any] {
        let response = try await client.execute(uri: uri, method: .get, headers: bearer(tokens))
        #expect(response.status == .ok, "\(uri): \(String(buffer: response.body))")
        return try json(response)
    }

    static func sendGrid(_ fake: FakeSendGrid, timeout: TimeAmount = .seconds(15)) -> (inout AppConfiguration) -> Void {
        { $0.sendGrid = fake.settings() }
    }

    /// Registers, verifies with the link SendGrid got, and signs in.
    static func signUpAtSendGrid(_ client: some TestClientProtocol, _ env: TestEnvironment, at sendGrid: FakeSendGrid, email: String) async throws -> [String: Any] {
        let registered = try await post(client, "/api/auth/register", ["email": email, "password": strongPassword])
        #expect(registered.status == .created)
        await env.deliverMail()
        let link = try #require(sendGrid.received.last { $0.to == email && $0.category == "verify_email" })
        let token = try #require(link.text.components(separatedBy: "token=").last?.split(whereSeparator: { $0.isWhitespace }).first)
        #expect(try await post(client, "/api/auth/verify-email", ["token": String(token)]).status == .ok)
        return try json(try await post(client, "/api/auth/login", ["email": email, "password": strongPassword]))
    }

    static func jsonHeaders(_ tokens: [String: Any]) -> HTTPFields {
        var headers = bearer(tokens)
        headers[.contentType] = "application/json"
        return headers
    }

    // MARK: - Templates

    @Test("every template renders with its sample data, asks only for variables the code gives, and escapes HTML in the HTML part only")
    func templates() async throws {
        let renderer = try await MailRenderer.bundled(publicURL: "https://folio.example.com")
        let directory = try #require(Bundle.module.url(forResource: "mail", withExtension: nil, subdirectory: nil) ?? renderedDirectory())
        for template in MailTemplate.allCases {
            let sample = template.sample
            let mail = try renderer.render(template, sample, id: UUID(), userID: nil, recipient: "a@example.com")
            for (part, text) in [("subject", mail.subject), ("text", mail.text), ("html", mail.html)] {
                #expect(!text.contains("{{") && !text.contains("}}"), "\(template.rawValue).\(part) left a tag: \(text)")
                #expect(!text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(template.rawValue).\(part) is empty")
            }
            #expect(!mail.text.hasPrefix("\n") && !mail.text.contains("CONTENT_TYPE"), "\(template.rawValue): \(mail.text)")
            #expect(mail.html.contains("<html") && mail.html.contains("https://folio.example.com/settings"))
            // Every variable a template file or its subject and summary names is one the code gives.
            let given = Set(sample.values.keys).union(["items", "app_url", "settings_url", "unsubscribe_url", "unsubscribe_what"])
            let itemKeys = Set(sample.items.flatMap(\.keys))
            for part in ["text", "html"] {
                let source = try String(contentsOf: directory.appendingPathComponent("\(template.rawValue).\(part).mustache"), encoding: .utf8)
                for name in Self.variables(in: source) {
                    #expect(given.contains(name) || itemKeys.contains(name), "\(template.rawValue).\(part) asks for \(name), which the code does not give")
                }
            }
            for name in Self.variables(in: template.subject + template.summary) {
                #expect(given.contains(name), "\(template.rawValue)'s subject or summary asks for \(name)")
            }
        }
        // Money reads as money; mail queued before the *_text variables existed still renders, with the bare figures.
        #expect(try renderer.render(.cashDeposit, MailTemplate.cashDeposit.sample, id: UUID(), userID: nil, recipient: "a@example.com").subject == "Deposit of $250.00 received")
        let queuedEarlier = try renderer.render(.cashDeposit, MailVariables(["amount": "250.00", "cash_after": "10250.00", "account": "x"]), id: UUID(), userID: nil, recipient: "a@example.com")
        #expect(queuedEarlier.subject == "Deposit of 250.00 received" && queuedEarlier.text.contains("Cash is now 10250.00."))
        // A value with markup is escaped in HTML and left alone in text.
        let hostile = try renderer.render(.orderRejected, MailVariables(["side": "buy", "symbol": "A&B", "reason": "<script>x</script>", "order_id": "o1"]), id: UUID(), userID: nil, recipient: "a@example.com")
        #expect(hostile.html.contains("&lt;script&gt;") && !hostile.html.contains("<script>"))
        #expect(hostile.text.contains("<script>x</script>") && hostile.subject.contains("A&B"))
    }

    @Test("an order that expired after part of it filled says how much of it filled, in the app and in the mail")
    func partlyFilledExpiry() async throws {
        let renderer = try await MailRenderer.bundled(publicURL: "https://folio.example.com")
        let variables = MailVariables(["side": "buy", "symbol": "AMZN", "quantity": "200.25", "filled_quantity": "101", "price": "180.00", "order_id": "o1"])
        let summary = try renderer.render(.orderExpired, part: "summary", variables)
        #expect(summary == "Your order to buy AMZN expired (101 of 200.25 filled).", "not \"unfilled\"")
        let mail = try renderer.render(.orderExpired, variables, id: UUID(), userID: nil, recipient: "a@example.com")
        #expect(mail.text.contains("expired (101 of 200.25 filled)") && mail.html.contains("expired (101 of 200.25 filled)"))
        // A notional order has no quantity: what filled, not "0.5 of 0.5".
        let notional = MailVariables(["side": "buy", "symbol": "AMZN", "filled_quantity": "0.5", "price": "180.00", "order_id": "o2"])
        #expect(try renderer.render(.orderExpired, part: "summary", notional) == "Your order to buy AMZN expired (0.5 filled).")
        #expect(try renderer.render(.orderCanceled, part: "summary", MailVariables(["side": "buy", "symbol": "AMZN", "filled_quantity": "0.5", "reason": "canceled by user"]))
            == "Your order to buy AMZN was canceled (0.5 filled): canceled by user")
    }

    func renderedDirectory() -> URL? { nil }

    /// The variable names in a mustache source (not partials, pragmas or comments).
    static func variables(in source: String) -> Set<String> {
        var names = Set<String>()
        var rest = Substring(source)
        while let open = rest.range(of: "{{") {
            rest = rest[open.upperBound...]
            guard let close = rest.range(of: "}}") else { break }
            var tag = rest[..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            rest = rest[close.upperBound...]
            if tag.hasPrefix("{") { tag = String(tag.dropFirst()) }
            guard let first = tag.first, !["!", ">", "%", "<", "$"].contains(first) else { continue }
            if ["#", "^", "/", "&"].contains(first) { tag = String(tag.dropFirst()).trimmingCharacters(in: .whitespaces) }
            names.insert(tag)
        }
        return names
    }

    // MARK: - Order filled → notification → mail

    @Test("an order filled is a notification and one mail at SendGrid with the order_filled template; read marks it; nobody else sees it", arguments: TestDatabaseKind.all)
    func orderFilled(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings() }) { client, env in
                let tokens = try await Self.signUpAtSendGrid(client, env, at: sendGrid, email: "fills@example.com")
                let verification = sendGrid.received.filter { $0.category == "verify_email" }
                #expect(verification.count == 1 && verification.first?.to == "fills@example.com" && verification.first?.text.contains("/verify-email?token=") == true)
                try await Self.buy(client, env, tokens, symbol: "AAPL", quantity: 2)
                await env.deliverMail()
                let filled = sendGrid.received.filter { $0.category == "order_filled" }
                #expect(filled.count == 1, "\(sendGrid.received.map(\.category))")
                let mail = try #require(filled.first)
                #expect(mail.to == "fills@example.com" && mail.from == "alerts@folio.example.com")
                #expect(mail.subject.hasPrefix("Filled: buy 2 AAPL at ") && mail.html.contains("<td>buy 2 AAPL</td>") && mail.text.contains("buy 2 AAPL"), "\(mail.subject)")
                #expect(sendGrid.malformed.isEmpty && sendGrid.refusedAuth == 0)
                let rows = try await env.services.mail.all().filter { $0.template == "order_filled" }
                #expect(rows.count == 1 && rows.first?.status == "sent" && rows.first?.vendorMessageID == filled.first?.messageID)
                #expect(rows.first?.id.lowercasedString == mail.mailID)
                // Sending it again finds it sent.
                await env.deliverMail()
                #expect(sendGrid.received.filter { $0.category == "order_filled" }.count == 1)

                let list = try await Self.get(client, "/api/notifications", tokens)
                let items = try #require(list["data"] as? [[String: Any]])
                #expect(list["unread_count"] as? Int == 1, "\(list)")
                let notice = try #require(items.first)
                #expect(notice["kind"] as? String == "order_filled" && notice["category"] as? String == "orders" && notice["read"] as? Bool == false)
                #expect((notice["data"] as? [String: String])?["symbol"] == "AAPL")
                let id = try #require(notice["id"] as? String)

                let other = try await Self.signUpAtSendGrid(client, env, at: sendGrid, email: "other@example.com")
                let theirs = try await client.execute(uri: "/api/notifications/\(id)/read", method: .post, headers: bearer(other))
                #expect(theirs.status == .notFound)
                let otherList = try await Self.get(client, "/api/notifications", other)
                #expect((otherList["data"] as? [Any])?.isEmpty == true)

                let read = try await client.execute(uri: "/api/notifications/\(id)/read", method: .post, headers: bearer(tokens))
                #expect(read.status == .ok)
                let after = try await Self.get(client, "/api/notifications?unread=true", tokens)
                #expect(after["unread_count"] as? Int == 0 && (after["data"] as? [Any])?.isEmpty == true)
            }
        }
    }

    @Test("deposits and withdrawals are notified; the starting cash is not", arguments: TestDatabaseKind.all)
    func cashMovements(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "cash@example.com")
            let account = try await env.firstAccount()
            #expect(try await env.outbox(kind: "cash_deposit").isEmpty)
            let deposit = try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "250.00"], headers: bearer(tokens))
            #expect(deposit.status == .created || deposit.status == .ok, "\(String(buffer: deposit.body))")
            env.clock.advance(by: 1)
            let withdrawal = try await post(client, "/api/accounts/\(account.id)/withdrawals", ["amount": "100.5"], headers: bearer(tokens))
            #expect(withdrawal.status == .created || withdrawal.status == .ok, "\(String(buffer: withdrawal.body))")
            let deposits = try await env.outbox(kind: "cash_deposit"), withdrawals = try await env.outbox(kind: "cash_withdrawal")
            #expect(deposits.count == 1 && deposits.first?.subject == "Deposit of $250.00 received", "\(deposits.map(\.subject))")
            #expect(withdrawals.count == 1 && withdrawals.first?.body.contains("100.50 was withdrawn") == true, "\(withdrawals.map(\.body))")
            let list = try await Self.get(client, "/api/notifications", tokens)
            #expect((list["data"] as? [[String: Any]])?.map { $0["kind"] as? String } == ["cash_withdrawal", "cash_deposit"])
        }
    }

    @Test("a person with several accounts is told which one the cash moved in; with one, it is 'your account'", arguments: TestDatabaseKind.all)
    func cashMovementsNameTheAccount(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "several@example.com")
            let first = try await env.firstAccount()
            _ = try await OperatorPosting.post(.fee, accountID: first.id, amount: 1, symbol: nil, description: "Alone", services: env.services)
            let alone = try #require(try await env.outbox(kind: "cash_fee").first)
            #expect(alone.body.contains("was charged to your account: Alone.") && !alone.body.contains("“"), "\(alone.body)")

            let second = try #require(AccountID(try await WebAppTests.secondAccount(env, email: "several@example.com")))
            env.clock.advance(by: 1)
            let deposit = try await post(client, "/api/accounts/\(second)/deposits", ["amount": "250.00"], headers: bearer(tokens))
            #expect(deposit.status == .created, "\(String(buffer: deposit.body))")
            let deposits = try await env.outbox(kind: "cash_deposit")
            #expect(deposits.count == 1 && deposits.first?.body.contains("was deposited into your account “Second paper”.") == true, "\(deposits.map(\.body))")
            let list = try await Self.get(client, "/api/notifications", tokens)
            let newest = try #require((list["data"] as? [[String: Any]])?.first)
            #expect(newest["body"] as? String == "$250.00 was deposited into “Second paper”; cash is now $250.00.", "\(newest)")
            // The first account is named too, now that there are two.
            env.clock.advance(by: 1)
            _ = try await OperatorPosting.post(.fee, accountID: first.id, amount: 2, symbol: nil, description: "Named", services: env.services)
            let fees = try await env.outbox(kind: "cash_fee")
            #expect(fees.contains { $0.body.contains("was charged to your account “Paper brokerage”: Named.") }, "\(fees.map(\.body))")
        }
    }

    @Test("a dividend and a fee booked by the operator are notified (cash), with the symbol and the fee's description", arguments: TestDatabaseKind.all)
    func dividendsAndFees(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "income@example.com")
            let account = try await env.firstAccount()
            #expect(try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens)).status == .created)
            await env.worker.drain()
            env.clock.advance(by: 1)  // after the fill's notice, in the list's order
            _ = try await OperatorPosting.post(.dividend, accountID: account.id, amount: try Cash(parsing: "12.34"), symbol: "aapl", description: "Quarterly dividend", services: env.services)
            env.clock.advance(by: 1)
            let fee = try await OperatorPosting.post(.fee, accountID: account.id, amount: 5, symbol: nil, description: "Account fee", services: env.services)
            let dividends = try await env.outbox(kind: "cash_dividend"), fees = try await env.outbox(kind: "cash_fee")
            #expect(dividends.count == 1 && dividends.first?.subject == "Dividend of $12.34 from AAPL received", "\(dividends.map(\.subject))")
            #expect(fees.count == 1 && fees.first?.subject == "Fee of $5.00 charged", "\(fees.map(\.subject))")
            #expect(fees.first?.body.contains("A fee of $5.00 was charged to your account: Account fee.") == true, "\(fees.map(\.body))")
            #expect(fees.first?.body.contains("Cash is now \(Display.money(fee.cashAfter))") == true, "\(fees.map(\.body))")
            let list = try await Self.get(client, "/api/notifications", tokens)
            let data = try #require(list["data"] as? [[String: Any]])
            #expect(data.prefix(2).map { $0["kind"] as? String } == ["cash_fee", "cash_dividend"], "\(data)")
            #expect(data.prefix(2).allSatisfy { $0["category"] as? String == "cash" })
        }
    }

    @Test("mark all as read takes only `through`: {\"id\": …} meant for one notification is refused and marks nothing", arguments: TestDatabaseKind.all)
    func markAllTakesOnlyThrough(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "mark-all@example.com")
            let account = try await env.firstAccount()
            for amount in ["10.00", "20.00"] {
                _ = try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": amount], headers: bearer(tokens))
                env.clock.advance(by: 1)
            }
            let list = try await Self.get(client, "/api/notifications", tokens)
            let oldest = try #require((list["data"] as? [[String: Any]])?.last?["id"] as? String)
            #expect(list["unread_count"] as? Int == 2)
            for body: [String: Any] in [["id": oldest], ["ids": [oldest]], ["through": oldest, "until": oldest]] {
                let refused = try await post(client, "/api/notifications/read", body, headers: bearer(tokens))
                #expect(try refused.status == .unprocessableContent && problem(refused).errors?.first?.code == "unknown_field", "\(String(buffer: refused.body))")
            }
            #expect(try await Self.get(client, "/api/notifications", tokens)["unread_count"] as? Int == 2)
            let through = try json(try await post(client, "/api/notifications/read", ["through": oldest], headers: bearer(tokens)))
            #expect(through["read"] as? Int == 1 && through["unread_count"] as? Int == 1)
            let all = try json(try await post(client, "/api/notifications/read", [:], headers: bearer(tokens)))
            #expect(all["read"] as? Int == 1 && all["unread_count"] as? Int == 0)
        }
    }

    @Test("a finished rebalance is notified; the daily drift digest tells a user once a day which holdings are outside their band", arguments: TestDatabaseKind.all)
    func rebalanceAndDrift(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "drift@example.com")
            let account = try await env.firstAccount()
            try await Self.buy(client, env, tokens, symbol: "AAPL", quantity: 100)
            let set = try await RebalanceTests.put(
                client, "/api/accounts/\(account.id)/targets", ["targets": [["symbol": "VTI", "percent": "90"]], "cash_percent": "10"], headers: bearer(tokens))
            #expect(set.status == .ok || set.status == .created, "\(String(buffer: set.body))")

            // The digest: AAPL (no target) and VTI (under) are outside the band.
            let today = TradingDay(env.clock.now)
            try await env.services.rebalancing.sendDriftDigests(day: today, notifications: env.services.notifications)
            try await env.services.rebalancing.sendDriftDigests(day: today, notifications: env.services.notifications)
            let digests = try await env.outbox(kind: "drift_digest")
            #expect(digests.count == 1, "once a day")
            let digest = try #require(digests.first)
            #expect(digest.body.contains("AAPL: target 0") && digest.body.contains("VTI: target 90"), "\(digest.body)")
            #expect(digest.html?.contains("<td>VTI</td>") == true)

            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "rebalance-notice"
            let started = try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed)
            #expect(started.status == .accepted, "\(String(buffer: started.body))")
            let run = try await RebalanceTests.finish(client, env, tokens, run: try #require(try json(started)["id"] as? String))
            #expect(run["status"] as? String == "done", "\(run)")
            let finished = try await env.outbox(kind: "rebalance_finished")
            #expect(finished.count == 1 && finished.first?.subject == "Your rebalance finished", "\(finished.map(\.subject))")
            #expect(finished.first?.body.contains("orders filled.") == true)
        }
    }

    @Test("the drift digest names each line's account when a person has targets on more than one, and its summary counts what it lists", arguments: [TestDatabaseKind.sqlite])
    func driftDigestAccounts(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "two@example.com")
            let first = try await env.firstAccount()
            let second = try await WebAppTests.secondAccount(env, email: "two@example.com")
            for account in [first.id.description, second] {
                let set = try await RebalanceTests.put(
                    client, "/api/accounts/\(account)/targets", ["targets": [["symbol": "VTI", "percent": "90"]], "cash_percent": "10"], headers: bearer(tokens))
                #expect(set.status == .ok || set.status == .created, "\(String(buffer: set.body))")
            }
            try await env.services.rebalancing.sendDriftDigests(day: TradingDay(env.clock.now), notifications: env.services.notifications)
            let digest = try #require(try await env.outbox(kind: "drift_digest").first)
            #expect(digest.body.contains("VTI in \(first.name): target 90") && digest.body.contains("VTI in Second paper: target 90"), "\(digest.body)")
            let listed = digest.body.split(separator: "\n").filter { $0.contains(": target ") }.count
            let notices = try await Self.get(client, "/api/notifications", tokens)
            let body = (notices["data"] as? [[String: Any]])?.first { $0["kind"] as? String == "drift_digest" }?["body"] as? String
            #expect(body == "\(listed) holdings are outside their drift band.", "\(body ?? "none"), \(listed) listed")
            // One line is one holding, not "1 holdings".
            let one = try env.services.notifications.renderer.render(.driftDigest, part: "summary", MailVariables(["count": "1", "count_text": "1 holding is"]))
            #expect(one == "1 holding is outside their drift band.")
        }
    }

    @Test("an operator lists the addresses no mail goes to and lets mail go to one again, audited; an address not stopped changes nothing", arguments: TestDatabaseKind.all)
    func unsuppressByOperator(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            _ = try await signUp(client, env, email: "bounced@example.com")
            try await env.services.mail.suppress("Bounced@Example.com", reason: "bounce", detail: "550 mailbox full", now: env.clock.now, on: env.database.sql)
            let administration = UserAdministration(services: env.services)
            #expect(try await administration.suppressions().map(\.email) == ["bounced@example.com"])
            #expect(try await administration.suppressions().first?.reason == "bounce")
            #expect(try await administration.unsuppress(email: "bounced@example.com"))
            #expect(try await !env.services.mail.isSuppressed("bounced@example.com"))
            #expect(try await administration.suppressions().isEmpty)
            #expect(try await !administration.unsuppress(email: "bounced@example.com"), "nothing stopped: nothing changes")
            let audited = try await env.database.sql.raw("SELECT subject_id FROM audit_events WHERE action = 'admin.mail_unsuppressed'").all()
            #expect(audited.count == 1)
            let user = try #require(try await env.database.sql.raw("SELECT id FROM users WHERE email = 'bounced@example.com'").first()?.decode(column: "id", as: UUID.self))
            #expect(try audited.first?.decode(column: "subject_id", as: String?.self) == user.lowercasedString)
        }
    }

    // MARK: - SendGrid's answers

    @Test("a 429 then a 202 sends the message once, after the reset time SendGrid gave", arguments: TestDatabaseKind.all)
    func throttledThenSent(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings() }) { client, env in
                let reset = Int(env.clock.now.timeIntervalSince1970) + 30
                sendGrid.fail(.throttled(resetAt: reset))
                _ = try await post(client, "/api/auth/register", ["email": "slow@example.com", "password": strongPassword])
                await env.deliverMail()
                #expect(sendGrid.calls == 1 && sendGrid.received.isEmpty)
                let waiting = try await env.services.mail.all()
                #expect(waiting.map(\.status) == ["queued"] && waiting.first?.lastError?.contains("too many requests") == true)
                // Not before the reset.
                env.clock.advance(by: 20)
                await env.deliverMail()
                #expect(sendGrid.calls == 1)
                env.clock.advance(by: 15)
                await env.deliverMail()
                await env.deliverMail()
                #expect(sendGrid.calls == 2 && sendGrid.received.count == 1)
                #expect(try await env.services.mail.all().map(\.status) == ["sent"])
                let job = try #require(try await env.jobs(includingMail: true).first { $0.kind == "send_mail" })
                #expect(job.status == "done" && job.attempts == 1, "a throttled send is not a failed attempt: \(job)")
            }
        }
    }

    @Test("429s whose reset time is already past wait at least the back-off of their tries: they do not spend every handover in seconds", arguments: [TestDatabaseKind.sqlite])
    func throttledWithoutAWait(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings() }) { client, env in
                let past = Int(env.clock.now.timeIntervalSince1970) - 10
                for _ in 0..<3 { sendGrid.fail(.throttled(resetAt: past)) }
                _ = try await post(client, "/api/auth/register", ["email": "no-wait@example.com", "password": strongPassword])
                await env.deliverMail()
                for _ in 0..<5 {
                    env.clock.advance(by: 1.5)
                    await env.deliverMail()
                }
                // 2 s after the first, then 4 s: a third try by now, not a fourth.
                #expect(sendGrid.calls == 3, "\(sendGrid.calls)")
                env.clock.advance(by: 120)
                await env.deliverMail()
                await env.deliverMail()
                #expect(try await env.services.mail.all().map(\.status) == ["sent"])
                #expect(sendGrid.received.count == 1)
            }
        }
    }

    @Test("a 5xx is retried with back-off; a 400 and a 401 fail without a retry and SendGrid's errors reach the log without the key", arguments: TestDatabaseKind.all)
    func vendorErrors(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            let logs = LogCapture()
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings() }, logs: logs) { client, env in
                sendGrid.fail(.serverError)
                _ = try await post(client, "/api/auth/register", ["email": "five@example.com", "password": strongPassword])
                await env.deliverMail()
                let firstTry = try await env.services.mail.all().map(\.status)
                #expect(sendGrid.received.isEmpty && firstTry == ["queued"])
                env.clock.advance(by: 31)
                await env.deliverMail()
                let secondTry = try await env.services.mail.all().map(\.status)
                #expect(sendGrid.received.count == 1 && secondTry == ["sent"])

                sendGrid.fail(.badRequest(field: "from.email", message: "The from address does not match a verified Sender Identity \(FakeSendGrid.apiKey)"))
                _ = try await post(client, "/api/auth/register", ["email": "four@example.com", "password": strongPassword])
                await env.deliverMail()
                env.clock.advance(by: 3600)
                await env.deliverMail()
                let refused = try #require(try await env.services.mail.all().last)
                #expect(refused.status == "failed" && refused.attempts == 1 && refused.lastError?.contains("from.email") == true, "\(refused)")
                #expect(sendGrid.calls == 3)
                let text = logs.lines.joined(separator: "\n")
                #expect(text.contains("Sender Identity") && !text.contains(FakeSendGrid.apiKey), "the vendor's errors are logged, its key masked")
            }
            // A key SendGrid refuses: failed at once.
            var settings = sendGrid.settings()
            settings.apiKey = "SG.wrong-key-0000000000000000000000"
            try await withTestApp(kind, configure: { $0.sendGrid = settings }) { client, env in
                _ = try await post(client, "/api/auth/register", ["email": "key@example.com", "password": strongPassword])
                await env.deliverMail()
                let row = try #require(try await env.services.mail.all().first)
                #expect(row.status == "failed" && row.lastError?.contains("401") == true)
                #expect(sendGrid.refusedAuth == 1)
            }
        }
    }

    @Test("a sender that stopped between handing a message over and recording it does not send it again; SendGrid's delivered event confirms it", arguments: TestDatabaseKind.all)
    func crashWhileSending(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings() }) { client, env in
                _ = try await post(client, "/api/auth/register", ["email": "crash@example.com", "password": strongPassword])
                let queued = try #require(try await env.services.mail.all().first)
                // A sender took the message and died before it recorded anything: the row says `sending`.
                #expect(try await env.services.mail.claim(queued.id, now: env.clock.now) != nil)
                await env.deliverMail()
                #expect(sendGrid.calls == 0, "not handed over a second time")
                let settled = try #require(try await env.services.mail.all().first)
                #expect(settled.status == "uncertain")
                #expect(settled.lastError != nil)
                // SendGrid's delivered event for it (custom_args come back as top-level fields) confirms it.
                let now = Int(env.clock.now.timeIntervalSince1970)
                let body = #"[{"email":"crash@example.com","event":"delivered","sg_event_id":"ev-1","sg_message_id":"m1","timestamp":\#(now),"folio_mail_id":"\#(queued.id.lowercasedString)"}]"#
                let answer = try await client.execute(uri: "/webhooks/sendgrid", method: .post, headers: sendGrid.signedHeaders(for: body, timestamp: now), body: ByteBuffer(string: body))
                #expect(answer.status == .ok, "\(String(buffer: answer.body))")
                #expect(try await env.services.mail.all().first?.status == "sent")
                let confirmed = try #require(try await env.services.mail.all().first)
                #expect(confirmed.lastError == nil, "a sent message shows no failure beside it")
            }
        }
    }

    @Test("account mail passes SendGrid's suppression lists and notifications do not; a message SendGrid dropped is not counted sent, whether its processed event comes before or after", arguments: TestDatabaseKind.all)
    func droppedBySendGrid(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings() }) { client, env in
                let tokens = try await Self.signUpAtSendGrid(client, env, at: sendGrid, email: "dropped@example.com")
                try await Self.buy(client, env, tokens, symbol: "AAPL", quantity: 1)
                try await Self.buy(client, env, tokens, symbol: "MSFT", quantity: 1)
                await env.deliverMail()
                #expect(sendGrid.received.filter { $0.category == "verify_email" }.map(\.bypassesLists) == [true])
                let fills = sendGrid.received.filter { $0.category == "order_filled" }
                #expect(fills.count == 2 && fills.allSatisfy { !$0.bypassesLists }, "a notification keeps to the lists")

                let now = Int(env.clock.now.timeIntervalSince1970)
                func post(_ events: [String]) async throws {
                    let body = "[" + events.joined(separator: ",") + "]"
                    let answer = try await client.execute(uri: "/webhooks/sendgrid", method: .post, headers: sendGrid.signedHeaders(for: body, timestamp: now), body: ByteBuffer(string: body))
                    #expect(answer.status == .ok, "\(String(buffer: answer.body))")
                }
                func event(_ name: String, _ mail: FakeSendGrid.Received, _ n: Int) -> String {
                    #"{"email":"dropped@example.com","event":"\#(name)","reason":"Unsubscribed Address","sg_event_id":"ev-\#(name)-\#(n)","sg_message_id":"\#(mail.messageID).filter","timestamp":\#(now),"folio_mail_id":"\#(mail.mailID ?? "")"}"#
                }
                // In SendGrid's order (processed, then dropped), and the other way round.
                try await post([event("processed", fills[0], 1), event("dropped", fills[0], 1)])
                try await post([event("dropped", fills[1], 2)])
                try await post([event("processed", fills[1], 2)])
                let rows = try await env.services.mail.all().filter { $0.template == "order_filled" }
                #expect(rows.map(\.status) == ["suppressed", "suppressed"], "\(rows)")
                #expect(rows.allSatisfy { $0.lastError == "SendGrid dropped it: Unsubscribed Address" }, "\(rows)")
                #expect(try await env.services.mail.all().first { $0.template == "verify_email" }?.status == "sent")
            }
        }
    }

    @Test("the notice of a sign-up attempt (no link) keeps to the suppressions and SendGrid's lists; the link to choose a password after a second sign-up passes them", arguments: TestDatabaseKind.all)
    func signUpAttemptNoticeKeepsToSuppressions(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings(); $0.requireEmailVerification = true }) { client, env in
                _ = try await Self.signUpAtSendGrid(client, env, at: sendGrid, email: "known@example.com")
                let now = Int(env.clock.now.timeIntervalSince1970)
                func bounce(_ email: String) async throws {
                    let body = #"[{"email":"\#(email)","event":"bounce","type":"bounce","reason":"550 no such user","sg_event_id":"ev-\#(email)","timestamp":\#(now)}]"#
                    let answer = try await client.execute(uri: "/webhooks/sendgrid", method: .post, headers: sendGrid.signedHeaders(for: body, timestamp: now), body: ByteBuffer(string: body))
                    #expect(answer.status == .ok)
                }
                func attempts(_ email: String) -> [FakeSendGrid.Received] { sendGrid.received.filter { $0.to == email && $0.category == "duplicate_registration" } }

                // Not suppressed: the notice goes, within SendGrid's lists.
                _ = try await post(client, "/api/auth/register", ["email": "known@example.com", "password": "another long passphrase"])
                await env.deliverMail()
                #expect(attempts("known@example.com").map(\.bypassesLists) == [false])
                // Bounced: a stranger's sign-up with the address mails it nothing more.
                try await bounce("known@example.com")
                _ = try await post(client, "/api/auth/register", ["email": "known@example.com", "password": "a third long passphrase"])
                await env.deliverMail()
                #expect(attempts("known@example.com").count == 1)
                let notices = try await env.services.mail.all().filter { $0.template == "duplicate_registration" }.map(\.status)
                #expect(notices.sorted() == ["sent", "suppressed"], "\(notices)")

                // An unproven address signed up for again: its owner's way to choose the password is not held back.
                #expect(try await post(client, "/api/auth/register", ["email": "unproven@example.com", "password": strongPassword]).status == .created)
                try await bounce("unproven@example.com")
                _ = try await post(client, "/api/auth/register", ["email": "unproven@example.com", "password": "another long passphrase"])
                await env.deliverMail()
                let link = attempts("unproven@example.com")
                #expect(link.count == 1 && link.allSatisfy { $0.bypassesLists && $0.text.contains("token=") }, "\(link.map(\.bypassesLists))")
            }
        }
    }

    @Test("a message left mid-send by a stopped sender, settled uncertain by the sweep, is counted under its template as every uncertain message is (FolioMailFailing)", arguments: [TestDatabaseKind.sqlite])
    func sweptUncertainCounted(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.opsToken = MetricsTests.opsToken }) { client, env in
            _ = try await post(client, "/api/auth/register", ["email": "swept@example.com", "password": strongPassword])
            try await env.database.sql.raw("UPDATE mail_messages SET status = 'sending', updated_at = \(bind: env.clock.now.addingTimeInterval(-3600))").run()
            await env.services.mailDelivery.sweep()
            #expect(try await env.services.mail.all().map(\.status) == ["uncertain"])
            let metrics = String(buffer: try await client.execute(uri: "/metrics", method: .get, headers: [.authorization: "Bearer \(MetricsTests.opsToken)"]).body)
            #expect(metrics.contains(#"folio_mails_total{template="verify_email",result="uncertain"} 1"#), "\(metrics)")
        }
    }

    @Test("a message SendGrid took, whose outcome the database could not record (neither sent nor uncertain), is not queued again and sent twice", arguments: [TestDatabaseKind.sqlite])
    func unrecordableHandover(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings() }) { client, env in
                _ = try await post(client, "/api/auth/register", ["email": "unrecorded@example.com", "password": strongPassword])
                // The database refuses every record of the outcome (a failover in the moment after SendGrid's 202).
                try await env.database.sql.raw("""
                    CREATE TRIGGER refuse_outcome BEFORE UPDATE OF status ON mail_messages WHEN NEW.status IN ('sent', 'uncertain')
                    BEGIN SELECT RAISE(ABORT, 'database gone'); END
                    """).run()
                await env.deliverMail()
                #expect(sendGrid.calls == 1)
                #expect(try await env.services.mail.all().map(\.status) == ["sending"], "left for the next attempt to settle, not queued again")
                env.clock.advance(by: 3600)
                await env.deliverMail()
                #expect(sendGrid.calls == 1, "not handed over a second time")
                // The database is back: the next attempt settles it as uncertain, still without sending.
                try await env.database.sql.raw("DROP TRIGGER refuse_outcome").run()
                env.clock.advance(by: 3600)
                await env.deliverMail()
                #expect(sendGrid.calls == 1)
                #expect(try await env.services.mail.all().map(\.status) == ["uncertain"])
            }
        }
    }

    @Test("no answer after sending (a timeout) is uncertain and never sent again; a refused connection is retried", arguments: [TestDatabaseKind.sqlite])
    func timeouts(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            // The answer comes long after the timeout; the timeout itself leaves room for a loaded machine to send.
            sendGrid.fail(.slow(seconds: 12))
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings() }, dependencies: { folio in
                folio.mailTransport = SendGridTransport(
                    settings: sendGrid.settings(), httpClient: .shared, clock: folio.clock, logger: folio.logger, metrics: nil, timeout: .seconds(5))
            }) { client, env in
                _ = try await post(client, "/api/auth/register", ["email": "late@example.com", "password": strongPassword])
                await env.deliverMail()
                env.clock.advance(by: 3600)
                await env.deliverMail()
                #expect(try await env.services.mail.all().map(\.status) == ["uncertain"])
                #expect(sendGrid.calls == 1)
            }
        }
        // Nothing listens on the port: the message never left, so it waits for another try.
        var settings = AppConfiguration.SendGridSettings(apiKey: FakeSendGrid.apiKey, from: "alerts@folio.example.com", baseURL: "http://127.0.0.1:9")
        settings.webhookPublicKey = nil
        try await withTestApp(kind, configure: { $0.sendGrid = settings }) { client, env in
            _ = try await post(client, "/api/auth/register", ["email": "nowhere@example.com", "password": strongPassword])
            await env.deliverMail()
            let row = try #require(try await env.services.mail.all().first)
            #expect(row.status == "queued" && row.attempts == 1, "\(row)")
        }
    }

    @Test("a redirect from SendGrid's endpoint is not followed (the message and the key would go elsewhere) nor taken as sent: the message waits and is sent once the endpoint answers", arguments: [TestDatabaseKind.sqlite])
    func redirectNotFollowed(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings() }) { client, env in
                sendGrid.fail(.redirect)
                _ = try await post(client, "/api/auth/register", ["email": "redirected@example.com", "password": strongPassword])
                await env.deliverMail()
                #expect(sendGrid.calls == 1, "the redirect was not followed")
                let row = try #require(try await env.services.mail.all().first)
                #expect(row.status == "queued" && row.attempts == 1, "\(row)")
                env.clock.advance(by: 3600)
                await env.deliverMail()
                #expect(try await env.services.mail.all().map(\.status) == ["sent"])
                #expect(sendGrid.calls == 2)
            }
        }
    }

    @Test("a 5xx SendGrid answered after taking the message: its processed event arrives before the retry, and the message is not sent twice", arguments: TestDatabaseKind.all)
    func serverErrorThenProcessed(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings() }) { client, env in
                sendGrid.fail(.serverError)
                _ = try await post(client, "/api/auth/register", ["email": "twice@example.com", "password": strongPassword])
                await env.deliverMail()
                let row = try #require(try await env.services.mail.all().first)
                #expect(row.status == "queued")
                let now = Int(env.clock.now.timeIntervalSince1970)
                let body = #"[{"email":"twice@example.com","event":"processed","sg_event_id":"ev-p","sg_message_id":"abc.filter0001","timestamp":\#(now),"folio_mail_id":"\#(row.id.lowercasedString)"}]"#
                let answer = try await client.execute(uri: "/webhooks/sendgrid", method: .post, headers: sendGrid.signedHeaders(for: body, timestamp: now), body: ByteBuffer(string: body))
                #expect(answer.status == .ok)
                env.clock.advance(by: 3600)
                await env.deliverMail()
                #expect(sendGrid.calls == 1, "not handed over again")
                let settled = try #require(try await env.services.mail.all().first)
                #expect(settled.status == "sent" && settled.vendorMessageID == "abc")
            }
        }
    }

    @Test("a lockout is a security notice at most once a day, however often strangers cause one", arguments: TestDatabaseKind.all)
    func lockoutNoticeOncePerDay(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.trustedProxies = ["127.0.0.1"] }, overSocket: true) { client, env in
            try await signUp(client, env, email: "owner@example.com")
            for round in 0..<3 {
                for _ in 0..<5 { _ = try await CredentialThrottleTests.login(client, from: "203.0.113.\(round + 1)", password: "guess guess guess") }
                env.clock.advance(by: 3600)
            }
            let notices = try await env.outbox(kind: "account_locked")
            #expect(notices.count == 1, "\(notices.count) lockout mails")
            let lockout = try #require(env.logs.lines.first { $0.contains("login_lockout") })
            let seconds = try #require(lockout.firstMatch(of: /"seconds":"(\d+)"/).flatMap { Int($0.output.1) })
            #expect(notices.first?.body.contains("sign-in is paused for \(LockoutAdvice.duration(seconds: seconds))") == true, "the pause the mail names is the one applied")
            #expect(notices.first?.body.contains("guessing your password") == true)
            #expect(LockoutAdvice.duration(seconds: 30) == "30 seconds" && LockoutAdvice.duration(seconds: 60) == "1 minute" && LockoutAdvice.duration(seconds: 61) == "2 minutes")
            #expect(LockoutAdvice.advice(secondFactorFailed: true, hasTwoFactor: true).contains("change it now"))
            #expect(env.logs.lines.filter { $0.contains("login_lockout") }.count >= 3, "three lockouts happened")
        }
    }

    // MARK: - Preferences

    @Test("preferences: all on by default; orders off stops order mail but keeps the notification; security cannot be turned off", arguments: TestDatabaseKind.all)
    func preferences(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "prefs@example.com")
            let defaults = try await Self.get(client, "/api/notifications/preferences", tokens)
            let list = try #require(defaults["preferences"] as? [[String: Any]])
            #expect(list.count == NoticeCategory.allCases.count && list.allSatisfy { $0["email"] as? Bool == true })
            #expect(list.first { $0["category"] as? String == "security" }?["locked"] as? Bool == true)

            let off = try await client.execute(
                uri: "/api/notifications/preferences", method: .put, headers: Self.jsonHeaders(tokens),
                body: ByteBuffer(string: #"{"email":{"orders":false}}"#))
            #expect(off.status == .ok)
            // On the audit trail, by the person: mail turned off is news that no longer reaches them.
            let changes = try await env.database.sql.raw("SELECT actor_id, details FROM audit_events WHERE action = 'security.mail_preferences_changed'").all()
            #expect(changes.count == 1)
            #expect(try changes.first?.decode(column: "actor_id", as: UUID?.self) != nil)
            #expect(try changes.first?.decode(column: "details", as: String.self).contains(#""orders":"off""#) == true)
            // A request that changes nothing records nothing.
            #expect(try await Self.put(client, "/api/notifications/preferences", #"{"email":{"orders":false,"security":true}}"#, tokens) == .ok)
            #expect(try await env.database.sql.raw("SELECT id FROM audit_events WHERE action = 'security.mail_preferences_changed'").all().count == 1)
            let security = try await client.execute(
                uri: "/api/notifications/preferences", method: .put, headers: Self.jsonHeaders(tokens),
                body: ByteBuffer(string: #"{"email":{"security":false,"nonsense":true}}"#))
            #expect(security.status == .unprocessableContent)
            let fields = try problem(security).errors?.map(\.field) ?? []
            #expect(Set(fields) == ["email.security", "email.nonsense"], "\(fields)")

            try await Self.buy(client, env, tokens)
            #expect(try await env.outbox(kind: "order_filled").isEmpty)
            let notices = try await Self.get(client, "/api/notifications", tokens)
            #expect((notices["data"] as? [[String: Any]])?.first?["kind"] as? String == "order_filled")
        }
    }

    @Test("a notification's mail carries a link that stops its category's mail without signing in, and RFC 8058's one-click headers; security and account mail have none; an altered link changes nothing", arguments: TestDatabaseKind.all)
    func unsubscribeLink(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings(); $0.publicURL = "https://folio.example.com" }) { client, env in
                let tokens = try await Self.signUpAtSendGrid(client, env, at: sendGrid, email: "stop@example.com")
                let account = try await env.firstAccount()
                let deposit = { try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "250.00"], headers: bearer(tokens)).status }
                #expect(try await deposit() == .created)
                await env.deliverMail()
                let mail = try #require(sendGrid.received.first { $0.category == "cash_deposit" })
                let header = try #require(mail.headers["List-Unsubscribe"], "\(mail.headers)")
                #expect(header.hasPrefix("<https://folio.example.com/unsubscribe?token=") && header.hasSuffix(">"), "\(header)")
                #expect(mail.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click")
                let url = String(header.dropFirst().dropLast())
                #expect(mail.text.contains("Stop cash email: \(url)") && mail.html.contains(">Stop cash email</a>"), "\(mail.text)")
                // Account mail and security notices (which cannot be turned off) have none.
                let others = sendGrid.received.filter { $0.category == "verify_email" || $0.category == "new_sign_in" }
                #expect(!others.isEmpty && others.allSatisfy { $0.headers.isEmpty && !$0.text.contains("/unsubscribe") })
                let path = String(url.dropFirst("https://folio.example.com".count))
                func cashMailed() async throws -> Bool? {
                    let list = try #require(try await Self.get(client, "/api/notifications/preferences", tokens)["preferences"] as? [[String: Any]])
                    return list.first { $0["category"] as? String == "cash" }?["email"] as? Bool
                }

                // Opening the link (as a mail scanner does) asks first and changes nothing.
                let page = try await client.execute(uri: path, method: .get, headers: [.accept: "text/html"])
                #expect(page.status == .ok && String(buffer: page.body).contains("Stop cash email?"))
                #expect(try await cashMailed() == true)
                // A link altered to another category, to security, or cut short is refused, and changes nothing.
                let token = String(path.dropFirst("/unsubscribe?token=".count))
                let parts = token.split(separator: ".").map(String.init)
                for altered in [[parts[0], "orders", parts[2]], [parts[0], "security", parts[2]], [parts[0], parts[1], String(parts[2].dropLast())]].map({ $0.joined(separator: ".") }) + ["nonsense"] {
                    let refused = try await client.execute(
                        uri: "/unsubscribe?token=\(altered)", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                        body: ByteBuffer(string: "List-Unsubscribe=One-Click"))
                    #expect(refused.status == .badRequest && (try? problem(refused).code) == "invalid_token", "\(altered)")
                }
                let preferences = try #require(try await Self.get(client, "/api/notifications/preferences", tokens)["preferences"] as? [[String: Any]])
                #expect(preferences.allSatisfy { $0["email"] as? Bool == true })

                // A mail app's one-click POST: no cookie, no sign-in; from a webmail page, another site's.
                let oneClick = try await client.execute(
                    uri: path, method: .post,
                    headers: [.contentType: "application/x-www-form-urlencoded", .origin: "https://webmail.example.net", HTTPField.Name("Sec-Fetch-Site")!: "cross-site"],
                    body: ByteBuffer(string: "List-Unsubscribe=One-Click"))
                #expect(oneClick.status == .ok, "\(String(buffer: oneClick.body))")
                #expect(try await cashMailed() == false)
                let byLink = try await env.database.sql.raw("SELECT actor_id, details FROM audit_events WHERE action = 'security.mail_preferences_changed'").all()
                // The link opened again says the mail is off already, with nothing to press.
                let again = String(buffer: try await client.execute(uri: path, method: .get, headers: [.accept: "text/html"]).body)
                #expect(again.contains("No more cash email") && !again.contains("<form method=\"post\" action=\"/unsubscribe"), "\(again)")
                let linkActor = try byLink.first?.decode(column: "actor_id", as: UUID?.self)
                #expect(byLink.count == 1 && linkActor == nil, "whoever holds the link is no known actor")
                #expect(try byLink.first?.decode(column: "details", as: String.self).contains("unsubscribe_link") == true)
                // The next deposit is a notification, not a mail.
                env.clock.advance(by: 1)
                #expect(try await deposit() == .created)
                await env.deliverMail()
                #expect(sendGrid.received.filter { $0.category == "cash_deposit" }.count == 1)
                let notices = try await Self.get(client, "/api/notifications", tokens)
                #expect((notices["data"] as? [[String: Any]])?.filter { $0["kind"] as? String == "cash_deposit" }.count == 2)

                // The page's button, in a browser signed in with a cookie: the link is the authority, no CSRF token is asked.
                #expect(try await Self.put(client, "/api/notifications/preferences", #"{"email":{"cash":true}}"#, tokens) == .ok)
                let login = try await post(client, "/api/auth/login", ["email": "stop@example.com", "password": strongPassword, "session": "cookie"])
                var browser: HTTPFields = [.cookie: String(try #require(login.headers[.setCookie]).split(separator: ";")[0])]
                browser[.contentType] = "multipart/form-data; boundary=x"
                browser[.accept] = "text/html"
                browser[.origin] = "https://folio.example.com"
                let button = try await client.execute(
                    uri: path, method: .post, headers: browser,
                    body: ByteBuffer(string: "--x\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--x--\r\n"))
                #expect(button.status == .ok && String(buffer: button.body).contains("No more cash email"), "\(String(buffer: button.body))")
                #expect(try await cashMailed() == false)
                // The route as the router matches it (a trailing slash), in another charset, from another site: the same link.
                let spelled = try await client.execute(
                    uri: path.replacingOccurrences(of: "/unsubscribe?", with: "/unsubscribe/?"), method: .post,
                    headers: [.contentType: "application/x-www-form-urlencoded; charset=iso-8859-1", HTTPField.Name("Sec-Fetch-Site")!: "cross-site"],
                    body: ByteBuffer(string: "List-Unsubscribe=One-Click"))
                #expect(spelled.status == .ok, "\(String(buffer: spelled.body))")
                // Mail already off is left as it is: a link posted again adds nothing to the audit trail.
                let linkEvents = try await env.database.sql.raw(
                    "SELECT id FROM audit_events WHERE action = 'security.mail_preferences_changed' AND details LIKE '%unsubscribe_link%'").all()
                #expect(linkEvents.count == 2, "the one-click and the button, not the third post")

                // Once the person is erased, the link brings back no preference of theirs.
                let erased = try await client.execute(
                    uri: "/api/me", method: .delete, headers: Self.jsonHeaders(tokens), body: ByteBuffer(string: #"{"password":"\#(strongPassword)"}"#))
                #expect(erased.status == .noContent)
                let afterErasure = try await client.execute(
                    uri: path, method: .post, headers: [.contentType: "application/x-www-form-urlencoded"], body: ByteBuffer(string: "List-Unsubscribe=One-Click"))
                #expect(afterErasure.status == .notFound)
                #expect(try await client.execute(uri: path, method: .get, headers: [.accept: "text/html"]).status == .notFound)
                let kept = try await env.database.sql.raw("SELECT COUNT(*) AS n FROM notification_preferences").first()?.decode(column: "n", as: Int.self)
                #expect(kept == 0)
            }
        }
    }

    @Test("a notice queued before its kind of mail was turned off, and held back by a retry since, is not sent after; one still wanted is", arguments: TestDatabaseKind.all)
    func turnedOffWhileQueued(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings() }) { client, env in
                let tokens = try await Self.signUpAtSendGrid(client, env, at: sendGrid, email: "later@example.com")
                let account = try await env.firstAccount()
                sendGrid.fail(.serverError, .serverError)
                #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "4.44"], headers: bearer(tokens)).status == .created)
                try await Self.buy(client, env, tokens)
                await env.deliverMail()
                let waiting = try await env.services.mail.all().filter { ["cash_deposit", "order_filled"].contains($0.template) }
                #expect(waiting.map(\.status) == ["queued", "queued"], "\(waiting)")
                #expect(try await Self.put(client, "/api/notifications/preferences", #"{"email":{"cash":false}}"#, tokens) == .ok)
                env.clock.advance(by: 3600)
                await env.deliverMail()
                #expect(sendGrid.received.filter { $0.category == "cash_deposit" }.isEmpty)
                #expect(sendGrid.received.filter { $0.category == "order_filled" }.count == 1)
                let deposit = try #require(try await env.services.mail.all().first { $0.template == "cash_deposit" })
                #expect(deposit.status == "suppressed" && deposit.lastError?.contains("turned off") == true, "\(deposit)")
            }
        }
    }

    @Test("an unsubscribe link signed before SECRET_KEY was rotated still works, one signed with another key does not, and security mail has none")
    func unsubscribeKeys() {
        let user = UUID()
        let old = UnsubscribeLinks(publicURL: "https://folio.example.com", secretKey: "the-old-secret", previousKeys: [])
        let rotated = UnsubscribeLinks(publicURL: "https://folio.example.com", secretKey: "the-new-secret", previousKeys: ["the-old-secret"])
        let stranger = UnsubscribeLinks(publicURL: "https://folio.example.com", secretKey: "another-secret", previousKeys: [])
        let token = old.token(for: user, .orders)
        #expect(rotated.verify(token)?.userID == user && rotated.verify(token)?.category == .orders)
        #expect(stranger.verify(token) == nil)
        #expect(old.url(for: user, .security) == nil && old.verify(old.token(for: user, .security)) == nil)
        #expect(old.url(for: user, .drift) == "https://folio.example.com/unsubscribe?token=" + old.token(for: user, .drift))
    }

    static func put(_ client: some TestClientProtocol, _ uri: String, _ body: String, _ tokens: [String: Any]) async throws -> HTTPResponse.Status {
        try await client.execute(uri: uri, method: .put, headers: jsonHeaders(tokens), body: ByteBuffer(string: body)).status
    }

    @Test("a category written with capitals is an unknown category, named as it was sent, never a required field the client did not send", arguments: TestDatabaseKind.all)
    func preferenceKeysAsWritten(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "capitals@example.com")
            for (body, field) in [(#"{"email":{"Cash":false}}"#, "email.Cash"), (#"{"email":{"ORDERS":true,"cash":false}}"#, "email.ORDERS"),
                                  (#"{"email":{"driftDigest":false}}"#, "email.driftDigest")] {
                let answer = try await client.execute(
                    uri: "/api/notifications/preferences", method: .put, headers: Self.jsonHeaders(tokens), body: ByteBuffer(string: body))
                #expect(answer.status == .unprocessableContent, "\(body)")
                let issues = try problem(answer).errors ?? []
                #expect(issues.map(\.field) == [field] && issues.map(\.code) == ["unknown_category"], "\(body): \(issues)")
            }
            // Nothing was changed by the refused requests.
            let list = try #require(try await Self.get(client, "/api/notifications/preferences", tokens)["preferences"] as? [[String: Any]])
            #expect(list.allSatisfy { $0["email"] as? Bool == true })
        }
    }

    @Test("fills of one account applied together: one notification and one mail each, in one batch; with order mail off, notifications only", arguments: TestDatabaseKind.all)
    func batchedNotices(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "batch@example.com")
            func place(_ symbols: [String]) async throws {
                for symbol in symbols {
                    let placed = try await post(client, "/api/orders", ["symbol": symbol, "quantity": 1, "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
                    #expect(placed.status == .created, "\(String(buffer: placed.body))")
                }
                // One drain: the worker claims the account's submit jobs together and applies them in one transaction.
                await env.worker.drain()
                await env.deliverMail()
            }
            try await place(["AAPL", "MSFT", "KO"])
            let mailed = try await env.outbox(kind: "order_filled")
            #expect(mailed.count == 3, "\(mailed)")
            #expect(Set(mailed.map(\.recipient)) == ["batch@example.com"])
            let first = try #require(try await Self.get(client, "/api/notifications", tokens)["data"] as? [[String: Any]])
            #expect(first.count == 3 && first.allSatisfy { $0["kind"] as? String == "order_filled" })
            #expect(Set(first.compactMap { ($0["data"] as? [String: String])?["symbol"] }) == ["AAPL", "MSFT", "KO"])

            let off = try await client.execute(
                uri: "/api/notifications/preferences", method: .put, headers: Self.jsonHeaders(tokens), body: ByteBuffer(string: #"{"email":{"orders":false}}"#))
            #expect(off.status == .ok)
            try await place(["T", "SPY"])
            #expect(try await env.outbox(kind: "order_filled").count == 3, "order mail is off: no more messages")
            let second = try #require(try await Self.get(client, "/api/notifications", tokens)["data"] as? [[String: Any]])
            #expect(second.count == 5)
            let queued = try await env.services.mail.all().filter { $0.template == "order_filled" }
            #expect(queued.count == 3, "no message row is written for a notice nobody mails")
        }
    }

    @Test("an order the broker cancels is notified with its reason and what filled, once; an order the user cancels is not", arguments: TestDatabaseKind.all)
    func systemCancel(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.paperPartialFills = true }) { client, env in
            let tokens = try await signUp(client, env, email: "cancels@example.com")
            func place(_ body: [String: Any]) async throws -> String {
                let placed = try await post(client, "/api/orders", body, headers: bearer(tokens))
                #expect(placed.status == .created, "\(String(buffer: placed.body))")
                await env.worker.drain()
                return try #require(try json(placed)["id"] as? String)
            }
            func notices() async throws -> [[String: Any]] {
                try #require(try await Self.get(client, "/api/notifications", tokens)["data"] as? [[String: Any]]).filter { $0["kind"] as? String == "order_canceled" }
            }
            // Not marketable at once: canceled by the broker, nothing filled.
            let unmarketable = try await place(["symbol": "AAPL", "quantity": 3, "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "IOC"])
            // Half fills (partial fills on), the rest is canceled in the same report: one notice, not "partly filled" and "canceled".
            let half = try await place(["symbol": "MSFT", "quantity": 4, "side": "BUY", "order_type": "MARKET", "time_in_force": "IOC"])
            let canceled = try await notices()
            #expect(canceled.count == 2, "\(canceled)")
            let byOrder = Dictionary(uniqueKeysWithValues: canceled.compactMap { notice in (notice["data"] as? [String: String]).map { ($0["order_id"] ?? "", $0) } })
            #expect(byOrder[unmarketable]?["reason"] == "not marketable at once" && byOrder[unmarketable]?["filled_quantity"] == "0")
            #expect(byOrder[half]?["reason"] == "the rest was not marketable at once" && byOrder[half]?["filled_quantity"] == "2" && byOrder[half]?["quantity"] == "4")
            let all = try #require(try await Self.get(client, "/api/notifications", tokens)["data"] as? [[String: Any]])
            #expect(!all.contains { ($0["data"] as? [String: String])?["order_id"] == half && $0["kind"] as? String != "order_canceled" }, "\(all)")
            let mailed = try await env.outbox(kind: "order_canceled")
            #expect(mailed.count == 2 && mailed.allSatisfy { $0.recipient == "cancels@example.com" })
            #expect(mailed.contains { $0.subject == "Canceled: your order to buy MSFT" && $0.body.contains("(2 of 4 filled)") && $0.body.contains("Reason: the rest was not marketable at once") })

            // The user's own cancel, of a resting order: no notice.
            let resting = try await place(["symbol": "KO", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC"])
            let deleted = try await client.execute(uri: "/api/orders/\(resting)", method: .delete, headers: bearer(tokens))
            #expect(deleted.status == .ok, "\(String(buffer: deleted.body))")
            await env.worker.drain()
            #expect(try await notices().count == 2)
            #expect(try await env.outbox(kind: "order_canceled").count == 2)
        }
    }

    @Test("an order filled in parts tells its first part and its end, not every part between; a cancel asked for after parts still tells what filled")
    func partsBetween() throws {
        let now = Date(timeIntervalSince1970: 1_795_534_200)
        let account = AccountState(id: AccountID(), userID: UserID(), cash: 100_000, reservedCash: 0)
        let draft = OrderDraft(
            symbol: "TINY", side: .buy, type: .limit, timeInForce: .goodTillCanceled, quantity: try Quantity(parsing: "4"), limitPrice: try Price(parsing: "10"))
        var books = Books(account: account, holdings: [], orders: [])
        let placed = try TradingRules.place(
            draft, orderID: OrderID(), clientOrderID: nil, account: account, holding: nil, price: try Price(parsing: "10"), marketBuyMargin: 0, now: now)
        books.record(placed)
        books.record(try #require(TradingRules.accept(placed.order!, now: now)))
        let id = placed.order!.id
        // Each part a commit of its own, as the stream brings them.
        func part(_ number: Int, _ quantity: String, finishing: Bool = false) throws -> [MailTemplate] {
            var commit = Books(account: books.account, holdings: Array(books.holdings.values), orders: Array(books.orders.values))
            let fill = BrokerFill(id: "b:\(number)", quantity: try Quantity(parsing: quantity), price: try Price(parsing: "10"))
            try commit.apply(finishing ? .filled([fill]) : .partiallyFilled([fill]), to: id, ids: .random, now: now)
            books = Books(account: commit.account, holdings: Array(commit.holdings.values), orders: Array(commit.orders.values))
            return Notifications.notices(in: commit).map(\.0)
        }
        #expect(try part(1, "1") == [.orderPartiallyFilled], "the first part: the order began to fill")
        #expect(try part(2, "1") == [], "a part between: no news")
        #expect(try part(3, "1") == [], "nor this one")
        #expect(try part(4, "1", finishing: true) == [.orderFilled], "the end says it all")

        // Two parts in, the user asks for the cancel; the broker's report brings one more part and the end: told.
        var second = Books(account: books.account, holdings: Array(books.holdings.values), orders: [])
        let again = try TradingRules.place(
            draft, orderID: OrderID(), clientOrderID: nil, account: second.account, holding: nil, price: try Price(parsing: "10"), marketBuyMargin: 0, now: now)
        second.record(again)
        second.record(try #require(TradingRules.accept(again.order!, now: now)))
        try second.apply(.partiallyFilled([BrokerFill(id: "c:1", quantity: 2, price: 10)]), to: again.order!.id, ids: .random, now: now)
        var asked = try #require(second.orders[again.order!.id])
        asked.cancelRequestedAt = now
        var last = Books(account: second.account, holdings: Array(second.holdings.values), orders: [asked])
        try last.apply(.filledThenCanceled([BrokerFill(id: "c:2", quantity: 1, price: 10)], reason: "canceled by user"), to: asked.id, ids: .random, now: now)
        let told = Notifications.notices(in: last)
        #expect(told.map(\.0) == [.orderPartiallyFilled] && told.first?.1.values["filled_quantity"] == "3", "\(told)")
    }

    @Test("one commit's notices: fills before a cancel the user asked for are told, the cancel is not; the broker's own cancel is told with what filled")
    func cancelNotices() throws {
        let now = Date(timeIntervalSince1970: 1_795_534_200)
        let account = AccountState(id: AccountID(), userID: UserID(), cash: 100_000, reservedCash: 0)
        let draft = OrderDraft(
            symbol: "TINY", side: .buy, type: .limit, timeInForce: .goodTillCanceled, quantity: try Quantity(parsing: "4"), limitPrice: try Price(parsing: "10"))
        var placing = Books(account: account, holdings: [], orders: [])
        let placed = try TradingRules.place(
            draft, orderID: OrderID(), clientOrderID: nil, account: account, holding: nil, price: try Price(parsing: "10"), marketBuyMargin: 0, now: now)
        placing.record(placed)
        placing.record(try #require(TradingRules.accept(placed.order!, now: now)))
        let accepted = try #require(placing.orders.values.first)
        let fill = BrokerFill(id: "b:1", quantity: try Quantity(parsing: "2"), price: try Price(parsing: "10"))

        func notices(_ order: OrderState) throws -> [(MailTemplate, MailVariables)] {
            var books = Books(account: placing.account, holdings: [], orders: [order])
            try books.apply(.filledThenCanceled([fill], reason: "the rest was canceled"), to: order.id, ids: .random, now: now)
            return Notifications.notices(in: books)
        }
        // The user asked earlier (a commit of its own); the broker's report brings two shares and the end.
        var asked = accepted
        asked.cancelRequestedAt = now
        let told = try notices(asked)
        #expect(told.map(\.0) == [.orderPartiallyFilled], "\(told)")
        #expect(told.first?.1.values["filled_quantity"] == "2")
        // Nobody asked: the broker canceled the rest, and says so with what filled.
        let broker = try notices(accepted)
        #expect(broker.map(\.0) == [.orderCanceled])
        #expect(broker.first?.1.values["filled_quantity"] == "2" && broker.first?.1.values["reason"] == "the rest was canceled")
        // A cancel the user makes here, in one commit, is no news.
        var own = Books(account: placing.account, holdings: [], orders: [accepted])
        own.record(try TradingRules.cancel(accepted, actor: account.userID, account: own.account, holding: nil, now: now))
        #expect(Notifications.notices(in: own).isEmpty)
    }

    @Test("a sign-in from a new device is a security notice; the same device again is not", arguments: TestDatabaseKind.all)
    func newDevice(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            _ = try await signUp(client, env, email: "device@example.com")
            #expect(try await env.outbox(kind: "new_sign_in").isEmpty, "the first sign-in is not news")
            let firefox: HTTPFields = [.userAgent: "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"]
            for _ in 0..<2 { _ = try await post(client, "/api/auth/login", ["email": "device@example.com", "password": strongPassword], headers: firefox) }
            let notices = try await env.outbox(kind: "new_sign_in")
            #expect(notices.count == 1 && notices.first?.body.contains("Firefox on Linux") == true, "the device in words, as Settings names it")
        }
    }

    // MARK: - The Event Webhook

    @Test("event webhook: a NUL in an event's text is dropped, so the batch is applied on both databases rather than failing at every retry", arguments: TestDatabaseKind.all)
    func eventWebhookNUL(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings() }) { client, env in
                let now = Int(env.clock.now.timeIntervalSince1970)
                let body = #"[{"email":"nul@example.com","event":"bounce","type":"bounce","reason":"550 no\u0000such user","sg_event_id":"ev-\u0000nul","timestamp":\#(now)}]"#
                let answer = try await client.execute(
                    uri: "/webhooks/sendgrid", method: .post, headers: sendGrid.signedHeaders(for: body, timestamp: now), body: ByteBuffer(string: body))
                #expect(answer.status == .ok)
                #expect(try json(answer)["suppressed"] as? Int == 1)
                #expect(try await env.services.mail.isSuppressed("nul@example.com"))
                let detail = try await env.database.sql.raw("SELECT detail FROM mail_suppressions").first()?.decode(column: "detail", as: String?.self)
                #expect(detail == "550 nosuch user")
            }
        }
    }

    @Test("event webhook: forged, stale, unsigned and unconfigured posts are refused; a verified bounce stops mail to the address; a replay counts once; a batch past MAX_BODY_SIZE is taken", arguments: TestDatabaseKind.all)
    func eventWebhook(kind: TestDatabaseKind) async throws {
        try await withFakeSendGrid { sendGrid in
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings() }) { client, env in
                let tokens = try await Self.signUpAtSendGrid(client, env, at: sendGrid, email: "bounce@example.com")
                let now = Int(env.clock.now.timeIntervalSince1970)
                let body = #"[{"email":"Bounce@example.com","event":"bounce","type":"bounce","reason":"550 5.1.1 no such user","sg_event_id":"ev-bounce","timestamp":\#(now)}]"#
                func send(_ headers: HTTPFields) async throws -> TestResponse {
                    try await client.execute(uri: "/webhooks/sendgrid", method: .post, headers: headers, body: ByteBuffer(string: body))
                }
                let forged = try await send(sendGrid.signedHeaders(for: body, timestamp: now, key: P256.Signing.PrivateKey()))
                let forgedCode = try problem(forged).code
                #expect(forged.status == .unauthorized && forgedCode == "webhook_unverified")
                #expect(forged.headers[.wwwAuthenticate] == "X-Twilio-Email-Event-Webhook-Signature", "a 401 names what authenticates the request")
                #expect(try await send([.contentType: "application/json"]).status == .unauthorized)
                #expect(try await send(sendGrid.signedHeaders(for: body, timestamp: now - 3600)).status == .unauthorized)
                var changed = sendGrid.signedHeaders(for: body, timestamp: now)
                changed[HTTPField.Name("X-Twilio-Email-Event-Webhook-Timestamp")!] = String(now + 1)
                #expect(try await send(changed).status == .unauthorized)
                #expect(try await env.services.mail.isSuppressed("bounce@example.com") == false)

                let verified = try await send(sendGrid.signedHeaders(for: body, timestamp: now))
                #expect(verified.status == .ok)
                #expect(try json(verified)["suppressed"] as? Int == 1)
                let replay = try await send(sendGrid.signedHeaders(for: body, timestamp: now))
                #expect(try json(replay)["duplicates"] as? Int == 1)

                let before = sendGrid.received.count
                try await Self.buy(client, env, tokens)
                await env.deliverMail()
                #expect(sendGrid.received.count == before, "nothing more goes to a bounced address")
                let statuses = try await env.services.mail.all().map { "\($0.template):\($0.status)" }
                #expect(statuses.contains("order_filled:suppressed") && statuses.contains("verify_email:sent"), "\(statuses)")
                // A reset link the person asked for is their way back in: it is not held back.
                _ = try await post(client, "/api/auth/password-reset/request", ["email": "bounce@example.com"])
                await env.deliverMail()
                #expect(sendGrid.received.contains { $0.category == "reset_password" && $0.to == "bounce@example.com" })
                let rejections = env.services.webhookRejections.all
                #expect(rejections["sendgrid:bad_signature"] == 2 && rejections["sendgrid:missing_header"] == 1 && rejections["sendgrid:stale"] == 1, "\(rejections)")
            }
            // A MAX_BODY_SIZE under SendGrid's batches does not refuse them; the API keeps it.
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings(); $0.maxBodySize = 4096 }) { client, env in
                let now = Int(env.clock.now.timeIntervalSince1970)
                let events = (1...2000).map { #"{"email":"reader\#($0)@example.com","event":"open","sg_event_id":"ev-open-\#($0)","timestamp":\#(now)}"# }
                let body = "[" + events.joined(separator: ",") + "]"
                #expect(body.utf8.count > 100_000)
                let batch = try await client.execute(
                    uri: "/webhooks/sendgrid", method: .post, headers: sendGrid.signedHeaders(for: body, timestamp: now), body: ByteBuffer(string: body))
                #expect(batch.status == .ok, "\(String(buffer: batch.body))")
                // The router takes the path with a trailing slash too; so does the allowance.
                let slashed = try await client.execute(
                    uri: "/webhooks/sendgrid/", method: .post, headers: sendGrid.signedHeaders(for: body, timestamp: now), body: ByteBuffer(string: body))
                #expect(slashed.status == .ok, "\(String(buffer: slashed.body))")
                let api = try await client.execute(
                    uri: "/api/auth/login", method: .post, headers: [.contentType: "application/json"],
                    body: ByteBuffer(string: #"{"email":"a@example.com","password":""# + String(repeating: "x", count: 5000) + #""}"#))
                #expect(api.status == .contentTooLarge)
            }
            // Without a verification key every event is refused.
            try await withTestApp(kind, configure: { $0.sendGrid = sendGrid.settings(webhookKey: false) }) { client, env in
                let now = Int(env.clock.now.timeIntervalSince1970)
                let body = #"[{"email":"x@example.com","event":"spamreport","sg_event_id":"ev-2","timestamp":\#(now)}]"#
                let answer = try await client.execute(
                    uri: "/webhooks/sendgrid", method: .post, headers: sendGrid.signedHeaders(for: body, timestamp: now), body: ByteBuffer(string: body))
                #expect(answer.status == .unauthorized)
                #expect(try await env.services.mail.isSuppressed("x@example.com") == false)
            }
        }
    }

    @Test("configuration: SendGrid needs its key and sender together; production refuses the outbox unless MAIL_BACKEND=outbox")
    func configuration() throws {
        let base = ["SECRET_KEY": "9f4b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", "DATABASE_URL": "sqlite:///tmp/x.sqlite"]
        func load(_ extra: [String: String], production: Bool = false) throws -> AppConfiguration {
            var values = base.merging(extra) { _, new in new }
            if production {
                values["ENVIRONMENT"] = "production"
                values["PUBLIC_URL"] = "https://folio.example.com"
                values["BACKUP_SCHEDULE"] = "off"
                values["ALLOWED_ORIGINS"] = "https://app.example.com"
                values["OPS_TOKEN"] = "5c0e9a7f3b1d8e2a6f4c0b9d7e3a1f5c8b2d6e0a4f9c"
                values["DATABASE_URL"] = "postgres://folio:Xk9vR2mQ7tLw4pZs@db.internal:5432/folio"
            }
            return try ConfigurationLoader.load(processEnvironment: values, envFile: nil)
        }
        #expect(try load([:]).sendGrid == nil)
        #expect(try load(["SENDGRID_API_KEY": "SG.k", "MAIL_FROM": "alerts@folio.example.com"]).sendGrid?.from == "alerts@folio.example.com")
        #expect(throws: ConfigurationError.self) { try load(["SENDGRID_API_KEY": "SG.k"]) }
        #expect(throws: ConfigurationError.self) { try load(["MAIL_FROM": "alerts@folio.example.com"]) }
        #expect(throws: ConfigurationError.self) { try load(["SENDGRID_API_KEY": "SG.k", "MAIL_FROM": "alerts@folio.example.com", "SENDGRID_WEBHOOK_PUBLIC_KEY": "not a key"]) }
        do {
            _ = try load([:], production: true)
            Issue.record("production started without mail")
        } catch let error as ConfigurationError {
            #expect(error.problems.contains { $0.contains("MAIL_BACKEND=outbox") }, "\(error.problems)")
        }
        #expect(try load(["MAIL_BACKEND": "outbox", "MARKET_DATA": "simulated"], production: true).sendGrid == nil, "the outbox on purpose")
        let secrets = try load(["SENDGRID_API_KEY": "SG.secret-value-123", "MAIL_FROM": "a@folio.example.com"]).secretValues
        #expect(secrets.contains("SG.secret-value-123"))
    }
}
