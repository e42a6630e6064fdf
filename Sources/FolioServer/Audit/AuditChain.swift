import Crypto
import FolioDomain
import Foundation
import SQLKit

/// The audit trail: append-only hash chains, one per account (every
/// financial change of that account) and one per user (identity and security
/// events), plus a `system` chain for events about no one.
///
/// Each row carries its chain's id and a sequence within it, the previous
/// row's hash and its own SHA-256 over that hash and the row's canonical
/// content, so changing, removing or reordering a row breaks every link
/// after it. The newest link of each chain (its head) is kept with an HMAC
/// under a key derived from `SECRET_KEY` (an account's on the account row,
/// written with its balances; other chains' in `audit_chains`), which
/// the database does not hold: deleting the newest rows, or restoring an
/// older copy of the events, leaves a head the rows no longer reach.
///
/// Appends to one chain are serialized: an account's chain under the
/// account's row lock (its head is read by the statement that locks the
/// account), other chains under a transaction-scoped advisory lock on
/// PostgreSQL; SQLite has one writer. Different chains append in parallel. A
/// global `sequence` still orders every event for reading.
enum AuditChain {
    enum ID: Sendable, Hashable {
        case account(AccountID)
        case user(UserID)
        case system

        var text: String {
            switch self {
            case .account(let id): "account:\(id)"
            case .user(let id): "user:\(id)"
            case .system: "system"
            }
        }
    }

    struct Head: Sendable, Equatable {
        var sequence: Int64
        var hash: String
    }

    /// One event as it is written.
    struct Record: Sendable {
        var id: UUID
        var occurredAt: Date
        var actorID: UUID?
        var action: String
        var subjectType: String
        var subjectID: String?
        var userID: UUID?
        /// JSON with sorted keys.
        var details: String
        /// The client's address, personal data: the chain hashes `ipCommitment`
        /// (a salted SHA-256 of it) instead, so clearing `ip` and `ipSalt` on
        /// erasure or after a year leaves the chain intact. Rows written before
        /// commitments (no `ipCommitment`) hash the address itself.
        var ip: String?
        var ipSalt: String?
        var ipCommitment: String?
        var requestID: String?

        init(
            id: UUID, occurredAt: Date, actorID: UUID?, action: String, subjectType: String, subjectID: String?, userID: UUID?,
            details: [String: String], ip: String?, requestID: String?
        ) {
            self.id = id
            self.occurredAt = AuditChain.recordedTime(occurredAt)
            self.actorID = actorID
            self.action = action
            self.subjectType = subjectType
            self.subjectID = subjectID
            self.userID = userID
            self.details = (try? String(decoding: FolioJSON.encode(details), as: UTF8.self)) ?? "{}"
            self.ip = ip
            if let ip {
                let salt = AuditChain.hex(SymmetricKey(size: .bits128).withUnsafeBytes { Data($0) })
                self.ipSalt = salt
                self.ipCommitment = AuditChain.commitment(toAddress: ip, salt: salt)
            }
            self.requestID = requestID
        }

        init(
            id: UUID, occurredAt: Date, actorID: UUID?, action: String, subjectType: String, subjectID: String?, userID: UUID?,
            rawDetails: String, ip: String?, ipSalt: String? = nil, ipCommitment: String? = nil, requestID: String?
        ) {
            self.id = id
            self.occurredAt = occurredAt
            self.actorID = actorID
            self.action = action
            self.subjectType = subjectType
            self.subjectID = subjectID
            self.userID = userID
            self.details = rawDetails
            self.ip = ip
            self.ipSalt = ipSalt
            self.ipCommitment = ipCommitment
            self.requestID = requestID
        }
    }

    /// Sorted keys, times in whole milliseconds since 1970: the same bytes on both databases.
    static func canonicalContent(of record: Record, chain: String, sequence: Int64) -> String {
        let fields: [(String, String)] = [
            ("action", record.action),
            ("actor_id", record.actorID?.lowercasedString ?? ""),
            ("chain_id", chain),
            ("chain_sequence", String(sequence)),
            ("details", record.details),
            ("id", record.id.lowercasedString),
            ("ip", record.ipCommitment.map { "commitment:" + $0 } ?? record.ip ?? ""),
            ("occurred_at_ms", String(milliseconds(record.occurredAt))),
            ("request_id", record.requestID ?? ""),
            ("subject_id", record.subjectID ?? ""),
            ("subject_type", record.subjectType),
            ("user_id", record.userID?.lowercasedString ?? ""),
        ]
        return fields.map { "\($0.0)=\(JSONText.quote($0.1))" }.joined(separator: "\n")
    }

    /// A salted hash of an address: without the salt it cannot be guessed back, even from the small space of IPv4 addresses.
    static func commitment(toAddress ip: String, salt: String) -> String {
        hex(SHA256.hash(data: Data("folio-ip-commitment-v1\n\(salt)\n\(ip)".utf8)))
    }

    static func hash(of record: Record, chain: String, sequence: Int64, previousHash: String) -> String {
        let input = previousHash + "\n" + canonicalContent(of: record, chain: chain, sequence: sequence)
        return hex(SHA256.hash(data: Data(input.utf8)))
    }

    /// Adds the rows that append `records` to a chain whose head the caller
    /// holds a lock on to `writes`, and returns the new head, for the caller
    /// to store: an account's with its balances. Nil when there was nothing
    /// to append. `db` is the caller's transaction.
    static func appendRows(
        _ records: [Record], to chain: ID, after head: Head?, on db: any SQLDatabase, into writes: inout WriteBatch
    ) async throws -> Head? {
        guard !records.isEmpty else { return nil }
        let dialect = writes.kind
        let chainText = chain.text
        var previous = head?.hash ?? genesis
        var sequence = head?.sequence ?? 0
        // SQLite has no sequences; its single writer makes MAX + 1 safe. PostgreSQL fills `sequence` from its own.
        var global: Int64 = 0
        if dialect == .sqlite {
            global = try await db.raw("SELECT COALESCE(MAX(sequence), 0) AS head FROM audit_events").first()?.decode(column: "head", as: Int64.self) ?? 0
        }
        var values: [SQLQueryString] = []
        values.reserveCapacity(records.count)
        for record in records {
            sequence += 1
            let hash = hash(of: record, chain: chainText, sequence: sequence, previousHash: previous)
            var row: SQLQueryString = """
                (\(bind: record.id), \(bind: record.occurredAt), \(bind: record.actorID), \(bind: record.action), \(bind: record.subjectType),
                 \(bind: record.subjectID), \(bind: record.userID), \(bind: record.details), \(bind: record.ip), \(bind: record.ipSalt), \(bind: record.ipCommitment), \(bind: record.requestID),
                 \(bind: previous), \(bind: hash), \(bind: chainText), \(bind: sequence)
                """
            if dialect == .sqlite {
                // A sequence set to the largest integer behind Folio's back: refused, not a crash.
                let (next, overflow) = global.addingReportingOverflow(1)
                guard !overflow else { throw SequenceExhausted() }
                global = next
                row = row + ", \(bind: global)"
            }
            values.append(row + ")")
            previous = hash
        }
        let sequenceColumn = dialect == .sqlite ? ", sequence" : ""
        writes.add("""
            INSERT INTO audit_events (id, occurred_at, actor_id, action, subject_type, subject_id, user_id, details, ip, ip_salt, ip_commitment, request_id,
                previous_hash, hash, chain_id, chain_sequence\(unsafeRaw: sequenceColumn))
            VALUES \(values.joined(separator: ", "))
            """)
        return Head(sequence: sequence, hash: previous)
    }

    /// The global sequence is at the largest integer (set there outside Folio: it counts events).
    struct SequenceExhausted: Error, CustomStringConvertible {
        var description: String { "the audit trail's global sequence is at its largest value: it was changed outside Folio; run `folio audit verify`" }
    }

    /// A chain whose head does not carry Folio's signature: changed behind Folio's back (a row deleted and the head
    /// rewound), or signed under a key no longer configured. Nothing is appended to it: signing a new head after it
    /// would make the change verify as intact.
    struct UnsignedHead: Error, CustomStringConvertible {
        var chain: String
        var description: String {
            "the head of audit chain \(chain) does not carry Folio's signature under any configured key (changed outside Folio, "
                + "or signed under a key left out of PREVIOUS_SECRET_KEYS): nothing is appended to it; run `folio audit verify`"
        }
    }

    /// Throws `UnsignedHead` unless `head` (nil: a chain not started) is signed under a configured key.
    static func requireSigned(_ head: Head?, mac: String?, chain: ID, anchor: AuditAnchor) throws {
        guard let head else { return }
        guard let mac, anchor.isValid(mac, chain: chain.text, head: head) else { throw UnsignedHead(chain: chain.text) }
    }

    /// Appends to a chain that no row lock guards (a user's, the system's):
    /// takes the chain's advisory lock on PostgreSQL, then reads its head.
    /// `db` must be a transaction.
    static func appendLocking(_ records: [Record], to chain: ID, anchor: AuditAnchor, dialect: FolioDatabase.Kind, on db: any SQLDatabase) async throws {
        let chainText = chain.text
        if dialect == .postgres {
            try await db.raw("SELECT pg_advisory_xact_lock(\(literal: Int(lockKey(chainText))))").run()
        }
        let row = try await db.raw("SELECT sequence, hash, mac FROM audit_chains WHERE chain_id = \(bind: chainText)").first()
        let head = try row.map { Head(sequence: try $0.decode(column: "sequence", as: Int64.self), hash: try $0.decode(column: "hash", as: String.self)) }
        try requireSigned(head, mac: try row?.decode(column: "mac", as: String?.self), chain: chain, anchor: anchor)
        if head == nil, case .user(let user) = chain, !records.contains(where: { personOpenings.contains($0.action) }),
           try await !hasLegacyEvents(user, on: db) {
            throw MissingHead(chain: chainText)
        }
        var writes = WriteBatch(for: dialect)
        guard let newHead = try await appendRows(records, to: chain, after: head, on: db, into: &writes) else { return }
        writes.add("""
            INSERT INTO audit_chains (chain_id, sequence, hash, mac) VALUES (\(bind: chainText), \(bind: newHead.sequence), \(bind: newHead.hash),
                \(bind: anchor.mac(chain: chainText, head: newHead)))
            ON CONFLICT (chain_id) DO UPDATE SET sequence = excluded.sequence, hash = excluded.hash, mac = excluded.mac
            """)
        try await writes.run(on: db)
    }

    /// The events that start a person's chain: every person since migration 009 has one from then on. A person
    /// from before starts theirs with their next event (their registration is in the legacy chain).
    static let personOpenings: Set<String> = ["user.registered", "admin.user_created", personChainOpenedByOperator]

    /// `folio audit open-person-chain`: an operator, having looked at a person whose chain was found missing,
    /// starts a new one (so the person can be disabled, erased or sign in again), on the record.
    static let personChainOpenedByOperator = "audit.person_chain_opened"

    static func hasLegacyEvents(_ user: UserID, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw("SELECT 1 AS one FROM audit_events WHERE chain_id IS NULL AND user_id = \(bind: user.uuid) LIMIT 1").first() != nil
    }

    /// People with no chain of their own and no events in the legacy chain: their chain was removed, head and all.
    static let peopleWithoutChain: SQLQueryString = """
        SELECT u.id FROM users u
        WHERE NOT EXISTS (SELECT 1 FROM audit_chains c WHERE c.chain_id = 'user:' || lower(CAST(u.id AS TEXT)))
          AND NOT EXISTS (SELECT 1 FROM audit_events e WHERE e.chain_id IS NULL AND e.user_id = u.id)
        ORDER BY u.id
        """

    /// Every chain's anchored head: other chains' from `audit_chains`, accounts' from their rows.
    static let anchoredHeads: SQLQueryString = """
        SELECT chain_id, sequence, hash, mac FROM audit_chains
        UNION ALL
        SELECT 'account:' || lower(CAST(id AS TEXT)), audit_sequence, audit_hash, audit_mac FROM accounts WHERE audit_sequence IS NOT NULL
        """

    /// A stable 63-bit advisory lock key per chain (distinct from the legacy global key 7220101).
    static func lockKey(_ chain: String) -> Int64 {
        let digest = SHA256.hash(data: Data(("folio-audit-lock:" + chain).utf8))
        var key: UInt64 = 0
        for byte in digest.prefix(8) { key = key << 8 | UInt64(byte) }
        return Int64(bitPattern: key & 0x7FFF_FFFF_FFFF_FFFF)
    }
}

/// Signs and checks chain heads with a key derived from `SECRET_KEY` (and
/// accepts heads signed under `PREVIOUS_SECRET_KEYS` during a rotation).
struct AuditAnchor: Sendable {
    private let keys: [SymmetricKey]

    init(secretKey: String, previousKeys: [String] = []) {
        keys = ([secretKey] + previousKeys).map { secret in
            HKDF<SHA256>.deriveKey(
                inputKeyMaterial: SymmetricKey(data: Data(secret.utf8)), salt: Data("folio".utf8),
                info: Data("audit-chain-anchor-v1".utf8), outputByteCount: 32)
        }
    }

    static func message(chain: String, head: AuditChain.Head) -> Data {
        Data("\(chain)\n\(head.sequence)\n\(head.hash)".utf8)
    }

    func mac(chain: String, head: AuditChain.Head) -> String {
        AuditChain.hex(HMAC<SHA256>.authenticationCode(for: Self.message(chain: chain, head: head), using: keys[0]))
    }

    func isValid(_ mac: String, chain: String, head: AuditChain.Head) -> Bool {
        keys.indices.contains { signs(mac, chain: chain, head: head, keyIndex: $0) }
    }

    /// Valid, but only under a key being rotated out: sign it again with the current one.
    func needsResigning(_ mac: String, chain: String, head: AuditChain.Head) -> Bool {
        !signs(mac, chain: chain, head: head, keyIndex: 0) && isValid(mac, chain: chain, head: head)
    }

    private func signs(_ mac: String, chain: String, head: AuditChain.Head, keyIndex: Int) -> Bool {
        ConstantTime.equals(AuditChain.hex(HMAC<SHA256>.authenticationCode(for: Self.message(chain: chain, head: head), using: keys[keyIndex])), mac)
    }
}

extension AuditChain {
    /// Accounts with no chain of their own: every account has one, from its
    /// opening or (opened before migration 009) from the anchoring of the legacy chain.
    static let accountsWithoutChain: SQLQueryString = "SELECT id FROM accounts WHERE audit_sequence IS NULL ORDER BY id"

    /// The name the legacy global chain's anchored head goes by in `audit_chains`.
    static let legacyChain = "legacy"

    /// What `anchorLegacyTrail` found.
    enum LegacyAnchoring: Equatable {
        /// No legacy rows, or their head was anchored before.
        case nothingToDo
        /// The legacy head anchored now, and this many accounts opened before migration 009 given a chain of their own.
        case anchored(accountsOpened: Int)
        /// Legacy rows without an anchored head on a database Folio has written chains to since the upgrade:
        /// the anchored head was removed. It is not anchored again, which would sign whatever the rows now say.
        case headRemoved
    }

    /// The first time a server, worker or `folio migrate` runs after the upgrade
    /// to per-account chains: anchors the legacy chain's head (the rows from
    /// before migration 009) under the key, and gives every account opened
    /// before then a chain of its own, opened with one event, in the same
    /// transaction. From then on removing or adding legacy rows is found, and
    /// every account has a chain: one without is one whose events were removed,
    /// and no chain is opened for it again (`MissingHead`).
    static func anchorLegacyTrail(anchor: AuditAnchor, ids: IDSource, clock: AppClock, database: FolioDatabase) async throws -> LegacyAnchoring {
        // Nearly every database has nothing to anchor: told without a write transaction, so a command that only
        // reads (`folio audit verify` on a read-only copy) writes nothing.
        let anchored = try await database.sql.raw("SELECT chain_id FROM audit_chains WHERE chain_id = \(bind: legacyChain)").first() != nil
        if anchored { return .nothingToDo }
        let legacyEvents = try await database.sql.raw("SELECT 1 AS one FROM audit_events WHERE chain_id IS NULL LIMIT 1").first() != nil
        if !legacyEvents { return .nothingToDo }
        // Events written since, and no anchored head: the head was removed, and nothing is written (`audit verify` says so).
        let writtenSince = try await database.sql.raw("SELECT 1 AS written FROM audit_events WHERE chain_id IS NOT NULL LIMIT 1").first() != nil
        if writtenSince { return .headRemoved }
        return try await database.transaction { db in
            // Two processes starting at once: the second waits here for the first, then finds the head anchored.
            if database.kind == .postgres { try await db.raw("SELECT pg_advisory_xact_lock(\(literal: Int(lockKey(legacyChain))))").run() }
            guard try await db.raw("SELECT chain_id FROM audit_chains WHERE chain_id = \(bind: legacyChain)").first() == nil,
                  let row = try await db.raw("""
                      SELECT sequence, hash FROM audit_events WHERE chain_id IS NULL ORDER BY sequence DESC LIMIT 1
                      """).first()
            else { return .nothingToDo }
            // Trust on first use only while nothing was written since the upgrade.
            if try await db.raw("SELECT 1 AS written FROM audit_events WHERE chain_id IS NOT NULL LIMIT 1").first() != nil { return .headRemoved }
            let head = Head(sequence: try row.decode(column: "sequence", as: Int64.self), hash: try row.decode(column: "hash", as: String.self))
            guard try await db.raw("""
                INSERT INTO audit_chains (chain_id, sequence, hash, mac) VALUES (\(bind: legacyChain), \(bind: head.sequence), \(bind: head.hash),
                    \(bind: anchor.mac(chain: legacyChain, head: head)))
                ON CONFLICT (chain_id) DO NOTHING RETURNING chain_id
                """).first() != nil
            else { return .nothingToDo }
            let opened = try await openLegacyAccountChains(
                reason: "account opened before per-account audit chains", anchor: anchor, ids: ids, clock: clock, database: database, on: db)
            return .anchored(accountsOpened: opened)
        }
    }

    /// Whether the account was opened before per-account chains (its opening is in the legacy chain).
    static func openedBeforeChains(_ account: AccountID, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw("""
            SELECT 1 AS one FROM audit_events WHERE chain_id IS NULL AND action = 'account.opened' AND lower(subject_id) = \(bind: account.description.lowercased())
            LIMIT 1
            """).first() != nil
    }

    /// Gives every account opened before migration 009 that has no chain one of its own, opened with one event
    /// saying `reason` and digesting the account's ledger rows so far, in the caller's transaction `db`.
    /// Run when the legacy head is anchored; and by `folio audit open-legacy-chains`, an operator's decision
    /// (an upgrade by an older build that stopped part-way left some without).
    static func openLegacyAccountChains(
        reason: String, anchor: AuditAnchor, ids: IDSource, clock: AppClock, database: FolioDatabase, on db: any SQLDatabase
    ) async throws -> Int {
        let legacy = try await db.raw("""
            SELECT a.id, a.user_id FROM accounts a
            WHERE a.audit_sequence IS NULL
              AND EXISTS (SELECT 1 FROM audit_events e WHERE e.chain_id IS NULL AND e.action = 'account.opened'
                          AND lower(e.subject_id) = lower(CAST(a.id AS TEXT)))
            ORDER BY a.id
            """).all()
        let store = TradingStore(database: database)
        var opened = 0
        for row in legacy {
            let account = try row.decode(column: "id", as: AccountID.self)
            let user = try row.decode(column: "user_id", as: UserID.self)
            guard let locked = try await store.lockAccount(account, owner: nil, on: db), locked.chainHead == nil else { continue }
            // The rows from before commit to nothing else: the opening commits to all of them.
            let earlier = try await store.entries(of: account, on: db).map(\.line)
            let record = Record(
                id: ids.uuid(), occurredAt: clock.now(), actorID: nil, action: openingOfALegacyAccount, subjectType: "account",
                subjectID: account.description, userID: user.uuid,
                details: ["reason": reason, "ledger_digest": LedgerDigest.of(earlier, account: account)],
                ip: nil, requestID: nil)
            let chain = ID.account(account)
            var writes = WriteBatch(for: database.kind)
            guard let head = try await appendRows([record], to: chain, after: nil, on: db, into: &writes) else { continue }
            store.writeAccount(locked.state, head: head, mac: anchor.mac(chain: chain.text, head: head), now: clock.now(), into: &writes)
            try await writes.run(on: db)
            opened += 1
        }
        return opened
    }

    /// The event that opens the chain of an account opened before migration 009.
    static let openingOfALegacyAccount = "audit.chain_opened"

    /// An account's (or a person's) chain with no head, written to by something other than the
    /// account's opening (the person's registration): the chain's events were removed and its head cleared.
    /// A chain is not opened for it again: its first head would be signed, and the removal verify as intact.
    struct MissingHead: Error, CustomStringConvertible {
        var chain: String
        var description: String {
            "audit chain \(chain) has no head, but what it is about is not being opened: its events were removed; nothing is recorded on it; run `folio audit verify`"
        }
    }

    /// The chains whose anchored head carries no signature under any configured key (`SECRET_KEY` or
    /// `PREVIOUS_SECRET_KEYS`): changed outside Folio, or signed under a key dropped too early. Nothing is
    /// appended to them (`UnsignedHead`) until the key is configured again.
    static func unsignedHeads(anchor: AuditAnchor, database: FolioDatabase) async throws -> [String] {
        try await headSignatures(anchor: anchor, database: database).unsigned
    }

    /// The chains whose head no configured key signed, and how many anchored heads there are in all.
    static func headSignatures(anchor: AuditAnchor, database: FolioDatabase) async throws -> (unsigned: [String], heads: Int) {
        var unsigned: [String] = []
        let rows = try await database.sql.raw(anchoredHeads).all()
        for row in rows {
            let chain = try row.decode(column: "chain_id", as: String.self)
            let head = Head(sequence: try row.decode(column: "sequence", as: Int64.self), hash: try row.decode(column: "hash", as: String.self))
            guard let mac = try row.decode(column: "mac", as: String?.self), anchor.isValid(mac, chain: chain, head: head) else {
                unsigned.append(chain)
                continue
            }
        }
        return (unsigned.sorted(), rows.count)
    }

    /// Not one head is signed under a configured key: the database was signed with another `SECRET_KEY` (restored
    /// under the wrong one, most likely), not tampered with chain by chain. Nothing could be recorded on any chain.
    struct SignedUnderAnotherKey: Error, CustomStringConvertible {
        var heads: Int
        var description: String {
            "none of the \(heads) audit chain heads is signed under SECRET_KEY or PREVIOUS_SECRET_KEYS: this database was signed with another key "
                + "(a backup restored under the wrong SECRET_KEY?). Set the key that signed it (as SECRET_KEY, or in PREVIOUS_SECRET_KEYS), then start again."
        }
    }

    /// Heads signed under a key that is being rotated out (valid under one of
    /// `PREVIOUS_SECRET_KEYS` only) are signed again under the current key, so
    /// that dropping the old key later does not make quiet chains look forged.
    /// A head that moved meanwhile is left alone (its new signature is current).
    /// Runs when a server or worker starts; returns how many were signed again.
    static func resignHeads(anchor: AuditAnchor, database: FolioDatabase) async throws -> Int {
        let sql = database.sql
        var resigned = 0
        for row in try await sql.raw("SELECT id, audit_sequence, audit_hash, audit_mac FROM accounts WHERE audit_sequence IS NOT NULL").all() {
            let account = try row.decode(column: "id", as: AccountID.self)
            let head = Head(sequence: try row.decode(column: "audit_sequence", as: Int64.self), hash: try row.decode(column: "audit_hash", as: String.self))
            let chain = ID.account(account).text
            // A head without a signature is not signed here (`unsignedHeads` reports it): that would sign a change over.
            guard let mac = try row.decode(column: "audit_mac", as: String?.self), anchor.needsResigning(mac, chain: chain, head: head) else { continue }
            try await sql.raw("""
                UPDATE accounts SET audit_mac = \(bind: anchor.mac(chain: chain, head: head))
                WHERE id = \(bind: account) AND audit_sequence = \(bind: head.sequence) AND audit_hash = \(bind: head.hash)
                """).run()
            resigned += 1
        }
        for row in try await sql.raw("SELECT chain_id, sequence, hash, mac FROM audit_chains").all() {
            let chain = try row.decode(column: "chain_id", as: String.self)
            let head = Head(sequence: try row.decode(column: "sequence", as: Int64.self), hash: try row.decode(column: "hash", as: String.self))
            guard let mac = try row.decode(column: "mac", as: String?.self), anchor.needsResigning(mac, chain: chain, head: head) else { continue }
            try await sql.raw("""
                UPDATE audit_chains SET mac = \(bind: anchor.mac(chain: chain, head: head))
                WHERE chain_id = \(bind: chain) AND sequence = \(bind: head.sequence) AND hash = \(bind: head.hash)
                """).run()
            resigned += 1
        }
        return resigned
    }
}
