import FolioDomain
import Foundation
import SQLKit
import Testing

@testable import FolioServer

@Suite("Audit trail")
struct AuditTrailTests {
    /// An intruder with database rights removes the append-only guard first.
    func dropGuard(_ env: TestEnvironment) async throws {
        let sql = env.database.sql
        if env.database.kind == .postgres {
            try await sql.raw("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only").run()
        } else {
            try await sql.raw("DROP TRIGGER audit_events_no_update").run()
            try await sql.raw("DROP TRIGGER audit_events_no_delete").run()
        }
    }

    func actions(_ env: TestEnvironment) async throws -> [String] {
        try await env.database.sql.raw("SELECT action FROM audit_events ORDER BY sequence").all().map { try $0.decode(column: "action", as: String.self) }
    }

    @Test("every money move is in its account's chain; the database refuses UPDATE and DELETE as constraint errors", arguments: TestDatabaseKind.all)
    func appendOnly(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "audited@example.com")
            _ = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
            await env.worker.drain()
            let verified = try await AuditVerifier(services: env.services).verify()
            #expect(verified.firstBreak == nil)
            #expect(verified.events >= 6)
            let account = try await env.firstAccount()
            let chain = try await env.database.sql.raw("""
                SELECT action FROM audit_events WHERE chain_id = \(bind: AuditChain.ID.account(account.id).text) ORDER BY chain_sequence
                """).all().map { try $0.decode(column: "action", as: String.self) }
            #expect(chain == ["account.opened", "ledger.deposit", "order.placed", "order.accepted", "order.filled", "order.fill"])
            #expect(try await actions(env).contains("user.registered"))
            let sql = env.database.sql
            await expectConstraintViolation(.trigger) { try await sql.raw("UPDATE audit_events SET action = 'nothing'").run() }
            await expectConstraintViolation(.trigger) { try await sql.raw("DELETE FROM audit_events").run() }
            // The same statements touching no row pass: the refusals were the triggers', not the SQL.
            try await sql.raw("UPDATE audit_events SET action = 'nothing' WHERE 1 = 0").run()
            try await sql.raw("DELETE FROM audit_events WHERE 1 = 0").run()
            #expect(try await actions(env).count == verified.events)
        }
    }

    @Test("the heads' log line names each moved chain with its sequence and short hash, legible past the log redactor, and only the moved ones")
    func headsLine() async throws {
        try await withTestApp(.sqlite) { client, env in
            _ = try await signUp(client, env, email: "heads@example.com")
            let logs = LogCapture()
            let heads = AuditHeads(database: env.database, logger: logs.logger())
            try await heads.log()
            let line = try #require(logs.lines.last)
            #expect(!line.contains(LogRedactor.mask), "\(line)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let digest = try #require(object["digest"] as? String)
            #expect(digest.count == 16 && digest.allSatisfy(\.isHexDigit))
            let moved = try #require(object["moved"] as? [String])
            let account = try await env.firstAccount()
            let head = try #require(moved.first { $0.hasPrefix(AuditChain.ID.account(account.id).text + " ") })
            let stored = try #require(try await env.database.sql.raw("""
                SELECT hash FROM audit_events WHERE chain_id = \(bind: AuditChain.ID.account(account.id).text) ORDER BY chain_sequence DESC LIMIT 1
                """).first()?.decode(column: "hash", as: String.self))
            #expect(head.hasSuffix(" " + String(stored.prefix(16))), "\(head)")
            try await heads.log()
            #expect(try #require(JSONSerialization.jsonObject(with: Data(logs.lines.last!.utf8)) as? [String: Any])["moved"] as? [String] == [])
        }
    }

    @Test("concurrent appends never fork a chain, and different accounts' chains grow side by side", arguments: TestDatabaseKind.all)
    func concurrentAppends(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<20 {
                    group.addTask { _ = try await post(client, "/api/auth/login", ["email": "nobody\(index)@example.com", "password": "wrong password here"]) }
                }
                try await group.waitForAll()
            }
            let verified = try await AuditVerifier(services: env.services).verify()
            #expect(verified.events == 20)
            #expect(verified.firstBreak == nil)

            let alice = try await signUp(client, env, email: "alice@example.com")
            let bob = try await signUp(client, env, email: "bob@example.com")
            let aliceAccount = try #require(try await accounts(client, alice).first?["id"] as? String)
            let bobAccount = try #require(try await accounts(client, bob).first?["id"] as? String)
            try await withThrowingTaskGroup(of: Void.self) { group in
                let aliceHeaders = bearer(alice), bobHeaders = bearer(bob)
                for index in 0..<20 {
                    let (headers, account) = index % 2 == 0 ? (aliceHeaders, aliceAccount) : (bobHeaders, bobAccount)
                    group.addTask { _ = try await post(client, "/api/accounts/\(account)/deposits", ["amount": "1.00"], headers: headers) }
                }
                try await group.waitForAll()
            }
            try await env.expectConsistent()
            let heads = try await env.database.sql.raw("SELECT audit_sequence FROM accounts").all()
            // Each account: opened, starting deposit, and its ten deposits.
            #expect(try heads.map { try $0.decode(column: "audit_sequence", as: Int64.self) } == [12, 12])
        }
    }

    @Test("a row changed behind the triggers' back breaks its chain at that row", arguments: TestDatabaseKind.all)
    func tampering(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await signUp(client, env, email: "victim@example.com")
            let account = try await env.firstAccount()
            try await dropGuard(env)
            let chain = AuditChain.ID.account(account.id).text
            try await env.database.sql.raw("""
                UPDATE audit_events SET details = '{"amount":"1000000"}' WHERE chain_id = \(bind: chain) AND chain_sequence = 2
                """).run()
            let broken = try #require(try await env.auditBreak())
            #expect(broken.hasPrefix("audit chain \(chain), event 2 "), "\(broken)")
            #expect(broken.contains("was changed"))
        }
    }

    @Test("deleting the newest rows of a chain is found: the anchored head is ahead of the rows", arguments: TestDatabaseKind.all)
    func truncation(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "truncated@example.com")
            let account = try await env.firstAccount()
            for amount in ["1.00", "2.00", "3.00"] {
                #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": amount], headers: bearer(tokens)).status == .created)
            }
            #expect(try await env.auditBreak() == nil)
            try await dropGuard(env)
            let chain = AuditChain.ID.account(account.id).text
            // The last two deposits' events go; every remaining link still checks out.
            try await env.database.sql.raw("DELETE FROM audit_events WHERE chain_id = \(bind: chain) AND chain_sequence > 3").run()
            let broken = try #require(try await env.auditBreak())
            #expect(broken.contains(chain) && broken.contains("ends at event 3 but its anchored head is event 5"), "\(broken)")
            #expect(broken.contains("newest rows were removed"))

            // Deleting a whole chain, its head and all, is found too: every account has a chain.
            try await env.database.sql.raw("DELETE FROM audit_events WHERE chain_id = \(bind: chain)").run()
            try await env.database.sql.raw("UPDATE accounts SET audit_sequence = NULL, audit_hash = NULL, audit_mac = NULL").run()
            #expect(try await env.auditBreak()?.contains("the account has no audit chain") == true)
        }
    }

    @Test("nothing is appended to a chain whose head is not signed by a configured key: the next write would sign the tampering over", arguments: TestDatabaseKind.all)
    func noAppendAfterAnUnsignedHead(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "rewound@example.com")
            let account = try await env.firstAccount()
            for amount in ["1.00", "2.00"] {
                #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": amount], headers: bearer(tokens)).status == .created)
            }
            let chain = AuditChain.ID.account(account.id).text
            #expect(try await AuditChain.unsignedHeads(anchor: env.services.anchor, database: env.database).isEmpty)
            // The newest event deleted and the head rewound to the one before it; its signature cannot be made without the key.
            try await dropGuard(env)
            let sql = env.database.sql
            let last = try #require(try await sql.raw("SELECT MAX(chain_sequence) AS n FROM audit_events WHERE chain_id = \(bind: chain)").first()?.decode(column: "n", as: Int64.self))
            let earlier = try #require(try await sql.raw("""
                SELECT hash FROM audit_events WHERE chain_id = \(bind: chain) AND chain_sequence = \(bind: last - 1)
                """).first()?.decode(column: "hash", as: String.self))
            try await sql.raw("DELETE FROM audit_events WHERE chain_id = \(bind: chain) AND chain_sequence = \(bind: last)").run()
            try await sql.raw("UPDATE accounts SET audit_sequence = \(bind: last - 1), audit_hash = \(bind: earlier) WHERE id = \(bind: account.id)").run()
            #expect(try await env.auditBreak()?.contains("does not carry Folio's signature") == true)
            #expect(try await AuditChain.unsignedHeads(anchor: env.services.anchor, database: env.database) == [chain])
            let cash = try await env.firstAccount().cash
            let refused = try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "3.00"], headers: bearer(tokens))
            #expect(refused.status == .internalServerError)
            #expect(try await env.firstAccount().cash == cash, "nothing written")
            #expect(try await env.auditBreak()?.contains("does not carry Folio's signature") == true, "still found")

            // A chain of the audit_chains table (a person's): the same.
            let user = try #require(try await sql.raw("SELECT id FROM users WHERE email = 'rewound@example.com'").first()?.decode(column: "id", as: UUID.self))
            let userChain = AuditChain.ID.user(UserID(user)).text
            try await sql.raw("UPDATE audit_chains SET mac = 'forged' WHERE chain_id = \(bind: userChain)").run()
            await #expect(throws: AuditChain.UnsignedHead.self) { try await UserAdministration(services: env.services).disable(email: "rewound@example.com") }
        }
    }

    @Test("an account whose chain was removed, head and all, gets no new chain: not from the next write, not from the next start", arguments: TestDatabaseKind.all)
    func blankedChainIsNotOpenedAgain(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "blanked@example.com")
            let account = try await env.firstAccount()
            #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "1.00"], headers: bearer(tokens)).status == .created)
            let chain = AuditChain.ID.account(account.id).text
            try await dropGuard(env)
            let sql = env.database.sql
            // The deposit's ledger row changed, and every event that could tell, with the head that vouched for them, removed.
            try await sql.raw("UPDATE transactions SET amount = 1000000 WHERE account_id = \(bind: account.id) AND amount = 1").run()
            try await sql.raw("DELETE FROM audit_events WHERE chain_id = \(bind: chain)").run()
            try await sql.raw("UPDATE accounts SET audit_sequence = NULL, audit_hash = NULL, audit_mac = NULL WHERE id = \(bind: account.id)").run()
            #expect(try await env.auditBreak()?.contains("the account has no audit chain") == true)

            let cash = try await env.firstAccount().cash
            let refused = try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "2.00"], headers: bearer(tokens))
            #expect(refused.status == .internalServerError)
            #expect(try await env.firstAccount().cash == cash, "nothing written")
            try await env.services.prepare()
            let head = try await TradingStore(database: env.database).auditSequence(of: account.id)
            #expect(head == nil, "no chain opened at start-up")
            #expect(try await env.auditBreak()?.contains("the account has no audit chain") == true, "still found")
            // Other people's accounts are untouched.
            let other = try await signUp(client, env, email: "bystander@example.com")
            let otherAccount = try #require(try await env.accounts().first { $0.id != account.id })
            #expect(try await post(client, "/api/accounts/\(otherAccount.id)/deposits", ["amount": "2.00"], headers: bearer(other)).status == .created)
        }
    }

    @Test("a person whose chain was removed, head and all, is found, and gets no new chain from their next event", arguments: TestDatabaseKind.all)
    func blankedPersonChainIsNotOpenedAgain(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await signUp(client, env, email: "forgotten@example.com")
            #expect(try await env.auditBreak() == nil)
            let sql = env.database.sql
            let user = try #require(try await sql.raw("SELECT id FROM users WHERE email = 'forgotten@example.com'").first()?.decode(column: "id", as: UUID.self))
            let chain = AuditChain.ID.user(UserID(user)).text
            try await dropGuard(env)
            try await sql.raw("DELETE FROM audit_events WHERE chain_id = \(bind: chain)").run()
            try await sql.raw("DELETE FROM audit_chains WHERE chain_id = \(bind: chain)").run()
            #expect(try await env.auditBreak() == "audit chain \(chain): the person has no audit chain: its events were removed")
            // Their next event (a sign-in) is not recorded on a fresh chain: the sign-in fails, and nothing is written.
            let login = try await post(client, "/api/auth/login", ["email": "forgotten@example.com", "password": strongPassword])
            #expect(login.status == .internalServerError)
            #expect(try await sql.raw("SELECT chain_id FROM audit_chains WHERE chain_id = \(bind: chain)").first() == nil)
            #expect(try await env.auditBreak()?.contains("the person has no audit chain") == true, "still found")
            // Someone new still signs up.
            try await signUp(client, env, email: "newcomer@example.com")
            // An operator who has looked starts a new chain for them, on the record: they can sign in (or be disabled, or erased) again.
            let administration = UserAdministration(services: env.services)
            #expect(try await administration.openPersonChain(email: "forgotten@example.com"))
            #expect(try await !administration.openPersonChain(email: "forgotten@example.com"), "once")
            #expect(try await env.auditBreak() == nil)
            #expect(try await post(client, "/api/auth/login", ["email": "forgotten@example.com", "password": strongPassword]).status == .ok)
        }
    }

    @Test("restoring an older copy of the events table is found", arguments: TestDatabaseKind.all)
    func olderCopy(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "restored@example.com")
            let account = try await env.firstAccount()
            let sql = env.database.sql
            try await sql.raw("CREATE TABLE audit_events_copy AS SELECT * FROM audit_events").run()
            #expect(try await post(client, "/api/accounts/\(account.id)/withdrawals", ["amount": "500.00"], headers: bearer(tokens)).status == .created)
            #expect(try await env.auditBreak() == nil)
            try await dropGuard(env)
            try await sql.raw("DELETE FROM audit_events").run()
            try await sql.raw("INSERT INTO audit_events SELECT * FROM audit_events_copy").run()
            let broken = try #require(try await env.auditBreak())
            #expect(broken.contains(AuditChain.ID.account(account.id).text), "\(broken)")
            #expect(broken.contains("truncated, or an older copy restored"))
        }
    }

    @Test("a head signed with another key, or rewound without its rows, is refused", arguments: TestDatabaseKind.all)
    func forgedHeads(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await signUp(client, env, email: "heads@example.com")
            let account = try await env.firstAccount()
            let chain = AuditChain.ID.account(account.id).text
            let head = try #require(try await env.database.sql.raw("SELECT audit_sequence, audit_hash FROM accounts").first())
            let sequence = try head.decode(column: "audit_sequence", as: Int64.self), hash = try head.decode(column: "audit_hash", as: String.self)
            let forged = AuditAnchor(secretKey: String(repeating: "x", count: 64)).mac(chain: chain, head: .init(sequence: sequence, hash: hash))
            try await env.database.sql.raw("UPDATE accounts SET audit_mac = \(bind: forged)").run()
            #expect(try await env.auditBreak()?.contains("does not carry Folio's signature") == true)
            // A genuine earlier head, signed correctly, but the rows go further.
            let earlier = try #require(try await env.database.sql.raw("""
                SELECT hash FROM audit_events WHERE chain_id = \(bind: chain) AND chain_sequence = 1
                """).first()?.decode(column: "hash", as: String.self))
            let mac = env.services.anchor.mac(chain: chain, head: .init(sequence: 1, hash: earlier))
            try await env.database.sql.raw("UPDATE accounts SET audit_sequence = 1, audit_hash = \(bind: earlier), audit_mac = \(bind: mac)").run()
            #expect(try await env.auditBreak()?.contains("goes past or beside its anchored head") == true)
        }
    }

    @Test("after a key rotation, heads signed under the old key are signed again at start-up, so dropping the old key later breaks nothing", arguments: TestDatabaseKind.all)
    func keyRotation(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await signUp(client, env, email: "rotation@example.com")
            let oldKey = env.configuration.secretKey, newKey = String(repeating: "7f", count: 32)
            func services(key: String, previous: [String]) async -> FolioServices {
                var dependencies = env.services.dependencies
                dependencies.configuration.secretKey = key
                dependencies.configuration.previousSecretKeys = previous
                return await FolioServices(dependencies)
            }
            // Without the step, the old key's heads would look forged once it is gone.
            let withoutOldKey = await services(key: newKey, previous: [])
            #expect(try await AuditVerifier(services: withoutOldKey).verify().firstBreak?.contains("does not carry Folio's signature") == true)
            // Started under a key that signed none of the heads (a backup restored under the wrong SECRET_KEY), it will not
            // serve: every write and sign-in would fail. It says which keys to set.
            await #expect(throws: AuditChain.SignedUnderAnotherKey.self) { try await withoutOldKey.prepare() }

            let rotating = await services(key: newKey, previous: [oldKey])
            #expect(try await AuditVerifier(services: rotating).verify().firstBreak == nil)
            try await rotating.prepare()
            let chains = try await env.database.sql.raw("SELECT count(*) AS n FROM audit_chains").first()?.decode(column: "n", as: Int.self) ?? 0
            #expect(chains >= 1, "the user's chain is among the heads signed again")
            #expect(try await AuditVerifier(services: withoutOldKey).verify().firstBreak == nil)
            #expect(try await AuditChain.resignHeads(anchor: rotating.anchor, database: env.database) == 0, "nothing left to sign again")
        }
    }

    @Test("a row slipped in outside every chain is found", arguments: TestDatabaseKind.all)
    func rowOutsideChains(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await signUp(client, env, email: "outsider@example.com")
            #expect(try await env.auditBreak() == nil)
            // INSERT passes the append-only guard; a row with no chain and no sequence would slip past a chain walk.
            try await env.database.sql.raw("""
                INSERT INTO audit_events (id, occurred_at, action, subject_type, details) VALUES (\(bind: UUID()), \(bind: env.clock.now), 'admin.grant', 'user', '{}')
                """).run()
            // On SQLite the row has no sequence at all; on PostgreSQL the sequence's default gives it one in the legacy walk, with no hash.
            let broken = try #require(try await env.auditBreak())
            #expect(broken.contains("belong to no chain") || broken.contains("has no place in the chain"), "\(broken)")
        }
    }

    @Test("a ledger row changed, added or removed together with the balance is found through its account's chain", arguments: TestDatabaseKind.all)
    func ledgerRowsCommitted(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "books@example.com")
            let account = try await env.firstAccount()
            #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "10.00"], headers: bearer(tokens)).status == .created)
            _ = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
            await env.worker.drain()
            try await env.expectConsistent()
            let sql = env.database.sql
            let deposit = try #require(try await env.entries(.deposit).first { $0.amount == 10 })
            // Exact arithmetic on the cash column, done here (SQLite would do it in floating point).
            func addCash(_ delta: Cash) async throws {
                let cash = try await env.firstAccount().cash
                try await sql.raw("UPDATE accounts SET cash = \(bind: try cash + delta)").run()
            }

            // Changed: the deposit grows, and so does the cash, so the ledger still balances.
            try await sql.raw("UPDATE transactions SET amount = '1000010.00' WHERE id = \(bind: deposit.id)").run()
            try await addCash(1_000_000)
            #expect(try await env.ledgerDifferences().isEmpty, "the sums alone cannot tell")
            #expect(try await env.auditBreak()?.contains("does not match what its audit event committed to") == true)
            try await sql.raw("UPDATE transactions SET amount = '10.00' WHERE id = \(bind: deposit.id)").run()
            try await addCash(-1_000_000)
            #expect(try await env.auditBreak() == nil)

            // Removed: the deposit goes, with its cash.
            try await sql.raw("CREATE TABLE transactions_copy AS SELECT * FROM transactions").run()
            try await sql.raw("DELETE FROM transactions WHERE id = \(bind: deposit.id)").run()
            try await addCash(-10)
            #expect(try await env.ledgerDifferences().isEmpty)
            #expect(try await env.auditBreak()?.contains("the row is gone") == true)
            try await sql.raw("INSERT INTO transactions SELECT * FROM transactions_copy WHERE id = \(bind: deposit.id)").run()
            try await addCash(10)

            // Added: a dividend nobody paid, with its cash.
            try await sql.raw("""
                INSERT INTO transactions (id, account_id, user_id, type, amount, occurred_at, created_at)
                VALUES (\(bind: UUID()), \(bind: account.id), \(bind: account.userID), 'dividend', '500.00', \(bind: env.clock.now), \(bind: env.clock.now))
                """).run()
            try await addCash(500)
            #expect(try await env.ledgerDifferences().isEmpty)
            #expect(try await env.auditBreak()?.contains("no audit event commits to it") == true)
        }
    }

    @Test("a row dated before its account's chain began, an account given to someone else, a row naming someone else: each is found", arguments: TestDatabaseKind.all)
    func backdatedRowsAndOwners(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "owner@example.com")
            let account = try await env.firstAccount()
            _ = try await signUp(client, env, email: "taker@example.com")
            let taker = try #require(try await env.accounts().first { $0.id != account.id })
            #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "10.00"], headers: bearer(tokens)).status == .created)
            try await env.expectConsistent()
            let sql = env.database.sql
            func setCash(_ cash: Cash) async throws { try await sql.raw("UPDATE accounts SET cash = \(bind: cash) WHERE id = \(bind: account.id)").run() }
            let cash = try #require(try await env.accounts().first { $0.id == account.id }).cash

            // A deposit dated before the account was opened, with its cash: no event commits to it, whatever its date.
            let backdated = UUID()
            let before = account.createdAt.addingTimeInterval(-10)
            try await sql.raw("""
                INSERT INTO transactions (id, account_id, user_id, type, amount, description, occurred_at, created_at)
                VALUES (\(bind: backdated), \(bind: account.id), \(bind: account.userID), 'deposit', '1000000.00', 'Starting paper cash', \(bind: before), \(bind: before))
                """).run()
            try await setCash(try cash + 1_000_000)
            #expect(try await env.ledgerDifferences().isEmpty, "the sums alone cannot tell")
            let found = try await env.auditBreak()
            #expect(found?.contains("ledger row \(backdated.lowercasedString) of account \(account.id): no audit event commits to it") == true, "\(found ?? "intact")")
            try await sql.raw("DELETE FROM transactions WHERE id = \(bind: backdated)").run()
            try await setCash(cash)
            #expect(try await env.auditBreak() == nil)

            // The account given to someone else.
            try await sql.raw("UPDATE accounts SET user_id = \(bind: taker.userID) WHERE id = \(bind: account.id)").run()
            #expect(try await env.auditBreak()?.contains("account \(account.id): its owner is not the person its audit chain opened it for") == true)
            try await sql.raw("UPDATE accounts SET user_id = \(bind: account.userID) WHERE id = \(bind: account.id)").run()
            #expect(try await env.auditBreak() == nil)

            // One of its rows moved into someone else's lists.
            try await sql.raw("UPDATE transactions SET user_id = \(bind: taker.userID) WHERE account_id = \(bind: account.id)").run()
            #expect(try await env.auditBreak()?.contains("names someone other than its account's owner") == true)
        }
    }

    @Test("an order slipped into the table, or one whose symbol was changed, is found through its account's chain", arguments: TestDatabaseKind.all)
    func ordersPlacedThroughTheChain(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "orders-placed@example.com")
            let placed = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00"], headers: bearer(tokens))
            #expect(placed.status == .created || placed.status == .accepted)
            let id = try #require(try json(placed)["id"] as? String)
            await env.worker.drain()
            try await env.expectConsistent()
            let sql = env.database.sql
            try await sql.raw("UPDATE orders SET symbol = 'KO' WHERE id = \(bind: UUID(uuidString: id))").run()
            #expect(try await env.auditBreak() == "order \(id): its symbol is not the one its placing recorded: it was changed")
            try await sql.raw("UPDATE orders SET symbol = 'AAPL' WHERE id = \(bind: UUID(uuidString: id))").run()
            #expect(try await env.auditBreak() == nil)

            let copy = UUID()
            try await sql.raw("CREATE TABLE orders_copy AS SELECT * FROM orders WHERE id = \(bind: UUID(uuidString: id))").run()
            try await sql.raw("UPDATE orders_copy SET id = \(bind: copy), client_order_id = NULL").run()
            try await sql.raw("INSERT INTO orders SELECT * FROM orders_copy").run()
            #expect(try await env.auditBreak() == "order \(copy.lowercasedString): its account's audit chain has no event placing it: it was added outside Folio")
        }
    }

    @Test("the global sequence set to the largest integer behind Folio's back: a write fails, the process does not crash")
    func exhaustedSequence() async throws {
        try await withTestApp(.sqlite) { client, env in
            let tokens = try await signUp(client, env, email: "sequence@example.com")
            let account = try await env.firstAccount()
            try await dropGuard(env)
            try await env.database.sql.raw("UPDATE audit_events SET sequence = 9223372036854775807 WHERE sequence = (SELECT MAX(sequence) FROM audit_events)").run()
            let refused = try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "1.00"], headers: bearer(tokens))
            #expect(refused.status == .internalServerError)
            #expect(try await env.firstAccount().cash == account.cash)
        }
    }
}
