import FluentKit
import FolioDomain
import Foundation
import SQLKit

/// The only code that reads or writes users, their email tokens, recovery
/// codes and sign-in counters. Sessions and refresh tokens are `SessionStore`'s.
/// Each method takes the database to run on, so a flow can put several in one
/// transaction.
struct IdentityStore: Sendable {
    // MARK: Users

    func user(id: UUID, on db: any Database) async throws -> User? {
        try await User.find(id, on: db)
    }

    /// `email` is compared as given: callers pass the normalized address.
    func user(email: String, on db: any Database) async throws -> User? {
        try await User.query(on: db).filter(\.$email == email).first()
    }

    /// Holds the user's row (shared) for the rest of the transaction `db`
    /// and says whether the user is still there: not erased, not disabled.
    /// An erasure takes the row for update, so something made for the user
    /// (an account, a linked item) in a transaction that waited on it sees
    /// the erasure once it commits (PostgreSQL re-reads the updated row;
    /// SQLite's single writer runs the two one after the other).
    static func holdLiveUser(_ userID: UserID, postgres: Bool, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw("""
            SELECT id FROM users WHERE id = \(bind: userID) AND erased_at IS NULL AND disabled_at IS NULL\(unsafeRaw: postgres ? " FOR SHARE" : "")
            """).first() != nil
    }

    /// The same hold, asking only that the user is not erased (a disabled user still gets notices). Outside a
    /// transaction it is a statement of its own: it waits for an erasure's hold on the row, then lets go.
    /// Inside one, the shared hold lasts to its end: never in a transaction that later writes the row (a
    /// password reset's would deadlock with another).
    static func holdUnerasedUser(_ userID: UUID, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw("""
            SELECT id FROM users WHERE id = \(bind: userID) AND erased_at IS NULL\(unsafeRaw: db.dialect.name == "postgresql" ? " FOR SHARE" : "")
            """).first() != nil
    }

    /// Which of these users were erased (their rows stay, pseudonymised and disabled for good).
    func erased(_ ids: [UUID], on db: any Database) async throws -> Set<UUID> {
        guard !ids.isEmpty, let sql = db as? any SQLDatabase else { return [] }
        let list = SQLList(ids.map { SQLBind($0) })
        return Set(try await sql.raw("SELECT id FROM users WHERE erased_at IS NOT NULL AND id IN (\(list))").all()
            .map { try $0.decode(column: "id", as: UUID.self) })
    }

    func insert(_ user: User, on db: any Database) async throws {
        try await user.create(on: db)
    }

    func save(_ user: User, on db: any Database) async throws {
        try await user.save(on: db)
    }

    /// The administrator created first (and not disabled): the deployment's own broker keys are linked to them.
    func firstAdmin(on db: any Database) async throws -> User? {
        try await User.query(on: db).filter(\.$role == User.Role.admin.rawValue).filter(\.$disabledAt == nil)
            .sort(\.$createdAt).sort(\.$id).first()
    }

    /// Users with a sealed TOTP secret, for sealing again under a new key.
    func usersWithTOTPSecret(on db: any Database) async throws -> [User] {
        try await User.query(on: db).filter(\.$totpSecretSealed != nil).sort(\.$id).all()
    }

    /// Replaces a sealed TOTP secret only if it is still `old` (the user did not enrol again meanwhile).
    func replaceSealedTOTPSecret(of userID: UUID, old: String, new: String, on db: any Database) async throws {
        try await User.query(on: db).filter(\.$id == userID).filter(\.$totpSecretSealed == old).set(\.$totpSecretSealed, to: new).update()
    }

    /// Users in order of sign-up, after the cursor user if any.
    func users(after cursor: UUID?, limit: Int, on db: any Database) async throws -> [User] {
        let query = User.query(on: db).sort(\.$createdAt).sort(\.$id).limit(limit)
        if let cursor { query.filter(Pagination.after(cursor, table: User.schema, timeColumn: "created_at", descending: false)) }
        return try await Pagination.checkAnchor(query.all(), cursor: cursor, table: User.schema, on: db as! any SQLDatabase)
    }

    func allUsers(on db: any Database) async throws -> [User] {
        try await User.query(on: db).sort(\.$createdAt).sort(\.$id).all()
    }

    /// Seals a TOTP secret again (under the current key), leaving the rest of the user alone; only
    /// while the secret is still the one read (a set-up or turning off meanwhile wins).
    func replaceTOTPSecret(userID: UUID, old: String, sealed: String, on db: any Database) async throws {
        try await User.query(on: db).filter(\.$id == userID).filter(\.$totpSecretSealed == old).set(\.$totpSecretSealed, to: sealed).update()
    }

    /// Keeps a new TOTP secret for a set-up, unless two-factor was turned on (or the person erased) meanwhile; false then.
    /// Compare-and-set in one statement: a set-up's write must never replace the secret of a
    /// second factor that is on, nor one a confirmation is checking (`enableSecondFactor`).
    func startSecondFactorSetUp(userID: UUID, sealed: String, now: Date, on db: any Database) async throws -> Bool {
        try await (db as! any SQLDatabase).raw("""
            UPDATE users SET totp_secret_sealed = \(bind: sealed), updated_at = \(bind: now)
            WHERE id = \(bind: userID) AND totp_enabled_at IS NULL AND erased_at IS NULL RETURNING id
            """).all().count == 1
    }

    /// Turns two-factor on with the secret a code was checked against; false when another set-up
    /// replaced that secret meanwhile (or it is on already): then nothing changes.
    func enableSecondFactor(userID: UUID, sealed: String, now: Date, on db: any Database) async throws -> Bool {
        try await (db as! any SQLDatabase).raw("""
            UPDATE users SET totp_enabled_at = \(bind: now), updated_at = \(bind: now)
            WHERE id = \(bind: userID) AND totp_enabled_at IS NULL AND totp_secret_sealed = \(bind: sealed) RETURNING id
            """).all().count == 1
    }

    // MARK: Sign-in counters

    /// A counter is written only for someone not erased (with `holdUnerasedUser` first, the sign-in
    /// throttle's writes keep no address of a person erased while their password was being checked).
    static func notErased(_ userID: UUID) -> SQLQueryString {
        "NOT EXISTS (SELECT 1 FROM users WHERE id = \(bind: userID) AND erased_at IS NOT NULL)"
    }

    /// Counts one more attempt unless the user is locked at `now`; from
    /// `threshold` on, the user is locked until `provisionalLock` while the
    /// attempt is checked. The new count, or nil while locked.
    /// Counts a sign-in attempt from one client address against the account,
    /// unless that address is waiting; nil while it waits.
    func claimSignInAttempt(userID: UUID, client: String, now: Date, threshold: Int, provisionalLock: Date, on db: any Database) async throws -> Int? {
        try await claimSignInAttempt(userID: userID, client: client, now: now, threshold: threshold, provisionalLocks: [provisionalLock], on: db)
    }

    /// The wait a claim sets for the count it reaches: `locks[0]` at `threshold`, the next one at each failure
    /// after it, the last one from there on. So the wait seen while the attempt is checked is the one its
    /// failure will set, as for an unknown address: a `Retry-After` does not tell the two apart.
    static func provisionalLock(for count: SQLQueryString, threshold: Int, locks: [Date]) -> SQLQueryString {
        guard locks.count > 1 else { return "\(bind: locks[0])" }
        var cases: SQLQueryString = "CASE \(count)"
        for (offset, lock) in locks.dropLast().enumerated() { cases = cases + " WHEN \(bind: threshold + offset) THEN \(bind: lock)" }
        return cases + " ELSE \(bind: locks.last!) END"
    }

    func claimSignInAttempt(userID: UUID, client: String, now: Date, threshold: Int, provisionalLocks: [Date], on db: any Database) async throws -> Int? {
        let sql = db as! any SQLDatabase
        try await sql.raw("""
            INSERT INTO sign_in_failures (user_id, client, failures, updated_at)
            SELECT \(bind: userID), \(bind: client), 0, \(bind: now) WHERE \(Self.notErased(userID))
            ON CONFLICT (user_id, client) DO NOTHING
            """).run()
        let rows = try await sql.raw("""
            UPDATE sign_in_failures SET failures = failures + 1,
                locked_until = CASE WHEN failures + 1 >= \(bind: threshold)
                    THEN \(Self.provisionalLock(for: "failures + 1", threshold: threshold, locks: provisionalLocks)) ELSE locked_until END,
                updated_at = \(bind: now)
            WHERE user_id = \(bind: userID) AND client = \(bind: client) AND (locked_until IS NULL OR locked_until <= \(bind: now))
            RETURNING failures
            """).all()
        return try rows.first?.decode(column: "failures", as: Int.self)
    }

    /// Counts a sign-in attempt against the account as a whole, unless the
    /// account is waiting; nil while it waits. After a wait has passed the
    /// count starts again, so one guess per wait cannot keep the account held.
    func claimAccountSignInAttempt(userID: UUID, now: Date, threshold: Int, provisionalLock: Date, on db: any Database) async throws -> Int? {
        // Every right-hand side reads the row as it was before the update, on both databases.
        let rows = try await (db as! any SQLDatabase).raw("""
            UPDATE users SET
                failed_login_count = CASE WHEN locked_until IS NOT NULL THEN 1 ELSE failed_login_count + 1 END,
                locked_until = CASE WHEN (CASE WHEN locked_until IS NOT NULL THEN 1 ELSE failed_login_count + 1 END) >= \(bind: threshold)
                    THEN \(bind: provisionalLock) ELSE NULL END,
                updated_at = \(bind: now)
            WHERE id = \(bind: userID) AND (locked_until IS NULL OR locked_until <= \(bind: now))
            RETURNING failed_login_count
            """).all()
        return try rows.first?.decode(column: "failed_login_count", as: Int.self)
    }

    /// Takes back one claimed attempt: its count from the address (and the account, when it was counted there),
    /// and a wait only if it is still the provisional one the claim set.
    func releaseSignInAttempt(userID: UUID, client: String, clientLock: Date, accountLock: Date?, on db: any Database) async throws {
        let sql = db as! any SQLDatabase
        try await sql.raw("""
            UPDATE sign_in_failures SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END,
                locked_until = CASE WHEN locked_until = \(bind: clientLock) THEN NULL ELSE locked_until END
            WHERE user_id = \(bind: userID) AND client = \(bind: client)
            """).run()
        guard let accountLock else { return }
        try await sql.raw("""
            UPDATE users SET failed_login_count = CASE WHEN failed_login_count > 0 THEN failed_login_count - 1 ELSE 0 END,
                locked_until = CASE WHEN locked_until = \(bind: accountLock) THEN NULL ELSE locked_until END
            WHERE id = \(bind: userID)
            """).run()
    }

    /// Whether a sign-in from `client` succeeded since `since`.
    func isKnownClient(userID: UUID, client: String, since: Date, on db: any Database) async throws -> Bool {
        let rows = try await (db as! any SQLDatabase).raw(
            "SELECT succeeded_at FROM sign_in_failures WHERE user_id = \(bind: userID) AND client = \(bind: client)").all()
        guard let succeeded = try rows.first?.decode(column: "succeeded_at", as: Date?.self) else { return false }
        return succeeded >= since
    }

    func lockedUntil(userID: UUID, on db: any Database) async throws -> Date? {
        try await User.find(userID, on: db)?.lockedUntil
    }

    func clientLockedUntil(userID: UUID, client: String, on db: any Database) async throws -> Date? {
        let rows = try await (db as! any SQLDatabase).raw(
            "SELECT locked_until FROM sign_in_failures WHERE user_id = \(bind: userID) AND client = \(bind: client)").all()
        return try rows.first?.decode(column: "locked_until", as: Date?.self) ?? nil
    }

    func lock(userID: UUID, until: Date, on db: any Database) async throws {
        try await User.query(on: db).filter(\.$id == userID).set(\.$lockedUntil, to: until).update()
    }

    func lockClient(userID: UUID, client: String, until: Date, on db: any Database) async throws {
        try await (db as! any SQLDatabase).raw(
            "UPDATE sign_in_failures SET locked_until = \(bind: until) WHERE user_id = \(bind: userID) AND client = \(bind: client)").run()
    }

    /// After a success from `client`: that address's count and the account's
    /// count start again, and the address is remembered as the owner's.
    func clearSignInFailures(userID: UUID, client: String, now: Date, on db: any Database) async throws {
        let sql = db as! any SQLDatabase
        try await sql.raw("""
            INSERT INTO sign_in_failures (user_id, client, failures, succeeded_at, updated_at)
            SELECT \(bind: userID), \(bind: client), 0, \(bind: now), \(bind: now) WHERE \(Self.notErased(userID))
            ON CONFLICT (user_id, client) DO UPDATE SET failures = 0, locked_until = NULL, succeeded_at = \(bind: now), updated_at = \(bind: now)
            """).run()
        try await User.query(on: db).filter(\.$id == userID).set(\.$failedLoginCount, to: 0).set(\.$lockedUntil, to: nil).update()
    }

    /// Counts an attempt under `key` (unknown emails), unless it is waiting;
    /// nil while it waits. `restartAfterWait` starts the count again after a
    /// wait has passed (the account-wide ceiling does; an address's count does not).
    func claimUnknownSignInAttempt(key: String, now: Date, threshold: Int, provisionalLocks: [Date], restartAfterWait: Bool, on db: any Database) async throws -> Int? {
        let sql = db as! any SQLDatabase
        try await sql.raw("""
            INSERT INTO unknown_sign_in_failures (key, failures, locked_until, updated_at) VALUES (\(bind: key), 0, NULL, \(bind: now))
            ON CONFLICT (key) DO NOTHING
            """).run()
        let count: SQLQueryString = restartAfterWait ? "CASE WHEN locked_until IS NOT NULL THEN 1 ELSE failures + 1 END" : "failures + 1"
        let rows = try await sql.raw("""
            UPDATE unknown_sign_in_failures SET failures = \(count),
                locked_until = CASE WHEN \(count) >= \(bind: threshold) THEN \(Self.provisionalLock(for: count, threshold: threshold, locks: provisionalLocks))
                    ELSE \(unsafeRaw: restartAfterWait ? "NULL" : "locked_until") END,
                updated_at = \(bind: now)
            WHERE key = \(bind: key) AND (locked_until IS NULL OR locked_until <= \(bind: now))
            RETURNING failures
            """).all()
        return try rows.first?.decode(column: "failures", as: Int.self)
    }

    func unknownLockedUntil(key: String, on db: any Database) async throws -> Date? {
        let rows = try await (db as! any SQLDatabase).raw("SELECT locked_until FROM unknown_sign_in_failures WHERE key = \(bind: key)").all()
        return try rows.first?.decode(column: "locked_until", as: Date?.self) ?? nil
    }

    func lockUnknown(key: String, until: Date, on db: any Database) async throws {
        try await (db as! any SQLDatabase).raw("UPDATE unknown_sign_in_failures SET locked_until = \(bind: until) WHERE key = \(bind: key)").run()
    }

    /// A sign-in from a device and address none of the user's recent sessions
    /// had, when they have had sessions before (the first is not news). The
    /// user agent is compared as sessions keep it (256 characters), and the
    /// address as the sign-in throttle groups it (an IPv6 /64), so a phone
    /// whose privacy address changes is not a new device.
    /// The access review's "last sign-in": sessions are removed 30 days after they end, the user row keeps this.
    func recordSignIn(userID: UUID, at now: Date, on db: any Database) async throws {
        try await (db as! any SQLDatabase).raw("UPDATE users SET last_sign_in_at = \(bind: now) WHERE id = \(bind: userID)").run()
    }

    func isNewDevice(userID: UUID, ip: String?, userAgent: String?, on db: any Database) async throws -> Bool {
        let seen = try await (db as! any SQLDatabase).raw("""
            SELECT ip, user_agent FROM sessions WHERE user_id = \(bind: userID) ORDER BY created_at DESC LIMIT 200
            """).all()
        guard !seen.isEmpty else { return false }
        let agent = userAgent.map { String($0.prefix(256)) } ?? "", client = ClientAddress.key(ip)
        for row in seen {
            let storedAgent = try row.decode(column: "user_agent", as: String?.self) ?? ""
            if storedAgent == agent, ClientAddress.key(try row.decode(column: "ip", as: String?.self)) == client { return false }
        }
        return true
    }

    /// After a password reset: every address starts again.
    func clearAllSignInFailures(userID: UUID, on db: any Database) async throws {
        try await (db as! any SQLDatabase).raw("DELETE FROM sign_in_failures WHERE user_id = \(bind: userID)").run()
    }

    /// Authenticator codes sent with the right password, counted before each is
    /// checked, under a client key no address has: no wait resets it, only a
    /// code that works, a recovery code, or a new password (or 30 days with no
    /// code sent at all: each one, even refused, renews the row for retention).
    static let secondFactorClient = "second-factor"

    /// Counts one more code sent (before it is checked); the count now.
    func countSecondFactorFailure(userID: UUID, now: Date, on db: any Database) async throws -> Int {
        try await (db as! any SQLDatabase).raw("""
            INSERT INTO sign_in_failures (user_id, client, failures, locked_until, succeeded_at, updated_at)
            VALUES (\(bind: userID), \(bind: Self.secondFactorClient), 1, NULL, NULL, \(bind: now))
            ON CONFLICT (user_id, client) DO UPDATE SET failures = sign_in_failures.failures + 1, updated_at = \(bind: now)
            RETURNING failures
            """).first()?.decode(column: "failures", as: Int.self) ?? 1
    }

    /// Takes back one counted code (it turned out to be no guess).
    func takeBackSecondFactorFailure(userID: UUID, on db: any Database) async throws {
        try await (db as! any SQLDatabase).raw("""
            UPDATE sign_in_failures SET failures = failures - 1
            WHERE user_id = \(bind: userID) AND client = \(bind: Self.secondFactorClient) AND failures > 0
            """).run()
    }

    func clearSecondFactorFailures(userID: UUID, on db: any Database) async throws {
        try await (db as! any SQLDatabase).raw("""
            DELETE FROM sign_in_failures WHERE user_id = \(bind: userID) AND client = \(bind: Self.secondFactorClient)
            """).run()
    }

    /// Spends a TOTP time step: false when this step (or a later one) was already used, so a code works once.
    func spendTOTPStep(userID: UUID, step: Int64, on db: any Database) async throws -> Bool {
        let rows = try await (db as! any SQLDatabase).raw("""
            UPDATE users SET totp_last_step = \(bind: step)
            WHERE id = \(bind: userID) AND (totp_last_step IS NULL OR totp_last_step < \(bind: step))
            RETURNING id
            """).all()
        return !rows.isEmpty
    }

    /// A new TOTP secret starts with no time step spent: the last one belonged to the old secret.
    func forgetTOTPSteps(userID: UUID, on db: any Database) async throws {
        try await (db as! any SQLDatabase).raw("UPDATE users SET totp_last_step = NULL WHERE id = \(bind: userID)").run()
    }

    // MARK: Email tokens

    func insert(_ token: EmailToken, on db: any Database) async throws {
        try await token.create(on: db)
    }

    /// Marks every unused token of the purpose used, so only a newer one works.
    func retireEmailTokens(userID: UUID, purpose: EmailToken.Purpose, at now: Date, on db: any Database) async throws {
        try await EmailToken.query(on: db).filter(\.$userID == userID).filter(\.$purpose == purpose.rawValue).filter(\.$usedAt == nil)
            .set(\.$usedAt, to: now).update()
    }

    func emailToken(hash: String, purpose: EmailToken.Purpose, on db: any Database) async throws -> EmailToken? {
        try await EmailToken.query(on: db).filter(\.$tokenHash == hash).filter(\.$purpose == purpose.rawValue).first()
    }

    /// Marks the token used; false when another request spent it first.
    func spendEmailToken(id: UUID, at now: Date, on db: any Database) async throws -> Bool {
        let spent = try await (db as! any SQLDatabase).raw(
            "UPDATE email_tokens SET used_at = \(bind: now) WHERE id = \(bind: id) AND used_at IS NULL RETURNING id"
        ).all()
        return !spent.isEmpty
    }

    // MARK: Recovery codes

    func replaceRecoveryCodes(userID: UUID, with codes: [RecoveryCode], on db: any Database) async throws {
        try await deleteRecoveryCodes(userID: userID, on: db)
        for code in codes { try await code.create(on: db) }
    }

    func deleteRecoveryCodes(userID: UUID, on db: any Database) async throws {
        try await RecoveryCode.query(on: db).filter(\.$userID == userID).delete()
    }

    func unusedRecoveryCodes(userID: UUID, on db: any Database) async throws -> [RecoveryCode] {
        try await RecoveryCode.query(on: db).filter(\.$userID == userID).filter(\.$usedAt == nil).all()
    }

    /// The user's recovery codes spent since `since`.
    func recoveryCodesSpent(userID: UUID, since: Date, on db: any Database) async throws -> [RecoveryCode] {
        try await RecoveryCode.query(on: db).filter(\.$userID == userID).filter(\.$usedAt >= since).all()
    }

    /// Takes the user's row for update for the rest of the transaction `db` (PostgreSQL; SQLite's
    /// single writer runs such transactions one after the other) and says whether two-factor is on
    /// now: spending a recovery code and replacing the codes run one at a time for a user, each
    /// seeing what the one before did (the count it mails, the codes it deleted).
    func lockSecondFactor(userID: UUID, on db: any Database) async throws -> Bool {
        try await lockedUserRow(userID, columns: "totp_enabled_at", on: db)?.decode(column: "totp_enabled_at", as: Date?.self) != nil
    }

    /// Takes the user's row for update for the rest of the transaction `db` (PostgreSQL; SQLite's single
    /// writer runs transactions one after the other) and says whether they are still there and not erased:
    /// mail a stranger can trigger is counted and queued under it, and a change that began before an erasure
    /// committed (its checks passed, then it waited) writes nothing back.
    func lockUnerasedUser(_ userID: UUID, on db: any Database) async throws -> Bool {
        guard let row = try await lockedUserRow(userID, columns: "erased_at", on: db) else { return false }
        return try row.decode(column: "erased_at", as: Date?.self) == nil
    }

    /// The user's password hash and whether two-factor is on and the account disabled, read with the row
    /// taken for update (PostgreSQL; SQLite's single writer runs transactions one after the other). A
    /// password change or reset and two-factor turned on write this row before they revoke the sessions,
    /// so a sign-in that checks these in the transaction that starts its session either sees the change
    /// or starts a session the change then revokes. Nil when the user is gone.
    /// The same password's hash made at another cost, if the hash is still `old`.
    func replacePasswordHash(userID: UUID, from old: String, to new: String, on db: any Database) async throws {
        try await (db as! any SQLDatabase).raw("""
            UPDATE users SET password_hash = \(bind: new) WHERE id = \(bind: userID) AND password_hash = \(bind: old)
            """).run()
    }

    func lockSignInFacts(userID: UUID, on db: any Database) async throws -> (passwordHash: String, twoFactor: Bool, disabled: Bool)? {
        guard let row = try await lockedUserRow(userID, columns: "password_hash, totp_enabled_at, disabled_at", on: db) else { return nil }
        return (try row.decode(column: "password_hash", as: String.self),
                try row.decode(column: "totp_enabled_at", as: Date?.self) != nil,
                try row.decode(column: "disabled_at", as: Date?.self) != nil)
    }

    /// What an administrator's change to a user decides on, read with the rows taken for update (PostgreSQL;
    /// SQLite's single writer runs transactions one after the other): the user's role, disabled time and
    /// whether they were erased, and the enabled administrators. One statement, rows in the order of their
    /// ids, as an erasure takes them: two changes at once never wait on each other in a cycle. After a wait,
    /// PostgreSQL's re-check no longer returns an administrator another change took away. Nil when the user is gone.
    func lockForAdministration(userID: UUID, on db: any Database) async throws
        -> (role: String, disabledAt: Date?, erased: Bool, enabledAdministrators: Set<UUID>)?
    {
        let sql = db as! any SQLDatabase
        let lock = sql.dialect.name == "postgresql" ? " FOR UPDATE" : ""
        let rows = try await sql.raw("""
            SELECT id, role, disabled_at, erased_at FROM users
            WHERE id = \(bind: userID) OR (role = 'admin' AND disabled_at IS NULL AND erased_at IS NULL) ORDER BY id\(unsafeRaw: lock)
            """).all()
        var target: (role: String, disabledAt: Date?, erased: Bool)?
        var administrators = Set<UUID>()
        for row in rows {
            let id = try row.decode(column: "id", as: UUID.self), role = try row.decode(column: "role", as: String.self)
            let disabledAt = try row.decode(column: "disabled_at", as: Date?.self), erased = try row.decode(column: "erased_at", as: Date?.self) != nil
            if id == userID { target = (role, disabledAt, erased) }
            if role == "admin", disabledAt == nil, !erased { administrators.insert(id) }
        }
        return target.map { ($0.role, $0.disabledAt, $0.erased, administrators) }
    }

    /// `columns` of the user's row, taken for update for the rest of the transaction `db` (PostgreSQL;
    /// SQLite's single writer runs transactions one after the other).
    private func lockedUserRow(_ userID: UUID, columns: String, on db: any Database) async throws -> (any SQLRow)? {
        let sql = db as! any SQLDatabase
        let lock = sql.dialect.name == "postgresql" ? " FOR UPDATE" : ""
        return try await sql.raw("SELECT \(unsafeRaw: columns) FROM users WHERE id = \(bind: userID)\(unsafeRaw: lock)").first()
    }

    func unusedRecoveryCodeCount(userID: UUID, on db: any Database) async throws -> Int {
        try await RecoveryCode.query(on: db).filter(\.$userID == userID).filter(\.$usedAt == nil).count()
    }

    /// Marks the code used; false when another request spent it first.
    func spendRecoveryCode(id: UUID, at now: Date, on db: any Database) async throws -> Bool {
        let spent = try await (db as! any SQLDatabase).raw(
            "UPDATE recovery_codes SET used_at = \(bind: now) WHERE id = \(bind: id) AND used_at IS NULL RETURNING id"
        ).all()
        return !spent.isEmpty
    }
}
