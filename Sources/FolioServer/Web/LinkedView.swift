import FolioDomain
import Foundation

/// The linked-accounts page: net worth across Folio and the linked
/// institutions, and each Plaid item with its sync state and what to do next.
enum LinkedView {
    static func build(
        worth: NetWorthResponse, items: [LinksController.ItemResponse], plaidConfigured: Bool, alpaca: [BrokerageController.LinkResponse],
        transactions: Page<LinksController.TransactionResponse>, holdings: [LinksController.HoldingResponse]
    ) -> [String: Any] {
        // A linked account by its id: its name and the last digits its institution shows.
        var accountNames: [String: String] = [:]
        for item in items {
            for account in item.accounts {
                accountNames[account.id] = account.name + (account.mask.map { " ···" + $0 } ?? "")
            }
        }
        func named(_ id: String?) -> String { id.flatMap { accountNames[$0] } ?? "—" }
        let active = alpaca.filter { $0.status == BrokerageLink.Status.active.rawValue }
        let names = Dictionary(worth.accounts.filter { $0.source == "folio" }.map { ($0.id, $0.name) }, uniquingKeysWith: { first, _ in first })
        return [
            "alpaca_links": active.map { link in
                [
                    "account_id": link.accountID.description, "name": names[link.accountID.description] ?? "Alpaca \(link.environment) account",
                    "live": link.environment == BrokerageLink.Environment.live.rawValue, "remote_account": link.remoteAccount,
                    "key_hint": link.keyHint, "linked": Display.date(link.createdAt),
                ] as [String: Any]
            },
            "has_alpaca_links": !active.isEmpty,
            "linked_transactions": transactions.data.map { row in
                [
                    "date": row.date, "account": named(row.accountID), "name": row.merchantName ?? row.name, "category": row.category ?? "",
                    "pending": row.pending, "amount": amount(row.amount, currency: row.currency), "negative": row.amount.isNegative,
                ] as [String: Any]
            },
            "linked_next": transactions.nextCursor.map { "/linked?cursor=\($0)" } as Any,
            "linked_holdings": holdings.map { holding in
                [
                    "account": named(holding.accountID), "security": [holding.ticker, holding.name].compactMap { $0 }.joined(separator: " · "),
                    "quantity": Display.quantity(holding.quantity),
                    "price": holding.currency.map { $0 == "USD" } ?? true
                        ? Price(holding.institutionPrice).map(Display.price) ?? holding.institutionPrice : holding.institutionPrice + " " + (holding.currency ?? ""),
                    "value": amount(holding.institutionValue, currency: holding.currency),
                    "cost": holding.costBasis.map { amount($0, currency: holding.currency) } ?? "—",
                ] as [String: Any]
            },
            "has_linked_holdings": !holdings.isEmpty,
            "configured": plaidConfigured,
            "total": Display.money(worth.total), "assets": Display.money(worth.assets), "liabilities": Display.money(worth.liabilities),
            "folio_total": Display.money(worth.folioTotal), "linked_total": Display.money(worth.linkedTotal),
            "accounts": worth.accounts.map { account in
                [
                    "source": account.source == "folio" ? "Folio" : account.institution ?? "Linked",
                    "name": account.name, "type": [account.type, account.subtype].compactMap { $0 }.joined(separator: " · "),
                    "value": account.value.map { amount($0, currency: account.currency) } ?? "not reported", "negative": account.value?.isNegative ?? false,
                    "included": account.included, "stale": account.stale && !account.unlinked, "unlinked": account.unlinked,
                ] as [String: Any]
            },
            "items": items.map(item),
            "has_items": !items.isEmpty,
        ]
    }

    /// Dollars as everywhere; another currency as its figure and code, never with a dollar sign.
    static func amount(_ cash: Cash, currency: String?) -> String {
        guard let currency, currency != "USD" else { return Display.money(cash) }
        let cents = (try? cash.rounded(places: 2, .halfEven)) ?? cash
        return Display.signed(cents.formatted(minimumFractionDigits: 2), prefix: "") + " " + currency
    }

    static func item(_ item: LinksController.ItemResponse) -> [String: Any] {
        let status: String
        switch item.status {
        case "active": status = "Syncing"
        case "login_required": status = "Sign in again to keep syncing"
        case "pending_expiration": status = "Access ends soon: renew it"
        default: status = item.errorMessage ?? "Plaid cannot sync this institution"
        }
        return [
            "id": item.id, "institution": item.institutionName ?? "Institution", "status": status,
            "needs_login": item.status == "login_required" || item.status == "pending_expiration", "failing": item.status == "error",
            "synced": item.lastSyncedAt.map(Display.date) ?? "not yet",
            "accounts": item.accounts.map { account in
                ["name": account.name, "mask": account.mask as Any, "type": account.subtype ?? account.type,
                 "balance": account.currentBalance.map(Display.money) ?? "—"] as [String: Any]
            },
        ]
    }
}
