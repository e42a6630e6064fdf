import FluentKit
import FolioDomain
import Foundation
import SQLKit

/// Erases a person (GDPR article 17) while keeping the books the law asks
/// for: the ledger, orders, fills, the portfolio history and the audit trail
/// stay, unlinked from the person. The user row stays too (they all point at
/// its id) but holds nothing personal: the address becomes
/// `erased-<id>@erased.invalid`, the password and second factor are gone, an
/// administrator's role too, and the account is disabled for good. Its accounts are closed before Plaid is
/// told (and opened again if the erasure does not go through), so a request of
/// theirs that authenticated just before and waited for an account's lock
/// finds no account, and no order starts while the banks are being removed.
///
/// Removed: sessions and refresh tokens, email tokens, recovery codes,
/// sign-in counters, idempotency keys (their stored responses), notifications
/// and preferences, mail (addresses and contents), outbox copies, the
/// address's suppression entry, every Plaid item (removed at Plaid first) and
/// the brokerage keys. The audit trail's addresses are cleared: its chain
/// hashes a commitment to each, so it still verifies.
struct PersonalDataErasure: Sendable {
    let identity: IdentityServices
    let plaid: PlaidLinks
    let trading: TradingStore
    let clock: AppClock

    enum Refusal: Error, Equatable {
        /// Orders still working would go on moving money for someone Folio no longer knows.
        case openOrders(Int)
        /// The deployment would be left without an administrator.
        case lastAdministrator
        /// A rebalance run is between its sells and its buys: it would place orders for no one.
        case rebalanceRunning
        case alreadyErased
        /// A bank was linked while the erasure removed the others at Plaid: erasing again removes it too.
        case linkedWhileErasing
    }

    struct Outcome: Sendable, Equatable {
        var userID: UserID
        var removedRows: Int
        var linkedItemsRemoved: Int
    }

    static func pseudonym(of userID: UserID) -> String {
        "erased-\(userID.uuid.lowercasedString)@erased.invalid"
    }

    /// Checks the password (and the second factor when enrolled) before a user erases themselves.
    func confirm(_ caller: Identity, password: String, totpCode: String?, recoveryCode: String?, origin: RequestOrigin) async throws {
        guard let user = try await identity.store.user(id: caller.userID.uuid, on: identity.database.db) else { throw IdentityError.userNotFound }
        // Erased by another request since this one signed in: said so, rather than "the password is wrong".
        try await Self.checkNotErased(caller.userID, on: identity.database.sql)
        // What would refuse the erasure, first: a refused erasure must not have spent a one-time recovery code.
        try await checkNothingBlocks(user, on: identity.database.sql)
        let identity = self.identity
        try await identity.checkCredentials(of: user, origin: origin) {
            guard PasswordPolicy.isHashable(password), try await identity.hasher.verify(password, hash: user.passwordHash) else {
                return .failed(reason: "wrong_password", FieldIssue(field: "password", code: "incorrect", message: "The password is wrong."))
            }
            if user.hasTwoFactor {
                guard totpCode != nil || recoveryCode != nil else {
                    return .failed(reason: "missing_second_factor", FieldIssue(field: "totp_code", code: "required", message: "Enter a code from your authenticator app."))
                }
                if let refused = try await identity.checkSecondFactor(
                    user: user, totpCode: totpCode, recoveryCode: recoveryCode, origin: origin, on: identity.database.db) {
                    return .failed(reason: "wrong_second_factor", refused.issue)
                }
            }
            return .passed
        }
    }

    /// Erases `userID`. `actor` is the user themselves, or nil for an operator's command.
    func erase(_ userID: UserID, actor: UserID?, origin: RequestOrigin) async throws -> Outcome {
        let database = identity.database
        let sql = database.sql
        guard let user = try await identity.store.user(id: userID.uuid, on: database.db) else { throw IdentityError.userNotFound }
        try await Self.checkNotErased(userID, on: sql)
        try await checkNothingBlocks(user, on: sql)

        // The accounts are closed first, under the locks order placement takes and after the checks, so no order
        // or rebalance starts while Plaid is told (one would refuse the erasure after the banks were gone). Opened
        // again if the erasure does not go through.
        let lock = database.kind == .postgres ? "FOR UPDATE" : ""
        let heldAt = clock.now()
        try await database.transaction { db in
            try await Self.lockForErasure(userID, lock: lock, on: db)
            try await Self.checkNotErased(userID, on: db)
            try await checkNothingBlocks(user, on: db)
            try await trading.closeAccounts(of: userID, now: heldAt, on: db)
        }
        do {
            return try await eraseHeld(user, userID: userID, actor: actor, origin: origin, lock: lock)
        } catch {
            do { try await trading.reopenAccounts(of: userID, closedAt: heldAt, now: clock.now()) } catch let reopening {
                plaid.logger.error("an erasure that did not go through left the person's accounts closed", metadata: ["user_id": "\(userID)", "error": "\(reopening)"])
            }
            throw error
        }
    }

    /// How long an erasure may hold a person's accounts closed while it tells Plaid: far past its
    /// calls' timeouts, so only an erasure whose process stopped during it is taken for abandoned.
    static let abandonedHoldAge: TimeInterval = 30 * 60

    /// Opens again the accounts of people not erased that an erasure closed over `abandonedHoldAge`
    /// ago (its process stopped between closing them and finishing); the worker runs it once a minute
    /// when idle. Were the erasure still running, its last transaction finds any order placed
    /// meanwhile and refuses, as it does for every order.
    @discardableResult
    func reopenAbandonedHolds() async throws -> Int {
        let now = clock.now()
        let reopened = try await trading.reopenAccounts(closedBefore: now.addingTimeInterval(-Self.abandonedHoldAge), now: now)
        if reopened > 0 {
            plaid.logger.warning("accounts an unfinished erasure held closed are open again", metadata: ["accounts": "\(reopened)"])
        }
        return reopened
    }

    /// Under the erasure's locks: refused when another erasure of the person committed meanwhile.
    private static func checkNotErased(_ userID: UserID, on db: any SQLDatabase) async throws {
        let erasedAt = try await db.raw("SELECT erased_at FROM users WHERE id = \(bind: userID.uuid)").first()?.decode(column: "erased_at", as: Date?.self)
        guard erasedAt == nil else { throw Refusal.alreadyErased }
    }

    /// The order placement takes its locks in: the accounts' rows, then the user's and the administrators'.
    private static func lockForErasure(_ userID: UserID, lock: String, on db: any SQLDatabase) async throws {
        // With the same limits on waiting as every other lock of accounts (`TradingStore.waitLimits`).
        let limits = lock.isEmpty ? "" : TradingStore.waitLimits
        try await db.raw("SELECT id FROM accounts WHERE user_id = \(bind: userID.uuid)\(unsafeRaw: limits) ORDER BY id \(unsafeRaw: lock)").run()
        try await db.raw("SELECT id FROM users WHERE id = \(bind: userID.uuid) OR role = 'admin' ORDER BY id \(unsafeRaw: lock)").run()
    }

    private func eraseHeld(_ user: User, userID: UserID, actor: UserID?, origin: RequestOrigin, lock: String) async throws -> Outcome {
        let database = identity.database
        // Plaid first, outside the transaction: if Plaid cannot be told, nothing is erased and the user can try again.
        var itemsRemoved = 0
        for item in try await plaid.store.items(of: userID) {
            do {
                try await plaid.remove(item.id, userID: userID, origin: origin)
            } catch LinkError.notConfigured {
                // Plaid is no longer configured: it cannot be told, but the person's wish to be forgotten stands.
                plaid.logger.warning("a Plaid item removed locally only: Plaid is not configured", metadata: ["item_id": "\(item.id)"])
                let store = plaid.store
                try await store.database.transaction { db in try await store.delete(item.id, on: db) }
            }
            itemsRemoved += 1
        }

        let email = user.email, now = clock.now(), linkedItemsRemoved = itemsRemoved
        let removed = try await database.transaction { db -> Int in
            // Checked again under the same locks: a demotion of the other administrators committed meanwhile stops the erasure.
            try await Self.lockForErasure(userID, lock: lock, on: db)
            // Two erasures of one person at once both passed the first look: the one that waited here ends.
            try await Self.checkNotErased(userID, on: db)
            try await checkNothingBlocks(user, on: db)
            // Plaid items were removed before this transaction; one linked since (its exchange holds the user's row, taken above) stays at Plaid.
            if try await plaid.store.items(of: userID, on: db).isEmpty == false { throw Refusal.linkedWhileErasing }
            var removed = 0
            let owned = ["sessions", "email_tokens", "recovery_codes", "sign_in_failures", "idempotency_keys", "notifications", "notification_preferences"]
            for table in owned {
                removed += try await db.raw("DELETE FROM \(ident: table) WHERE user_id = \(bind: userID.uuid) RETURNING 1 AS one").all().count
            }
            for table in ["mail_messages", "outbox_messages"] {
                removed += try await db.raw("""
                    DELETE FROM \(ident: table) WHERE user_id = \(bind: userID.uuid) OR recipient = \(bind: email) RETURNING 1 AS one
                    """).all().count
            }
            removed += try await db.raw("DELETE FROM mail_suppressions WHERE email = \(bind: email) RETURNING 1 AS one").all().count
            try await db.raw("""
                UPDATE brokerage_links SET status = 'removed', sealed_credentials = '', key_hint = '', removed_at = COALESCE(removed_at, \(bind: now))
                WHERE user_id = \(bind: userID.uuid)
                """).run()
            // Events about the person, and those where they acted (an administrator's actions on others).
            try await db.raw("""
                UPDATE audit_events SET ip = NULL, ip_salt = NULL
                WHERE (user_id = \(bind: userID.uuid) OR actor_id = \(bind: userID.uuid)) AND ip_commitment IS NOT NULL AND ip IS NOT NULL
                """).run()
            try await trading.closeAccounts(of: userID, now: now, on: db)
            try await trading.forgetClientOrderIDs(of: userID, on: db)
            try await db.raw("""
                UPDATE users SET email = \(bind: Self.pseudonym(of: userID)), password_hash = '!erased', role = 'user', totp_secret_sealed = NULL, totp_enabled_at = NULL,
                    email_verified_at = NULL, locked_until = NULL, last_sign_in_at = NULL, password_changed_at = \(bind: now), failed_login_count = 0,
                    disabled_at = COALESCE(disabled_at, \(bind: now)), erased_at = \(bind: now),
                    updated_at = \(bind: now)
                WHERE id = \(bind: userID.uuid)
                """).run()
            // The event itself carries no address: there is no one left to tie it to.
            try await identity.audit.record(
                .init(action: "user.erased", actorID: actor?.uuid, subjectType: "user", subjectID: userID.uuid.lowercasedString, userID: userID.uuid,
                      details: ["by": actor == nil ? "operator" : "user", "rows_removed": String(removed), "linked_items_removed": String(linkedItemsRemoved)]),
                ip: nil, requestID: origin.requestID, inTransaction: db)
            return removed
        }
        return Outcome(userID: userID, removedRows: removed, linkedItemsRemoved: itemsRemoved)
    }

    /// What would refuse the erasure other than open orders (already erased, a rebalance running, the last
    /// administrator): asked before an operator's erasure cancels the orders, so none is canceled for an erasure
    /// that then does not happen.
    func checkBeforeCancelingOrders(_ userID: UserID) async throws {
        let database = identity.database
        guard let user = try await identity.store.user(id: userID.uuid, on: database.db) else { throw IdentityError.userNotFound }
        try await Self.checkNotErased(userID, on: database.sql)
        try await checkNothingBlocks(user, on: database.sql, counting: false)
    }

    private func checkNothingBlocks(_ user: User, on db: any SQLDatabase, counting orders: Bool = true) async throws {
        let open = orders ? try await db.raw("""
            SELECT COUNT(*) AS n FROM orders WHERE user_id = \(bind: user.id!) AND status IN \(unsafeRaw: TradingStore.openStatuses)
            """).first()?.decode(column: "n", as: Int.self) ?? 0 : 0
        if open > 0 { throw Refusal.openOrders(open) }
        let running = try await db.raw("""
            SELECT COUNT(*) AS n FROM rebalance_runs WHERE user_id = \(bind: user.id!) AND status IN ('selling', 'buying')
            """).first()?.decode(column: "n", as: Int.self) ?? 0
        if running > 0 { throw Refusal.rebalanceRunning }
        if user.role == User.Role.admin.rawValue {
            let others = try await db.raw("""
                SELECT COUNT(*) AS n FROM users WHERE role = 'admin' AND disabled_at IS NULL AND erased_at IS NULL AND id <> \(bind: user.id!)
                """).first()?.decode(column: "n", as: Int.self) ?? 0
            if others == 0 { throw Refusal.lastAdministrator }
        }
    }
}
