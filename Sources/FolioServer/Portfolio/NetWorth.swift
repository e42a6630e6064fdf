import FolioDomain
import Foundation
import Hummingbird

/// `GET /api/portfolio?view=net_worth`: everything the user has, in one
/// figure and account by account, each marked by its source: Folio's own
/// accounts (valued at current quotes) and the accounts linked through Plaid
/// (at the balance the institution last reported). Credit cards and loans
/// count against the total. Linked holdings stay out of Folio's positions:
/// they are the institution's records, not something Folio can trade.
/// Only USD balances are summed; another currency is listed and left out.
struct NetWorthResponse: ResponseEncodable, Sendable {
    struct Account: Encodable, Sendable {
        var source: String
        var id: String
        var itemID: String?
        var institution: String?
        var name: String
        var type: String
        var subtype: String?
        var currency: String?
        /// What the account adds to (or, for debts, takes from) the total.
        var value: Cash?
        /// In the total: false for another currency, a balance the institution has not reported, or an unlinked Alpaca account.
        var included: Bool
        /// A Folio account mirroring an Alpaca account whose link was removed: its cash and holdings are as they
        /// were when unlinked (valued at current quotes); listed, not counted.
        var unlinked = false
        /// An account another link also holds (the same institution, name, mask and type: a login linked again to mend
        /// an item that lost its access, or a joint account of two logins): listed, counted once, through the other link.
        var superseded = false
        /// A Folio account with a price older than it should be, or a linked item that is not syncing.
        var stale: Bool
    }

    var currency = "USD"
    var total: Cash
    var assets: Cash
    var liabilities: Cash
    var folioTotal: Cash
    var linkedTotal: Cash
    var accounts: [Account]
    var valuedAt: Date

    static let liabilityTypes: Set<String> = ["credit", "loan"]

    static func build(
        folio: [(AccountRecord, PortfolioValuation)], unlinked: Set<AccountID> = [], items: [PlaidItem], linked: [LinkedAccount], now: Date
    ) throws -> NetWorthResponse {
        var assets = Cash.zero, liabilities = Cash.zero, folioTotal = Cash.zero, linkedTotal = Cash.zero
        var accounts: [Account] = []
        // By sign, whatever the account's kind: a card paid beyond its balance is an asset, an overdrawn checking account a debt.
        func add(_ value: Cash) throws {
            if value.isNegative { liabilities = try liabilities - value } else { assets = try assets + value }
        }
        for (account, valuation) in folio {
            // An unlinked Alpaca account is listed but not counted: Folio no longer sees that money, and the
            // same Alpaca account linked again is another Folio account, which would count it twice.
            let followed = !unlinked.contains(account.id)
            if followed {
                folioTotal = try folioTotal + valuation.totalValue
                try add(valuation.totalValue)
            }
            accounts.append(Account(
                source: "folio", id: account.id.description, name: account.name, type: account.kind, currency: account.currency, value: valuation.totalValue,
                included: followed, unlinked: !followed, stale: !followed || valuation.positions.contains { $0.quote?.isStale ?? true }))
        }
        let itemsByID = Dictionary(uniqueKeysWithValues: items.map { ($0.id, $0) })
        // An account known by its institution, name, mask and type, as a login linked twice is recognised (`PlaidStore.itemLinking`).
        func sameAccount(_ linked: LinkedAccount) -> [String]? {
            guard let institution = itemsByID[linked.itemID]?.institutionID, let mask = linked.account.mask else { return nil }
            return [institution, linked.account.name, mask, linked.account.type, linked.account.subtype ?? ""]
        }
        // One account reached through several links (a login linked again to mend an item that lost its access, which may
        // work again later; a joint account of two logins) counts once: through a working link before one in error, the
        // newest first. The others are listed as superseded.
        var counted: [[String]: UUID] = [:]
        func better(_ a: UUID, than b: UUID) -> Bool {
            guard let first = itemsByID[a], let second = itemsByID[b] else { return itemsByID[a] != nil }
            if (first.status == .error) != (second.status == .error) { return second.status == .error }
            return (first.createdAt, first.id.uuidString) > (second.createdAt, second.id.uuidString)
        }
        for linkedAccount in linked {
            guard let key = sameAccount(linkedAccount) else { continue }
            if let held = counted[key], !better(linkedAccount.itemID, than: held) { continue }
            counted[key] = linkedAccount.itemID
        }
        for linkedAccount in linked {
            let account = linkedAccount.account, item = itemsByID[linkedAccount.itemID]
            let debt = liabilityTypes.contains(account.type)
            let value = account.current.map { debt ? -$0 : $0 }
            let superseded = sameAccount(linkedAccount).map { counted[$0] != linkedAccount.itemID } ?? false
            var included = !superseded && value != nil && (account.currency ?? "USD") == "USD"
            if included, let value {
                // A balance that would carry the sum past what a cash figure holds is listed, not summed: the page
                // (and the unlink button on it) still shows, rather than failing whole.
                do {
                    let sum = try linkedTotal + value
                    try add(value)
                    linkedTotal = sum
                } catch {
                    included = false
                }
            }
            if included, (try? folioTotal + linkedTotal) == nil, let value {
                linkedTotal = try linkedTotal - value
                if value.isNegative { liabilities = try liabilities + value } else { assets = try assets - value }
                included = false
            }
            accounts.append(Account(
                source: "plaid", id: linkedAccount.id.lowercasedString, itemID: linkedAccount.itemID.lowercasedString, institution: item?.institutionName, name: account.name,
                type: account.type, subtype: account.subtype, currency: account.currency, value: value, included: included, superseded: superseded,
                stale: item.map { $0.status != .active || $0.errorCode != nil } ?? true))
        }
        return NetWorthResponse(
            total: try folioTotal + linkedTotal, assets: assets, liabilities: liabilities, folioTotal: folioTotal, linkedTotal: linkedTotal,
            accounts: accounts, valuedAt: now)
    }
}
