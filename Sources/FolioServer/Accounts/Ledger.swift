import FolioDomain
import Foundation
import SQLKit

/// Who asked for a change, for the audit trail.
struct AuditContext: Sendable {
    var ip: String?
    var requestID: String?

    static let none = AuditContext()
}

/// One locked account's books, open in a transaction: the rules record
/// their postings on `books`, then `Ledger.commit` writes them.
struct OpenBooks: Sendable {
    var books: Books
    /// `paper`, or `brokerage` for an account held at an outside broker.
    var kind: String = "paper"
    let head: AuditChain.Head?
    /// The head's signature, as the account row holds it.
    var headMAC: String? = nil
    /// The account's open orders when they were opened, if the need asked (a placement).
    var openOrders: Int? = nil
    /// The account is closed (its owner erased, or being erased): what moves on it is booked, but nobody is told.
    var closed = false

    /// A brokerage account's orders are held, and filled, at its broker.
    var ordersHeldAtBroker: Bool { kind != "paper" }
}

/// The one code that applies postings. `open` locks one account (one
/// `SELECT … FOR UPDATE` that also reads the head of its audit chain) and
/// loads the holdings, orders and applied fills the work needs; the pure
/// trading rules then record their postings on the account's `Books`; and
/// `commit` writes what they changed: the balances, holdings and orders in
/// their final state, and the fills, ledger rows and audit events in order.
/// All in the caller's transaction, so the change commits whole or not at all.
struct Ledger: Sendable {
    let store: TradingStore
    let anchor: AuditAnchor
    let ids: IDSource
    let clock: AppClock
    /// Told of each commit: what the owner hears of it (fills, deposits…), in the same transaction.
    var notifications: Notifications? = nil
    /// Orders by status, fills and their latency.
    var metrics: FolioMetrics? = nil

    struct Need: Sendable {
        var symbols: [String] = []
        var orders: [OrderID] = []
        var brokerFills: [String] = []
        /// Count the account's open orders with the lock (a placement checks their limit).
        var openOrders = false
    }

    /// Locks the account (of `owner`, when given) and loads its books; nil when there is no such account.
    func open(account id: AccountID, owner: UserID?, need: Need = Need(), on db: any SQLDatabase) async throws -> OpenBooks? {
        guard let locked = try await store.lockAccount(id, owner: owner, countingOpenOrders: need.openOrders, on: db) else { return nil }
        let orders = try await store.orders(need.orders, on: db).filter { $0.accountID == id }
        let symbols = need.symbols + orders.map(\.symbol)
        let holdings = try await store.holdings(of: id, symbols: symbols, on: db)
        let applied = try await store.appliedFills(need.brokerFills, on: db)
        let values = need.brokerFills.isEmpty ? [:] : try await store.filledValues(of: orders, on: db)
        return OpenBooks(
            books: Books(account: locked.state, holdings: holdings, orders: orders, appliedFills: applied, filledValues: values),
            kind: locked.kind, head: locked.chainHead, headMAC: locked.chainMAC, openOrders: locked.openOrders, closed: locked.closed)
    }

    /// Locks several accounts (in the order of their ids) and loads each
    /// one's books, in the same four statements however many accounts: the
    /// fills of a worker's batch. Accounts that do not exist are left out.
    func open(accounts ids: [AccountID], need: Need, on db: any SQLDatabase) async throws -> [OpenBooks] {
        let locked = try await store.lockAccounts(ids, on: db)
        let orders = try await store.orders(need.orders, on: db)
        let holdings = try await store.holdings(ofAccounts: locked.map(\.state.id), symbols: need.symbols + orders.map(\.symbol), on: db)
        let applied = try await store.appliedFills(need.brokerFills, on: db)
        let values = need.brokerFills.isEmpty ? [:] : try await store.filledValues(of: orders, on: db)
        return locked.map { account in
            let id = account.state.id
            return OpenBooks(
                books: Books(
                    account: account.state, holdings: holdings[id] ?? [], orders: orders.filter { $0.accountID == id }, appliedFills: applied,
                    filledValues: values),
                kind: account.kind, head: account.chainHead, headMAC: account.chainMAC, closed: account.closed)
        }
    }

    /// The time postings record: whole milliseconds, so a row reads back the
    /// same from either database and its digest in the audit trail holds.
    func now() -> Date {
        AuditChain.recordedTime(clock.now())
    }

    /// Writes what the postings changed, after the caller's own `writes` (a
    /// placement's submit job): on PostgreSQL in one statement (see
    /// `WriteBatch`), so the account's lock is held for as few round trips as it can be.
    func commit(_ open: OpenBooks, context: AuditContext, adding writes: WriteBatch? = nil, on db: any SQLDatabase) async throws {
        var writes = writes ?? WriteBatch(for: store.database.kind)
        try await record(open, context: { _ in context }, on: db, into: &writes)
        try await writes.run(on: db)
    }

    /// The same, for postings asked for by different requests (placements
    /// that share a commit): `contexts` names who asked for each posting, in order.
    func commit(_ open: OpenBooks, contexts: [AuditContext], adding writes: WriteBatch, on db: any SQLDatabase) async throws {
        guard contexts.count == open.books.postings.count else { throw ContextsMismatch() }
        var writes = writes
        try await record(open, context: { contexts[$0] }, on: db, into: &writes)
        try await writes.run(on: db)
    }

    /// A caller's mistake: not one audit context per posting. Nothing is written.
    struct ContextsMismatch: Error {}

    /// Commits several accounts' books: on PostgreSQL all in one statement.
    /// (On SQLite each account's writes run before the next is recorded: an
    /// audit row's global sequence there is read from the rows already written.)
    func commit(_ opens: [OpenBooks], context: AuditContext, on db: any SQLDatabase) async throws {
        guard store.database.kind == .postgres else {
            for open in opens { try await commit(open, context: context, on: db) }
            return
        }
        var writes = WriteBatch(for: .postgres)
        for open in opens { try await record(open, context: { _ in context }, on: db, into: &writes) }
        try await writes.run(on: db)
    }

    /// Adds the writes of what the postings changed to `writes`.
    /// `context` names who asked for the posting at each index.
    private func record(
        _ open: OpenBooks, context: (Int) -> AuditContext, on db: any SQLDatabase, into writes: inout WriteBatch
    ) async throws {
        let books = open.books, head = open.head
        guard !books.isEmpty else { return }
        let now = self.now()
        let account = books.account
        store.upsertHoldings(books.changedHoldings, account: account, ids: ids, now: now, into: &writes)
        let orders = books.changedOrders
        store.insertOrders(orders.filter(\.created).map(\.order), into: &writes)
        store.updateOrders(orders.filter { !$0.created }.map(\.order), into: &writes)
        store.insertFills(books.fills, userID: account.userID, into: &writes)
        store.insertEntries(books.entries, account: account, now: now, into: &writes)
        // Each ledger row is committed to by the event that names it, with a digest of the row: a row
        // changed, added or removed behind Folio's back no longer matches its account's chain.
        var digests: [String: String] = [:]
        for entry in books.entries { digests[entry.id.description] = LedgerDigest.of(entry, account: account.id) }
        let records = books.postings.enumerated().flatMap { index, posting in
            let context = context(index)
            return posting.events.map { note in
                var details = note.details
                if let entry = details["transaction_id"], let digest = digests[entry] { details["entry_digest"] = digest }
                return AuditChain.Record(
                    id: ids.uuid(), occurredAt: now, actorID: note.actorID?.uuid, action: note.action, subjectType: note.subjectType,
                    subjectID: note.subjectID, userID: account.userID.uuid, details: details, ip: context.ip, requestID: context.requestID)
            }
        }
        // The account row takes its balances and its chain's new head in one write.
        let chain = AuditChain.ID.account(account.id)
        if !records.isEmpty {
            try AuditChain.requireSigned(head, mac: open.headMAC, chain: chain, anchor: anchor)
            // Only an account's opening starts its chain; every account since migration 009 has one.
            if head == nil, !records.contains(where: { $0.action == "account.opened" }) { throw AuditChain.MissingHead(chain: chain.text) }
        }
        if let newHead = try await AuditChain.appendRows(records, to: chain, after: head, on: db, into: &writes) {
            store.writeAccount(account, head: newHead, mac: anchor.mac(chain: chain.text, head: newHead), now: now, into: &writes)
        } else if books.accountChanged {
            store.writeBalances(account, now: now, into: &writes)
        }
        // An erased person's accounts are closed: a dividend still booked there notifies, and mails, no one.
        if let notifications, !open.closed {
            var notices = Notifications.notices(in: books)
            // Cash moved in one of several accounts: the message names it (asked only then; fills never are).
            if notices.contains(where: { $0.0.category == .cash }), let name = try await store.nameAmongSeveral(account.id, of: account.userID, on: db) {
                Notifications.naming(&notices, account: name)
            }
            try notifications.notify(account.userID.uuid, notices, into: &writes)
        }
        if let metrics {
            // Counted before the transaction commits: a rolled-back commit can count twice, never zero times.
            for event in books.events where event.action.hasPrefix("order.") && event.action != "order.fill" {
                metrics.order(status: String(event.action.dropFirst("order.".count)))
            }
            let placed = Dictionary(orders.map { ($0.order.id, $0.order.createdAt) }) { first, _ in first }
            for fill in books.fills { metrics.fill(latency: placed[fill.orderID].map { now.timeIntervalSince($0) } ?? 0) }
        }
    }

    /// Throws what recording on the account's books would (`UnsignedHead`, `MissingHead`) when its audit chain
    /// takes no more events. Asked before an order is sent to a broker: its fills could not be booked.
    func requireRecordable(_ account: AccountID) async throws {
        guard let peeked = try await store.peekAccount(account) else { return }
        let chain = AuditChain.ID.account(account)
        try AuditChain.requireSigned(peeked.chainHead, mac: peeked.chainMAC, chain: chain, anchor: anchor)
        if peeked.chainHead == nil { throw AuditChain.MissingHead(chain: chain.text) }
    }

    /// Opens the paper account every user gets, funded with the starting cash
    /// through an ordinary deposit row.
    @discardableResult
    func openPaperAccount(for userID: UserID, startingCash: Cash, context: AuditContext, on db: any SQLDatabase) async throws -> AccountID {
        try await openAccount(
            for: userID, kind: "paper", name: "Paper brokerage", startingCash: startingCash, cashDescription: "Starting paper cash", details: [:],
            context: context, on: db)
    }

    /// Opens an account of `kind` whose cash starts at `startingCash`, by a
    /// deposit row described by `cashDescription`; `details` go on its
    /// `account.opened` audit event. A brokerage account's cash is the
    /// broker's, mirrored to the last place; a paper account's is whole cents.
    func openAccount(
        for userID: UserID, kind: String, name: String, startingCash: Cash, cashDescription: String, details: [String: String],
        context: AuditContext, on db: any SQLDatabase
    ) async throws -> AccountID {
        // Not for someone erased or disabled while this request was on its way.
        guard try await IdentityStore.holdLiveUser(userID, postgres: store.database.kind == .postgres, on: db) else { throw IdentityError.userNotFound }
        let now = self.now()
        let id = ids.next(AccountID.self)
        try await store.createAccount(
            AccountRecord(id: id, userID: userID, name: name, kind: kind, currency: "USD", cash: .zero, reservedCash: .zero, createdAt: now),
            now: now, on: db)
        guard var open = try await self.open(account: id, owner: userID, on: db) else { throw TradingError.accountNotFound }
        var opened = Posting()
        opened.events = [
            AuditNote(action: "account.opened", actorID: userID, subjectType: "account", subjectID: id.description, details: details.merging(["kind": kind]) { _, new in new })
        ]
        open.books.record(opened)
        if startingCash.isPositive {
            let entryID = ids.next(EntryID.self)
            open.books.record(
                kind == "paper"
                    ? try TradingRules.move(.deposit, amount: startingCash, account: open.books.account, description: cashDescription, actor: userID, entryID: entryID, now: now)
                    : try TradingRules.mirror(.deposit, amount: startingCash, account: open.books.account, description: cashDescription, actor: userID, entryID: entryID, now: now))
        }
        try await commit(open, context: context, on: db)
        return id
    }
}
