import FolioDomain
import Foundation
import Logging
import SQLKit
import Synchronization

/// Which broker executes an account's orders: the paper broker for a paper
/// account; Alpaca, with the account's own keys, for a linked one. A paper
/// account is remembered as such (it never gains a link); a linked account's
/// link is read again every time, inside the caller's transaction when there
/// is one, so a link removed by any instance stops its orders at once. Only
/// the opened Alpaca client is kept, per link.
final class Brokers: Sendable {
    enum Route: Sendable {
        case paper
        case alpaca(AlpacaBroker)
        /// A brokerage account whose link was removed: nothing more reaches the broker.
        case unlinked
    }

    let paper: any Broker
    let store: BrokerageStore
    let secretBox: SecretBox
    let logger: Logger
    /// Accounts known to have no link: paper accounts.
    private let paperAccounts = Mutex<Set<AccountID>>([])
    /// Opened Alpaca clients, by link, with the sealed keys each was opened from:
    /// keys replaced by any process show as other sealed text, and open a new client.
    private let clients = Mutex<[UUID: (sealed: String, client: AlpacaBroker)]>([:])
    /// How often an account's orders at Alpaca are polled, and when each last was.
    let pollInterval: Duration
    /// Given to each Alpaca client it makes.
    let metrics: FolioMetrics?
    private let lastPolls = Mutex<[AccountID: ContinuousClock.Instant]>([:])

    init(paper: any Broker, store: BrokerageStore, secretBox: SecretBox, logger: Logger, pollInterval: Duration = .seconds(15), metrics: FolioMetrics? = nil) {
        self.metrics = metrics
        self.paper = paper
        self.store = store
        self.secretBox = secretBox
        self.logger = logger
        self.pollInterval = pollInterval
    }

    /// Accounts whose trade stream is up: their fills come as they happen, and polls are a safety net.
    private let streaming = Mutex<Set<AccountID>>([])

    /// Whether the account's orders at its broker are due a poll: every
    /// `pollInterval`, or twenty times that while its trade stream is up.
    func pollDue(_ account: AccountID) -> Bool {
        guard let last = lastPolls.withLock({ $0[account] }) else { return true }
        let interval = streaming.withLock { $0.contains(account) } ? pollInterval * 20 : pollInterval
        return ContinuousClock.now - last >= interval
    }

    /// The stream is listening: poll at once (to catch up on what it missed while down), then rarely.
    func streamUp(_ account: AccountID) {
        streaming.withLock { _ = $0.insert(account) }
        lastPolls.withLock { _ = $0.removeValue(forKey: account) }
    }

    /// The account is polled at the next look, whatever its schedule.
    func pollSoon(_ account: AccountID) {
        lastPolls.withLock { _ = $0.removeValue(forKey: account) }
    }

    func streamDown(_ account: AccountID) {
        streaming.withLock { _ = $0.remove(account) }
    }

    func isStreaming(_ account: AccountID) -> Bool {
        streaming.withLock { $0.contains(account) }
    }

    func polled(_ account: AccountID) {
        lastPolls.withLock { $0[account] = ContinuousClock.now }
    }

    /// Orders Alpaca took that a look found listed nowhere there: since when, and in how many looks.
    private let unlistedOrders = Mutex<[OrderID: (since: Date, looks: Int)]>([:])
    /// How long, and in how many looks, an order Alpaca took must be listed nowhere there before it counts as
    /// gone: Alpaca's look-up lags by seconds, while an account reset (paper) deletes every order for good.
    static let goneAtBrokerAfter: TimeInterval = 900
    static let goneAtBrokerLooks = 3

    /// Notes that a look found the order listed nowhere at its broker; true once it has been so for
    /// `goneAtBrokerAfter` and `goneAtBrokerLooks` looks (then it is forgotten here).
    func unlistedAtBroker(_ order: OrderID, now: Date) -> Bool {
        unlistedOrders.withLock { all in
            var entry = all[order] ?? (now, 0)
            entry.looks += 1
            let gone = entry.looks >= Self.goneAtBrokerLooks && now.timeIntervalSince(entry.since) >= Self.goneAtBrokerAfter
            all[order] = gone ? nil : entry
            return gone
        }
    }

    /// The order is listed at its broker (again): a later absence counts from its start.
    func listedAtBroker(_ order: OrderID) {
        unlistedOrders.withLock { all in if !all.isEmpty { all[order] = nil } }
    }

    /// The account's route; `db` reads the link inside a caller's transaction. Ask only about accounts that exist.
    func route(for account: AccountID, on db: (any SQLDatabase)? = nil) async throws -> Route {
        if paperAccounts.withLock({ $0.contains(account) }) { return .paper }
        guard let link = try await store.link(of: account, on: db) else {
            // The link is written in the transaction that opens a brokerage account: an account without one is paper for good.
            paperAccounts.withLock { _ = $0.insert(account) }
            return .paper
        }
        guard link.status == .active else {
            clients.withLock { _ = $0.removeValue(forKey: link.id) }
            return .unlinked
        }
        return .alpaca(try alpaca(link))
    }

    func broker(for account: AccountID, on db: (any SQLDatabase)? = nil) async throws -> any Broker {
        switch try await route(for: account, on: db) {
        case .paper: paper
        case .alpaca(let alpaca): alpaca
        case .unlinked: UnlinkedBroker()
        }
    }

    /// The Alpaca client for a link, its credentials opened and taught to the log redactor.
    func alpaca(_ link: BrokerageLink) throws -> AlpacaBroker {
        if let known = clients.withLock({ $0[link.id] }), known.sealed == link.sealedCredentials { return known.client }
        guard let credentials = AlpacaCredentials.open(link.sealedCredentials, with: secretBox) else {
            throw BrokerError.unavailable("the link's credentials cannot be opened with SECRET_KEY or PREVIOUS_SECRET_KEYS")
        }
        ConfiguredSecrets.register([credentials.keyID, credentials.secretKey])
        var client = AlpacaBroker(settings: .init(keyID: credentials.keyID, secretKey: credentials.secretKey, baseURL: link.baseURL), logger: logger)
        client.metrics = metrics
        clients.withLock { $0[link.id] = (link.sealedCredentials, client) }
        return client
    }

    /// Drops the opened client of a link (its keys were replaced).
    func forget(_ link: UUID) {
        clients.withLock { _ = $0.removeValue(forKey: link) }
    }
}

/// An Alpaca key id and secret, sealed together at rest.
struct AlpacaCredentials: Codable, Sendable, CustomStringConvertible {
    var keyID: String
    var secretKey: String

    func sealed(with box: SecretBox) throws -> String {
        try box.seal(String(decoding: try JSONEncoder().encode(self), as: UTF8.self))
    }

    static func open(_ sealed: String, with box: SecretBox) -> AlpacaCredentials? {
        guard let text = box.open(sealed) else { return nil }
        return try? JSONDecoder().decode(AlpacaCredentials.self, from: Data(text.utf8))
    }

    /// What a list shows of the key id: its last four characters.
    var hint: String { "…" + String(keyID.suffix(4)) }

    /// Never the keys, whatever formats this value.
    var description: String { "AlpacaCredentials(\(hint))" }
}

/// The broker of an account whose link was removed: an order still on its
/// way (placed in the moment the link went) is refused, never sent.
struct UnlinkedBroker: Broker {
    var holdsOrders: Bool { false }
    static let reason = "the account's brokerage link was removed"

    func submit(_ order: BrokerOrder) async throws -> BrokerReport { .rejected(reason: Self.reason) }
    func recheck(_ order: BrokerOrder) async throws -> BrokerReport? { nil }
    func cancel(_ order: BrokerOrder) async throws -> BrokerReport { .canceled(reason: Self.reason) }
}
