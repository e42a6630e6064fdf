import FluentKit
import FolioDomain
import Foundation
import SQLKit
import Testing

@testable import FolioServer

/// A database written by the Folio before the core rebuild (migrations 001
/// to 008), with money and audit history in it, upgraded as an operator
/// would: `folio migrate`, then the checks, then the worker.
@Suite("Upgrading a database from before the core rebuild")
struct UpgradeTests {
    static let beforeRebuild = 8

    @Test("folio migrate carries a pre-009 database over: ledger verify and audit verify pass, old jobs name their order, the worker goes on", arguments: TestDatabaseKind.all)
    func upgradeKeepsTheBooksAndTheTrail(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind, migrated: false) { database, location in
            #expect(MigrationRegistry.all[Self.beforeRebuild].name == "009_chains_per_account_and_instances")
            try await database.migrate(first: Self.beforeRebuild)
            let history = try await OldHistory.write(on: database.sql)

            let folio = try FolioProcess()
            defer { folio.cleanUp() }
            let url = location.databaseURL
            let environment = ["DATABASE_URL": url]
            let migrated = try await folio.run(["migrate"], environment: environment)
            #expect(migrated.status == 0, "\(migrated.stderr)")
            // Every migration from 009 on, in order.
            #expect(migrated.stdout == MigrationRegistry.all.dropFirst(8).map { "applied  \($0.name)\n" }.joined())
            #expect(migrated.stdout.hasPrefix("applied  009_chains_per_account_and_instances\n"))

            let ledger = try await folio.run(["ledger", "verify"], environment: environment)
            #expect(ledger.status == 0, "\(ledger.stdout)")
            #expect(ledger.stdout == "checked 1 account(s): the ledger balances\n")
            let audit = try await folio.run(["audit", "verify"], environment: environment)
            #expect(audit.status == 0, "\(audit.stdout)")
            #expect(audit.stdout.hasSuffix("the chain is intact\n"))

            // Every old row is still there, unchanged, in the legacy chain.
            let legacy = try await database.sql.raw("SELECT id, hash FROM audit_events WHERE chain_id IS NULL ORDER BY sequence").all()
            #expect(try legacy.map { try $0.decode(column: "hash", as: String.self) } == history.auditHashes)
            // The old job's order moved from its payload to its own column.
            let job = try #require(try await database.sql.raw("SELECT order_id FROM jobs WHERE kind = 'submit_order'").first())
            #expect(try job.decode(column: "order_id", as: UUID?.self) == history.restingOrderID)

            // New money movements go on the account's own chain, and the books still balance.
            let dividend = try await folio.run(["ledger", "post", history.accountID.uuidString.lowercased(), "--type", "dividend", "--amount", "1.25", "--symbol", "AAPL"], environment: environment)
            #expect(dividend.status == 0, "\(dividend.stderr)")
            #expect(dividend.stdout.contains("cash now 98501.25"))

            // The worker takes the old queued job (a payload from before versioning) and submits its order.
            let worker = try RunningFolio(folio, ["worker"], environment: environment)
            defer { worker.kill() }
            try await eventually("the old submit job to finish") {
                try await database.sql.raw("SELECT status FROM jobs WHERE kind = 'submit_order'").first()?.decode(column: "status", as: String.self) == "done"
            }
            #expect(await worker.terminate().status == 0)
            let order = try #require(try await database.sql.raw("SELECT status FROM orders WHERE id = \(bind: history.restingOrderID)").first())
            #expect(try ["accepted", "filled"].contains(order.decode(column: "status", as: String.self)))

            #expect(try await folio.run(["ledger", "verify"], environment: environment).status == 0)
            let after = try await folio.run(["audit", "verify"], environment: environment)
            #expect(after.status == 0, "\(after.stdout)")
        }
    }
}

extension UpgradeTests {
    @Test("after the upgrade, an old account whose chain was removed gets no new one, and a removed legacy head is not anchored again", arguments: TestDatabaseKind.all)
    func removedChainsStayRemoved(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind, migrated: false) { database, location in
            try await database.migrate(first: Self.beforeRebuild)
            let history = try await OldHistory.write(on: database.sql)
            let folio = try FolioProcess()
            defer { folio.cleanUp() }
            let environment = ["DATABASE_URL": location.databaseURL]
            #expect(try await folio.run(["migrate"], environment: environment).status == 0)
            let sql = database.sql
            let chain = AuditChain.ID.account(AccountID(history.accountID)).text
            #expect(try await sql.raw("SELECT COUNT(*) AS n FROM audit_events WHERE chain_id = \(bind: chain)").first()?.decode(column: "n", as: Int.self) == 1)

            // A row slipped in among those from before the chain (dated then, with its cash): the chain's opening digested them.
            let slipped = UUID()
            let then = Date(timeIntervalSince1970: 1_780_000_100)
            try await sql.raw("""
                INSERT INTO transactions (id, account_id, user_id, type, amount, description, occurred_at, created_at)
                VALUES (\(bind: slipped), \(bind: history.accountID), \(bind: try #require(try await sql.raw("SELECT user_id FROM accounts").first()?.decode(column: "user_id", as: UUID.self))),
                        'deposit', '1000.00', 'Deposit', \(bind: then), \(bind: then))
                """).run()
            try await sql.raw("UPDATE accounts SET cash = '99500' WHERE id = \(bind: history.accountID)").run()
            #expect(try await folio.run(["ledger", "verify"], environment: environment).status == 0, "the sums alone cannot tell")
            let slippedIn = try await folio.run(["audit", "verify"], environment: environment)
            #expect(slippedIn.stdout.contains("its rows from before its audit chain are not the ones the chain's opening digested"), "\(slippedIn.stdout)")
            try await sql.raw("DELETE FROM transactions WHERE id = \(bind: slipped)").run()
            try await sql.raw("UPDATE accounts SET cash = '98500' WHERE id = \(bind: history.accountID)").run()
            #expect(try await folio.run(["audit", "verify"], environment: environment).status == 0)

            // The account's chain removed, head and all.
            if kind == .postgres {
                try await sql.raw("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only").run()
            } else {
                try await sql.raw("DROP TRIGGER audit_events_no_delete").run()
            }
            try await sql.raw("DELETE FROM audit_events WHERE chain_id = \(bind: chain)").run()
            try await sql.raw("UPDATE accounts SET audit_sequence = NULL, audit_hash = NULL, audit_mac = NULL WHERE id = \(bind: history.accountID)").run()
            let anchor = AuditAnchor(secretKey: "any key: nothing is signed")
            let started = try await AuditChain.anchorLegacyTrail(anchor: anchor, ids: .random, clock: .system, database: database)
            #expect(started == .nothingToDo)
            #expect(try await TradingStore(database: database).auditSequence(of: AccountID(history.accountID)) == nil)
            let audit = try await folio.run(["audit", "verify"], environment: environment)
            #expect(audit.status != 0)
            #expect(audit.stdout.contains("the account (opened before per-account chains) has no audit chain"), "\(audit.stdout)")
            let post = try await folio.run(["ledger", "post", history.accountID.uuidString.lowercased(), "--type", "dividend", "--amount", "1.25", "--symbol", "AAPL"], environment: environment)
            #expect(post.status != 0, "\(post.stdout)")
            #expect(try await sql.raw("SELECT cash FROM accounts WHERE id = \(bind: history.accountID)").first()?.decode(column: "cash", as: Cash.self) == Cash("98500"))

            // An operator who knows why (an upgrade by an older build stopped before opening it) opens it again, on the record.
            #expect(try await folio.run(["audit", "open-legacy-chains"], environment: environment).status != 0, "asks for --yes")
            let reopened = try await folio.run(["audit", "open-legacy-chains", "--yes"], environment: environment)
            #expect(reopened.stdout == "opened 1 audit chain(s)\n", "\(reopened.stdout)\(reopened.stderr)")
            #expect(try await folio.run(["audit", "verify"], environment: environment).status == 0)
            let opening = try await sql.raw("SELECT details FROM audit_events WHERE chain_id = \(bind: chain) AND chain_sequence = 1").first()?.decode(column: "details", as: String.self)
            #expect(opening?.contains("opened by an operator") == true)

            // The legacy chain's anchored head removed, after Folio wrote since the upgrade (a person's chain):
            // not anchored again over whatever the legacy rows now say.
            let disabled = try await folio.run(["users", "disable", "old@example.com"], environment: environment)
            #expect(disabled.status == 0, "\(disabled.stderr)")
            try await sql.raw("DELETE FROM audit_chains WHERE chain_id = \(bind: AuditChain.legacyChain)").run()
            #expect(try await AuditChain.anchorLegacyTrail(anchor: anchor, ids: .random, clock: .system, database: database) == .headRemoved)
            #expect(try await sql.raw("SELECT chain_id FROM audit_chains WHERE chain_id = \(bind: AuditChain.legacyChain)").first() == nil)
            let again = try await folio.run(["audit", "verify"], environment: environment)
            #expect(again.stdout.contains("the legacy audit chain has no anchored head, though Folio has written since the upgrade"), "\(again.stdout)")
        }
    }
}

/// What the Folio of migrations 001–008 wrote for one user: an account opened
/// with 100,000.00, a filled buy of 10 AAPL at 150.00, and a limit buy of 5
/// AAPL at 100.00 waiting for its submit job with 500.00 reserved; each step
/// in the one global audit chain of that time.
struct OldHistory {
    var accountID: UUID
    var restingOrderID: UUID
    var auditHashes: [String]

    static func write(on sql: any SQLDatabase) async throws -> OldHistory {
        let userID = UUID(), accountID = UUID(), filledID = UUID(), restingID = UUID()
        let start = AuditChain.recordedTime(Date(timeIntervalSince1970: 1_780_000_000))
        func at(_ seconds: Double) -> Date { start.addingTimeInterval(seconds) }
        func money(_ text: String) -> SQLQueryString { "\(literal: text)" }

        try await sql.raw("""
            INSERT INTO users (id, email, password_hash, role, email_verified_at, password_changed_at, created_at, updated_at)
            VALUES (\(bind: userID), 'old@example.com', '$2b$10$abcdefghijklmnopqrstuuvwxyzabcdefghijklmnopqrstuvwxyzab', 'user', \(bind: at(0)), \(bind: at(0)), \(bind: at(0)), \(bind: at(0)))
            """).run()
        try await sql.raw("""
            INSERT INTO accounts (id, user_id, name, kind, currency, cash, reserved_cash, created_at, updated_at)
            VALUES (\(bind: accountID), \(bind: userID), 'Paper account', 'paper', 'USD', \(money("98500.0000")), \(money("500.0000")), \(bind: at(1)), \(bind: at(3)))
            """).run()
        try await sql.raw("""
            INSERT INTO holdings (id, account_id, user_id, symbol, quantity, reserved_quantity, cost_basis, created_at, updated_at)
            VALUES (\(bind: UUID()), \(bind: accountID), \(bind: userID), 'AAPL', \(money("10.000000000")), \(money("0.000000000")), \(money("1500.0000")), \(bind: at(2)), \(bind: at(2)))
            """).run()
        for (id, quantity, limit, status, filled, average, reserved, time) in [
            (filledID, "10.000000000", nil as String?, "filled", "10.000000000", "150.00000000" as String?, "0.0000", at(2)),
            (restingID, "5.000000000", "100.00000000", "new", "0.000000000", nil, "500.0000", at(3)),
        ] {
            try await sql.raw("""
                INSERT INTO orders (id, user_id, account_id, symbol, side, type, time_in_force, quantity, limit_price, status, filled_quantity,
                    average_fill_price, reserved_cash, reserved_quantity, created_at, updated_at)
                VALUES (\(bind: id), \(bind: userID), \(bind: accountID), 'AAPL', 'BUY', \(literal: limit == nil ? "MARKET" : "LIMIT"), 'GTC',
                    \(money(quantity)), \(limit.map(money) ?? "NULL"), \(literal: status), \(money(filled)), \(average.map(money) ?? "NULL"),
                    \(money(reserved)), \(money("0.000000000")), \(bind: time), \(bind: time))
                """).run()
        }
        try await sql.raw("""
            INSERT INTO fills (id, order_id, user_id, broker_fill_id, quantity, price, occurred_at)
            VALUES (\(bind: UUID()), \(bind: filledID), \(bind: userID), \(literal: "paper-\(filledID.uuidString)"), \(money("10.000000000")), \(money("150.00000000")), \(bind: at(2)))
            """).run()
        for (type, symbol, quantity, price, amount, orderID, time) in [
            ("deposit", nil as String?, nil as String?, nil as String?, "100000.0000", nil as UUID?, at(1)),
            ("buy", "AAPL", "10.000000000", "150.00000000", "-1500.0000", filledID, at(2)),
        ] {
            try await sql.raw("""
                INSERT INTO transactions (id, account_id, user_id, type, symbol, quantity, price, amount, order_id, description, occurred_at, created_at)
                VALUES (\(bind: UUID()), \(bind: accountID), \(bind: userID), \(literal: type), \(symbol.map(money) ?? "NULL"),
                    \(quantity.map(money) ?? "NULL"), \(price.map(money) ?? "NULL"), \(money(amount)), \(bind: orderID), NULL, \(bind: time), \(bind: time))
                """).run()
        }
        // Payloads from before versioning: no "v", the order id in upper case as Foundation printed it.
        try await sql.raw("""
            INSERT INTO jobs (id, kind, payload, status, attempts, max_attempts, run_at, created_at, updated_at)
            VALUES (\(bind: UUID()), 'submit_order', \(literal: #"{"order_id":"\#(restingID.uuidString)"}"#), 'queued', 0, 5, \(bind: at(3)), \(bind: at(3)), \(bind: at(3)))
            """).run()

        // The global chain of that time, linked exactly as migration 005 and the old AuditLog linked it.
        var previous = AuditChain.genesis
        var hashes: [String] = []
        let steps: [(String, String, String, Date)] = [
            ("user.registered", "user", userID.uuidString.lowercased(), at(0)),
            ("account.opened", "account", accountID.uuidString.lowercased(), at(1)),
            ("order.filled", "order", filledID.uuidString.lowercased(), at(2)),
            ("order.placed", "order", restingID.uuidString.lowercased(), at(3)),
        ]
        for (index, (action, subjectType, subjectID, time)) in steps.enumerated() {
            let event = AuditEvent()
            event.id = UUID()
            event.occurredAt = time
            event.actorID = userID
            event.action = action
            event.subjectType = subjectType
            event.subjectID = subjectID
            event.userID = userID
            event.details = "{}"
            event.ip = "203.0.113.7"
            event.requestID = "req-\(index)"
            let sequence = Int64(index + 1)
            let hash = AuditChain.hash(of: event, sequence: sequence, previousHash: previous)
            try await sql.raw("""
                INSERT INTO audit_events (id, occurred_at, actor_id, action, subject_type, subject_id, user_id, details, ip, request_id, sequence, previous_hash, hash)
                VALUES (\(bind: event.id!), \(bind: time), \(bind: userID), \(bind: action), \(bind: subjectType), \(bind: subjectID), \(bind: userID), '{}',
                    '203.0.113.7', \(bind: event.requestID!), \(bind: sequence), \(bind: previous), \(bind: hash))
                """).run()
            previous = hash
            hashes.append(hash)
        }
        return OldHistory(accountID: accountID, restingOrderID: restingID, auditHashes: hashes)
    }
}
