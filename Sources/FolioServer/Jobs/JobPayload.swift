import FolioDomain
import Foundation

/// What a job is about, typed and versioned. Stored as JSON in `jobs.payload`
/// (`{"v":1,…}`); the order a job is about is also its own column, so it is
/// found by `order_id`, never by searching text.
enum JobPayload: Sendable, Equatable {
    /// Send a `new` order to the broker and apply the broker's answer.
    case submitOrder(OrderID)
    /// Cancel at its broker what is left of an order the books ended (a part the broker filled that they could
    /// not take); asked again, with back-off, until the broker says the order has ended there.
    case cancelAtBroker(OrderID)
    /// Take the close snapshot of every account for the day of `due` (Unix seconds).
    case snapshotPortfolios(due: Int64)
    /// Write every audit chain's head to the log (a copy outside the database).
    case logAuditHeads
    /// Move a rebalance run on: from its sells to its buys, and to its end.
    case advanceRebalance(RebalanceRunID)
    /// Link the deployment's own Alpaca keys to the first admin's account, once there is one.
    case linkDefaultBrokerage
    /// Compare every Alpaca account's cash and positions with Folio's books, and adjust.
    case reconcileBrokerage
    /// Read the exchange calendar and clock from Alpaca.
    case refreshMarketCalendar
    /// Bring a Plaid item's accounts, balances and transactions up to date.
    case syncPlaidItem(UUID)
    /// Import a Plaid item's investment holdings again.
    case refreshPlaidHoldings(UUID)
    /// Plaid says the item needs its user: mark it and tell them (`reason` is Plaid's code). `byWebhook`:
    /// Plaid's webhook said so (webhooks may arrive out of order, so the job checks with Plaid first),
    /// rather than a call that failed.
    case plaidItemNeedsLogin(UUID, reason: String, byWebhook: Bool = false)
    /// The daily backstop: a sync of every item, in case a webhook was missed.
    case syncAllPlaidItems
    /// Send one queued message (`mail_messages`).
    case sendMail(UUID)
    /// Tell users whose holdings drifted outside their bands on the day of `due` (Unix seconds).
    case driftDigest(due: Int64)
    /// Remove what the retention policies say is no longer kept.
    case runRetention
    /// Take the daily backup (and, on the first of the month, verify the newest).
    case backup
    /// Mail the monthly access review to the administrators.
    case accessReview

    enum Kind: String, Sendable, CaseIterable {
        case submitOrder = "submit_order"
        case cancelAtBroker = "cancel_at_broker"
        case snapshotPortfolios = "snapshot_portfolios"
        case logAuditHeads = "log_audit_heads"
        case advanceRebalance = "advance_rebalance"
        case linkDefaultBrokerage = "link_default_brokerage"
        case reconcileBrokerage = "reconcile_brokerage"
        case refreshMarketCalendar = "refresh_market_calendar"
        case syncPlaidItem = "sync_plaid_item"
        case refreshPlaidHoldings = "refresh_plaid_holdings"
        case plaidItemNeedsLogin = "plaid_item_needs_login"
        case syncAllPlaidItems = "sync_all_plaid_items"
        case sendMail = "send_mail"
        case driftDigest = "drift_digest"
        case runRetention = "run_retention"
        case backup = "backup"
        case accessReview = "access_review"
    }

    static let version = 1

    var kind: Kind {
        switch self {
        case .submitOrder: .submitOrder
        case .cancelAtBroker: .cancelAtBroker
        case .snapshotPortfolios: .snapshotPortfolios
        case .logAuditHeads: .logAuditHeads
        case .advanceRebalance: .advanceRebalance
        case .linkDefaultBrokerage: .linkDefaultBrokerage
        case .reconcileBrokerage: .reconcileBrokerage
        case .refreshMarketCalendar: .refreshMarketCalendar
        case .syncPlaidItem: .syncPlaidItem
        case .refreshPlaidHoldings: .refreshPlaidHoldings
        case .plaidItemNeedsLogin: .plaidItemNeedsLogin
        case .syncAllPlaidItems: .syncAllPlaidItems
        case .sendMail: .sendMail
        case .driftDigest: .driftDigest
        case .runRetention: .runRetention
        case .backup: .backup
        case .accessReview: .accessReview
        }
    }

    var orderID: OrderID? {
        switch self {
        case .submitOrder(let id), .cancelAtBroker(let id): id
        default: nil
        }
    }

    /// The payload column's JSON.
    var json: String {
        var fields: [String: String] = ["v": String(Self.version)]
        switch self {
        case .submitOrder(let id), .cancelAtBroker(let id): fields["order_id"] = id.description
        case .snapshotPortfolios(let due), .driftDigest(let due): fields["due"] = String(due)
        case .logAuditHeads, .linkDefaultBrokerage, .reconcileBrokerage, .refreshMarketCalendar, .syncAllPlaidItems, .runRetention, .backup, .accessReview: break
        case .advanceRebalance(let run): fields["run_id"] = run.description
        case .syncPlaidItem(let item), .refreshPlaidHoldings(let item): fields["item_id"] = item.lowercasedString
        case .plaidItemNeedsLogin(let item, let reason, let byWebhook):
            fields["item_id"] = item.lowercasedString
            fields["reason"] = reason
            if byWebhook { fields["by_webhook"] = "true" }
        case .sendMail(let mail): fields["mail_id"] = mail.lowercasedString
        }
        return String(decoding: (try? FolioJSON.encode(fields)) ?? Data("{}".utf8), as: UTF8.self)
    }

    struct Unreadable: Error, CustomStringConvertible {
        var description: String
    }

    /// Reads a stored job. Rows from before versioning (no `v`) are version 1.
    init(kind: String, json: String, orderID: OrderID?) throws {
        guard let kind = Kind(rawValue: kind) else { throw Unreadable(description: "unknown job kind \(kind)") }
        let fields = (try? JSONDecoder().decode([String: String].self, from: Data(json.utf8))) ?? [:]
        let version = fields["v"].flatMap(Int.init) ?? 1
        guard version == Self.version else { throw Unreadable(description: "\(kind.rawValue) payload version \(version) is newer than this build") }
        switch kind {
        case .submitOrder, .cancelAtBroker:
            guard let id = orderID ?? fields["order_id"].flatMap({ OrderID($0) }) else { throw Unreadable(description: "\(kind.rawValue) without an order") }
            self = kind == .submitOrder ? .submitOrder(id) : .cancelAtBroker(id)
        case .snapshotPortfolios:
            guard let due = fields["due"].flatMap(Int64.init) else { throw Unreadable(description: "snapshot_portfolios without a due time") }
            self = .snapshotPortfolios(due: due)
        case .logAuditHeads:
            self = .logAuditHeads
        case .advanceRebalance:
            guard let run = fields["run_id"].flatMap({ RebalanceRunID($0) }) else { throw Unreadable(description: "advance_rebalance without a run") }
            self = .advanceRebalance(run)
        case .linkDefaultBrokerage:
            self = .linkDefaultBrokerage
        case .reconcileBrokerage:
            self = .reconcileBrokerage
        case .refreshMarketCalendar:
            self = .refreshMarketCalendar
        case .syncPlaidItem, .refreshPlaidHoldings, .plaidItemNeedsLogin:
            guard let item = fields["item_id"].flatMap(UUID.init(uuidString:)) else { throw Unreadable(description: "\(kind.rawValue) without an item") }
            switch kind {
            case .syncPlaidItem: self = .syncPlaidItem(item)
            case .refreshPlaidHoldings: self = .refreshPlaidHoldings(item)
            default: self = .plaidItemNeedsLogin(item, reason: fields["reason"] ?? "ITEM_LOGIN_REQUIRED", byWebhook: fields["by_webhook"] == "true")
            }
        case .syncAllPlaidItems:
            self = .syncAllPlaidItems
        case .driftDigest:
            guard let due = fields["due"].flatMap(Int64.init) else { throw Unreadable(description: "drift_digest without a due time") }
            self = .driftDigest(due: due)
        case .runRetention:
            self = .runRetention
        case .backup:
            self = .backup
        case .accessReview:
            self = .accessReview
        case .sendMail:
            guard let mail = fields["mail_id"].flatMap(UUID.init(uuidString:)) else { throw Unreadable(description: "send_mail without a message") }
            self = .sendMail(mail)
        }
    }
}
