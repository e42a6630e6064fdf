import Foundation

/// What a user's notifications are grouped by: email is chosen per category.
enum NoticeCategory: String, CaseIterable, Sendable, Codable {
    case orders, cash, rebalancing, drift, links, security

    /// Security notices are always mailed: news of someone else in the account cannot be turned off.
    var alwaysMailed: Bool { self == .security }
}

/// One kind of message Folio sends. Each has a pair of template files,
/// `Resources/mail/<name>.text.mustache` and `<name>.html.mustache`, a subject
/// and a one-line summary (the notification's title and body in the app), and
/// sample variables: a test renders every template with them, so a template
/// asking for a variable the code does not give fails the build's tests.
enum MailTemplate: String, CaseIterable, Sendable, Codable {
    // Account mail: sent to an address, not a notification.
    case verifyEmail = "verify_email"
    case resetPassword = "reset_password"
    case duplicateRegistration = "duplicate_registration"
    // Notifications.
    case orderFilled = "order_filled"
    case orderPartiallyFilled = "order_partially_filled"
    case orderRejected = "order_rejected"
    case orderExpired = "order_expired"
    case orderCanceled = "order_canceled"
    /// The broker filled it, but the books could not take the fill: not a rejection to the person who now holds the shares.
    case orderFilledAtBroker = "order_filled_at_broker"
    case cashDeposit = "cash_deposit"
    case cashWithdrawal = "cash_withdrawal"
    case cashDividend = "cash_dividend"
    case cashFee = "cash_fee"
    case rebalanceFinished = "rebalance_finished"
    case driftDigest = "drift_digest"
    case plaidLoginRequired = "plaid_login_required"
    case brokerageKeysReplaced = "brokerage_keys_replaced"
    case newSignIn = "new_sign_in"
    case passwordChanged = "password_changed"
    case twoFactorEnabled = "two_factor_enabled"
    case twoFactorDisabled = "two_factor_disabled"
    case recoveryCodeUsed = "recovery_code_used"
    case recoveryCodesReplaced = "recovery_codes_replaced"
    case accountLocked = "account_locked"
    // To administrators.
    case accessReview = "access_review"

    /// The category a notification of this kind belongs to; nil for account mail.
    var category: NoticeCategory? {
        switch self {
        case .verifyEmail, .resetPassword, .duplicateRegistration: nil
        case .orderFilled, .orderPartiallyFilled, .orderRejected, .orderExpired, .orderCanceled, .orderFilledAtBroker: .orders
        case .cashDeposit, .cashWithdrawal, .cashDividend, .cashFee: .cash
        case .rebalanceFinished: .rebalancing
        case .driftDigest: .drift
        case .plaidLoginRequired: .links
        case .newSignIn, .passwordChanged, .twoFactorEnabled, .twoFactorDisabled, .recoveryCodeUsed, .recoveryCodesReplaced, .accountLocked, .accessReview,
             .brokerageKeysReplaced: .security
        }
    }

    /// Whether this message is a way back into the account (a verification or reset link the person asked
    /// for, or the link to choose a password after a second sign-up of an unproven address): it passes
    /// Folio's suppressions and SendGrid's lists. Every other message keeps to them, the notice of a sign-up
    /// attempt without a link too (a stranger can trigger it, so it must not reach an address that bounced).
    func passesSuppressions(_ variables: MailVariables?) -> Bool {
        switch self {
        case .verifyEmail, .resetPassword: true
        case .duplicateRegistration: variables?.values["link"] != nil
        default: false
        }
    }

    /// A message whose variables hold a secret (a link with a token): its
    /// variables are emptied once it is sent, and never shown as a notification.
    /// (`duplicate_registration` carries a link to choose the password when the address was not yet verified.)
    var holdsSecret: Bool { self == .verifyEmail || self == .resetPassword || self == .duplicateRegistration }

    /// The subject line (a mustache template over the same variables).
    var subject: String {
        switch self {
        case .verifyEmail: "Verify your email for Folio"
        case .resetPassword: "Reset your Folio password"
        case .duplicateRegistration: "{{#link}}Choose a password to finish your Folio account{{/link}}{{^link}}Someone tried to register with your email{{/link}}"
        case .orderFilled: "Filled: {{side}} {{quantity}} {{symbol}} at {{price_text}}{{^price_text}}{{price}}{{/price_text}}"
        case .orderPartiallyFilled: "Partly filled: {{side}} {{symbol}}, {{filled_quantity}}{{#quantity}} of {{quantity}}{{/quantity}}"
        case .orderRejected: "Rejected: your order to {{side}} {{symbol}}"
        case .orderExpired: "Expired: your order to {{side}} {{symbol}}"
        case .orderCanceled: "Canceled: your order to {{side}} {{symbol}}"
        case .orderFilledAtBroker: "Filled at your broker: your order to {{side}} {{symbol}}"
        case .cashDeposit: "Deposit of {{amount_text}}{{^amount_text}}{{amount}}{{/amount_text}} received"
        case .cashWithdrawal: "Withdrawal of {{amount_text}}{{^amount_text}}{{amount}}{{/amount_text}} made"
        case .cashDividend: "Dividend of {{amount_text}} from {{symbol}} received"
        case .cashFee: "Fee of {{amount_text}} charged"
        case .rebalanceFinished: "Your rebalance {{outcome}}"
        case .driftDigest: "Your portfolio drifted from its targets"
        case .plaidLoginRequired: "Folio: {{institution}} needs you to sign in again"
        case .brokerageKeysReplaced: "New Alpaca keys for your account ····{{account}}"
        case .newSignIn: "New sign-in to your Folio account"
        case .passwordChanged: "Your Folio password was changed"
        case .twoFactorEnabled: "Two-factor authentication is on"
        case .twoFactorDisabled: "Two-factor authentication is off"
        case .recoveryCodeUsed: "A recovery code was used for your Folio account"
        case .recoveryCodesReplaced: "New recovery codes for your Folio account"
        case .accountLocked: "Sign-in to your Folio account is paused"
        case .accessReview: "Folio's monthly access review: {{findings}} to look at"
        }
    }

    /// One line for the list of notifications in the app.
    var summary: String {
        switch self {
        case .verifyEmail, .resetPassword, .duplicateRegistration: subject
        case .orderFilled: "Your order to {{side}} {{quantity}} {{symbol}} filled at {{price_text}}{{^price_text}}{{price}}{{/price_text}} on average."
        case .orderPartiallyFilled: "{{filled_quantity}}{{#quantity}} of {{quantity}}{{/quantity}} {{symbol}} filled so far, at {{price_text}}{{^price_text}}{{price}}{{/price_text}} on average."
        case .orderRejected: "Your order to {{side}} {{symbol}} was rejected: {{reason}}"
        case .orderExpired: "Your order to {{side}} {{symbol}} expired ({{filled_quantity}}{{#quantity}} of {{quantity}}{{/quantity}} filled)."
        case .orderCanceled: "Your order to {{side}} {{symbol}} was canceled ({{filled_quantity}}{{#quantity}} of {{quantity}}{{/quantity}} filled): {{reason}}"
        case .orderFilledAtBroker: "Your order to {{side}} {{symbol}} filled at your broker beyond what Folio could record; reconciliation brings your account in line."
        case .cashDeposit: "{{amount_text}}{{^amount_text}}{{amount}}{{/amount_text}} was deposited{{#account_name}} into “{{account_name}}”{{/account_name}}; cash is now {{cash_after_text}}{{^cash_after_text}}{{cash_after}}{{/cash_after_text}}."
        case .cashWithdrawal: "{{amount_text}}{{^amount_text}}{{amount}}{{/amount_text}} was withdrawn{{#account_name}} from “{{account_name}}”{{/account_name}}; cash is now {{cash_after_text}}{{^cash_after_text}}{{cash_after}}{{/cash_after_text}}."
        case .cashDividend: "A dividend of {{amount_text}} from {{symbol}} was paid in{{#account_name}}to “{{account_name}}”{{/account_name}}; cash is now {{cash_after_text}}."
        case .cashFee: "A fee of {{amount_text}} was charged{{#account_name}} to “{{account_name}}”{{/account_name}}{{#description}} ({{description}}){{/description}}; cash is now {{cash_after_text}}."
        case .rebalanceFinished: "Your rebalance {{outcome}}: {{detail}}"
        case .driftDigest: "{{count_text}}{{^count_text}}{{count}} holdings are{{/count_text}} outside their drift band."
        case .plaidLoginRequired: "{{explanation}}"
        case .brokerageKeysReplaced: "The keys Folio uses for your Alpaca {{environment}} account ····{{account}} were replaced (key id ending {{key_hint}})."
        case .newSignIn: "A sign-in from {{device}} at {{ip}}."
        case .passwordChanged: "Your password was changed and every session was signed out."
        case .twoFactorEnabled: "Two-factor authentication was turned on."
        case .twoFactorDisabled: "Two-factor authentication was turned off."
        case .recoveryCodeUsed: "A recovery code was used from {{ip}}. {{left_text}}"
        case .recoveryCodesReplaced: "New recovery codes were made from {{ip}}; the old ones no longer work."
        case .accountLocked: "Too many failed sign-ins: sign-in is paused {{#paused}}{{paused}}{{/paused}}{{^paused}}for {{#duration}}{{duration}}{{/duration}}{{^duration}}{{minutes}} minutes{{/duration}}{{/paused}}."
        case .accessReview:
            "Access review: {{administrators}} administrators, {{users}} users, {{dormant}} dormant, {{disabled}} disabled, {{admin_actions}} admin actions this month."
        }
    }

    /// Variables of the kind the code gives, for the template test and previews.
    var sample: MailVariables {
        switch self {
        case .verifyEmail, .resetPassword: MailVariables(["link": "https://folio.example.com/verify-email?token=sample"])
        // `reset_link` to an address in use; `link` (choose the password) to one signed up for again before it was verified.
        case .duplicateRegistration: MailVariables(["reset_link": "https://folio.example.com/reset-password", "link": "https://folio.example.com/reset-password?token=sample"])
        case .orderFilled:
            MailVariables(["side": "buy", "quantity": "10", "filled_quantity": "10", "symbol": "AAPL", "price": "189.91", "price_text": "$189.91", "order_id": "ord_sample"])
        case .orderPartiallyFilled:
            MailVariables(["side": "buy", "quantity": "10", "filled_quantity": "4", "symbol": "AAPL", "price": "189.91", "price_text": "$189.91", "order_id": "ord_sample"])
        case .orderRejected:
            MailVariables(["side": "sell", "symbol": "AAPL", "quantity": "10", "filled_quantity": "0", "price": "-", "reason": "insufficient shares", "order_id": "ord_sample"])
        case .orderExpired:
            MailVariables(["side": "buy", "symbol": "AAPL", "quantity": "10", "filled_quantity": "0", "price": "-", "order_id": "ord_sample"])
        case .orderFilledAtBroker:
            MailVariables([
                "side": "buy", "symbol": "KO", "quantity": "3", "filled_quantity": "1", "price": "59.00", "order_id": "ord_sample",
                "reason": "filled at the broker, beyond what the books can take (insufficient cash at the fill price): reconciliation records it",
            ])
        case .orderCanceled:
            MailVariables([
                "side": "buy", "symbol": "AAPL", "quantity": "10", "filled_quantity": "4", "price": "189.91", "reason": "not marketable at once", "order_id": "ord_sample",
            ])
        case .cashDeposit, .cashWithdrawal:
            MailVariables([
                "amount": "250.00", "cash_after": "10250.00", "amount_text": "$250.00", "cash_after_text": "$10,250.00",
                "account": "your account “Paper brokerage”", "account_name": "Paper brokerage",
            ])
        case .cashDividend:
            MailVariables([
                "amount": "12.34", "cash_after": "10012.34", "amount_text": "$12.34", "cash_after_text": "$10,012.34", "account": "your account “Paper brokerage”",
                "account_name": "Paper brokerage", "symbol": "AAPL",
            ])
        case .cashFee:
            MailVariables([
                "amount": "5.00", "cash_after": "9995.00", "amount_text": "$5.00", "cash_after_text": "$9,995.00", "account": "your account “Paper brokerage”",
                "account_name": "Paper brokerage", "description": "Account fee",
            ])
        case .rebalanceFinished: MailVariables(["outcome": "finished", "detail": "3 orders filled."])
        case .driftDigest:
            MailVariables(["count": "1", "count_text": "1 holding is"], items: [["symbol": "VTI", "target": "60.00%", "actual": "66.10%", "drift": "+6.10%", "account": "Paper brokerage"]])
        case .plaidLoginRequired:
            MailVariables(["institution": "First Platypus Bank", "explanation": "Your connection to First Platypus Bank needs you to sign in again."])
        case .newSignIn: MailVariables(["device": "Firefox on Linux", "ip": "203.0.113.9", "time": "2026-11-24 15:30 UTC"])
        case .passwordChanged, .twoFactorEnabled, .twoFactorDisabled: MailVariables([:])
        case .recoveryCodeUsed:
            MailVariables(["ip": "203.0.113.9", "time": "2026-11-24T15:30:00Z", "left": "9", "left_text": IdentityServices.recoveryCodesLeftText(9)])
        case .recoveryCodesReplaced: MailVariables(["ip": "203.0.113.9"])
        case .brokerageKeysReplaced: MailVariables(["account": "7781", "key_hint": "…0002", "environment": "paper"])
        case .accountLocked:
            // `paused`, when given, says how long instead of `duration`: codes blocked until a new password.
            MailVariables([
                "duration": "15 minutes", "minutes": "15", "paused": IdentityServices.secondFactorPause,
                "advice": LockoutAdvice.advice(secondFactorFailed: true, hasTwoFactor: true),
            ])
        case .accessReview:
            MailVariables(
                ["administrators": "2", "users": "14", "dormant": "1", "disabled": "1", "admin_actions": "3", "findings": "2"],
                items: [
                    ["finding": "Administrators without two-factor authentication", "who": "1"],
                    ["finding": "Dormant accounts (no sign-in for 90 days)", "who": "1"],
                ])
        }
    }
}

/// A message's variables: named strings, and rows for a list (the drift digest's).
struct MailVariables: Codable, Sendable, Equatable {
    var values: [String: String]
    var items: [[String: String]]

    init(_ values: [String: String], items: [[String: String]] = []) {
        self.values = values
        self.items = items
    }

    var json: String {
        String(decoding: (try? JSONEncoder().encode(self)) ?? Data(#"{"values":{},"items":[]}"#.utf8), as: UTF8.self)
    }

    init(json: String) throws {
        self = try JSONDecoder().decode(MailVariables.self, from: Data(json.utf8))
    }
}
