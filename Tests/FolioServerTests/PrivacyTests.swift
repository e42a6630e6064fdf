import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SQLKit
import Testing

@testable import FolioServer

/// Data lifecycle: retention, the GDPR export and erasure.
@Suite("Privacy: retention, export and erasure")
struct PrivacyTests {
    static func buy(_ client: some TestClientProtocol, _ env: TestEnvironment, _ tokens: [String: Any], symbol: String = "AAPL", quantity: Int = 2) async throws -> String {
        let placed = try await post(client, "/api/orders", ["symbol": symbol, "quantity": quantity, "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
        #expect(placed.status == .created, "\(String(buffer: placed.body))")
        await env.worker.drain()
        return try json(placed)["id"] as? String ?? ""
    }

    static func count(_ table: String, _ env: TestEnvironment, where condition: String = "1 = 1") async throws -> Int {
        try await env.database.sql.raw("SELECT COUNT(*) AS n FROM \(unsafeRaw: table) WHERE \(unsafeRaw: condition)").first()?.decode(column: "n", as: Int.self) ?? 0
    }

    /// The tables (with a count of rows) holding `text` in any column, on either database.
    static func tablesHolding(_ text: String, _ env: TestEnvironment) async throws -> [String] {
        let sql = env.database.sql
        var columnsByTable: [String: [String]] = [:]
        if env.database.kind == .sqlite {
            for table in try await sql.raw("SELECT name FROM sqlite_master WHERE type = 'table'").all().map({ try $0.decode(column: "name", as: String.self) }) {
                columnsByTable[table] = try await sql.raw("SELECT name FROM pragma_table_info(\(bind: table))").all().map { try $0.decode(column: "name", as: String.self) }
            }
        } else {
            for row in try await sql.raw("""
                SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()
                """).all() {
                columnsByTable[try row.decode(column: "table_name", as: String.self), default: []].append(try row.decode(column: "column_name", as: String.self))
            }
        }
        var found: [String] = []
        for (table, columns) in columnsByTable.sorted(by: { $0.key < $1.key }) {
            let condition = columns.map { "CAST(\"\($0)\" AS TEXT) LIKE '%\(text)%'" }.joined(separator: " OR ")
            let rows = try await sql.raw("SELECT COUNT(*) AS n FROM \"\(unsafeRaw: table)\" WHERE \(unsafeRaw: condition)").first()?.decode(column: "n", as: Int.self) ?? 0
            if rows > 0 { found.append("\(table) (\(rows))") }
        }
        return found
    }

    // MARK: - Retention

    @Test("retention: the dry run and the run agree, old data goes in batches, and the ledger, orders, fills and audit trail stay", arguments: TestDatabaseKind.all)
    func retention(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, overSocket: true) { client, env in
            let tokens = try await signUp(client, env, email: "keep@example.com")
            _ = try await Self.buy(client, env, tokens)
            let other = try await signUp(client, env, email: "other@example.com")
            _ = try await Self.buy(client, env, other, symbol: "MSFT", quantity: 1)
            #expect(try await client.execute(uri: "/api/auth/logout", method: .post, headers: bearer(other)).status == .noContent)
            let addressed = try await Self.count("audit_events", env, where: "ip IS NOT NULL AND ip_commitment IS NOT NULL")
            #expect(addressed > 0, "events recorded over a socket carry the client's address, behind a commitment")

            // Nothing is old yet.
            var retention = env.services.retention
            let now = try await retention.run(dryRun: true)
            #expect(now.filter { $0.rows > 0 && $0.policy != "idempotency_keys" }.isEmpty, "\(now)")

            let books = ["transactions", "orders", "fills", "audit_events", "accounts", "holdings"]
            var before: [String: Int] = [:]
            for table in books { before[table] = try await Self.count(table, env) }

            env.clock.advance(by: 400 * 86_400)
            retention.batchSize = 2  // several batches for the larger tables
            let dryRun = try await retention.run(dryRun: true)
            let removed = try await retention.run(dryRun: false)
            #expect(dryRun == removed, "the dry run said \(dryRun), the run did \(removed)")
            let byPolicy = Dictionary(uniqueKeysWithValues: removed.map { ($0.policy, $0.rows) })
            #expect(byPolicy["sessions"] == 2)
            #expect(byPolicy["email_tokens"] == 2)
            #expect(byPolicy["outbox_messages", default: 0] >= 2)
            #expect(byPolicy["finished_jobs", default: 0] >= 2)
            #expect(byPolicy["audit_addresses"] == addressed)
            #expect(try await Self.count("sessions", env) == 0)
            #expect(try await Self.count("refresh_tokens", env) == 0)
            #expect(try await Self.count("audit_events", env, where: "ip IS NOT NULL AND ip_commitment IS NOT NULL") == 0)
            #expect(try await Self.count("quotes", env, where: "symbol IN ('AAPL', 'MSFT')") == 2, "a held symbol keeps its last price")

            for table in books { #expect(try await Self.count(table, env) == before[table], "\(table) is never removed") }
            try await env.expectConsistent("after retention")
            let again = try await retention.run(dryRun: true)
            #expect(again.allSatisfy { $0.rows == 0 }, "\(again)")
        }
    }

    @Test("a bounce SendGrid reports after the address's owner was erased is removed a week later; an account's own suppression stays", arguments: TestDatabaseKind.all)
    func lateBounceAfterErasure(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "gone@example.com")
            try await signUp(client, env, email: "kept@example.com")
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"
            let erased = try await client.execute(uri: "/api/me", method: .delete, headers: headers, body: ByteBuffer(string: #"{"password":"\#(strongPassword)"}"#))
            #expect(erased.status == .noContent)
            for email in ["gone@example.com", "kept@example.com"] {
                try await env.services.mail.suppress(email, reason: "bounce", detail: nil, now: env.clock.now, on: env.database.sql)
            }
            var retention = env.services.retention
            env.clock.advance(by: 6 * 86_400)
            #expect(try await retention.run(dryRun: false).first { $0.policy == "unowned_mail_suppressions" }?.rows == 0)
            env.clock.advance(by: 2 * 86_400)
            retention.batchSize = 1
            #expect(try await retention.run(dryRun: false).first { $0.policy == "unowned_mail_suppressions" }?.rows == 1)
            #expect(try await !env.services.mail.isSuppressed("gone@example.com"))
            #expect(try await env.services.mail.isSuppressed("kept@example.com"))
        }
    }

    @Test("retention keeps the last quote of a symbol held, named by an open order or in an account's current targets, and removes the rest", arguments: TestDatabaseKind.all)
    func quotesKeptWhileNeeded(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "quotes@example.com")
            _ = try await Self.buy(client, env, tokens, symbol: "AAPL", quantity: 1)
            let waiting = try await post(client, "/api/orders", [
                "symbol": "MSFT", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC",
            ], headers: bearer(tokens))
            #expect(waiting.status == .created, "\(String(buffer: waiting.body))")
            await env.worker.drain()
            let account = try await env.firstAccount()
            let uri = "/api/accounts/\(account.id)/targets"
            for (symbol, cash) in [("GOOGL", "50"), ("AMZN", "60")] {
                let saved = try await RebalanceTests.put(client, uri, ["targets": [["symbol": symbol, "percent": "\(100 - Int(cash)!)"]], "cash_percent": cash], headers: bearer(tokens))
                #expect(saved.status == .ok, "\(String(buffer: saved.body))")
            }
            // Every symbol's last quote fetched now, then nothing for 40 days.
            let store = QuoteStore(database: env.database)
            for symbol in ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA"] {
                try await store.save(PriceQuote(symbol: symbol, price: Price("100")!, previousClose: nil, asOf: env.clock.now), fetchedAt: env.clock.now, source: "test")
            }
            env.clock.advance(by: 40 * 86_400)
            var retention = env.services.retention
            retention.policies = RetentionPolicy.all.filter { $0.name == "quotes" }
            let removed = try await retention.run(dryRun: false)
            #expect(removed.map(\.rows) == [2])
            let left = try await env.database.sql.raw("SELECT symbol FROM quotes ORDER BY symbol").all().map { try $0.decode(column: "symbol", as: String.self) }
            #expect(left == ["AAPL", "AMZN", "MSFT"], "held, the current target and the open order's; not the replaced target's GOOGL nor NVDA")
        }
    }

    @Test("a password change, a two-factor set-up, mail preferences or a second sign-up that began before an erasure committed write nothing back onto the erased row", arguments: TestDatabaseKind.all)
    func changesRacingErasure(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            _ = try await signUp(client, env, email: "racing@example.com")
            let identity = env.services.identity, sql = env.database.sql
            let userID = try #require(try await sql.raw("SELECT id FROM users WHERE email = 'racing@example.com'").first()?.decode(column: "id", as: UUID.self))
            // The user each change read, its checks passed, before the erasure committed.
            let readBefore = try #require(try await identity.store.user(id: userID, on: env.database.db))
            _ = try await UserAdministration(services: env.services).erase(email: "racing@example.com")
            let origin = RequestOrigin(ip: "127.0.0.1", requestID: nil, logger: env.services.logger)
            await #expect(throws: IdentityError.userErased) {
                try await identity.setPassword(user: readBefore, to: "another long passphrase 42", field: "new_password", reason: "password_changed", origin: origin)
            }
            let started = try await env.database.modelTransaction { db in
                try await identity.store.startSecondFactorSetUp(userID: userID, sealed: "sealed-secret", now: env.clock.now, on: db)
            }
            #expect(!started)
            #expect(try await !env.services.notifications.store.setPreferences([.orders: false], of: userID, now: env.clock.now))
            // A second sign-up of the address, looked up before the erasure: no new password, no link.
            try await identity.restartUnverified(readBefore, origin: origin)
            // A verification link that reached the address anyway is dead: the erased row is not marked verified.
            let link = try await env.database.modelTransaction { db in
                try await identity.createEmailToken(for: readBefore, purpose: .verifyEmail, lifetime: 3600, on: db)
            }
            await #expect(throws: FieldIssue.self) { try await identity.verifyEmail(token: link, origin: origin) }
            #expect(try await sql.raw("SELECT COUNT(*) AS n FROM email_tokens WHERE user_id = \(bind: userID) AND purpose = 'reset_password'").first()?
                .decode(column: "n", as: Int.self) == 0)
            #expect(try await sql.raw("SELECT email_verified_at FROM users WHERE id = \(bind: userID)").first()?.decode(column: "email_verified_at", as: Date?.self) == nil)
            let row = try #require(try await sql.raw("SELECT password_hash, totp_secret_sealed FROM users WHERE id = \(bind: userID)").first())
            #expect(!(try row.decode(column: "password_hash", as: String.self)).hasPrefix("$2"), "no password hash on the erased row")
            #expect(try row.decode(column: "totp_secret_sealed", as: String?.self) == nil)
            #expect(try await sql.raw("SELECT COUNT(*) AS n FROM notification_preferences WHERE user_id = \(bind: userID)").first()?.decode(column: "n", as: Int.self) == 0)
            #expect(try await sql.raw("SELECT COUNT(*) AS n FROM audit_events WHERE action = 'user.password_changed'").first()?.decode(column: "n", as: Int.self) == 0)
        }
    }

    @Test("an operator can erase someone with open orders by canceling them first, on the record; without asking, the open orders hold it back", arguments: TestDatabaseKind.all)
    func eraseCancelingOpenOrders(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "resting@example.com")
            let placed = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC"], headers: bearer(tokens))
            let id = try #require(try json(placed)["id"] as? String)
            await env.worker.drain()
            let administration = UserAdministration(services: env.services)
            do {
                _ = try await administration.erase(email: "resting@example.com")
                Issue.record("erased with an open order")
            } catch let failure as UserAdministration.Failure {
                #expect(failure.description.contains("--cancel-open-orders"), "\(failure)")
            }
            // Refused for another reason (the only administrator): nothing is canceled, nothing recorded.
            let sql = env.database.sql
            try await sql.raw("UPDATE users SET role = 'admin' WHERE email = 'resting@example.com'").run()
            do {
                _ = try await administration.erase(email: "resting@example.com", cancelingOpenOrders: true)
                Issue.record("erased the only administrator")
            } catch let failure as UserAdministration.Failure {
                #expect(failure.description.contains("only administrator"), "\(failure)")
            }
            #expect(try await sql.raw("SELECT status FROM orders WHERE id = \(bind: UUID(uuidString: id))").first()?.decode(column: "status", as: String.self) != "canceled")
            #expect(try await sql.raw("SELECT COUNT(*) AS n FROM audit_events WHERE action = 'admin.orders_canceled_for_erasure'").first()?.decode(column: "n", as: Int.self) == 0)
            try await sql.raw("UPDATE users SET role = 'user' WHERE email = 'resting@example.com'").run()
            let erased = try await administration.erase(email: "resting@example.com", cancelingOpenOrders: true)
            let status = try await sql.raw("SELECT status FROM orders WHERE id = \(bind: UUID(uuidString: id))").first()?.decode(column: "status", as: String.self)
            #expect(status == "canceled")
            #expect(try await sql.raw("SELECT erased_at FROM users WHERE id = \(bind: erased.userID)").first()?.decode(column: "erased_at", as: Date?.self) != nil)
            let recorded = try await sql.raw("SELECT COUNT(*) AS n FROM audit_events WHERE action = 'admin.orders_canceled_for_erasure'").first()?.decode(column: "n", as: Int.self)
            #expect(recorded == 1)
            // The cancel is the operator's doing, not the person's: its event names no actor.
            let actors = try await sql.raw("SELECT actor_id FROM audit_events WHERE action = 'order.cancel_requested' AND lower(subject_id) = \(bind: id.lowercased())")
                .all().map { try $0.decode(column: "actor_id", as: UUID?.self) }
            #expect(actors == [nil])
            let reason = try await sql.raw("SELECT reject_reason FROM orders WHERE id = \(bind: UUID(uuidString: id))").first()?.decode(column: "reject_reason", as: String?.self)
            #expect(reason == "canceled by an operator")
            try await env.expectConsistent()
        }
    }

    @Test("erased_at set by hand (no erasure in the trail) does not excuse addresses cleared early", arguments: TestDatabaseKind.all)
    func erasureColumnAlone(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, overSocket: true) { client, env in
            try await signUp(client, env, email: "pretend-erased@example.com")
            let sql = env.database.sql
            let user = try #require(try await sql.raw("SELECT id FROM users WHERE email = 'pretend-erased@example.com'").first()?.decode(column: "id", as: UUID.self))
            try await sql.raw("UPDATE audit_events SET ip = NULL, ip_salt = NULL WHERE user_id = \(bind: user) AND ip IS NOT NULL").run()
            #expect(try await env.auditBreak()?.contains("cleared before its time") == true)
            try await sql.raw("UPDATE users SET erased_at = \(bind: env.clock.now) WHERE id = \(bind: user)").run()
            let found = try await env.auditBreak()
            #expect(found?.contains("cleared before its time and not by an erasure") == true, "\(found ?? "intact")")
        }
    }

    @Test("the audit trail still refuses every change but clearing a committed address, and a changed address breaks its link", arguments: TestDatabaseKind.all)
    func auditAddresses(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, overSocket: true) { client, env in
            try await signUp(client, env, email: "addressed@example.com")
            let sql = env.database.sql
            let row = try #require(try await sql.raw("SELECT id FROM audit_events WHERE ip_commitment IS NOT NULL LIMIT 1").first())
            let id = try row.decode(column: "id", as: UUID.self)
            for change in ["details = '{}'", "ip = '10.0.0.1'", "ip_commitment = NULL, ip = NULL, ip_salt = NULL", "ip = NULL"] {
                await #expect(throws: (any Error).self, "\(change)") {
                    try await sql.raw("UPDATE audit_events SET \(unsafeRaw: change) WHERE id = \(bind: id)").run()
                }
            }
            await #expect(throws: (any Error).self) { try await sql.raw("DELETE FROM audit_events WHERE id = \(bind: id)").run() }
            try await sql.raw("UPDATE audit_events SET ip = NULL, ip_salt = NULL WHERE id = \(bind: id)").run()
            // Cleared within the year, with no erasure behind it: someone hid an address.
            let early = try await env.auditBreak()
            #expect(early?.contains("cleared before its time") == true, "\(early ?? "intact")")
            env.clock.advance(by: 366 * 86_400)
            try await env.expectConsistent("an address cleared a year on")

            // Behind a dropped guard, a different address no longer opens the commitment.
            if kind == .sqlite {
                try await sql.raw("DROP TRIGGER audit_events_no_update").run()
            } else {
                try await sql.raw("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only").run()
            }
            let other = try #require(try await sql.raw("SELECT id, ip_salt FROM audit_events WHERE ip IS NOT NULL AND ip_commitment IS NOT NULL LIMIT 1").first())
            try await sql.raw("UPDATE audit_events SET ip = '203.0.113.9' WHERE id = \(bind: try other.decode(column: "id", as: UUID.self))").run()
            let broken = try await env.auditBreak()
            #expect(broken?.contains("its address does not match the chain's commitment") == true, "\(broken ?? "intact")")
        }
    }

    // MARK: - Export

    @Test("the export holds the user's profile, orders, ledger and audit events, and nothing of another user or any secret", arguments: TestDatabaseKind.all)
    func export(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "exporter@example.com")
            let order = try await Self.buy(client, env, tokens)
            let stranger = try await signUp(client, env, email: "stranger@example.com")
            let strangerOrder = try await Self.buy(client, env, stranger, symbol: "MSFT", quantity: 3)
            let strangerID = try #require((try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(stranger))))["id"] as? String)
            // Someone (anyone) fails to sign in as the exporter: an event about them, not by them.
            #expect(try await post(client, "/api/auth/login", ["email": "exporter@example.com", "password": "not the password at all"]).status == .unauthorized)
            let failed = try await env.database.sql.raw("SELECT actor_id, user_id FROM audit_events WHERE action = 'security.login_failed'").all()
            #expect(failed.count == 1)
            #expect(try failed.first?.decodeNil(column: "actor_id") == true && failed.first?.decodeNil(column: "user_id") == false, "no actor: the attempt may be anyone's")

            let response = try await client.execute(uri: "/api/me/export", method: .get, headers: bearer(tokens))
            #expect(response.status == .ok)
            #expect(response.headers[.contentDisposition]?.hasPrefix("attachment; filename=\"folio-export-") == true)
            let text = String(buffer: response.body)
            let export = try json(response)
            #expect(export["format"] as? String == "folio-export-v2")
            let profile = try #require(export["profile"] as? [String: Any])
            #expect(profile["email"] as? String == "exporter@example.com")
            #expect(profile["failed_login_count"] is Int && profile.keys.contains("locked_until"), "the sign-in counter and lock of the account: \(profile)")
            let sections = try #require(export["sections"] as? [String: Any])
            func rows(_ name: String) -> [[String: Any]] { ((sections[name] as? [String: Any])?["rows"] as? [[String: Any]]) ?? [] }
            #expect(rows("orders").map { $0["id"] as? String } == [order])
            #expect(rows("orders").first?["quantity"] as? String == "2")
            let ledger = rows("ledger")
            #expect(ledger.contains { $0["type"] as? String == "buy" && $0["order_id"] as? String == order })
            #expect(ledger.contains { $0["type"] as? String == "deposit" })
            #expect(rows("fills").count == 1)
            #expect(rows("accounts").count == 1)
            #expect(rows("sessions").count == 1)
            #expect(rows("audit_events").contains { $0["action"] as? String == "security.login_succeeded" })
            #expect(rows("audit_events").contains { $0["action"] as? String == "security.login_failed" && ($0["ip"] == nil || $0["ip"] is NSNull) })
            #expect(!rows("notifications").isEmpty)
            // What Folio stored as JSON is JSON in the file, not a string of it.
            #expect(rows("audit_events").contains { $0["details"] is [String: Any] }, "\(rows("audit_events").map { $0["details"] ?? "" })")
            #expect(rows("audit_events").allSatisfy { !($0["details"] is String) })
            for section in PersonalDataExport.sections { #expect(sections[section.name] != nil, "section \(section.name)") }
            // What is stored about the person's sign-in secrets, without the secrets: when each was made and used.
            #expect(rows("session_renewals").count == 1 && rows("session_renewals").first?["created_at"] is String, "\(rows("session_renewals"))")
            #expect(rows("email_links").contains { $0["purpose"] as? String == "verify_email" }, "\(rows("email_links"))")
            #expect(rows("orders").first?["reserved_cash"] as? String == "0.00" && rows("orders").first?.keys.contains("sent_at") == true, "\(rows("orders"))")

            for foreign in ["stranger@example.com", strangerOrder, strangerID, "MSFT"] {
                #expect(!text.contains(foreign), "the export leaks \(foreign)")
            }
            for secret in ["password_hash", "$2b$", "totp_secret", "token_hash", "sealed"] {
                #expect(!text.contains(secret), "the export holds \(secret)")
            }
            let anonymous = try await client.execute(uri: "/api/me/export", method: .get)
            #expect(anonymous.status == .unauthorized)

            // An operator's export (`folio users export`) for someone who cannot sign in: the same data, audited as the operator's.
            let collected = NIOLockedValueBox<[UInt8]>([])
            _ = try await UserAdministration(services: env.services).export(email: "EXPORTER@example.com") { bytes in collected.withLockedValue { $0 += bytes } }
            let byOperator = try #require(try JSONSerialization.jsonObject(with: Data(collected.withLockedValue { $0 })) as? [String: Any])
            #expect(byOperator["complete"] as? Bool == true)
            #expect((byOperator["profile"] as? [String: Any])?["email"] as? String == "exporter@example.com")
            let operatorRows = ((byOperator["sections"] as? [String: Any])?["orders"] as? [String: Any])?["rows"] as? [[String: Any]]
            #expect(operatorRows?.map { $0["id"] as? String } == [order])
            let audited = try await env.database.sql.raw("SELECT actor_id FROM audit_events WHERE action = 'admin.personal_data_exported'").all()
            #expect(audited.count == 1)
            let noActor = try audited.first?.decodeNil(column: "actor_id")
            #expect(noActor == true, "no user acted: the command line did")
        }
    }

    @Test("the export is one snapshot: each account's cash is the sum of the ledger rows it lists, while deposits land", arguments: TestDatabaseKind.all)
    func exportSnapshot(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "snapshot@example.com")
            let account = try #require(try await accounts(client, tokens).first?["id"] as? String)
            let me = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)))
            let userID = UserID(try #require((me["id"] as? String).flatMap { UUID(uuidString: $0) }))
            func consistent(_ export: [String: Any]) throws -> Bool {
                let sections = try #require(export["sections"] as? [String: Any])
                func rows(_ name: String) -> [[String: Any]] { ((sections[name] as? [String: Any])?["rows"] as? [[String: Any]]) ?? [] }
                let cash = try #require(rows("accounts").first?["cash"] as? String)
                let sum = rows("ledger").compactMap { ($0["amount"] as? String).flatMap { Decimal(string: $0) } }.reduce(Decimal(0), +)
                return Decimal(string: cash) == sum
            }
            // Taken, then read after a deposit: the file is what the database held when it was taken.
            let snapshot = try await env.services.personalData.snapshot(of: userID)
            #expect(try await post(client, "/api/accounts/\(account)/deposits", ["amount": "7.00"], headers: bearer(tokens)).status == .created)
            let collected = NIOLockedValueBox<[UInt8]>([])
            try await snapshot.copy { bytes in collected.withLockedValue { $0 += bytes } }
            let taken = try #require(try JSONSerialization.jsonObject(with: Data(collected.withLockedValue { $0 })) as? [String: Any])
            #expect(try consistent(taken))
            let ledger = (((taken["sections"] as? [String: Any])?["ledger"] as? [String: Any])?["rows"] as? [[String: Any]]) ?? []
            #expect(!ledger.isEmpty && !ledger.contains { $0["amount"] as? String == "7.00" }, "\(ledger)")
            // Exports taken while deposits land each add up.
            let headers = bearer(tokens)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for _ in 0..<40 { _ = try await post(client, "/api/accounts/\(account)/deposits", ["amount": "1.00"], headers: headers) }
                }
                for _ in 0..<8 {
                    let export = try json(try await client.execute(uri: "/api/me/export", method: .get, headers: bearer(tokens)))
                    #expect(try consistent(export))
                }
                try await group.waitForAll()
            }
        }
    }

    @Test("the export holds the outbox's mail (not its text), the sign-in counters (an address only where the user signed in from it) and the answers kept for idempotency keys", arguments: TestDatabaseKind.all)
    func exportCountersOutboxAndKeptAnswers(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.trustedProxies = ["127.0.0.1"] }, overSocket: true) { client, env in
            try await signUp(client, env, email: "counted@example.com")
            let from = { (address: String) -> HTTPFields in [HTTPField.Name("X-Forwarded-For")!: address] }
            let stranger = "203.0.113.77", owner = "198.51.100.42"
            #expect(try await post(client, "/api/auth/login", ["email": "counted@example.com", "password": "a wrong guess here"], headers: from(stranger)).status == .unauthorized)
            #expect(try await post(client, "/api/auth/login", ["email": "counted@example.com", "password": "another wrong guess"], headers: from(owner)).status == .unauthorized)
            let signedIn = try await post(client, "/api/auth/login", ["email": "counted@example.com", "password": strongPassword], headers: from(owner))
            #expect(signedIn.status == .ok)
            let tokens = try json(signedIn)
            var keyed = bearer(tokens)
            keyed[HTTPField.Name("Idempotency-Key")!] = "export-key-1"
            let placed = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET"], headers: keyed)
            #expect(placed.status == .created)
            let orderID = try #require(try json(placed)["id"] as? String)

            let export = try json(try await client.execute(uri: "/api/me/export", method: .get, headers: bearer(tokens)))
            let sections = try #require(export["sections"] as? [String: Any])
            func rows(_ name: String) -> [[String: Any]] { ((sections[name] as? [String: Any])?["rows"] as? [[String: Any]]) ?? [] }

            let outbox = rows("outbox")
            #expect(!outbox.isEmpty, "the verification mail at least")
            #expect(outbox.allSatisfy {
                $0["recipient"] as? String == "counted@example.com" && ($0["subject"] as? String)?.isEmpty == false && $0["body"] == nil && $0["html"] == nil
            }, "\(outbox)")

            let failures = rows("sign_in_failures")
            #expect(failures.filter { $0["client"] is String }.allSatisfy { $0["succeeded_at"] is String }, "an address is shown only where a sign-in succeeded: \(failures)")
            #expect(failures.contains { $0["client"] as? String == owner && $0["succeeded_at"] is String })
            #expect(failures.contains { ($0["client"] == nil || $0["client"] is NSNull) && $0["failures"] as? Int == 1 }, "the stranger's address stays out")
            #expect(!String(describing: export).contains(stranger))

            let kept = rows("idempotency_keys")
            #expect(kept.count == 1)
            #expect(kept.first?["key"] as? String == "export-key-1")
            #expect(kept.first?["response_status"] as? Int == 201)
            #expect((kept.first?["response_body"] as? [String: Any])?["id"] as? String == orderID, "the kept answer is JSON in the file")
            #expect(kept.first?["request_hash"] == nil)
        }
    }

    @Test("erasure clears the client_order_id a person gave an order (free text that may name them); the books and the audit chain still verify", arguments: TestDatabaseKind.all)
    func erasureClearsClientOrderIDs(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "named@example.com")
            let placed = try await post(
                client, "/api/orders", ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET", "client_order_id": "pia-jansen-001"], headers: bearer(tokens))
            #expect(placed.status == .created)
            await env.worker.drain()
            #expect(try await Self.count("orders", env, where: "client_order_id = 'pia-jansen-001'") == 1)
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"
            let erased = try await client.execute(uri: "/api/me", method: .delete, headers: headers, body: ByteBuffer(string: #"{"password": "\#(strongPassword)"}"#))
            #expect(erased.status == .noContent)
            #expect(try await Self.tablesHolding("pia-jansen", env).isEmpty)
            #expect(try await Self.count("orders", env) == 1, "the order itself stays")
            try await env.expectConsistent("after the erasure")
        }
    }

    @Test("mail an erasure removed while it was being kept in the outbox is not kept; another person's copy to the same address is not in the export", arguments: TestDatabaseKind.all)
    func outboxAfterErasure(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "again@example.com")
            let myID = try #require(try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)))["id"] as? String)
            let me = try #require(UUID(uuidString: myID))
            func kept() async throws -> Int {
                try await env.database.sql.raw("SELECT COUNT(*) AS n FROM outbox_messages").first()?.decode(column: "n", as: Int.self) ?? -1
            }
            // Claimed for sending; an erasure then removes it before the outbox keeps its copy.
            let mail = env.services.mail, id = UUID()
            try await mail.insert(
                id: id, userID: me, notificationID: nil, recipient: "again@example.com", template: .orderFilled, variables: MailVariables([:]), now: env.clock.now,
                on: env.database.sql)
            #expect(try await mail.claim(id, now: env.clock.now) != nil)
            try await env.database.sql.raw("DELETE FROM mail_messages WHERE id = \(bind: id)").run()
            let before = try await kept()
            let rendered = RenderedMail(
                id: id, userID: me, recipient: "again@example.com", template: .orderFilled, subject: "Order filled", text: "AAPL", html: "<p>AAPL</p>",
                passesSuppressions: false)
            let clock = env.clock
            try await OutboxTransport(clock: clock.clock, logger: Logger(label: "test")).send(rendered, database: env.database) { vendorID in
                mail.settling(id, as: .sent, vendorMessageID: vendorID, now: clock.now)
            }
            #expect(try await kept() == before, "nothing kept for a message no longer being sent")

            // A copy kept for another person (one erased before this address was taken again) is theirs, not this person's.
            let other = try await signUp(client, env, email: "before@example.com")
            let otherText = try #require(try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(other)))["id"] as? String)
            let otherID = try #require(UUID(uuidString: otherText))
            try await env.database.sql.raw("""
                INSERT INTO outbox_messages (id, user_id, recipient, subject, body, kind, created_at)
                VALUES (\(bind: UUID()), \(bind: otherID), 'again@example.com', 'Deposit of $1.00 received', 'cash', 'cash_deposit', \(bind: env.clock.now))
                """).run()
            let export = try json(try await client.execute(uri: "/api/me/export", method: .get, headers: bearer(tokens)))
            let outbox = (((export["sections"] as? [String: Any])?["outbox"] as? [String: Any])?["rows"] as? [[String: Any]]) ?? []
            #expect(!outbox.isEmpty, "the verification mail at least")
            #expect(!outbox.contains { $0["subject"] as? String == "Deposit of $1.00 received" }, "\(outbox)")
        }
    }

    @Test("the export holds the orders of each rebalance run, the address's mail suppression, and an administrator's actions on others with their address but not the other person's details", arguments: TestDatabaseKind.all)
    func exportRebalanceOrdersSuppressionAndAdminActions(kind: TestDatabaseKind) async throws {
        // Over a socket, so requests come from an address.
        try await withTestApp(kind, overSocket: true) { client, env in
            let tokens = try await signUp(client, env, email: "rebalancer@example.com")
            let account = try await env.firstAccount()
            try await RebalanceTests.buy(client, env, tokens, "AAPL", 300)
            #expect(try await RebalanceTests.put(client, "/api/accounts/\(account.id)/targets", RebalanceTests.targets, headers: bearer(tokens)).status == .ok)
            var keyed = bearer(tokens)
            keyed[Idempotency.header] = "export-rebalance"
            let started = try json(try await post(client, "/api/portfolio/rebalance", ["execute": true], headers: keyed))
            let run = try await RebalanceTests.finish(client, env, tokens, run: try #require(started["id"] as? String))
            let runOrders = try #require(run["orders"] as? [[String: Any]])
            try await env.database.sql.raw("""
                INSERT INTO mail_suppressions (email, reason, detail, created_at) VALUES ('rebalancer@example.com', 'bounce', '550 mailbox unavailable', \(bind: Date()))
                """).run()

            try await UserAdministration(services: env.services).createAdmin(email: "root@example.com", password: strongPassword)
            let admin = try json(try await post(client, "/api/auth/login", ["email": "root@example.com", "password": strongPassword]))
            let member = try await signUp(client, env, email: "member@example.com")
            let memberID = try #require(try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(member)))["id"] as? String)
            #expect(try await client.execute(uri: "/api/admin/users/\(memberID)/disable", method: .post, headers: bearer(admin)).status == .ok)
            #expect(try await client.execute(uri: "/api/admin/users/\(memberID)/enable", method: .post, headers: bearer(admin)).status == .ok)
            // Disabling ended the member's sessions.
            let member2 = try json(try await post(client, "/api/auth/login", ["email": "member@example.com", "password": strongPassword]))

            func sections(_ tokens: [String: Any]) async throws -> [String: Any] {
                try #require(try json(try await client.execute(uri: "/api/me/export", method: .get, headers: bearer(tokens)))["sections"] as? [String: Any])
            }
            func rows(_ sections: [String: Any], _ name: String) -> [[String: Any]] { ((sections[name] as? [String: Any])?["rows"] as? [[String: Any]]) ?? [] }
            let mine = try await sections(tokens)
            let placed = rows(mine, "rebalance_orders")
            #expect(placed.count == runOrders.count && !placed.isEmpty, "\(placed) against \(runOrders)")
            #expect(Set(placed.compactMap { $0["order_id"] as? String }) == Set(runOrders.compactMap { $0["order_id"] as? String }))
            #expect(placed.allSatisfy { $0["run_id"] as? String == started["id"] as? String && ["sell", "buy"].contains($0["phase"] as? String) && $0["round"] is Int })
            // Percentages as the API writes them (RebalanceTests.targets: cash 5, a weight of 30).
            #expect(rows(mine, "target_allocations").first?["cash_percent"] as? String == "5", "\(rows(mine, "target_allocations"))")
            #expect(rows(mine, "target_weights").contains { $0["symbol"] as? String == "MSFT" && $0["percent"] as? String == "30" }, "\(rows(mine, "target_weights"))")
            let suppression = rows(mine, "mail_suppression")
            #expect(suppression.count == 1 && suppression.first?["reason"] as? String == "bounce" && suppression.first?["detail"] as? String == "550 mailbox unavailable")

            let administrators = try await sections(admin)
            #expect(rows(administrators, "rebalance_orders").isEmpty && rows(administrators, "mail_suppression").isEmpty, "nothing of another person's")
            let acted = rows(administrators, "audit_events").filter { ["admin.user_disabled", "admin.user_enabled"].contains($0["action"] as? String) }
            #expect(acted.count == 2, "what they did as an administrator: \(rows(administrators, "audit_events").map { $0["action"] ?? "" })")
            #expect(acted.allSatisfy { $0["subject_id"] as? String == memberID && $0["ip"] is String }, "with the administrator's own address: \(acted)")
            #expect(acted.allSatisfy { $0["details"] == nil || $0["details"] is NSNull }, "not the details of an event about someone else")
            // The member's export has the same events as about them, without the administrator's address.
            let members = rows(try await sections(member2), "audit_events").filter { ($0["action"] as? String)?.hasPrefix("admin.user_") == true }
            #expect(members.count == 2 && members.allSatisfy { $0["ip"] == nil || $0["ip"] is NSNull }, "\(members)")
        }
    }

    // MARK: - Erasure

    @Test("erasure: the password is checked, the email is gone from every table, the books and the audit chain still verify, and sign-in fails", arguments: TestDatabaseKind.all)
    func erasure(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, overSocket: true) { client, env in
            let email = "leaving@example.com"
            let tokens = try await signUp(client, env, email: email)
            _ = try await Self.buy(client, env, tokens)
            let stays = try await signUp(client, env, email: "stays@example.com")
            _ = try await Self.buy(client, env, stays, symbol: "MSFT", quantity: 1)
            let me = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)))
            let userID = try #require(me["id"] as? String)
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"

            // A resting order blocks erasure: it would go on moving money for no one.
            let limit = try await post(
                client, "/api/orders", ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00"], headers: bearer(tokens))
            #expect(limit.status == .created)
            await env.worker.drain()
            let blocked = try await client.execute(
                uri: "/api/me", method: .delete, headers: headers, body: ByteBuffer(string: #"{"password": "\#(strongPassword)"}"#))
            #expect(blocked.status == .conflict)
            let blockedProblem = try problem(blocked)
            #expect(blockedProblem.code == "open_orders")
            let limitID = try #require(try json(limit)["id"] as? String)
            let canceled = try await client.execute(uri: "/api/orders/\(limitID)", method: .delete, headers: bearer(tokens))
            #expect(canceled.status.code < 300, "\(String(buffer: canceled.body))")
            await env.worker.drain()
            let after = try await client.execute(uri: "/api/orders/\(limitID)", method: .get, headers: bearer(tokens))
            #expect(try json(after)["status"] as? String == "canceled", "\(String(buffer: after.body))")

            let addressedOfUser = { () async throws -> Int in
                let id = try #require(UUID(uuidString: userID))
                return try await env.database.sql.raw("""
                    SELECT COUNT(*) AS n FROM audit_events WHERE user_id = \(bind: id) AND ip IS NOT NULL AND ip_commitment IS NOT NULL
                    """).first()?.decode(column: "n", as: Int.self) ?? 0
            }
            let addressedBefore = try await addressedOfUser()
            #expect(addressedBefore > 0, "the person's events carry their address until the erasure")

            let wrong = try await client.execute(uri: "/api/me", method: .delete, headers: headers, body: ByteBuffer(string: #"{"password": "not it at all"}"#))
            #expect(wrong.status == .unprocessableContent)
            let wrongProblem = try problem(wrong)
            #expect(wrongProblem.errors?.first?.field == "password")
            #expect(try await Self.tablesHolding(email, env) != [])

            let erased = try await client.execute(
                uri: "/api/me", method: .delete, headers: headers, body: ByteBuffer(string: #"{"password": "\#(strongPassword)"}"#))
            #expect(erased.status == .noContent, "\(String(buffer: erased.body))")
            guard erased.status == .noContent else { return }

            let holding = try await Self.tablesHolding(email, env)
            #expect(holding.isEmpty, "the address is still in \(holding)")
            let addressedAfter = try await addressedOfUser()
            #expect(addressedAfter == 0, "the erasure clears the addresses of the person's events")
            #expect(try await Self.count("transactions", env) > 0)
            try await env.expectConsistent("after erasure")
            let events = try await env.database.sql.raw("SELECT action FROM audit_events WHERE action = 'user.erased'").all()
            #expect(events.count == 1)
            // Sign-in times are kept "until erasure" (PRIVACY.md): the pseudonymous row keeps when it was made and erased only.
            let row = try #require(try await env.database.sql.raw("""
                SELECT last_sign_in_at, password_changed_at, erased_at, failed_login_count FROM users WHERE erased_at IS NOT NULL
                """).first())
            #expect(try row.decode(column: "last_sign_in_at", as: Date?.self) == nil)
            #expect(try row.decode(column: "password_changed_at", as: Date.self) == row.decode(column: "erased_at", as: Date.self), "the password went then")
            #expect(try row.decode(column: "failed_login_count", as: Int.self) == 0)

            let login = try await post(client, "/api/auth/login", ["email": email, "password": strongPassword])
            #expect(login.status == .unauthorized)
            // Signing in as the pseudonym is signing in as no one: the unknown address's path (its bcrypt, its record), not a
            // quicker refusal that would tell the id was a person's.
            let pseudonym = "erased-\(userID.lowercased())@erased.invalid"
            let unknownAddresses = { () async throws -> Int in
                try await env.database.sql.raw("SELECT details FROM audit_events WHERE action = 'security.login_failed'")
                    .all(decodingColumn: "details", as: String.self).filter { $0.contains("unknown_email") }.count
            }
            let before = try await unknownAddresses()
            #expect(try await post(client, "/api/auth/login", ["email": pseudonym, "password": strongPassword]).status == .unauthorized)
            #expect(try await unknownAddresses() == before + 1, "refused as an unknown address is")
            let old = try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(tokens))
            #expect(old.status == .unauthorized)
            // The other user is untouched.
            let theirs = try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(stays))
            #expect(theirs.status == .ok)
            // The address is free again: the person may come back as someone new.
            let again = try await post(client, "/api/auth/register", ["email": email, "password": strongPassword])
            #expect(again.status == .created)
            // An operator's export of the erased person (by the id the audit trail names) has nothing to give.
            await #expect(throws: UserAdministration.Failure.self) {
                try await UserAdministration(services: env.services).export(email: userID) { _ in }
            }
        }
    }

    @Test("erasure closes the person's accounts in its commit: their own moves find no account, an operator's posting still reaches the books", arguments: TestDatabaseKind.all)
    func erasureClosesAccounts(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "closing@example.com")
            let stays = try await signUp(client, env, email: "still-here@example.com")
            // Both hold shares far from their targets: the daily drift digest has news for each, while both are here.
            for person in [tokens, stays] {
                _ = try await Self.buy(client, env, person, symbol: "AAPL", quantity: 100)
                let me = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(person)))
                let id = try #require((me["id"] as? String).flatMap(UserID.init))
                let account = try #require(try await env.services.store.defaultAccountID(of: id, on: env.database.sql))
                let set = try await RebalanceTests.put(
                    client, "/api/accounts/\(account)/targets", ["targets": [["symbol": "VTI", "percent": "90"]], "cash_percent": "10"], headers: bearer(person))
                #expect(set.status == .ok, "\(String(buffer: set.body))")
            }
            let me = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)))
            let userID = try #require((me["id"] as? String).flatMap(UserID.init))
            let accountID = try #require(try await env.services.store.defaultAccountID(of: userID, on: env.database.sql))
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"
            let erased = try await client.execute(uri: "/api/me", method: .delete, headers: headers, body: ByteBuffer(string: #"{"password": "\#(strongPassword)"}"#))
            #expect(erased.status == .noContent, "\(String(buffer: erased.body))")
            #expect(try await Self.count("accounts", env, where: "closed_at IS NOT NULL") == 1)

            // What a request of theirs that authenticated just before the erasure would do next.
            let accounts = env.services.accounts
            await #expect(throws: TradingError.accountNotFound) {
                try await env.database.transaction { db in
                    _ = try await accounts.move(.deposit, amount: 10, description: nil, account: accountID, owner: userID, actor: userID, context: .none, on: db)
                }
            }
            // An operator's posting (a dividend on shares still held) is not the person's move: the books take it.
            _ = try await env.database.transaction { db in
                try await accounts.move(.dividend, amount: 10, description: "dividend", symbol: "AAPL", account: accountID, owner: nil, actor: nil, context: .none, on: db)
            }
            try await env.expectConsistent("after a posting to a closed account")
            // The digest goes to the person still here, and to no one for the closed account.
            try await env.services.rebalancing.sendDriftDigests(day: TradingDay(env.clock.now), notifications: env.services.notifications)
            let digests = try await env.outbox(kind: "drift_digest")
            #expect(digests.map(\.recipient) == ["still-here@example.com"])
            #expect(try await Self.count("notifications", env, where: "kind = 'drift_digest'") == 1)
        }
    }

    @Test(
        "PostgreSQL: an order waiting for the account's lock while an erasure holds it is refused when the erasure commits, and none is written",
        .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func placementWaitingThroughErasure() async throws {
        try await withTestApp(.postgres) { client, env in
            let tokens = try await signUp(client, env, email: "racing@example.com")
            let me = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)))
            let userID = try #require((me["id"] as? String).flatMap(UserID.init))
            let store = env.services.store, clock = env.clock, sql = env.database.sql
            let accountID = try #require(try await store.defaultAccountID(of: userID, on: sql))
            let headers = bearer(tokens)
            // The erasure's transaction, as it runs: the account's row locked first, closed before the commit.
            let placing = try await env.database.transaction { db -> Task<TestResponse, any Error> in
                _ = try await store.lockAccount(accountID, owner: nil, on: db)
                let placing = Task { try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET"], headers: headers) }
                try await env.eventuallyWaitingForLock("the order waits for the account's lock", statementHolding: "FROM accounts")
                try await store.closeAccounts(of: userID, now: clock.now, on: db)
                return placing
            }
            let answer = try await placing.value
            #expect(answer.status == .notFound, "\(String(buffer: answer.body))")
            #expect(try await Self.count("orders", env) == 0)
        }
    }

    @Test("nothing new is made for an erased person: an account opened for them (a brokerage link's) is refused", arguments: TestDatabaseKind.all)
    func nothingNewAfterErasure(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "gone@example.com")
            let me = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)))
            let userID = try #require((me["id"] as? String).flatMap(UserID.init))
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"
            let erased = try await client.execute(uri: "/api/me", method: .delete, headers: headers, body: ByteBuffer(string: #"{"password": "\#(strongPassword)"}"#))
            #expect(erased.status == .noContent)
            let ledger = env.services.ledger
            await #expect(throws: IdentityError.userNotFound) {
                try await env.database.transaction { db in
                    try await ledger.openAccount(
                        for: userID, kind: "brokerage", name: "Alpaca paper ····1234", startingCash: 10, cashDescription: "Cash at Alpaca when linked",
                        details: [:], context: .none, on: db)
                }
            }
            let open = try await env.database.sql.raw("SELECT COUNT(*) AS n FROM accounts WHERE user_id = \(bind: userID) AND closed_at IS NULL").first()?
                .decode(column: "n", as: Int.self)
            #expect(open == 0)
        }
    }

    @Test("accounts an erasure closed and never finished with (its process stopped) are opened again after 30 minutes by the worker's sweep; an erased person's stay closed", arguments: TestDatabaseKind.all)
    func abandonedErasureHold(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "stopped@example.com")
            let me = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)))
            let userID = try #require((me["id"] as? String).flatMap(UserID.init))
            let gone = try await signUp(client, env, email: "gone@example.com")
            var erase = bearer(gone)
            erase[.contentType] = "application/json"
            #expect(try await client.execute(uri: "/api/me", method: .delete, headers: erase, body: ByteBuffer(string: #"{"password": "\#(strongPassword)"}"#)).status == .noContent)
            // The erasure's first step committed, then its process stopped.
            let trading = env.services.store
            try await env.database.transaction { db in try await trading.closeAccounts(of: userID, now: env.clock.now, on: db) }
            let order = ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC"]
            #expect(try await post(client, "/api/orders", order, headers: bearer(tokens)).status == .notFound, "held closed")
            env.clock.advance(by: 29 * 60)
            #expect(try await env.services.erasure.reopenAbandonedHolds() == 0, "an erasure may still be telling Plaid")
            env.clock.advance(by: 2 * 60)
            #expect(try await env.services.erasure.reopenAbandonedHolds() == 1)
            let again = try json(try await post(client, "/api/auth/login", ["email": "stopped@example.com", "password": strongPassword]))
            #expect(try await post(client, "/api/orders", order, headers: bearer(again)).status == .created)
            let closed = try await env.database.sql.raw("SELECT COUNT(*) AS n FROM accounts WHERE closed_at IS NOT NULL").first()?.decode(column: "n", as: Int.self)
            #expect(closed == 1, "the erased person's account stays closed")
            try await env.expectConsistent()
        }
    }

    @Test("a sign-in that raced an erasure leaves no address of the person: no counter is written after it, its events keep no address, and retention clears any leftover at once", arguments: TestDatabaseKind.all)
    func signInAfterErasure(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "raced@example.com")
            let me = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)))
            let userID = try #require((me["id"] as? String).flatMap(UUID.init(uuidString:)))
            var erase = bearer(tokens)
            erase[.contentType] = "application/json"
            let erased = try await client.execute(uri: "/api/me", method: .delete, headers: erase, body: ByteBuffer(string: #"{"password": "\#(strongPassword)"}"#))
            #expect(erased.status == .noContent)
            let identity = env.services.identity, db = env.database.db
            // What a sign-in that read the person before the erasure committed writes after it.
            _ = try await identity.store.claimSignInAttempt(
                userID: userID, client: "203.0.113.9", now: env.clock.now, threshold: 5, provisionalLock: env.clock.now.addingTimeInterval(30), on: db)
            try await identity.store.clearSignInFailures(userID: userID, client: "203.0.113.9", now: env.clock.now, on: db)
            try await identity.audit.record(
                .init(action: "security.login_refused", actorID: nil, subjectType: "user", subjectID: userID.lowercasedString, userID: userID,
                      details: ["reason": "account_changed_during_sign_in"]),
                ip: "203.0.113.9", requestID: nil, on: db)
            #expect(try await Self.count("sign_in_failures", env) == 0)
            #expect(try await Self.count("audit_events", env, where: "ip = '203.0.113.9'") == 0)

            // Left by a write that began before the erasure committed: the next retention run clears it, whatever its age.
            try await env.database.sql.raw("""
                INSERT INTO sign_in_failures (user_id, client, failures, updated_at) VALUES (\(bind: userID), '203.0.113.9', 1, \(bind: env.clock.now))
                """).run()
            try await env.database.sql.raw("UPDATE users SET erased_at = NULL WHERE id = \(bind: userID)").run()
            try await identity.audit.record(
                .init(action: "security.login_refused", actorID: nil, subjectType: "user", subjectID: userID.lowercasedString, userID: userID),
                ip: "203.0.113.9", requestID: nil, on: db)
            try await env.database.sql.raw("""
                INSERT INTO notifications (id, user_id, kind, category, title, body, data, created_at)
                SELECT \(bind: UUID()), \(bind: userID), 'account_locked', 'security', 'Sign-in paused', 'x', '{}', \(bind: env.clock.now)
                """).run()
            try await env.database.sql.raw("UPDATE users SET erased_at = \(bind: env.clock.now) WHERE id = \(bind: userID)").run()
            #expect(try await Self.count("audit_events", env, where: "ip = '203.0.113.9'") == 1)
            let removed = try await env.services.retention.run(dryRun: false)
            let byPolicy = Dictionary(uniqueKeysWithValues: removed.map { ($0.policy, $0.rows) })
            #expect(byPolicy["sign_in_failures"] == 1 && byPolicy["audit_addresses"] == 1 && byPolicy["notifications"] == 1, "\(removed)")
            #expect(try await Self.count("sign_in_failures", env) == 0)
            #expect(try await Self.count("audit_events", env, where: "ip IS NOT NULL AND user_id IS NOT NULL") == 0)
            try await env.expectConsistent()
        }
    }

    @Test(
        "PostgreSQL: a wrong password sent while an erasure holds the person's row waits for it, then leaves no counter, no address and no lockout notice",
        .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func guessingThroughErasure() async throws {
        try await withTestApp(.postgres, overSocket: true) { client, env in
            let tokens = try await signUp(client, env, email: "guessed@example.com")
            let me = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)))
            let userID = try #require((me["id"] as? String).flatMap(UUID.init(uuidString:)))
            try await env.database.sql.raw("DELETE FROM sign_in_failures").run()
            let now = env.clock.now
            // The erasure's last transaction, as it runs: the person's row taken first, erased before the commit.
            let guessing = try await env.database.transaction { db -> Task<TestResponse, any Error> in
                try await db.raw("SELECT id FROM users WHERE id = \(bind: userID) FOR UPDATE").run()
                let guessing = Task { try await post(client, "/api/auth/login", ["email": "guessed@example.com", "password": "not the password at all"]) }
                try await env.eventuallyWaitingForLock("the sign-in's counter waits for the person's row", statementHolding: "erased_at IS NULL FOR SHARE")
                try await db.raw("""
                    UPDATE users SET erased_at = \(bind: now), disabled_at = \(bind: now), password_hash = '!erased' WHERE id = \(bind: userID)
                    """).run()
                return guessing
            }
            let answer = try await guessing.value
            #expect(answer.status.code >= 400 && answer.status.code < 500, "\(String(buffer: answer.body))")
            #expect(try await Self.count("sign_in_failures", env) == 0)
            #expect(try await Self.count("audit_events", env, where: "action IN ('security.login_failed', 'security.login_locked', 'security.login_refused', 'security.login_lockout') AND ip IS NOT NULL") == 0)
            #expect(try await Self.count("notifications", env) == 0)
        }
    }

    @Test(
        "PostgreSQL: an Alpaca link waiting on the person's row while an erasure holds it is refused when the erasure commits, and nothing is kept",
        .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func linkWaitingThroughErasure() async throws {
        try await withFakeAlpaca { fake in
            try await withTestApp(.postgres, configure: { $0.alpacaURLs = fake.urls }) { client, env in
                let tokens = try await signUp(client, env, email: "linking@example.com")
                let me = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)))
                let userID = try #require((me["id"] as? String).flatMap(UserID.init))
                let headers = bearer(tokens), now = env.clock.now
                // The erasure's transaction, as it runs: the person's row taken first, erased before the commit.
                let linking = try await env.database.transaction { db -> Task<TestResponse, any Error> in
                    try await db.raw("SELECT id FROM users WHERE id = \(bind: userID) FOR UPDATE").run()
                    let linking = Task { try await post(client, "/api/brokerage/alpaca", FakeAlpaca.linkBody, headers: headers) }
                    try await env.eventuallyWaitingForLock("the link waits for the person's row", statementHolding: "FROM users")
                    try await db.raw("UPDATE users SET erased_at = \(bind: now), disabled_at = \(bind: now) WHERE id = \(bind: userID)").run()
                    return linking
                }
                let answer = try await linking.value
                #expect(answer.status == .notFound, "\(String(buffer: answer.body))")
                #expect(try await Self.count("brokerage_links", env) == 0)
                #expect(try await Self.count("accounts", env, where: "kind = 'brokerage'") == 0)
            }
        }
    }
}
