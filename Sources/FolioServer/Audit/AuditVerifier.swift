import FolioDomain
import Foundation
import SQLKit

/// `folio audit verify`: walks every audit chain (and the legacy global chain
/// of rows from before migration 009) in one snapshot, checks each link and
/// each row's hash, and compares each chain's last row with its anchored
/// head, so removed newest rows or an older copy of the table are found too.
public struct AuditVerifier: Sendable {
    let database: FolioDatabase
    let anchor: AuditAnchor
    /// What "a year ago" is measured from, for addresses retention cleared.
    let clock: AppClock

    public init(services: FolioServices) {
        self.database = services.database
        self.anchor = services.anchor
        self.clock = services.clock
    }

    init(database: FolioDatabase, anchor: AuditAnchor, clock: AppClock = .system) {
        self.database = database
        self.anchor = anchor
        self.clock = clock
    }

    /// The number of events read, and a description of the first broken link (nil when intact).
    public func verify() async throws -> (events: Int, firstBreak: String?) {
        try await database.readTransaction { db in
            if database.kind == .postgres {
                try await db.raw("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").run()
            }
            return try await verify(on: db)
        }
    }

    /// The same walk on `db`, a transaction the caller holds (a copy checked before it commits).
    func verify(on db: any SQLDatabase) async throws -> (events: Int, firstBreak: String?) {
        var count = 0
        let heads = try await anchoredHeads(on: db)
        if let broken = try await verifyLegacy(on: db, heads: heads, count: &count) { return (count, broken) }
        if let broken = try await verifyChains(on: db, heads: heads, count: &count) { return (count, broken) }
        // Every row was walked: a row that belongs to no chain (no place in one) was not written by Folio.
        let total = try await db.raw("SELECT COUNT(*) AS n FROM audit_events").first()?.decode(column: "n", as: Int.self) ?? 0
        if total != count {
            return (count, "\(total - count) audit row(s) belong to no chain: rows were added outside Folio")
        }
        return (count, nil)
    }

    /// What an order's placing event records of it, checked against the order as it is.
    static let orderTerms = ["symbol", "side", "type"]

    /// Retention clears addresses a year on (`RetentionPolicy` `audit_addresses`), a day early at most by clock skew.
    static let addressRetention: TimeInterval = 364 * 86_400

    static let columns = "id, occurred_at, actor_id, action, subject_type, subject_id, user_id, details, ip, ip_salt, ip_commitment, request_id, sequence, previous_hash, hash, chain_id, chain_sequence"

    struct Row {
        var record: AuditChain.Record
        var sequence: Int64?
        var previousHash: String?
        var hash: String?
        var chain: String?
        var chainSequence: Int64?

        init(_ row: any SQLRow) throws {
            record = AuditChain.Record(
                id: try row.decode(column: "id", as: UUID.self), occurredAt: try row.decode(column: "occurred_at", as: Date.self),
                actorID: try row.decode(column: "actor_id", as: UUID?.self), action: try row.decode(column: "action", as: String.self),
                subjectType: try row.decode(column: "subject_type", as: String.self), subjectID: try row.decode(column: "subject_id", as: String?.self),
                userID: try row.decode(column: "user_id", as: UUID?.self), rawDetails: try row.decode(column: "details", as: String.self),
                ip: try row.decode(column: "ip", as: String?.self), ipSalt: try row.decode(column: "ip_salt", as: String?.self),
                ipCommitment: try row.decode(column: "ip_commitment", as: String?.self), requestID: try row.decode(column: "request_id", as: String?.self))
            sequence = try row.decode(column: "sequence", as: Int64?.self)
            previousHash = try row.decode(column: "previous_hash", as: String?.self)
            hash = try row.decode(column: "hash", as: String?.self)
            chain = try row.decode(column: "chain_id", as: String?.self)
            chainSequence = try row.decode(column: "chain_sequence", as: Int64?.self)
        }

        var legacyEvent: AuditEvent {
            let event = AuditEvent()
            event.id = record.id
            event.occurredAt = record.occurredAt
            event.actorID = record.actorID
            event.action = record.action
            event.subjectType = record.subjectType
            event.subjectID = record.subjectID
            event.userID = record.userID
            event.details = record.details
            event.ip = record.ip
            event.requestID = record.requestID
            return event
        }
    }

    typealias Heads = [String: (head: AuditChain.Head, mac: String)]

    func anchoredHeads(on db: any SQLDatabase) async throws -> Heads {
        var heads: Heads = [:]
        for row in try await db.raw(AuditChain.anchoredHeads).all() {
            heads[try row.decode(column: "chain_id", as: String.self)] = (
                AuditChain.Head(sequence: try row.decode(column: "sequence", as: Int64.self), hash: try row.decode(column: "hash", as: String.self)),
                try row.decode(column: "mac", as: String.self))
        }
        return heads
    }

    /// Rows from before the per-chain trail: one chain over the global
    /// sequence, which must end exactly at its anchored head.
    func verifyLegacy(on db: any SQLDatabase, heads: Heads, count: inout Int) async throws -> String? {
        var previous = AuditChain.genesis
        var expected: Int64 = 1
        var after: Int64 = 0
        var last: AuditChain.Head?
        let writtenSinceUpgrade = try await db.raw("SELECT 1 AS written FROM audit_events WHERE chain_id IS NOT NULL LIMIT 1").first() != nil
        func finish() -> String? {
            let anchored = heads[AuditChain.legacyChain]
            guard let last else {
                return anchored == nil ? nil : "the legacy audit chain has no rows but an anchored head: its rows were removed"
            }
            guard let anchored else {
                return writtenSinceUpgrade
                    ? "the legacy audit chain has no anchored head, though Folio has written since the upgrade (when it anchors it): the head was removed"
                    : "the legacy audit chain has no anchored head: run folio migrate, or start folio serve or folio worker once, to anchor it"
            }
            guard anchor.isValid(anchored.mac, chain: AuditChain.legacyChain, head: anchored.head) else {
                return "the legacy audit chain's anchored head does not carry Folio's signature: the head was forged or altered, or SECRET_KEY is not the key that signed it (a key rotated out belongs in PREVIOUS_SECRET_KEYS)"
            }
            if last.sequence < anchored.head.sequence {
                return "the legacy audit chain ends at event \(last.sequence) but its anchored head is event \(anchored.head.sequence): rows were removed"
            }
            if last != anchored.head { return "the legacy audit chain goes past its anchored head (event \(anchored.head.sequence)): rows were added outside Folio" }
            return nil
        }
        while true {
            let page = try await db.raw("""
                SELECT \(unsafeRaw: Self.columns) FROM audit_events WHERE chain_id IS NULL AND sequence > \(bind: after) ORDER BY sequence LIMIT 1000
                """).all().map(Row.init)
            if page.isEmpty { return finish() }
            for row in page {
                count += 1
                let id = row.record.id.lowercasedString
                guard let sequence = row.sequence, let stored = row.hash else { return "audit event \(id): has no place in the chain" }
                let name = "audit event \(sequence) (\(id))"
                if sequence != expected { return "\(name): expected sequence \(expected): a row is missing" }
                if row.previousHash != previous { return "\(name): does not link to the row before it" }
                if AuditChain.hash(of: row.legacyEvent, sequence: sequence, previousHash: previous) != stored {
                    return "\(name): its content does not match its hash: it was changed"
                }
                previous = stored
                expected += 1
                after = sequence
                last = AuditChain.Head(sequence: sequence, hash: stored)
            }
        }
    }

    func verifyChains(on db: any SQLDatabase, heads: Heads, count: inout Int) async throws -> String? {
        var seen: Set<String> = [AuditChain.legacyChain]
        // What each account's chain commits its ledger rows to be, and when the chain began.
        var committed: [String: String] = [:]
        var openings: [String: AuditChain.Record] = [:]
        // Each order's placing: the chain it is in and what it said.
        var placed: [String: (chain: String, terms: [String])] = [:]
        // The chain being walked: its id, the last link and the next sequence expected.
        var current: String?
        var previous = AuditChain.genesis
        var expected: Int64 = 1

        func finish(_ chain: String, last: AuditChain.Head?) -> String? {
            guard let anchored = heads[chain] else { return "audit chain \(chain): has no anchored head: rows were added outside Folio" }
            guard anchor.isValid(anchored.mac, chain: chain, head: anchored.head) else {
                return "audit chain \(chain): its anchored head does not carry Folio's signature: the head was forged or altered, or SECRET_KEY is not the key that signed it (a key rotated out belongs in PREVIOUS_SECRET_KEYS)"
            }
            let reached = last?.sequence ?? 0
            if reached < anchored.head.sequence {
                return "audit chain \(chain): ends at event \(reached) but its anchored head is event \(anchored.head.sequence): the newest rows were removed (truncated, or an older copy restored)"
            }
            if reached > anchored.head.sequence || last?.hash != anchored.head.hash {
                return "audit chain \(chain): goes past or beside its anchored head (event \(anchored.head.sequence)): the head was rewound or rows were written outside Folio"
            }
            return nil
        }

        let verifiedAt = clock.now()
        // Erased by Folio: the row says so and the trail holds the erasure (whose row the walk checks like any other).
        // A column set by hand clears no one's addresses.
        let recordedErasures = Set(try await db.raw("SELECT subject_id FROM audit_events WHERE action = 'user.erased'").all()
            .compactMap { try $0.decode(column: "subject_id", as: String?.self)?.lowercased() })
        let erased = Set<UUID?>(try await db.raw("SELECT id FROM users WHERE erased_at IS NOT NULL").all()
            .map { try $0.decode(column: "id", as: UUID.self) }.filter { recordedErasures.contains($0.lowercasedString) })
        var afterChain = ""
        var afterSequence: Int64 = 0
        var last: AuditChain.Head?
        while true {
            let page = try await db.raw("""
                SELECT \(unsafeRaw: Self.columns) FROM audit_events
                WHERE chain_id IS NOT NULL AND (chain_id > \(bind: afterChain) OR (chain_id = \(bind: afterChain) AND chain_sequence > \(bind: afterSequence)))
                ORDER BY chain_id, chain_sequence LIMIT 1000
                """).all().map(Row.init)
            if page.isEmpty { break }
            for row in page {
                count += 1
                guard let chain = row.chain, let sequence = row.chainSequence, let stored = row.hash else {
                    return "audit event \(row.record.id.lowercasedString): has no place in its chain"
                }
                if chain != current {
                    if let current, let broken = finish(current, last: last) { return broken }
                    current = chain
                    seen.insert(chain)
                    previous = AuditChain.genesis
                    expected = 1
                    last = nil
                }
                let name = "audit chain \(chain), event \(sequence) (\(row.record.id.lowercasedString))"
                if sequence != expected { return "\(name): expected event \(expected): a row is missing" }
                if row.previousHash != previous { return "\(name): does not link to the row before it" }
                if AuditChain.hash(of: row.record, chain: chain, sequence: sequence, previousHash: previous) != stored {
                    return "\(name): its content does not match its hash: it was changed"
                }
                // The address is outside the hash, behind its commitment: it must still open it, or have
                // been cleared by retention (a year on) or erasure (of the person it is about, or who acted).
                if let commitment = row.record.ipCommitment {
                    if let ip = row.record.ip {
                        if row.record.ipSalt.map({ AuditChain.commitment(toAddress: ip, salt: $0) }) != commitment {
                            return "\(name): its address does not match the chain's commitment: it was changed"
                        }
                    } else if row.record.occurredAt > verifiedAt.addingTimeInterval(-Self.addressRetention),
                              !erased.contains(row.record.userID), !erased.contains(row.record.actorID) {
                        return "\(name): its address was cleared before its time and not by an erasure: it was changed"
                    }
                } else if row.record.ip?.hasPrefix("commitment:") == true {
                    return "\(name): its address reads as a commitment: it was changed"
                }
                if sequence == 1 { openings[chain] = row.record }
                if row.record.action == "order.placed", chain.hasPrefix("account:"), let order = row.record.subjectID?.lowercased() {
                    let said = (try? JSONDecoder().decode([String: String].self, from: Data(row.record.details.utf8))) ?? [:]
                    placed[order] = (chain, Self.orderTerms.map { said[$0] ?? "" })
                }
                if chain.hasPrefix("account:"), row.record.details.contains("entry_digest"),
                   let details = try? JSONDecoder().decode([String: String].self, from: Data(row.record.details.utf8)),
                   let entry = details["transaction_id"], let digest = details["entry_digest"] {
                    committed[entry] = digest
                }
                previous = stored
                expected += 1
                last = AuditChain.Head(sequence: sequence, hash: stored)
                afterChain = chain
                afterSequence = sequence
            }
        }
        if let current, let broken = finish(current, last: last) { return broken }
        // Heads whose rows are all gone.
        for chain in heads.keys.sorted() where !seen.contains(chain) {
            if let broken = finish(chain, last: nil) { return broken }
        }
        // Every account's money moves are in its chain, so every account has one
        // (accounts opened before migration 009 get theirs when a server or worker starts).
        for row in try await db.raw(AuditChain.accountsWithoutChain).all() {
            let account = try row.decode(column: "id", as: AccountID.self)
            let chain = AuditChain.ID.account(account).text
            if try await AuditChain.openedBeforeChains(account, on: db) {
                return "audit chain \(chain): the account (opened before per-account chains) has no audit chain: its events were removed, or an upgrade stopped before it opened them (then `folio audit open-legacy-chains` opens it)"
            }
            return "audit chain \(chain): the account has no audit chain: its events were removed"
        }
        // Every person has a chain too, from their registration (people from before migration 009: from their
        // first event since, their registration being in the legacy chain).
        if let row = try await db.raw(AuditChain.peopleWithoutChain).first() {
            let chain = AuditChain.ID.user(UserID(try row.decode(column: "id", as: UUID.self))).text
            return "audit chain \(chain): the person has no audit chain: its events were removed"
        }
        // Every account belongs to the person its chain opened it for, and every ledger row is the one its account's
        // chain committed to: all of them for an account opened with its chain; for one opened before migration 009,
        // those from before its chain began are the rows its opening event digested (or, opened by a build before
        // that digest, are from before that time).
        let store = TradingStore(database: database)
        for account in try await store.allAccounts(on: db) {
            let chain = AuditChain.ID.account(account.id).text
            guard let opening = openings[chain] else { continue }
            if opening.userID != account.userID.uuid {
                return "account \(account.id): its owner is not the person its audit chain opened it for: it was changed"
            }
            let details = (try? JSONDecoder().decode([String: String].self, from: Data(opening.details.utf8))) ?? [:]
            if opening.action == "account.opened", let kind = details["kind"], kind != account.kind {
                return "account \(account.id): its kind is not the one its audit chain opened it with: it was changed"
            }
            var uncommitted: [LedgerLine] = []
            for entry in try await store.entries(of: account.id, on: db).map(\.line) {
                let id = entry.id.description
                guard let digest = committed.removeValue(forKey: id) else {
                    // An opening that digested the older rows vouches for them whatever their dates; one from before
                    // that digest, only for rows dated before it.
                    if opening.action == "account.opened" || (details["ledger_digest"] == nil && entry.occurredAt >= opening.occurredAt) {
                        return "ledger row \(id) of account \(account.id): no audit event commits to it: it was added outside Folio"
                    }
                    uncommitted.append(entry)
                    continue
                }
                if digest != LedgerDigest.of(entry, account: account.id) {
                    return "ledger row \(id) of account \(account.id): it does not match what its audit event committed to: it was changed"
                }
            }
            if let digested = details["ledger_digest"], digested != LedgerDigest.of(uncommitted, account: account.id) {
                return "account \(account.id): its rows from before its audit chain are not the ones the chain's opening digested: rows were added, changed or removed"
            }
        }
        // Every order was placed through the account's chain (one from before the chain began, on an older account,
        // excepted), as what it is: an order slipped into the table would be worked, and its fills booked.
        var afterOrder: UUID?
        while true {
            var query: SQLQueryString = "SELECT id, account_id, symbol, side, type, created_at FROM orders"
            if let afterOrder { query = query + " WHERE id > \(bind: afterOrder)" }
            let page = try await db.raw(query + " ORDER BY id LIMIT 1000").all()
            if page.isEmpty { break }
            for row in page {
                let uuid = try row.decode(column: "id", as: UUID.self)
                afterOrder = uuid
                let id = uuid.lowercasedString
                let chain = AuditChain.ID.account(try row.decode(column: "account_id", as: AccountID.self)).text
                guard let opening = openings[chain] else { continue }
                guard let placing = placed[id], placing.chain == chain else {
                    if opening.action != "account.opened", try row.decode(column: "created_at", as: Date.self) < opening.occurredAt { continue }
                    return "order \(id): its account's audit chain has no event placing it: it was added outside Folio"
                }
                for (column, said) in zip(Self.orderTerms, placing.terms) where said != (try row.decode(column: column, as: String.self)) {
                    return "order \(id): its \(column) is not the one its placing recorded: it was changed"
                }
            }
        }
        // Rows of an account carry its owner: one that names someone else shows in their lists.
        for table in ["transactions", "holdings", "orders", "brokerage_links", "portfolio_snapshots", "target_allocations", "rebalance_runs"] {
            if let row = try await db.raw("""
                SELECT t.id FROM \(unsafeRaw: table) t JOIN accounts a ON a.id = t.account_id
                WHERE lower(CAST(t.user_id AS TEXT)) <> lower(CAST(a.user_id AS TEXT)) LIMIT 1
                """).first() {
                return "\(table) row \(try row.decode(column: "id", as: UUID.self).lowercasedString): it names someone other than its account's owner: it was changed"
            }
        }
        if let row = try await db.raw("""
            SELECT f.id FROM fills f JOIN orders o ON o.id = f.order_id
            WHERE lower(CAST(f.user_id AS TEXT)) <> lower(CAST(o.user_id AS TEXT)) LIMIT 1
            """).first() {
            return "fills row \(try row.decode(column: "id", as: UUID.self).lowercasedString): it names someone other than its order's owner: it was changed"
        }
        if let missing = committed.keys.sorted().first {
            return "ledger row \(missing): its audit event commits to it but the row is gone: it was removed"
        }
        return nil
    }
}
