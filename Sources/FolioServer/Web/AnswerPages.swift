import FolioDomain
import Foundation

/// API answers a form without JavaScript shows as a page of their own
/// (`_show` on a form, see `FormBridge`): what cannot be fetched again, or
/// what the next step needs on screen.
enum AnswerPage: String {
    /// A new two-factor secret and its otpauth link, with the form that confirms it.
    case twoFactorEnrolment = "two-factor-enrolment"
    /// The recovery codes two-factor confirmation hands out, shown this once.
    case recoveryCodes = "recovery-codes"
    /// New recovery codes in place of the old ones, shown this once (the same page, said otherwise).
    case newRecoveryCodes = "new-recovery-codes"
    /// A rebalance preview: the trades, and the form that places them.
    case rebalancePlan = "rebalance-plan"
    /// The sign-in form, shown again after a refusal (never after a success, which goes on to `_next`).
    case signIn = "signin"

    /// A page that shows a successful answer (`_show`); the sign-in form is only ever shown again after a refusal (`_again`).
    var showsAnswer: Bool { self != .signIn }

    var template: String { self == .newRecoveryCodes ? AnswerPage.recoveryCodes.rawValue : rawValue }

    var title: String {
        switch self {
        case .twoFactorEnrolment: "Set up two-factor authentication"
        case .recoveryCodes: "Two-factor authentication is on"
        case .newRecoveryCodes: "Your new recovery codes"
        case .rebalancePlan: "The rebalance plan"
        case .signIn: "Sign in"
        }
    }

    /// The page's values from the API's answer, the form's own fields and its control fields.
    func values(answer: [String: Any], fields: [(String, String)], control: [String: String]) -> [String: Any] {
        switch self {
        case .twoFactorEnrolment:
            let uri = answer["otpauth_uri"] as? String ?? ""
            return ["secret": answer["secret"] as? String ?? "", "uri": uri, "qr": QRCode.authenticatorSVG(uri: uri) as Any, "csrf": control["_csrf"] ?? ""]
        case .recoveryCodes, .newRecoveryCodes:
            return ["recovery_codes": answer["recovery_codes"] as? [String] ?? [], "heading": title, "replaced": self == .newRecoveryCodes]
        case .rebalancePlan:
            return Self.plan(answer, fields: Dictionary(fields, uniquingKeysWith: { _, last in last }), csrf: control["_csrf"] ?? "")
        case .signIn:
            return [:]
        }
    }

    /// The page again after its form was refused, from what the page itself
    /// sent (nil when that does not hold together): the secret the person has
    /// just added to their app stays the one on screen; the sign-in form keeps
    /// the address typed (never the password) and where it was to lead. Only a
    /// same-origin form gets this far (the enrolment's with the session's token),
    /// so nothing here is another site's.
    func again(control: [String: String], fields: [(String, String)]) -> [String: Any]? {
        switch self {
        case .twoFactorEnrolment:
            guard let secret = control["_secret"], (16...64).contains(secret.count), secret.allSatisfy({ ("A"..."Z").contains($0) || ("2"..."7").contains($0) }),
                  let uri = control["_uri"], uri.hasPrefix("otpauth://totp/"), uri.contains("secret=\(secret)")
            else { return nil }
            return ["secret": secret, "uri": uri, "qr": QRCode.authenticatorSVG(uri: uri) as Any, "csrf": control["_csrf"] ?? ""]
        case .signIn:
            let email = fields.last { $0.0 == "email" }?.1 ?? ""
            // A recovery code was tried: its field stays open.
            let recovery = fields.contains { $0.0 == "recovery_code" }
            return ["next": WebController.sitePath(control["_next"].map { Substring($0) }), "email": String(email.prefix(320)), "recovery_tried": recovery]
        case .recoveryCodes, .newRecoveryCodes, .rebalancePlan:
            return nil
        }
    }

    static func plan(_ plan: [String: Any], fields: [String: String], csrf: String) -> [String: Any] {
        func money(_ key: String, in object: [String: Any] = plan) -> String {
            (object[key] as? String).flatMap { try? Cash(parsing: $0) }.map(Display.money) ?? "–"
        }
        let trades = (plan["trades"] as? [[String: Any]] ?? []).map { trade -> [String: String] in
            let side = (trade["side"] as? String ?? "").lowercased(), symbol = trade["symbol"] as? String ?? ""
            let price = (trade["price"] as? String).flatMap { try? Price(parsing: $0) }.map(Display.price) ?? "–"
            return ["trade": "\(side) \(trade["quantity"] as? String ?? "") \(symbol)", "price": price, "amount": money("estimated_amount", in: trade)]
        }
        let count = plan["order_count"] as? Int ?? trades.count
        // A run still going: its note is the whole summary, and no trades are offered.
        let running = plan["active_run_id"] is String
        let notes = (plan["notes"] as? [String] ?? []).joined(separator: " ")
        let summary = running ? notes
            : trades.isEmpty
            ? (plan["reason"] as? [String: Any])?["message"] as? String ?? "Nothing to trade: the holdings are where the targets put them."
            : "\(count) \(count == 1 ? "order" : "orders"): about \(money("estimated_cost")) to buy and \(money("estimated_proceeds")) from sales; cash after \(money("cash_after"))."
                + (notes.isEmpty ? "" : " " + notes)
        let account = fields["account_id"].flatMap(AccountID.init)?.description
        return [
            "summary": summary, "trades": running ? [] : trades, "has_trades": !running && !trades.isEmpty, "csrf": csrf,
            // A fresh key for the run: sending the page's form twice places the orders once.
            "idempotency_key": UUID.random().lowercasedString,
            "mode": fields["mode"] ?? "", "cash_reserve": fields["cash_reserve"] ?? "", "min_trade_amount": fields["min_trade_amount"] ?? "",
            "excluded_symbols": fields["excluded_symbols"] ?? "",
            // What the run must still be, or it is refused (plan_changed): this version of the targets, at about this cost.
            "targets_version": (plan["targets_version"] as? Int).map(String.init) ?? "", "estimated_cost": plan["estimated_cost"] as? String ?? "",
            "account_id": account as Any,
            "back": "/targets" + (account.map { "?account_id=\($0)" } ?? ""),
        ]
    }
}
