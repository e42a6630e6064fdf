import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SQLKit
import Testing

@testable import FolioServer

/// Linking an account at Alpaca through Folio's API, against a fake Alpaca on
/// loopback: keys checked before anything is stored, sealed at rest, never
/// shown again; the account's cash mirrored; deposits refused; unlinking.
@Suite("Brokerage links")
struct BrokerageLinkTests {
    func withLinkApp(_ kind: TestDatabaseKind, configure: @escaping @Sendable (inout AppConfiguration, FakeAlpaca) -> Void = { _, _ in },
                     _ body: @escaping @Sendable (any TestClientProtocol, TestEnvironment, FakeAlpaca) async throws -> Void) async throws {
        try await withFakeAlpaca { fake in
            try await withTestApp(kind, configure: { $0.alpacaURLs = fake.urls; configure(&$0, fake) }) { client, env in
                try await body(client, env, fake)
            }
        }
    }

    func link(_ client: some TestClientProtocol, _ tokens: [String: Any], _ body: [String: Any] = FakeAlpaca.linkBody) async throws -> TestResponse {
        try await post(client, "/api/brokerage/alpaca", body, headers: bearer(tokens))
    }

    @Test("keys Alpaca refuses, an Alpaca that cannot be reached, and malformed keys store nothing", arguments: TestDatabaseKind.all)
    func refusedKeys(kind: TestDatabaseKind) async throws {
        try await withLinkApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "refused@example.com")
            let wrong = try await link(client, tokens, ["key_id": FakeAlpaca.keyID, "secret_key": "not-the-secret-0000000", "environment": "paper"])
            #expect(ConfiguredSecrets.mask(in: "not-the-secret-0000000") == "not-the-secret-0000000", "a refused guess is not taught to the redactor")
            #expect(wrong.status == .unprocessableContent)
            #expect(try problem(wrong).code == "broker_keys_refused")
            #expect(try problem(wrong).errors?.map(\.field) == ["secret_key"])

            let missing = try await link(client, tokens, ["key_id": "short", "environment": "demo"])
            #expect(missing.status == .unprocessableContent)
            #expect(Set(try problem(missing).errors?.map(\.field) ?? []) == ["key_id", "secret_key", "environment"])

            fake.currency = "EUR"
            let euro = try await link(client, tokens)
            #expect(try problem(euro).code == "broker_account_unsupported")
            fake.currency = "USD"
            fake.cash = -100
            #expect(try problem(try await link(client, tokens)).code == "broker_account_unsupported", "cash borrowed on margin")
            fake.cash = try Cash(parsing: "0.12345", rounding: .down)
            fake.cashText = "10.12345"
            #expect(try problem(try await link(client, tokens)).code == "broker_account_unsupported", "more places than Folio keeps: not a retry-later 503")
            fake.cashText = nil
            fake.cash = 100
            fake.tradingBlocked = true
            #expect(try problem(try await link(client, tokens)).code == "broker_account_unsupported", "trading blocked")
            fake.tradingBlocked = false
            // An account number that is not letters and digits would be shown in the account's name and mail as it is.
            fake.accountNumber = "PA12<img src=x>\u{202E}34"
            #expect(try problem(try await link(client, tokens)).code == "broker_account_unsupported", "unreadable, as an answer without a number")
            fake.accountNumber = FakeAlpaca.accountNumber
            #expect(try await env.accounts().count == 1, "only the paper account")
            #expect(try await env.database.sql.raw("SELECT COUNT(*) AS n FROM brokerage_links").first()?.decode(column: "n", as: Int.self) == 0)
        }
        // Alpaca unreachable: a port nothing listens on.
        try await withTestApp(kind, configure: { $0.alpacaURLs = .init(paper: "http://127.0.0.1:9", live: "http://127.0.0.1:9") }) { client, env in
            let tokens = try await signUp(client, env, email: "down@example.com")
            let down = try await link(client, tokens)
            #expect(down.status == .serviceUnavailable)
            #expect(try problem(down).code == "broker_unavailable")
            #expect(try await env.accounts().count == 1)
        }
    }

    @Test("a link opens a brokerage account with Alpaca's cash, keeps the keys sealed, shows only a hint, and refuses the same account twice", arguments: TestDatabaseKind.all)
    func linking(kind: TestDatabaseKind) async throws {
        try await withLinkApp(kind) { client, env, fake in
            fake.cash = try Cash(parsing: "12345.6789")
            let tokens = try await signUp(client, env, email: "linker@example.com")
            let linked = try await link(client, tokens)
            #expect(linked.status == .created)
            let body = try json(linked)
            let account = try #require(body["account"] as? [String: Any])
            let id = try #require(account["id"] as? String)
            #expect(linked.headers[.location] == "/api/accounts/\(id)")
            #expect(account["kind"] as? String == "brokerage")
            #expect(account["cash"] as? String == "12345.6789")
            #expect(account["name"] as? String == "Alpaca paper ····7781")
            let shown = try #require(body["link"] as? [String: Any])
            #expect(shown["key_hint"] as? String == "…0001")
            #expect(shown["remote_account"] as? String == FakeAlpaca.accountNumber)
            #expect(shown["environment"] as? String == "paper")
            let text = String(buffer: linked.body)
            #expect(!text.contains(FakeAlpaca.secretKey) && !text.contains(FakeAlpaca.keyID))

            // The cash arrived by an ordinary deposit row, on the account's audited chain.
            let deposits = try await env.entries(.deposit).filter { $0.description == "Cash at Alpaca when linked" }
            #expect(deposits.map(\.amount) == [try Cash(parsing: "12345.6789")])
            let list = try json(try await client.execute(uri: "/api/brokerage/links", method: .get, headers: bearer(tokens)))
            #expect((list["data"] as? [[String: Any]])?.map { $0["account_id"] as? String } == [id])

            // Nothing in the database holds the keys in clear: not the link, not the audit trail.
            for table in ["brokerage_links", "audit_events", "accounts", "transactions"] {
                let rows = try await env.database.sql.raw("SELECT * FROM \(unsafeRaw: table)").all()
                let dump = rows.map { "\($0)" }.joined()
                #expect(!dump.contains(FakeAlpaca.secretKey) && !dump.contains(FakeAlpaca.keyID), "\(table)")
            }
            let accountID = try #require(AccountID(id))
            let sealed = try #require(try await env.services.brokerage.store.link(of: accountID)?.sealedCredentials)
            #expect(AlpacaCredentials.open(sealed, with: env.services.identity.secretBox)?.secretKey == FakeAlpaca.secretKey)
            #expect(!env.logs.lines.joined().contains(FakeAlpaca.secretKey))

            let again = try await link(client, tokens)
            #expect(again.status == .conflict)
            #expect(try problem(again).code == "already_linked")
            #expect(try problem(again).detail.contains(id))
            // Another user with the same keys cannot mirror the same Alpaca account a second time, nor learn whose it is.
            let other = try await signUp(client, env, email: "other@example.com")
            let taken = try await link(client, other)
            #expect(taken.status == .conflict)
            #expect(try problem(taken).code == "already_linked")
            #expect(!(try problem(taken).detail.contains(id)))
            // And one user cannot see or unlink another's.
            #expect(try await client.execute(uri: "/api/brokerage/alpaca/\(id)", method: .delete, headers: bearer(other)).status == .notFound)
            let othersLinks = try json(try await client.execute(uri: "/api/brokerage/links", method: .get, headers: bearer(other)))
            #expect((othersLinks["data"] as? [Any])?.isEmpty == true)

            // Accepted keys are masked in every log line from now on; a refused guess is not taught to the redactor.
            #expect(!ConfiguredSecrets.mask(in: "x \(FakeAlpaca.secretKey) y").contains(FakeAlpaca.secretKey))
            #expect(ConfiguredSecrets.mask(in: "not-the-secret-0000000") == "not-the-secret-0000000")
            #expect(LogRedactor().isSensitiveKey("key_id") && LogRedactor().isSensitiveKey("secret_key"), "request bodies logged under DEBUG mask both")
            try await env.expectConsistent()
        }
    }

    @Test("a live link talks to the live URL, a paper link to the paper URL", arguments: TestDatabaseKind.all)
    func environments(kind: TestDatabaseKind) async throws {
        try await withLinkApp(kind) { client, env, fake in
            let tokens = try await signUp(client, env, email: "live@example.com")
            var body = FakeAlpaca.linkBody
            body["environment"] = "live"
            let linked = try await link(client, tokens, body)
            #expect(linked.status == .created)
            #expect((try json(linked)["link"] as? [String: Any])?["environment"] as? String == "live")
            #expect((try json(linked)["account"] as? [String: Any])?["name"] as? String == "Alpaca live ····7781")
            #expect(fake.liveCalls >= 1 && fake.paperCalls == 0)
            let account = try #require((try json(linked)["account"] as? [String: Any])?["id"] as? String)
            _ = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "MARKET", "account_id": account], headers: bearer(tokens))
            await env.worker.drain()
            #expect(fake.paperCalls == 0, "the live account's orders go to the live URL")
            #expect(fake.posts.count == 1 && fake.paperCalls == 0)
        }
    }

    @Test("deposits and withdrawals of a brokerage account are refused: money moves at Alpaca", arguments: TestDatabaseKind.all)
    func noDeposits(kind: TestDatabaseKind) async throws {
        try await withLinkApp(kind) { client, env, _ in
            let tokens = try await signUp(client, env, email: "money@example.com")
            let id = try #require((try json(try await link(client, tokens))["account"] as? [String: Any])?["id"] as? String)
            for route in ["deposits", "withdrawals"] {
                var headers = bearer(tokens)
                headers[.init("Idempotency-Key")!] = "move-\(route)"
                let refused = try await post(client, "/api/accounts/\(id)/\(route)", ["amount": "10.00"], headers: headers)
                #expect(refused.status == .conflict)
                #expect(try problem(refused).code == "cash_moves_at_broker")
            }
            // Nor can an operator post a dividend or fee to it: Alpaca pays and charges them.
            await #expect(throws: BrokerageError.cashMovesAtBroker) {
                _ = try await OperatorPosting.post(.fee, accountID: try #require(AccountID(id)), amount: 1, symbol: nil, description: "Fee", services: env.services)
            }
            #expect(try await env.accounts().first { $0.kind == "brokerage" }?.cash == 25_000)
            try await env.expectConsistent()
        }
    }

    @Test("unlinking waits for open orders, forgets the keys, keeps the books, and the account takes no more orders", arguments: TestDatabaseKind.all)
    func unlinking(kind: TestDatabaseKind) async throws {
        try await withLinkApp(kind) { client, env, fake in
            fake.mode = .rest
            let tokens = try await signUp(client, env, email: "unlink@example.com")
            let id = try #require((try json(try await link(client, tokens))["account"] as? [String: Any])?["id"] as? String)
            // Alpaca takes a price below a dollar in steps of $0.0001 only (the paper broker keeps finer ones).
            var fine = ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "0.12345", "time_in_force": "GTC", "account_id": id]
            let tooFine = try await post(client, "/api/orders", fine, headers: bearer(tokens))
            let tooFineCode = try problem(tooFine).errors?.first?.code
            #expect(tooFine.status == .unprocessableContent && tooFineCode == "sub_penny", "\(String(buffer: tooFine.body))")
            fine["limit_price"] = "0.1234"
            let atTheTick = try await post(client, "/api/orders", fine, headers: bearer(tokens))
            #expect(atTheTick.status == .created || atTheTick.status == .accepted, "\(String(buffer: atTheTick.body))")
            let placedFine = try #require(try json(atTheTick)["id"] as? String)
            await env.worker.drain()
            #expect(try await client.execute(uri: "/api/orders/\(placedFine)", method: .delete, headers: bearer(tokens)).status == .ok)
            let order = ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": id]
            let placed = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            await env.worker.drain()
            let blocked = try await client.execute(uri: "/api/brokerage/alpaca/\(id)", method: .delete, headers: bearer(tokens))
            #expect(blocked.status == .conflict)
            #expect(try problem(blocked).code == "open_orders")
            #expect(try await client.execute(uri: "/api/orders/\(placed)", method: .delete, headers: bearer(tokens)).status == .ok)
            #expect(fake.orders[placed]?.status == "canceled")

            let removed = try await client.execute(uri: "/api/brokerage/alpaca/\(id)", method: .delete, headers: bearer(tokens))
            #expect(removed.status == .noContent)
            let accountID = try #require(AccountID(id))
            let stored = try #require(try await env.services.brokerage.store.link(of: accountID))
            #expect(stored.status == .removed && stored.sealedCredentials.isEmpty && stored.removedAt != nil)
            let refused = try await post(client, "/api/orders", order, headers: bearer(tokens))
            #expect(refused.status == .conflict)
            #expect(try problem(refused).code == "brokerage_unlinked")
            #expect(try await client.execute(uri: "/api/accounts/\(id)", method: .get, headers: bearer(tokens)).status == .ok, "the books stay")
            #expect(try await client.execute(uri: "/api/brokerage/alpaca/\(id)", method: .delete, headers: bearer(tokens)).status == .notFound)
            // Linked again: a new account, the old one's history untouched.
            #expect(try await link(client, tokens).status == .created)
            #expect(try await env.accounts().filter { $0.kind == "brokerage" }.count == 2)
            try await env.expectConsistent()
        }
    }

    @Test("new keys made at Alpaca replace a link's keys in place: checked first, only for the same account, open orders carry on, the stream signs in again, audited and mailed", arguments: TestDatabaseKind.all)
    func replacingKeys(kind: TestDatabaseKind) async throws {
        try await withLinkApp(kind) { client, env, fake in
            fake.mode = .rest
            let tokens = try await signUp(client, env, email: "rotate@example.com")
            let id = try #require((try json(try await link(client, tokens))["account"] as? [String: Any])?["id"] as? String)
            let accountID = try #require(AccountID(id))
            let streams = env.services.tradeStreams
            await streams.refreshStreams()
            defer { streams.stopAll() }
            try await eventually("the stream listening", within: .seconds(20)) { fake.listeners == 1 }
            let order = ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": id]
            let placed = try #require(try json(try await post(client, "/api/orders", order, headers: bearer(tokens)))["id"] as? String)
            await env.worker.drain()
            #expect(fake.orders[placed]?.status == "accepted")

            // The user makes new keys at Alpaca: the old ones stop working, and the open order keeps the account from being unlinked.
            let newKeys = ["key_id": "PKFAKEKEYID0002", "secret_key": "fake-secret-key-rotated-9876543210zyx"]
            fake.regenerateKeys(id: newKeys["key_id"]!, secret: newKeys["secret_key"]!)
            let path = "/api/brokerage/alpaca/\(id)/keys"
            func replace(_ body: [String: Any], _ who: [String: Any]) async throws -> TestResponse {
                var headers = bearer(who)
                headers[.contentType] = "application/json"
                return try await client.execute(uri: path, method: .put, headers: headers, body: ByteBuffer(data: try JSONSerialization.data(withJSONObject: body)))
            }
            let hint = { () async throws -> String? in try await env.services.brokerage.store.link(of: accountID)?.keyHint }

            // Keys Alpaca refuses, keys of another Alpaca account, and another user: refused, nothing changed.
            let stale = try await replace(["key_id": FakeAlpaca.keyID, "secret_key": FakeAlpaca.secretKey], tokens)
            let staleCode = try problem(stale).code
            #expect(stale.status == .unprocessableContent && staleCode == "broker_keys_refused")
            fake.accountNumber = "PA3OTHER0001"
            let another = try await replace(newKeys, tokens)
            let anotherCode = try problem(another).code
            #expect(another.status == .unprocessableContent && anotherCode == "broker_keys_for_another_account")
            #expect(try problem(another).errors?.map(\.field) == ["key_id"])
            fake.accountNumber = FakeAlpaca.accountNumber
            let stranger = try await signUp(client, env, email: "stranger@example.com")
            #expect(try await replace(newKeys, stranger).status == .notFound)
            let malformed = try await replace(["key_id": "short"], tokens)
            let malformedFields = Set(try problem(malformed).errors?.map(\.field) ?? [])
            #expect(malformed.status == .unprocessableContent && malformedFields == ["key_id", "secret_key"])
            #expect(try await hint() == "…0001")
            let sealedBefore = try #require(try await env.services.brokerage.store.link(of: accountID))

            let replaced = try await replace(newKeys, tokens)
            #expect(replaced.status == .ok)
            let shown = try json(replaced)
            #expect(shown["key_hint"] as? String == "…0002" && shown["account_id"] as? String == id && shown["status"] as? String == "active")
            #expect(!String(buffer: replaced.body).contains(newKeys["secret_key"]!))
            #expect(try await hint() == "…0002")
            let sealed = try #require(try await env.services.brokerage.store.link(of: accountID)?.sealedCredentials)
            #expect(AlpacaCredentials.open(sealed, with: env.services.identity.secretBox)?.secretKey == newKeys["secret_key"])
            // A key rotation that read the link before the replacement cannot seal the old keys back over the new ones.
            let rotatedLate = try await env.services.brokerage.store.resealCredentials(
                sealedBefore.id, old: sealedBefore.sealedCredentials, new: sealedBefore.sealedCredentials + "-resealed", on: env.database.sql)
            #expect(!rotatedLate)
            #expect(try await env.services.brokerage.store.link(of: accountID)?.sealedCredentials == sealed)
            #expect(!ConfiguredSecrets.mask(in: "x \(newKeys["secret_key"]!) y").contains(newKeys["secret_key"]!), "taught to the redactor")
            let audited = try await AuditEvent.query(on: env.database.db).filter(\.$action == "brokerage.keys_replaced").all()
            #expect(audited.count == 1 && audited.first?.subjectID == id)
            let mailed = try await env.database.sql.raw("SELECT template FROM mail_messages").all().map { try $0.decode(column: "template", as: String.self) }
            #expect(mailed.contains("brokerage_keys_replaced"))

            // The open order is canceled at Alpaca with the new keys (the old client is gone), and the stream signs in again with them.
            let canceled = try await client.execute(uri: "/api/orders/\(placed)", method: .delete, headers: bearer(tokens))
            #expect(canceled.status == .ok, "\(String(buffer: canceled.body))")
            #expect(fake.orders[placed]?.status == "canceled")
            await streams.refreshStreams()
            // The fake counts a connection once the keys it signs in with open the account: only the new keys do now.
            try await eventually("the stream signed in again with the new keys", within: .seconds(20)) { fake.streamConnections == 2 }
            #expect(!env.logs.lines.joined().contains(newKeys["secret_key"]!))
            try await env.expectConsistent()
        }
    }

    @Test("the deployment's own keys link the first administrator's account once: not again after an unlink, not to a later admin", arguments: TestDatabaseKind.all)
    func deploymentDefault(kind: TestDatabaseKind) async throws {
        try await withLinkApp(kind, configure: { configuration, fake in configuration.alpaca = fake.settings }) { client, env, _ in
            let links = env.services.brokerage
            #expect(try await links.linkDeploymentDefault() == .noAdministrator)
            _ = try await signUp(client, env, email: "plain@example.com")
            let admin = try await UserAdministration(services: env.services).createAdmin(email: "root@example.com", password: strongPassword)
            // The worker's first look links it at once (the ten-minute schedule is the retry).
            try await OrderService.recheckFor(env)
            let account = try #require(try await env.accounts().first { $0.kind == "brokerage" }?.id)
            #expect(try await links.linkDeploymentDefault() == .linkedBefore(account))
            #expect(env.services.calendar.current.publishedRange != nil, "and Alpaca's calendar read")
            let record = try #require(try await env.accounts().first { $0.id == account })
            #expect(record.userID == UserID(admin) && record.kind == "brokerage")
            #expect(try await env.services.brokerage.store.link(of: account)?.environment == .paper)

            try await links.unlink(account: account, userID: UserID(admin), context: .none)
            _ = try await UserAdministration(services: env.services).createAdmin(email: "second@example.com", password: strongPassword)
            #expect(try await links.linkDeploymentDefault() == .linkedBefore(account), "neither linked again nor to the second admin")
            #expect(try await env.accounts().filter { $0.kind == "brokerage" }.count == 1)
            #expect(links.environment(of: env.configuration.alpacaURLs.live + "/") == .live, "a trailing slash does not make a live URL paper")
        }
    }

    @Test("folio secrets rotate: brokerage keys and TOTP secrets sealed under the previous SECRET_KEY are sealed again under the new one", arguments: TestDatabaseKind.all)
    func rotation(kind: TestDatabaseKind) async throws {
        try await withLinkApp(kind) { client, env, _ in
            let tokens = try await signUp(client, env, email: "rotate@example.com")
            let text = try #require((try json(try await link(client, tokens))["account"] as? [String: Any])?["id"] as? String)
            let id = try #require(AccountID(text))
            // A user enrolled in TOTP under the old key.
            let store = IdentityStore()
            let user = try #require(try await store.user(email: "rotate@example.com", on: env.database.db))
            user.totpSecretSealed = try env.services.identity.secretBox.seal("JBSWY3DPEHPK3PXP")
            try await store.save(user, on: env.database.db)

            let newKey = "rotated-signing-key-" + String(repeating: "r", count: 24)
            var dependencies = env.services.dependencies
            dependencies.configuration.previousSecretKeys = [env.configuration.secretKey]
            dependencies.configuration.secretKey = newKey
            let rotated = await FolioServices(dependencies)
            let outcome = try await SecretRotation.run(services: rotated)
            #expect(outcome.brokerageLinks == 1 && outcome.totpSecrets == 1 && outcome.unreadable == 0)
            #expect(outcome.auditHeads > 0)
            #expect(try await SecretRotation.run(services: rotated).brokerageLinks == 0, "already under the new key")

            let newOnly = SecretBox(secretKey: newKey, previousKeys: [])
            let sealed = try #require(try await env.services.brokerage.store.link(of: id)?.sealedCredentials)
            #expect(AlpacaCredentials.open(sealed, with: newOnly)?.keyID == FakeAlpaca.keyID, "opens without the old key")
            let reread = try #require(try await store.user(email: "rotate@example.com", on: env.database.db))
            #expect(newOnly.open(try #require(reread.totpSecretSealed)) == "JBSWY3DPEHPK3PXP")
        }
    }

    @Test("folio secrets rotate refuses while a running instance does not know its SECRET_KEY (that instance's audit chains would stop), and is on the record when it runs", arguments: TestDatabaseKind.all)
    func rotationWaitsForInstances(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            var dependencies = env.services.dependencies
            dependencies.configuration.previousSecretKeys = [env.configuration.secretKey]
            dependencies.configuration.secretKey = "rotated-signing-key-" + String(repeating: "q", count: 24)
            let rotated = await FolioServices(dependencies)
            func rotations() async throws -> Int {
                try await env.database.sql.raw("SELECT id FROM audit_events WHERE action = 'admin.secrets_rotated'").all().count
            }
            // A server still on the old key alone (not yet restarted with the new one).
            try await env.services.instances.register("serve-on-the-old-key", kind: "serve")
            await #expect(throws: SecretRotation.InstancesWithoutTheKey.self) { _ = try await SecretRotation.run(services: rotated) }
            #expect(try await rotations() == 0)
            // An instance started with the new key meanwhile signs no head again: the old server goes on writing.
            let tokens = try await signUp(client, env, email: "still-writing@example.com")
            let account = try await env.firstAccount()
            try await rotated.prepare()
            #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "1.00"], headers: bearer(tokens)).status == .created)
            // Nor does a rotation run with the keys swapped (the old one as SECRET_KEY) while servers sign with the new one.
            var swapped = dependencies
            swapped.configuration.secretKey = env.configuration.secretKey
            swapped.configuration.previousSecretKeys = [dependencies.configuration.secretKey]
            try await Instances(database: env.database, clock: env.services.clock, keyFingerprints: Instances.fingerprints(
                secretKey: dependencies.configuration.secretKey, previousKeys: [env.configuration.secretKey])).register("serve-on-the-new-key", kind: "serve")
            try await env.database.sql.raw("DELETE FROM instances WHERE id = 'serve-on-the-old-key'").run()
            await #expect(throws: SecretRotation.InstancesWithoutTheKey.self) { _ = try await SecretRotation.run(services: await FolioServices(swapped)) }
            try await env.database.sql.raw("DELETE FROM instances WHERE id = 'serve-on-the-new-key'").run()
            // Restarted with the new key and the old one in PREVIOUS_SECRET_KEYS: the rotation runs, on the record.
            try await rotated.instances.register("serve-restarted", kind: "serve")
            _ = try await SecretRotation.run(services: rotated)
            #expect(try await rotations() == 1)
            #expect(try await AuditVerifier(services: rotated).verify().firstBreak == nil)
        }
    }
}
