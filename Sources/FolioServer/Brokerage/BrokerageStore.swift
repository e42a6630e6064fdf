import FolioDomain
import Foundation
import SQLKit

/// A Folio account's link to its account at an outside broker.
struct BrokerageLink: Sendable, Equatable {
    enum Environment: String, Sendable, Codable, CaseIterable {
        case paper, live
    }

    enum Status: String, Sendable, Codable {
        case active, removed
    }

    enum Origin: String, Sendable, Codable {
        /// Linked by its user through the API.
        case user
        /// The deployment's own keys (`ALPACA_API_KEY`), linked once to the first administrator.
        case deployment
    }

    var id: UUID
    var userID: UserID
    var accountID: AccountID
    var broker: String
    var environment: Environment
    var baseURL: String
    var remoteAccount: String
    var keyHint: String
    /// The key id and secret, sealed by `SecretBox`; empty once unlinked.
    var sealedCredentials: String
    var status: Status
    var origin: Origin = .user
    var createdAt: Date
    var removedAt: Date?
}

/// The only code that reads and writes `brokerage_links`.
struct BrokerageStore: Sendable {
    let database: FolioDatabase

    static let columns = "id, user_id, account_id, broker, environment, base_url, remote_account, key_hint, sealed_credentials, status, origin, created_at, removed_at"

    func insert(_ link: BrokerageLink, on db: any SQLDatabase) async throws {
        try await db.raw("""
            INSERT INTO brokerage_links (\(unsafeRaw: Self.columns))
            VALUES (\(bind: link.id), \(bind: link.userID), \(bind: link.accountID), \(bind: link.broker), \(bind: link.environment.rawValue),
                    \(bind: link.baseURL), \(bind: link.remoteAccount), \(bind: link.keyHint), \(bind: link.sealedCredentials),
                    \(bind: link.status.rawValue), \(bind: link.origin.rawValue), \(bind: link.createdAt), \(bind: link.removedAt))
            """).run()
    }

    /// The link of an account, active or removed; nil for an account that never had one (a paper account).
    func link(of account: AccountID, on db: (any SQLDatabase)? = nil) async throws -> BrokerageLink? {
        try await (db ?? database.sql).raw("""
            SELECT \(unsafeRaw: Self.columns) FROM brokerage_links WHERE account_id = \(bind: account)
            """).first().map(Self.link)
    }

    func links(of userID: UserID) async throws -> [BrokerageLink] {
        try await database.sql.raw("""
            SELECT \(unsafeRaw: Self.columns) FROM brokerage_links WHERE user_id = \(bind: userID) ORDER BY created_at, id
            """).all().map(Self.link)
    }

    /// The person's accounts whose Alpaca link was removed: they keep their history but take no
    /// orders, and net worth leaves them out (linking the same Alpaca account again opens another).
    func unlinkedAccounts(of userID: UserID) async throws -> Set<AccountID> {
        let rows = try await database.sql.raw("""
            SELECT account_id FROM brokerage_links WHERE user_id = \(bind: userID) AND status = 'removed'
            """).all()
        return Set(try rows.map { try $0.decode(column: "account_id", as: AccountID.self) })
    }

    /// Every link that still holds credentials, for re-sealing under a new key.
    func activeLinks(on db: any SQLDatabase) async throws -> [BrokerageLink] {
        try await db.raw("""
            SELECT \(unsafeRaw: Self.columns) FROM brokerage_links WHERE status = 'active' ORDER BY created_at, id
            """).all().map(Self.link)
    }

    /// The active link to this account at the broker, whoever made it.
    func activeLink(broker: String, environment: BrokerageLink.Environment, remoteAccount: String, on db: any SQLDatabase) async throws -> BrokerageLink? {
        try await db.raw("""
            SELECT \(unsafeRaw: Self.columns) FROM brokerage_links
            WHERE broker = \(bind: broker) AND environment = \(bind: environment.rawValue) AND remote_account = \(bind: remoteAccount) AND status = 'active'
            """).first().map(Self.link)
    }

    /// The link the deployment's own keys made, active or removed, if they ever made one.
    func deploymentLink() async throws -> BrokerageLink? {
        try await database.sql.raw("SELECT \(unsafeRaw: Self.columns) FROM brokerage_links WHERE origin = 'deployment'").first().map(Self.link)
    }

    /// Forgets the credentials: the account and its history stay.
    func markRemoved(_ id: UUID, now: Date, on db: any SQLDatabase) async throws {
        try await db.raw("""
            UPDATE brokerage_links SET status = 'removed', sealed_credentials = '', removed_at = \(bind: now) WHERE id = \(bind: id)
            """).run()
    }

    /// New keys for an active link: sealed, with their hint.
    func replaceCredentials(_ id: UUID, sealed: String, keyHint: String, on db: any SQLDatabase) async throws {
        try await db.raw("""
            UPDATE brokerage_links SET sealed_credentials = \(bind: sealed), key_hint = \(bind: keyHint) WHERE id = \(bind: id) AND status = 'active'
            """).run()
    }

    /// The same keys sealed anew, only if the stored value is still `old`; false when it changed meanwhile.
    func resealCredentials(_ id: UUID, old: String, new: String, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw("""
            UPDATE brokerage_links SET sealed_credentials = \(bind: new)
            WHERE id = \(bind: id) AND status = 'active' AND sealed_credentials = \(bind: old) RETURNING id
            """).first() != nil
    }

    static func link(_ row: any SQLRow) throws -> BrokerageLink {
        let environment = try row.decode(column: "environment", as: String.self), status = try row.decode(column: "status", as: String.self)
        let origin = try row.decode(column: "origin", as: String.self)
        guard let environment = BrokerageLink.Environment(rawValue: environment), let status = BrokerageLink.Status(rawValue: status),
              let origin = BrokerageLink.Origin(rawValue: origin)
        else {
            throw TradingStore.StoreError.corrupt("brokerage_links has environment \(environment), status \(status), origin \(origin)")
        }
        return BrokerageLink(
            id: try row.decode(column: "id", as: UUID.self), userID: try row.decode(column: "user_id", as: UserID.self),
            accountID: try row.decode(column: "account_id", as: AccountID.self), broker: try row.decode(column: "broker", as: String.self),
            environment: environment, baseURL: try row.decode(column: "base_url", as: String.self),
            remoteAccount: try row.decode(column: "remote_account", as: String.self), keyHint: try row.decode(column: "key_hint", as: String.self),
            sealedCredentials: try row.decode(column: "sealed_credentials", as: String.self), status: status, origin: origin,
            createdAt: try row.decode(column: "created_at", as: Date.self), removedAt: try row.decode(column: "removed_at", as: Date?.self))
    }
}

