import FluentKit
import FolioDomain
import Foundation
import Logging
import SQLKit

/// Banks and brokerages linked through Plaid: the user's records elsewhere,
/// shown beside Folio's accounts and never mixed into them. Nothing here
/// touches the ledger: a linked account's balance or transaction moves no
/// Folio cash, and linked holdings are not tradable positions.
///
/// The access token Plaid gives for an item is sealed (`SecretBox`) before it
/// is stored, opened only to call Plaid, and never logged or returned.
struct PlaidLinks: Sendable {
    let store: PlaidStore
    /// Nil without Plaid settings.
    let client: PlaidClient?
    let jobs: JobQueue
    let secretBox: SecretBox
    let identity: IdentityServices
    let clock: AppClock
    let logger: Logger
    /// This process, as its heartbeat names it: an item held by a run of a dead instance is free again.
    var instance: String = ""
    var pauses: PausePoints = .none

    /// How long one sync or refresh may hold an item before another worker may take it over.
    static let lease: TimeInterval = 120

    func configuredClient() throws -> PlaidClient {
        guard let client else { throw LinkError.notConfigured }
        return client
    }

    // MARK: - Linking

    func createLinkToken(userID: UserID, relinking itemID: UUID?) async throws -> (token: String, expiration: String?) {
        let client = try configuredClient()
        var accessToken: String?
        if let itemID {
            guard let item = try await store.item(itemID, owner: userID) else { throw LinkError.itemNotFound }
            accessToken = try open(item)
        }
        do {
            return try await client.createLinkToken(userID: userID, accessToken: accessToken)
        } catch let error as PlaidError {
            throw Self.linkError(error, field: nil, fallback: nil)
        }
    }

    /// Exchanges the public token from Link for the item's access token,
    /// stores the item with its accounts, and queues its first sync and
    /// holdings import.
    func exchange(userID: UserID, publicToken: String, origin: RequestOrigin) async throws -> PlaidItem {
        let client = try configuredClient()
        let exchanged: (accessToken: String, itemID: String)
        do {
            exchanged = try await client.exchange(publicToken: publicToken)
        } catch let error as PlaidError {
            throw Self.linkError(error, field: "public_token", fallback: "Link again: this public token was not accepted.")
        }
        // An item not kept here is forgotten at Plaid too, so nothing is left syncing (and billed) that no one can see.
        let logger = self.logger
        @Sendable func forgetAtPlaid() async {
            do { try await client.removeItem(accessToken: exchanged.accessToken) } catch {
                logger.warning("an item Folio could not store was not removed at Plaid", metadata: ["error": "\(error)"])
            }
        }
        let now = clock.now()
        var item = PlaidItem(
            id: UUID.random(), userID: userID, plaidItemID: exchanged.itemID, sealedAccessToken: try secretBox.seal(exchanged.accessToken),
            status: .active, createdAt: now)
        // The accounts now: the answer shows them, and the login is checked against those linked before.
        var accounts: [PlaidAccount] = []
        do {
            let answer = try await client.accounts(accessToken: exchanged.accessToken)
            accounts = answer.accounts
            item.institutionID = answer.institutionID
            if let institution = answer.institutionID { item.institutionName = try? await client.institutionName(institution) }
        } catch {
            // Without them the login cannot be told from one linked before, and kept it could count the same money
            // twice: not kept, and Plaid told to forget the item. The person links again.
            logger.warning("reading a new item's accounts failed; the item is not kept", metadata: ["error": "\(error)"])
            await forgetAtPlaid()
            if let error = error as? PlaidError { throw Self.linkError(error, field: nil, fallback: "Link the account again.") }
            throw error
        }
        let store = self.store, jobs = self.jobs, audit = identity.audit, linked = item, found = accounts
        do {
            try await store.database.transaction { db in
                // Not for someone erased or disabled meanwhile: the item is then removed at Plaid below.
                guard try await IdentityStore.holdLiveUser(userID, postgres: store.database.kind == .postgres, on: db) else { throw IdentityError.userNotFound }
                // Two links of one login at once are checked one after the other: the second sees the first.
                try await store.holdLinking(of: userID, on: db)
                // A second Link session for a login linked before (often a person who meant "Sign in again") makes a new item at
                // Plaid: kept, it would count the same money twice. It is removed at Plaid below, and the link kept is named.
                if let institution = linked.institutionID, let existing = try await store.itemLinking(found, at: institution, of: userID, besides: linked.plaidItemID, on: db) {
                    throw LinkError.sameLoginLinked(existing, institution: linked.institutionName ?? institution)
                }
                try await store.insert(linked, on: db)
                try await store.saveAccounts(found, item: linked, now: now, on: db)
                try await jobs.enqueue(.syncPlaidItem(linked.id), on: db)
                try await jobs.enqueue(.refreshPlaidHoldings(linked.id), on: db)
                // In the same transaction: a link is never kept without its audit event.
                try await audit.record(
                    .init(action: "plaid.item_linked", actorID: userID.uuid, subjectType: "plaid_item", subjectID: linked.id.lowercasedString, userID: userID.uuid,
                          details: ["institution": linked.institutionName ?? linked.institutionID ?? "unknown", "accounts": String(found.count)]),
                    ip: origin.ip, requestID: origin.requestID, inTransaction: db)
            }
        } catch where DatabaseConstraint(error)?.kind == .unique {
            // Folio holds this item already (Link's update mode gives back the same one): the stored item stays, and stays at Plaid.
            throw LinkError.alreadyLinked
        } catch {
            await forgetAtPlaid()
            throw error
        }
        return item
    }

    /// Plaid errors that are the operator's (keys, an unapproved product) and not the user's.
    static let configurationCodes: Set<String> = [
        "INVALID_API_KEYS", "UNAUTHORIZED_ENVIRONMENT", "INVALID_PRODUCT", "PRODUCTS_NOT_ENABLED", "INVALID_WEBHOOK_URL", "ADDITION_LIMIT",
    ]

    /// A Plaid error as the API tells the user about it: passing trouble and the
    /// operator's configuration are 503; a refusal names the field when there is one.
    static func linkError(_ error: PlaidError, field: String?, fallback: String?) -> LinkError {
        if error.isTransient || configurationCodes.contains(error.code ?? "") { return .plaidUnavailable }
        return .refused(code: error.code ?? "unreadable", message: error.displayMessage ?? fallback, field: field)
    }

    /// Removes the item at Plaid (so Plaid stops billing and syncing it) and
    /// deletes everything Folio kept of it. If Plaid cannot be asked, nothing is deleted.
    func remove(_ itemID: UUID, userID: UserID, origin: RequestOrigin) async throws {
        let client = try configuredClient()
        guard let item = try await store.item(itemID, owner: userID) else { throw LinkError.itemNotFound }
        if let token = secretBox.open(item.sealedAccessToken) {
            do {
                try await client.removeItem(accessToken: token)
            } catch let error as PlaidError where ["ITEM_NOT_FOUND", "INVALID_ACCESS_TOKEN", "ACCESS_NOT_GRANTED"].contains(error.code ?? "") {
                // Already gone at Plaid: the local copy goes too.
            } catch let error as PlaidError where error.isTransient {
                throw LinkError.plaidUnavailable
            }
        } else {
            // Sealed under a key no longer configured: Plaid cannot be told, but the user's wish to forget it stands.
            logger.warning("a Plaid item's access token opens under no configured key; removed locally only", metadata: ["item_id": "\(item.id)"])
        }
        let store = self.store, audit = identity.audit
        try await store.database.transaction { db in
            // The person's row held shared first, so this and an erasure are ordered: none of their addresses is kept
            // after it. Erased meanwhile (a second erasure at once): the item goes, with no event about the person.
            // Removed at once by another request: one removal, one event.
            guard try await store.delete(item.id, on: db) else { return }
            guard try await IdentityStore.holdUnerasedUser(userID.uuid, on: db) else { return }
            try await audit.record(
                .init(action: "plaid.item_removed", actorID: userID.uuid, subjectType: "plaid_item", subjectID: item.id.lowercasedString, userID: userID.uuid,
                      details: ["institution": item.institutionName ?? item.institutionID ?? "unknown"]),
                ip: origin.ip, requestID: origin.requestID, inTransaction: db)
        }
    }

    /// Asks for a sync now (the user pressed refresh).
    func requestSync(_ itemID: UUID, userID: UserID) async throws {
        _ = try configuredClient()
        guard try await store.item(itemID, owner: userID) != nil else { throw LinkError.itemNotFound }
        let jobs = self.jobs
        try await store.database.transaction { db in
            try await jobs.enqueueRefresh(of: itemID, on: db)
        }
    }

    // MARK: - Sync

    enum WorkOutcome: Equatable, Sendable {
        case done
        /// Another worker holds the item: try again shortly.
        case busy
        /// The item is gone (removed meanwhile), or waits for its user to sign in again.
        case skipped
    }

    /// How often a sync starts again from its first cursor when Plaid reports
    /// the data changed under it, before the job gives up for now.
    static let paginationRestarts = 3

    /// The most pages one job saves (500 changes each): a longer history goes on in the next job.
    static let pagesPerJob = 500

    /// Brings the item's accounts and transactions up to date. Each page is
    /// saved with the cursor that follows it, in one transaction, so a sync
    /// cut short (a crash, an error) resumes after the last saved page with
    /// nothing missed and nothing twice.
    func sync(_ itemID: UUID) async throws -> WorkOutcome {
        let client = try configuredClient()
        return try await withItem(itemID) { item, token, holder in
            let accounts = try await client.accounts(accessToken: token)
            let store = self.store
            let startOver = try await store.database.transaction { db in
                // Only while this run still holds the item: an older list of accounts never replaces a newer run's
                // (removing an account the newer run synced would take its transactions past the saved cursor).
                guard try await store.renewLease(item.id, holder: holder, until: clock.now().addingTimeInterval(Self.lease), on: db) else { throw LeaseLost() }
                let startOver = try await store.saveListing(accounts.accounts, item: item, now: clock.now(), on: db)
                try await store.removeAccounts(notIn: accounts.accounts.map(\.plaidAccountID), item: item.id, on: db)
                if item.institutionID == nil { try await store.setInstitution(item.id, institutionID: accounts.institutionID, name: nil, on: db) }
                return startOver
            }
            // An empty listing (an answer without accounts) names no account: nothing is left out then.
            let listedAccounts: Set<String>? = accounts.accounts.isEmpty ? nil : Set(accounts.accounts.map(\.plaidAccountID))
            let item = startOver ? { var fresh = item; fresh.syncCursor = nil; fresh.syncRunStart = nil; return fresh }() : item
            if item.institutionName == nil, let institution = accounts.institutionID, let name = try? await client.institutionName(institution) {
                try await store.database.transaction { db in try await store.setInstitution(item.id, institutionID: nil, name: name, on: db) }
            }
            // Where the pagination under way began: a run cut short (a crash, an error) goes on from the page it
            // saved last, but a mutation sends it back here, to the cursor of the last complete sync (Plaid's rule).
            let start = item.syncRunStart ?? item.syncCursor ?? ""
            var cursor = item.syncCursor, restarts = 0, pages = 0
            // The cursors this pagination sent: one that comes back would page round a circle for ever.
            var sent: Set<String> = [cursor ?? ""]
            while true {
                var page: PlaidSyncPage
                do {
                    page = try await client.syncTransactions(accessToken: token, cursor: cursor)
                } catch let error as PlaidError where error.code == "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION" {
                    // The whole run again from the cursor it began with (pages already saved apply again harmlessly);
                    // what they saved waits to be listed again, durably, so a run cut short after this (the restarts
                    // spent too) starts there too.
                    try await store.database.transaction { db in
                        guard try await store.restartRun(item.id, at: start, holder: holder, until: clock.now().addingTimeInterval(Self.lease), on: db)
                        else { throw LeaseLost() }
                    }
                    guard restarts < Self.paginationRestarts else { throw error }
                    restarts += 1
                    cursor = start.isEmpty ? nil : start
                    sent = [start]
                    continue
                }
                // A page that says more follows must move the cursor: one that does not would page for ever.
                if page.hasMore, page.nextCursor == cursor {
                    throw PlaidError.unreadable("/transactions/sync answered has_more with the cursor it was sent")
                }
                if page.hasMore, !sent.insert(page.nextCursor).inserted {
                    throw PlaidError.unreadable("/transactions/sync answered has_more with a cursor it had already sent")
                }
                let saving = page
                try await store.database.transaction { db in
                    var saving = saving
                    let listed = (saving.added + saving.modified).map(\.transactionID)
                    if saving.hasMore {
                        try await store.noteListed(added: saving.added.map(\.transactionID), modified: saving.modified.map(\.transactionID), item: item.id, on: db)
                    } else {
                        // The run from `start` lists every transaction added since, as it is now. One a cut-short run
                        // saved that it no longer lists changed under it (a pending charge posted under a new id):
                        // Plaid never names it as removed, since the first cursor never saw it. It goes here.
                        let unlisted = Set(try await store.finishRun(item.id, on: db)).subtracting(listed)
                        saving.removed += unlisted.sorted()
                    }
                    // Only for the accounts listed: one gone from the listing keeps none (they come back with it).
                    if let listedAccounts {
                        saving.added.removeAll { !listedAccounts.contains($0.plaidAccountID) }
                        saving.modified.removeAll { !listedAccounts.contains($0.plaidAccountID) }
                    }
                    try await store.apply(saving, item: item, now: clock.now(), on: db)
                    guard try await store.advanceCursor(
                        item.id, to: saving.nextCursor, runStart: saving.hasMore ? start : nil, holder: holder,
                        until: clock.now().addingTimeInterval(Self.lease), on: db)
                    else { throw LeaseLost() }
                }
                await pauses.reach(.afterPlaidPage)
                pages += 1
                cursor = page.nextCursor
                if !page.hasMore { break }
                if pages == Self.pagesPerJob {
                    // A long history: the pages so far are saved; another job goes on from them, and other items get their turn.
                    try await store.database.transaction { db in try await jobs.enqueueUnlessWaiting(.syncPlaidItem(item.id), on: db) }
                    logger.info("Plaid item sync goes on in another job", metadata: ["item_id": "\(item.id)", "pages": "\(pages)"])
                    return
                }
            }
            try await store.markSynced(item.id, now: clock.now())
            logger.info("Plaid item synced", metadata: ["item_id": "\(item.id)", "pages": "\(pages)", "restarts": "\(restarts)"])
        }
    }

    /// Imports the item's investment holdings again, replacing the last import.
    func refreshHoldings(_ itemID: UUID) async throws -> WorkOutcome {
        let client = try configuredClient()
        return try await withItem(itemID) { item, token, holder in
            let answer: (accounts: [PlaidAccount], holdings: [PlaidHolding])
            do {
                answer = try await client.holdings(accessToken: token)
            } catch let error as PlaidError where ["PRODUCTS_NOT_SUPPORTED", "NO_INVESTMENT_ACCOUNTS", "PRODUCT_NOT_ENABLED", "NO_INVESTMENT_AUTH_ACCOUNTS"].contains(error.code ?? "") {
                // A bank without investments: nothing to import, and nothing wrong.
                return
            }
            let store = self.store
            try await store.database.transaction { db in
                // Only while this run still holds the item: an older answer never replaces a newer run's.
                guard try await store.renewLease(item.id, holder: holder, until: clock.now().addingTimeInterval(Self.lease), on: db) else { throw LeaseLost() }
                try await store.saveListing(answer.accounts, item: item, now: clock.now(), on: db)
                try await store.replaceHoldings(answer.holdings, item: item, now: clock.now(), on: db)
            }
        }
    }

    struct LeaseLost: Error, CustomStringConvertible {
        var description: String { "another worker took the item over; this run stopped" }
    }

    /// Runs `body` holding the item's lease (a hold unique to this run), with
    /// the item read after the lease was taken and its access token open; a
    /// Plaid error the user can act on becomes the item's status.
    private func withItem(_ itemID: UUID, _ body: (PlaidItem, String, String) async throws -> Void) async throws -> WorkOutcome {
        let now = clock.now(), holder = "\(instance):\(UUID.random().lowercasedString)"
        guard try await store.item(itemID, owner: nil) != nil else { return .skipped }
        guard try await store.claim(itemID, holder: holder, instance: instance, until: now.addingTimeInterval(Self.lease), now: now) else { return .busy }
        do {
            // Read under the lease: the cursor another run saved is the one to go on from.
            guard let item = try await store.item(itemID, owner: nil), item.status != .loginRequired else {
                // Removed meanwhile, or waiting for its user's login (a re-link or LOGIN_REPAIRED clears it).
                try await store.release(itemID, holder: holder)
                return .skipped
            }
            do {
                try await body(item, try open(item), holder)
            } catch {
                try? await store.release(itemID, holder: holder)
                try await recordFailure(error, item: item)
                throw error
            }
            try await store.release(itemID, holder: holder)
            return .done
        }
    }

    /// Plaid errors, as the user can act on them (https://plaid.com/docs/errors/item/).
    static let loginCodes: Set<String> = [
        "ITEM_LOGIN_REQUIRED", "INVALID_CREDENTIALS", "INVALID_MFA", "ITEM_LOCKED", "USER_SETUP_REQUIRED", "INSUFFICIENT_CREDENTIALS",
        "MFA_NOT_SUPPORTED", "INVALID_UPDATED_USERNAME", "ITEM_NOT_SUPPORTED", "USER_INPUT_TIMEOUT",
    ]

    private func recordFailure(_ error: any Error, item: PlaidItem) async throws {
        let now = clock.now()
        switch error {
        case let error as PlaidError where Self.loginCodes.contains(error.code ?? ""):
            let store = self.store
            try await store.database.transaction { db in
                try await markNeedsLogin(item.id, reason: error.code ?? "ITEM_LOGIN_REQUIRED", message: error.displayMessage, on: db)
            }
        case let error as PlaidError where error.isTransient:
            try await store.recordError(item.id, code: error.code, message: error.displayMessage ?? "Plaid or the institution is not answering; Folio tries again.", now: now)
        case let error as PlaidError:
            try await store.markError(item.id, code: error.code ?? "unreadable", message: error.displayMessage ?? Self.userMessage(error), now: now)
        case is LeaseLost:
            break
        default:
            try await store.recordError(item.id, code: "internal", message: "The last sync did not finish; Folio tries again.", now: now)
        }
    }

    static func userMessage(_ error: PlaidError) -> String {
        switch error {
        case .unreadable(let reason): "Plaid sent data Folio cannot keep exactly: \(reason)."
        case .api(_, _, let code, _, _): "Plaid cannot sync this item (\(code)); link it again, or remove it."
        case .unreachable: "Plaid could not be reached."
        }
    }

    // MARK: - Attention

    /// Marks the item as waiting for its user and, when that is news, queues
    /// the mail that tells them (in the same transaction: one mail per break).
    func markNeedsLogin(_ itemID: UUID, reason: String, message: String? = nil, byWebhook: Bool = false, on db: any SQLDatabase) async throws {
        guard let item = try await store.item(itemID, owner: nil, on: db) else { return }
        let status: PlaidItem.Status = reason == "PENDING_EXPIRATION" || reason == "PENDING_DISCONNECT" ? .pendingExpiration : .loginRequired
        let text = message ?? Self.needsLoginText(status, institution: item.institutionName)
        // The status changes (and one mail is queued) only for the run that changes it; a broken login outranks an expiring one.
        if try await store.markNeedsLogin(item.id, status, errorCode: reason, errorMessage: text, now: clock.now(), on: db) {
            try await jobs.enqueue(.plaidItemNeedsLogin(item.id, reason: reason, byWebhook: byWebhook), on: db)
        }
    }

    /// How long before the consent ends Plaid sends `PENDING_EXPIRATION` (seven days).
    static let expiryWarning: TimeInterval = 7 * 86_400

    static func needsLoginText(_ status: PlaidItem.Status, institution: String?) -> String {
        let institution = institution ?? "your bank"
        return status == .pendingExpiration
            ? "Your connection to \(institution) expires soon. Sign in again through Folio's linked accounts to keep it."
            : "Your connection to \(institution) needs you to sign in again before Folio can update it."
    }

    /// Tells the item's user that it needs them, if it still does. Plaid's webhooks may arrive out of
    /// order (an `ERROR` after the `LOGIN_REPAIRED` that followed it), so a broken login a webhook reported
    /// (`checkWithPlaid`) is first checked with Plaid: an item Plaid shows without an error works again, and
    /// syncs instead of mailing; if its consent ends within `expiryWarning`, it is back to
    /// `pending_expiration` and that is what the mail says (the late `ERROR` had replaced the warning).
    /// One a failed call reported is not checked (Plaid may not keep every sign-in error on the item, and
    /// clearing it would only have the next sync fail and mark it again). When Plaid cannot be asked, the
    /// mail goes (signing in again is harmless).
    func mailNeedsLogin(_ itemID: UUID, checkWithPlaid: Bool) async throws {
        let store = self.store, identity = self.identity, jobs = self.jobs
        if checkWithPlaid, let item = try await store.item(itemID, owner: nil), item.status == .loginRequired {
            let condition: PlaidClient.ItemCondition?
            do { condition = try await configuredClient().itemCondition(accessToken: try open(item)) } catch {
                logger.warning("Plaid could not confirm the item's broken login; its user is told anyway", metadata: ["item_id": "\(itemID)", "error": "\(error)"])
                condition = nil
            }
            if let condition, condition.errorCode == nil {
                let now = clock.now()
                let expiring = condition.consentExpiresAt.map { $0 <= now.addingTimeInterval(Self.expiryWarning) } ?? false
                let status: PlaidItem.Status = expiring ? .pendingExpiration : .active
                try await store.database.transaction { db in
                    guard try await store.clearLoginRequired(
                        itemID, to: status, errorCode: expiring ? "PENDING_EXPIRATION" : nil,
                        errorMessage: expiring ? Self.needsLoginText(.pendingExpiration, institution: item.institutionName) : nil, now: now, on: db)
                    else { return }
                    try await jobs.enqueueRefresh(of: itemID, on: db)
                }
                logger.info("Plaid shows the item's login working again (a late webhook); it syncs", metadata: ["item_id": "\(itemID)", "status": "\(status.rawValue)"])
                // An expiring consent is still news the user must act on; a working login is not.
                guard expiring else { return }
            }
        }
        try await store.database.transaction { db in
            guard let item = try await store.item(itemID, owner: nil, on: db), item.status == .loginRequired || item.status == .pendingExpiration
            else { return }
            try await identity.notifications.notify(item.userID.uuid, .plaidLoginRequired, MailVariables([
                "institution": item.institutionName ?? "your bank",
                "explanation": Self.needsLoginText(item.status, institution: item.institutionName),
            ]), on: db)
        }
    }

    /// The user signed in again through Link in update mode: the item syncs again.
    func loginRepaired(_ itemID: UUID, userID: UserID) async throws {
        guard let item = try await store.item(itemID, owner: userID) else { throw LinkError.itemNotFound }
        // The person says they signed in again through Link; Plaid says whether they did. Marked active on their
        // word alone, the next sync would find the login still broken, mark it again and mail them again, each time.
        if item.status != .active {
            let condition = try await configuredClient().itemCondition(accessToken: try open(item))
            if let code = condition.errorCode, Self.loginCodes.contains(code) { throw LinkError.loginStillRequired }
        }
        let store = self.store, jobs = self.jobs, now = clock.now()
        try await store.database.transaction { db in
            try await store.setStatus(item.id, .active, errorCode: nil, errorMessage: nil, now: now, on: db)
            try await jobs.enqueueRefresh(of: item.id, on: db)
        }
    }

    /// The daily backstop for missed webhooks: a sync and a holdings import of every item that can sync
    /// (a missed `HOLDINGS: DEFAULT_UPDATE` would otherwise leave holdings as they were until "Sync now").
    func enqueueSyncOfAll() async throws {
        let store = self.store, jobs = self.jobs
        let items = try await store.allItems().filter { $0.status != .loginRequired }
        try await store.database.transaction { db in
            for item in items { try await jobs.enqueueRefresh(of: item.id, on: db) }
        }
    }

    static let dailySync = RecurringJob(name: "sync_all_plaid_items", kind: .syncAllPlaidItems, cadence: .every(86_400), payload: { _ in .syncAllPlaidItems })

    // MARK: - Secrets

    private func open(_ item: PlaidItem) throws -> String {
        guard let token = secretBox.open(item.sealedAccessToken) else {
            throw PlaidError.unreadable("the item's access token opens under no configured SECRET_KEY; link it again")
        }
        return token
    }

    /// Seals again, under the current key, every access token sealed under a
    /// previous one; returns how many were, and how many no key opens.
    func resealAccessTokens(on db: any SQLDatabase) async throws -> (resealed: Int, unreadable: Int) {
        var resealed = 0, unreadable = 0
        for item in try await store.allItems(on: db) {
            guard let opened = secretBox.openReportingKey(item.sealedAccessToken) else { unreadable += 1; continue }
            guard opened.sealedWithOldKey else { continue }
            try await store.updateSealedAccessToken(item.id, old: item.sealedAccessToken, new: try secretBox.seal(opened.text), on: db)
            resealed += 1
        }
        return (resealed, unreadable)
    }
}

// MARK: - Webhooks

extension PlaidLinks {
    /// What a verified webhook set in motion (for the log and the answer).
    enum WebhookAction: String, Sendable {
        case sync, refreshHoldings = "refresh_holdings", needsLogin = "needs_login", loginRepaired = "login_repaired"
        case acknowledged, unknownItem = "unknown_item", ignored
    }

    /// Queues the work a verified webhook asks for, in the caller's
    /// transaction (with the webhook's record); the webhook itself is answered
    /// at once (https://plaid.com/docs/api/webhooks/). A body seen before
    /// (`fresh` false) is a replay or a repeat of the same news: it may still
    /// ask for a sync, which is harmless (one waiting sync at most), but it
    /// changes no status and sends no mail.
    func handleWebhook(_ body: JSONValue, fresh: Bool, on db: any SQLDatabase) async throws -> WebhookAction {
        let type = body["webhook_type"]?.string ?? "", code = body["webhook_code"]?.string ?? ""
        guard let plaidItemID = body["item_id"]?.string, let item = try await store.item(plaidItemID: plaidItemID, on: db) else {
            logger.info("Plaid webhook for an item Folio does not hold", metadata: ["webhook_type": "\(type)", "webhook_code": "\(code)"])
            return .unknownItem
        }
        let now = clock.now()
        switch (type, code) {
        case ("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE"), ("TRANSACTIONS", "DEFAULT_UPDATE"), ("TRANSACTIONS", "INITIAL_UPDATE"),
             ("TRANSACTIONS", "HISTORICAL_UPDATE"), ("TRANSACTIONS", "TRANSACTIONS_REMOVED"):
            try await jobs.enqueueUnlessWaiting(.syncPlaidItem(item.id), on: db)
            return .sync
        case ("HOLDINGS", "DEFAULT_UPDATE"):
            try await jobs.enqueueUnlessWaiting(.refreshPlaidHoldings(item.id), on: db)
            return .refreshHoldings
        case ("ITEM", "ERROR"):
            let errorCode = body["error"]?["error_code"]?.string ?? "ITEM_ERROR"
            guard Self.loginCodes.contains(errorCode) else {
                // Another item error: a sync meets it and records it on the item.
                try await jobs.enqueueUnlessWaiting(.syncPlaidItem(item.id), on: db)
                return .sync
            }
            // The status now, in the order the webhooks came; the mail through the queue. The same error again (its
            // body carries no time, so a login that broke again after a repair reads as a repeat): a sync finds out.
            if fresh {
                try await markNeedsLogin(item.id, reason: errorCode, message: PlaidError.shown(body["error"]?["display_message"]?.string), byWebhook: true, on: db)
            } else {
                try await jobs.enqueueUnlessWaiting(.syncPlaidItem(item.id), on: db)
            }
            return .needsLogin
        case ("ITEM", "PENDING_EXPIRATION"), ("ITEM", "PENDING_DISCONNECT"):
            if fresh { try await markNeedsLogin(item.id, reason: "PENDING_EXPIRATION", on: db) }
            return .needsLogin
        case ("ITEM", "LOGIN_REPAIRED"):
            if fresh { try await store.setStatus(item.id, .active, errorCode: nil, errorMessage: nil, now: now, on: db) }
            // Holdings too: their imports stopped with the login, as the transactions' syncs did.
            try await jobs.enqueueRefresh(of: item.id, on: db)
            return .loginRepaired
        case ("ITEM", "USER_PERMISSION_REVOKED"), ("ITEM", "USER_ACCOUNT_REVOKED"):
            if fresh {
                try await store.setStatus(
                    item.id, .error, errorCode: code, errorMessage: "Access to this item was revoked at the institution; link it again or remove it.",
                    now: now, on: db)
            }
            return .acknowledged
        case ("ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED"):
            logger.info("Plaid acknowledged the item's new webhook URL", metadata: ["item_id": "\(item.id)"])
            return .acknowledged
        default:
            logger.info("Plaid webhook of a type Folio does not act on; acknowledged", metadata: ["webhook_type": "\(type)", "webhook_code": "\(code)"])
            return .ignored
        }
    }
}

extension JobQueue {
    /// A sync of the Plaid item's transactions and an import of its holdings, each unless one already waits.
    func enqueueRefresh(of item: UUID, on db: any SQLDatabase) async throws {
        try await enqueueUnlessWaiting(.syncPlaidItem(item), on: db)
        try await enqueueUnlessWaiting(.refreshPlaidHoldings(item), on: db)
    }
}
