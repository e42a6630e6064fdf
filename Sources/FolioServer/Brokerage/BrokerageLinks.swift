import FolioDomain
import Foundation
import Logging
import SQLKit

/// Linking accounts held at Alpaca: the keys are checked with Alpaca before
/// anything is stored, sealed at rest, and the account's cash there becomes
/// the opening deposit of a new Folio account of kind `brokerage`. From then
/// on the account's orders go to Alpaca (see `Brokers`); money moves in and
/// out at Alpaca, never through Folio's deposit routes. One Alpaca account is
/// linked to at most one Folio account at a time, across all users: two
/// mirrors of one account would count its money twice.
struct BrokerageLinks: Sendable {
    let store: BrokerageStore
    let trading: TradingStore
    let ledger: Ledger
    let brokers: Brokers
    /// Brings the new account's positions over from Alpaca right after the link.
    let reconciler: Reconciler
    /// Read from Alpaca once an account is linked.
    let calendar: ExchangeCalendar
    let secretBox: SecretBox
    let urls: AppConfiguration.AlpacaURLs
    /// The deployment's own keys, linked to the first admin.
    let deploymentKeys: AppConfiguration.AlpacaSettings?
    let logger: Logger

    static let broker = "alpaca"

    /// What a link made: the new account, and the link.
    struct Linked: Sendable {
        var account: AccountRecord
        var link: BrokerageLink
    }

    /// Links the Alpaca account the keys open, in the chosen environment.
    func linkAlpaca(
        userID: UserID, credentials: AlpacaCredentials, environment: BrokerageLink.Environment, context: AuditContext
    ) async throws -> Linked {
        try await link(
            userID: userID, credentials: credentials, environment: environment, baseURL: url(of: environment), origin: .user, context: context)
    }

    func url(of environment: BrokerageLink.Environment) -> String {
        environment == .paper ? urls.paper : urls.live
    }

    private func link(
        userID: UserID, credentials: AlpacaCredentials, environment: BrokerageLink.Environment, baseURL: String,
        origin: BrokerageLink.Origin, context: AuditContext
    ) async throws -> Linked {
        let (client, remote) = try await account(openedBy: credentials, at: baseURL)
        // Keys Alpaca accepted are kept out of every log line from here on (only these: a refused guess teaches the redactor nothing).
        ConfiguredSecrets.register([credentials.keyID, credentials.secretKey])
        guard remote.currency == "USD" else { throw BrokerageError.unsupportedAccount("its currency is \(remote.currency); Folio keeps USD accounts") }
        guard !remote.cash.isNegative else {
            throw BrokerageError.unsupportedAccount("its cash is \(remote.cash), borrowed on margin; Folio mirrors cash accounts")
        }
        guard remote.status == "ACTIVE" else { throw BrokerageError.unsupportedAccount("Alpaca reports its status as \(remote.status), not ACTIVE") }
        guard !remote.tradingBlocked else { throw BrokerageError.unsupportedAccount("Alpaca reports trading on it as blocked") }
        let sealed = try credentials.sealed(with: secretBox)
        let now = ledger.now()
        let store = self.store, ledger = self.ledger, number = remote.accountNumber
        let name = "Alpaca \(environment.rawValue) ····\(number.suffix(4))"
        let linked: Linked
        do {
            linked = try await store.database.transaction { db in
                if let existing = try await store.activeLink(broker: Self.broker, environment: environment, remoteAccount: number, on: db) {
                    throw BrokerageError.alreadyLinked(existing.userID == userID ? existing.accountID : nil, name: name)
                }
                let details = ["broker": Self.broker, "environment": environment.rawValue, "remote_account": number, "origin": origin.rawValue]
                let accountID = try await ledger.openAccount(
                    for: userID, kind: "brokerage", name: name, startingCash: remote.cash, cashDescription: "Cash at Alpaca when linked",
                    details: details, context: context, on: db)
                let link = BrokerageLink(
                    id: UUID(), userID: userID, accountID: accountID, broker: Self.broker, environment: environment, baseURL: baseURL,
                    remoteAccount: number, keyHint: credentials.hint, sealedCredentials: sealed, status: .active, origin: origin, createdAt: now)
                try await store.insert(link, on: db)
                return Linked(
                    account: AccountRecord(
                        id: accountID, userID: userID, name: name, kind: "brokerage", currency: "USD", cash: remote.cash, reservedCash: .zero, createdAt: now),
                    link: link)
            }
        } catch where DatabaseConstraint(error)?.kind == .unique {
            // A second request for the same Alpaca account won the race.
            let existing = try await store.database.transaction { db in
                try await store.activeLink(broker: Self.broker, environment: environment, remoteAccount: number, on: db)
            }
            guard let existing else { throw error }
            throw BrokerageError.alreadyLinked(existing.userID == userID ? existing.accountID : nil, name: name)
        }
        // Alpaca's calendar from now on (a failure leaves the rules, and the daily job tries again).
        do { try await calendar.refresh(from: client, now: ledger.clock.now()) } catch {
            logger.warning("reading Alpaca's market calendar failed", metadata: ["error": "\(error)"])
        }
        // The shares already held at Alpaca come over now (the cash came with the link); if Alpaca cannot
        // be asked this moment, the hourly reconciliation brings them.
        do {
            _ = try await reconciler.reconcile(linked.link, dryRun: false)
        } catch {
            logger.warning("the positions of a new link were not brought over yet", metadata: ["account_id": "\(linked.account.id)", "error": "\(error)"])
        }
        return linked
    }

    /// Asks Alpaca which account the keys open, with the client that asked;
    /// Alpaca's refusals come back as `BrokerageError`s, and nothing is stored.
    private func account(openedBy credentials: AlpacaCredentials, at baseURL: String) async throws -> (AlpacaBroker, AlpacaBroker.RemoteAccount) {
        let client = AlpacaBroker(settings: .init(keyID: credentials.keyID, secretKey: credentials.secretKey, baseURL: baseURL), logger: logger)
        let answer: AlpacaBroker.AccountAnswer
        do {
            answer = try await client.account()
        } catch {
            // The error names a route and a status or an error type, never the keys (they are in headers only).
            logger.warning("asking Alpaca which account the keys open failed: the broker could not be asked", metadata: ["error": "\(error)"])
            throw BrokerageError.brokerUnavailable
        }
        switch answer {
        case .refused: throw BrokerageError.keysRefused
        case .unreadable(let reason): throw BrokerageError.unsupportedAccount(reason)
        case .account(let account): return (client, account)
        }
    }

    /// Replaces the keys of an active link, in place: after the user made
    /// new ones at Alpaca (the old ones leaked, or were revoked), the link,
    /// its account, its open orders and its history go on with the new keys.
    /// The keys must open the very account the link mirrors; Alpaca is asked
    /// before anything is stored. Audited, and the user is told by mail.
    func replaceKeys(account accountID: AccountID, userID: UserID, credentials: AlpacaCredentials, context: AuditContext) async throws -> BrokerageLink {
        guard let before = try await store.link(of: accountID), before.userID == userID, before.status == .active else { throw BrokerageError.linkNotFound }
        let (_, remote) = try await account(openedBy: credentials, at: before.baseURL)
        guard remote.accountNumber == before.remoteAccount else { throw BrokerageError.keysForAnotherAccount }
        ConfiguredSecrets.register([credentials.keyID, credentials.secretKey])
        let sealed = try credentials.sealed(with: secretBox)
        let store = self.store, ledger = self.ledger
        let replaced = try await store.database.transaction { db -> BrokerageLink in
            // The account's lock, as an unlink takes it: the two go one after the other.
            guard var open = try await ledger.open(account: accountID, owner: userID, on: db),
                  var link = try await store.link(of: accountID, on: db), link.id == before.id, link.status == .active
            else { throw BrokerageError.linkNotFound }
            try await store.replaceCredentials(link.id, sealed: sealed, keyHint: credentials.hint, on: db)
            var note = Posting()
            note.events = [AuditNote(
                action: "brokerage.keys_replaced", actorID: userID, subjectType: "account", subjectID: accountID.description,
                details: [
                    "broker": link.broker, "environment": link.environment.rawValue, "remote_account": link.remoteAccount,
                    "key_hint_before": link.keyHint, "key_hint": credentials.hint,
                ])]
            open.books.record(note)
            try await ledger.commit(open, context: context, on: db)
            try await ledger.notifications?.notify(
                userID.uuid, .brokerageKeysReplaced,
                MailVariables(["account": link.remoteAccount.suffix(4).description, "key_hint": credentials.hint, "environment": link.environment.rawValue]),
                on: db)
            link.sealedCredentials = sealed
            link.keyHint = credentials.hint
            return link
        }
        // This process's client goes at once; the others see the new sealed keys when they next read the link.
        brokers.forget(replaced.id)
        brokers.pollSoon(accountID)
        return replaced
    }

    /// Unlinks an account: its credentials are forgotten, its ledger and
    /// history stay, and it takes no more orders (every instance reads the
    /// link again before routing an order). Refused while orders are still
    /// open at the broker, which Folio could then no longer follow.
    func unlink(account accountID: AccountID, userID: UserID, context: AuditContext) async throws {
        let store = self.store, ledger = self.ledger, trading = self.trading
        try await store.database.transaction { db in
            // The account's lock first: two unlinks of one account, or an unlink and a placement, go one after the other.
            guard var open = try await ledger.open(account: accountID, owner: userID, on: db),
                  let link = try await store.link(of: accountID, on: db), link.status == .active
            else { throw BrokerageError.linkNotFound }
            let orders = try await trading.openOrders(of: accountID, on: db)
            guard orders.isEmpty else { throw BrokerageError.openOrders(orders.count) }
            try await store.markRemoved(link.id, now: ledger.now(), on: db)
            var unlinked = Posting()
            unlinked.events = [AuditNote(
                action: "brokerage.unlinked", actorID: userID, subjectType: "account", subjectID: accountID.description,
                details: ["broker": link.broker, "environment": link.environment.rawValue, "remote_account": link.remoteAccount])]
            open.books.record(unlinked)
            try await ledger.commit(open, context: context, on: db)
        }
    }

    func links(of userID: UserID) async throws -> [BrokerageLink] {
        try await store.links(of: userID)
    }

    func unlinkedAccounts(of userID: UserID) async throws -> Set<AccountID> {
        try await store.unlinkedAccounts(of: userID)
    }

    // MARK: - The deployment's own keys

    enum DefaultLinkOutcome: Equatable, Sendable {
        case notConfigured
        case noAdministrator
        /// Linked before (and perhaps unlinked since): never again.
        case linkedBefore(AccountID)
        /// Someone linked the same Alpaca account through the API first.
        case linkedByAUser
        case linked(AccountID)
    }

    /// Links `ALPACA_API_KEY` and `ALPACA_SECRET_KEY` to the first
    /// administrator's account: a single-user install trades at Alpaca
    /// without anyone pasting keys. Once, ever: after an unlink the keys are
    /// not linked again, and a later admin does not get them too. Run at
    /// start-up and every ten minutes until there is an administrator.
    func linkDeploymentDefault() async throws -> DefaultLinkOutcome {
        guard let keys = deploymentKeys else { return .notConfigured }
        if let before = try await store.deploymentLink() { return .linkedBefore(before.accountID) }
        guard let admin = try await IdentityStore().firstAdmin(on: store.database.db)?.id.map(UserID.init) else { return .noAdministrator }
        let linked: Linked
        do {
            linked = try await link(
                userID: admin, credentials: AlpacaCredentials(keyID: keys.keyID, secretKey: keys.secretKey), environment: environment(of: keys.baseURL),
                baseURL: keys.baseURL, origin: .deployment, context: .none)
        } catch BrokerageError.alreadyLinked {
            return .linkedByAUser
        }
        logger.info("linked the deployment's Alpaca account to the first administrator", metadata: ["account_id": "\(linked.account.id)"])
        return .linked(linked.account.id)
    }

    /// Live when the URL is the live API's (however its trailing slash is written), paper otherwise.
    func environment(of baseURL: String) -> BrokerageLink.Environment {
        func trimmed(_ url: String) -> String { url.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "/")) }
        return trimmed(baseURL) == trimmed(urls.live) ? .live : .paper
    }

    static let defaultLinkSchedule = RecurringJob(
        name: "link_default_brokerage", kind: .linkDefaultBrokerage, cadence: .every(600), payload: { _ in .linkDefaultBrokerage })

    // MARK: - The market calendar

    /// Alpaca's clock, read again when the kept one is over a minute old (the worker asks every second; this calls at most once a minute).
    func refreshClock() async throws {
        let now = ledger.clock.now()
        // Only once Alpaca's calendar was read (a link exists): an install without one asks the database nothing here.
        guard calendar.current.publishedRange != nil, calendar.brokerClock(at: now) == nil,
              let link = try await store.activeLinks(on: store.database.sql).first
        else { return }
        try await calendar.refreshClock(from: try brokers.alpaca(link), now: now)
    }

    /// Reads the exchange calendar and clock from the first active link's Alpaca; the rules stay when none is linked.
    func refreshCalendar() async throws {
        guard let link = try await store.activeLinks(on: store.database.sql).first else { return }
        try await calendar.refresh(from: try brokers.alpaca(link), now: ledger.clock.now())
    }

    // MARK: - Key rotation

    /// Seals again, under the current `SECRET_KEY`, every link's credentials
    /// sealed under a previous key; returns how many were sealed again and
    /// how many no key opens (reported, never dropped).
    func resealCredentials(on db: any SQLDatabase) async throws -> (resealed: Int, unreadable: Int) {
        var resealed = 0, unreadable = 0
        for link in try await store.activeLinks(on: db) {
            guard let opened = secretBox.openReportingKey(link.sealedCredentials) else { unreadable += 1; continue }
            guard opened.sealedWithOldKey else { continue }
            // Only if unchanged since read: keys replaced meanwhile must not be overwritten by the old ones sealed again.
            if try await store.resealCredentials(link.id, old: link.sealedCredentials, new: try secretBox.seal(opened.text), on: db) { resealed += 1 }
        }
        return (resealed, unreadable)
    }
}
