import Foundation
import Logging
import SQLKit

/// How long Folio keeps each kind of data it no longer needs, and the code
/// that removes it. The ledger, orders, fills, the audit trail and the
/// portfolio history are never deleted: they are the books.
///
/// Each policy removes in batches of `batchSize` rows, each its own short
/// statement, so no table is locked for long; a dry run counts the same
/// rows with the same condition.
public struct RetentionPolicy: Sendable {
    public var name: String
    public var table: String
    public var reason: String
    /// How long a row is kept after the moment the condition measures from.
    public var keep: TimeInterval
    /// The column a batch is chosen by; nil for tables small enough to clear in one statement.
    var key: String?
    /// What becomes of a row: deleted, or only some columns cleared.
    var action: Action = .delete
    /// Rows past retention, given the cutoff (`now - keep`) and now.
    var condition: @Sendable (_ cutoff: Date, _ now: Date) -> SQLQueryString

    enum Action: Sendable {
        case delete
        /// Personal columns set to NULL; the row stays (audit events keep their place in the chain).
        case clear(set: String, unlessNull: String)
    }

    static let day: TimeInterval = 86_400

    /// People erased: what a request that raced their erasure wrote after it goes at the next run.
    static let erasedUsers = "(SELECT id FROM users WHERE erased_at IS NOT NULL)"

    /// Every policy, in the order they run (children before what they point at).
    public static let all: [RetentionPolicy] = [
        .init(
            name: "sessions", table: "sessions",
            reason: "Signed-out, revoked and expired sessions (with their refresh tokens, IP address and browser) are kept 30 days for security questions, then removed.",
            keep: 30 * day, key: "id",
            condition: { cutoff, _ in "expires_at < \(bind: cutoff) OR revoked_at < \(bind: cutoff)" }),
        .init(
            name: "email_tokens", table: "email_tokens",
            reason: "Verification and reset links are single-use; used or expired ones are kept 7 days, then removed.",
            keep: 7 * day, key: "id",
            condition: { cutoff, _ in "used_at < \(bind: cutoff) OR expires_at < \(bind: cutoff)" }),
        .init(
            name: "idempotency_keys", table: "idempotency_keys",
            reason: "A key answers repeats for 24 hours; an expired key (or one stuck in flight for a week) is removed with the response it kept.",
            keep: 0, key: "id",
            condition: { cutoff, _ in
                "(expires_at < \(bind: cutoff) AND status <> 'in_flight') OR created_at < \(bind: cutoff.addingTimeInterval(-7 * day))"
            }),
        .init(
            name: "finished_jobs", table: "jobs",
            reason: "Done jobs are kept 14 days to answer what ran; dead jobs stay until an operator has looked at them (90 days).",
            keep: 14 * day, key: "id",
            // A dead submit job is how a stuck order is found again: it stays while its order is open.
            condition: { cutoff, _ in
                """
                (status = 'done' AND updated_at < \(bind: cutoff))
                OR (status = 'dead' AND updated_at < \(bind: cutoff.addingTimeInterval(-76 * day))
                    AND (order_id IS NULL OR NOT EXISTS (
                        SELECT 1 FROM orders o WHERE o.id = jobs.order_id AND o.status IN \(unsafeRaw: TradingStore.openStatuses))))
                """
            }),
        .init(
            name: "outbox_messages", table: "outbox_messages",
            reason: "The development outbox holds mail that was never sent; 30 days is enough to read it.",
            keep: 30 * day, key: "id",
            condition: { cutoff, _ in "created_at < \(bind: cutoff)" }),
        .init(
            name: "mail_messages", table: "mail_messages",
            reason: "Settled mail (its address and contents) is kept 90 days to answer 'did you send me…', then removed.",
            keep: 90 * day, key: "id",
            condition: { cutoff, _ in "status IN ('sent', 'failed', 'uncertain', 'suppressed') AND updated_at < \(bind: cutoff)" }),
        .init(
            name: "notifications", table: "notifications",
            reason: "In-app notices repeat what the ledger and audit trail keep; they are removed after a year (an erased person's at once).",
            keep: 365 * day, key: "id",
            condition: { cutoff, _ in "created_at < \(bind: cutoff) OR user_id IN \(unsafeRaw: erasedUsers)" }),
        .init(
            name: "sendgrid_events", table: "sendgrid_events",
            reason: "Event ids are kept 3 days to drop SendGrid's retries of the same event.",
            keep: 3 * day, key: "sg_event_id",
            condition: { cutoff, _ in "received_at < \(bind: cutoff)" }),
        .init(
            name: "unowned_mail_suppressions", table: "mail_suppressions",
            reason: "A bounce or spam report for an address no account holds (one SendGrid reported after its owner's erasure, as it may for days) is removed after 7 days; an account's stays until the address is erased.",
            keep: 7 * day, key: "email",
            condition: { cutoff, _ in "created_at < \(bind: cutoff) AND NOT EXISTS (SELECT 1 FROM users u WHERE lower(u.email) = lower(mail_suppressions.email))" }),
        .init(
            name: "plaid_webhooks", table: "plaid_webhooks",
            reason: "Webhook ids are kept a day to drop Plaid's retries of the same webhook.",
            keep: day, key: "id",
            condition: { cutoff, _ in "received_at < \(bind: cutoff)" }),
        .init(
            name: "sign_in_failures", table: "sign_in_failures",
            reason: "Failed sign-in counters (per account and address) that are no longer locking anything are removed after 30 quiet days; an erased person's at once (a sign-in that raced the erasure).",
            keep: 30 * day, key: nil,
            condition: { cutoff, now in
                "(updated_at < \(bind: cutoff) AND (locked_until IS NULL OR locked_until < \(bind: now))) OR user_id IN \(unsafeRaw: erasedUsers)"
            }),
        .init(
            name: "unknown_sign_in_failures", table: "unknown_sign_in_failures",
            reason: "Counters of sign-ins to unknown addresses are removed after 30 quiet days.",
            keep: 30 * day, key: "key",
            condition: { cutoff, now in "updated_at < \(bind: cutoff) AND (locked_until IS NULL OR locked_until < \(bind: now))" }),
        .init(
            name: "rate_limit_buckets", table: "rate_limit_buckets",
            reason: "A sign-in rate-limit bucket (keyed by client address) that is full again means the same as none, and is removed.",
            keep: 0, key: "key",
            condition: { cutoff, _ in "full_at < \(bind: SharedRateLimiter.microseconds(cutoff))" }),
        .init(
            name: "audit_addresses", table: "audit_events",
            reason: "Audit events (security events among them) are kept for good, but the IP address on each is cleared after a year (an erased person's at once); the chain keeps a commitment to it, so it still verifies.",
            keep: 365 * day, key: "id", action: .clear(set: "ip = NULL, ip_salt = NULL", unlessNull: "ip"),
            condition: { cutoff, _ in
                "ip_commitment IS NOT NULL AND (occurred_at < \(bind: cutoff) OR user_id IN \(unsafeRaw: erasedUsers) OR actor_id IN \(unsafeRaw: erasedUsers))"
            }),
        .init(
            name: "market_data_calls", table: "market_data_calls",
            reason: "Vendor call counters matter for the current minute and day only; older windows are removed after 2 days.",
            keep: 2 * day, key: nil,
            condition: { cutoff, _ in "period_start < \(bind: Int64(cutoff.timeIntervalSince1970))" }),
        .init(
            name: "quotes", table: "quotes",
            reason: "A quote not fetched for 30 days, for a symbol no one holds, orders or targets, is no longer asked for; one still needed stays as its last known price.",
            keep: 30 * day, key: "symbol",
            condition: { cutoff, _ in
                // Needed: held, named by an open order (its limit is checked against it), or in an account's current targets.
                """
                fetched_at < \(bind: cutoff) AND symbol NOT IN (SELECT symbol FROM holdings)
                AND symbol NOT IN (SELECT symbol FROM orders WHERE status IN \(unsafeRaw: TradingStore.openStatuses))
                AND symbol NOT IN (
                    SELECT w.symbol FROM target_weights w JOIN target_allocations a ON a.id = w.allocation_id
                    WHERE a.version = (SELECT MAX(b.version) FROM target_allocations b WHERE b.account_id = a.account_id))
                """
            }),
    ]
}

/// Runs the retention policies: counts (dry run) or removes.
public struct Retention: Sendable {
    let database: FolioDatabase
    let clock: AppClock
    var policies: [RetentionPolicy] = RetentionPolicy.all
    var batchSize = 1000
    var metrics: FolioMetrics?

    public struct Outcome: Sendable, Equatable {
        public var policy: String
        public var table: String
        public var rows: Int
    }

    /// What each policy removes (or, with `dryRun`, would remove), in order;
    /// `progress` hears each policy as it finishes.
    public func run(dryRun: Bool, progress: @Sendable (RetentionPolicy, Int) -> Void = { _, _ in }) async throws -> [Outcome] {
        let now = clock.now()
        var outcomes: [Outcome] = []
        for policy in policies {
            let rows = dryRun ? try await count(policy, now: now) : try await remove(policy, now: now)
            if !dryRun { metrics?.retentionRemoved(policy: policy.name, rows: rows) }
            progress(policy, rows)
            outcomes.append(Outcome(policy: policy.name, table: policy.table, rows: rows))
        }
        return outcomes
    }

    private func condition(_ policy: RetentionPolicy, now: Date) -> SQLQueryString {
        let base = policy.condition(now.addingTimeInterval(-policy.keep), now)
        if case .clear(_, let unlessNull) = policy.action { return "(\(base)) AND \(unsafeRaw: unlessNull) IS NOT NULL" }
        return "(" + base + ")"
    }

    func count(_ policy: RetentionPolicy, now: Date) async throws -> Int {
        let row = try await database.sql.raw("SELECT COUNT(*) AS n FROM \(ident: policy.table) WHERE \(condition(policy, now: now))").first()
        return try row?.decode(column: "n", as: Int.self) ?? 0
    }

    func remove(_ policy: RetentionPolicy, now: Date) async throws -> Int {
        let sql = database.sql
        let condition = condition(policy, now: now)
        guard let key = policy.key else {
            return try await sql.raw("DELETE FROM \(ident: policy.table) WHERE \(condition) RETURNING 1 AS one").all().count
        }
        var total = 0
        while true {
            let chosen: SQLQueryString = "SELECT \(ident: key) FROM \(ident: policy.table) WHERE \(condition) LIMIT \(literal: batchSize)"
            let statement: SQLQueryString
            switch policy.action {
            case .delete:
                statement = "DELETE FROM \(ident: policy.table) WHERE \(ident: key) IN (\(chosen)) RETURNING 1 AS one"
            case .clear(let assignments, _):
                statement = "UPDATE \(ident: policy.table) SET \(unsafeRaw: assignments) WHERE \(ident: key) IN (\(chosen)) RETURNING 1 AS one"
            }
            let removed = try await sql.raw(statement).all().count
            total += removed
            if removed < batchSize { return total }
        }
    }

    /// The daily run, as a recurring job.
    static let schedule = RecurringJob(name: "retention", kind: .runRetention, cadence: .every(86_400), payload: { _ in .runRetention })
}
