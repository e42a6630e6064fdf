import AsyncHTTPClient
import FolioDomain
import Foundation
import Logging
import SQLKit
import Synchronization

/// Which broker executes an account's orders: the paper broker for a paper
/// account; Alpaca, with the account's own keys, for a linked one. The answer
/// is kept per account (an account never changes broker, and an unlinked one
/// has no open orders left to route), so the order path pays one lookup per
/// account and process.
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
    let httpClient: HTTPClient
    let logger: Logger
    private let routes = Mutex<[AccountID: Route]>([:])

    init(paper: any Broker, store: BrokerageStore, secretBox: SecretBox, httpClient: HTTPClient, logger: Logger) {
        self.paper = paper
        self.store = store
        self.secretBox = secretBox
        self.httpClient = httpClient
        self.logger = logger
    }

    /// The account's route; `db` reads the link inside a caller's transaction. Ask only about accounts that exist.
    func route(for account: AccountID, on db: (any SQLDatabase)? = nil) async throws -> Route {
        if let known = routes.withLock({ $0[account] }) { return known }
        let route: Route
        if let link = try await store.link(of: account, on: db) {
            route = link.status == .active ? .alpaca(try alpaca(link)) : .unlinked
        } else {
            route = .paper
        }
        routes.withLock { $0[account] = route }
        return route
    }

    func broker(for account: AccountID) async throws -> any Broker {
        switch try await route(for: account) {
        case .paper: paper
        case .alpaca(let alpaca): alpaca
        case .unlinked: UnlinkedBroker()
        }
    }

    /// Forgets what was known of an account (it was just unlinked).
    func forget(_ account: AccountID) {
        routes.withLock { _ = $0.removeValue(forKey: account) }
    }

    /// The Alpaca client for a link, its credentials opened and taught to the log redactor.
    func alpaca(_ link: BrokerageLink) throws -> AlpacaBroker {
        guard let credentials = AlpacaCredentials.open(link.sealedCredentials, with: secretBox) else {
            throw BrokerError.unavailable("the link's credentials cannot be opened with SECRET_KEY or PREVIOUS_SECRET_KEYS")
        }
        ConfiguredSecrets.register([credentials.keyID, credentials.secretKey])
        return AlpacaBroker(
            settings: .init(keyID: credentials.keyID, secretKey: credentials.secretKey, baseURL: link.baseURL), httpClient: httpClient, logger: logger)
    }
}

/// An Alpaca key id and secret, sealed together at rest.
struct AlpacaCredentials: Codable, Sendable {
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
