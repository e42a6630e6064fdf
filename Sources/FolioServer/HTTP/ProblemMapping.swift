import FolioDomain
import Foundation
import HTTPTypes
import NIOHTTP1

/// The one table from domain errors to problem responses. Services throw
/// what went wrong in their own terms (`TradingError`, `MarketDataUnavailable`,
/// a `FieldIssue`); only here does an error get a status, a `code` and the
/// field it is about.
public enum ProblemMapping {
    /// A domain error in the words the API gives it (its problem's `detail`), for the `folio` commands; nil for
    /// an error the table does not know.
    public static func text(for error: any Error) -> String? {
        guard let problem = appError(for: error) else { return nil }
        // A refusal of fields says each field's own words, not the general "invalid fields".
        let fields = problem.errors.map { "\($0.field): \($0.message)" }
        return fields.isEmpty ? problem.detail : fields.joined(separator: "; ")
    }

    static func appError(for error: any Error) -> AppError? {
        switch error {
        case let error as TradingError: return trading(error)
        case let error as RebalanceError: return rebalance(error)
        case let error as BrokerageError: return brokerage(error)
        case let error as LinkError: return link(error)
        case let error as PlaidError: return link(PlaidLinks.linkError(error, field: nil, fallback: nil))
        case is BrokerError:
            // The broker (or a link's sealed keys) could not be used: nothing was changed.
            return brokerage(.brokerUnavailable)
        case let error as MarketDataUnavailable: return marketData(error)
        case is OrderBacklog.Full:
            return AppError(
                .serviceUnavailable, code: "orders_backlogged",
                detail: "Orders are arriving faster than they can be sent to the broker; nothing was placed. Try again in a few seconds.",
                headers: [.retryAfter: "2"])
        case MoneyError.overflow:
            // A value computed from the books (a portfolio worth more than cash can hold, say), not one the request
            // sent (those are refused as fields): said plainly, never a 500.
            return AppError(
                .unprocessableContent, code: "amount_out_of_range",
                detail: "A value this request needs is beyond what Folio can hold (16 digits before the decimal point), so it could not be worked out. No data was changed.")
        case let error as IdentityError: return identity(error)
        case let refusal as PersonalDataErasure.Refusal: return erasure(refusal)
        case let issue as FieldIssue: return .validation([issue], detail: issue.message)
        case let error as JSONValue.SyntaxError:
            return AppError(.badRequest, code: "malformed_json", detail: "The request body is not valid JSON: \(error.description).")
        case let error as HTTPParserError:
            // The body broke off mid-request (a bad chunk size, say): the connection cannot go on.
            let (status, code, detail) = MalformedRequestProblems.describe(error)
            return AppError(status, code: code, detail: detail, headers: [.connection: "close"])
        default: return nil
        }
    }

    static func trading(_ error: TradingError) -> AppError {
        switch error {
        case .invalid(let issues):
            return .validation(issues, detail: issues.count == 1 ? issues[0].message : nil)
        case .insufficientFunds(let available):
            return AppError(
                .unprocessableContent, code: "insufficient_funds", detail: "The withdrawal is more than the cash available; nothing was taken.",
                errors: [.init(field: "amount", code: "insufficient_funds", message: "amount exceeds the available cash of \(Display.money(available, .down)).")])
        case .insufficientBuyingPower(let needed, let available, let field):
            return AppError(
                .unprocessableContent, code: "insufficient_buying_power",
                detail: needed == .max ? "This order needs more buying power than an account can hold."
                    : "This order needs \(Display.money(needed, .up)) of buying power; \(Display.money(available, .down)) is available.",
                errors: [.init(field: field, code: "insufficient_buying_power", message: "Not enough buying power for this order.")])
        case .insufficientShares(let symbol, let available, let reserved):
            // Shares an open sell holds are still in the position: say where the rest went.
            let held = reserved.isPositive ? " (\(reserved) more are held for your open sell orders)" : ""
            return AppError(
                .unprocessableContent, code: "insufficient_shares", detail: "You can sell at most \(available) \(symbol)\(held).",
                errors: [.init(field: "quantity", code: "insufficient_shares", message: "More shares than you hold unreserved.")])
        case .balanceLimitExceeded(let field):
            return AppError(
                .unprocessableContent, code: "balance_limit_exceeded",
                detail: "The resulting balance would exceed what an account can hold; nothing was changed.",
                errors: [.init(field: field, code: "balance_limit_exceeded", message: "\(field) would take a balance past its limit.")])
        case .accountNotFound:
            return .notFound("account")
        case .unknownAccount:
            return AppError(
                .unprocessableContent, code: "unknown_account", detail: "No such account.",
                errors: [.init(field: "account_id", code: "not_found", message: "No account of yours has this id.")])
        case .orderNotFound:
            return .notFound("order")
        case .unknownSymbol(let symbol):
            return AppError(
                // One sentence for both: beside the field, a page does not say it twice.
                .unprocessableContent, code: "unknown_symbol", detail: TradingError.unknownSymbolsMessage([symbol]),
                errors: [.init(field: "symbol", code: "unknown_symbol", message: TradingError.unknownSymbolsMessage([symbol]))])
        case .duplicateClientOrderID:
            return AppError(
                .conflict, code: "duplicate_client_order_id", detail: "An order with this client_order_id exists.",
                errors: [.init(field: "client_order_id", code: "duplicate", message: "client_order_id must be unique.")])
        case .orderNotCancelable(let status):
            return AppError(.conflict, code: "order_not_cancelable", detail: "A \(status.rawValue) order cannot be canceled.")
        case .tooManyOpenOrders(let limit):
            return AppError(
                .conflict, code: "too_many_open_orders",
                detail: "This account has \(limit == 1 ? "an open order" : "\(limit) open orders"), as many as one may; cancel \(limit == 1 ? "it" : "some"), or let \(limit == 1 ? "it" : "them") fill, before placing another.")
        case .stalePrice(let symbol):
            let message = "No current price for \(symbol): the last one known is too old to set aside the cash a market or stop buy at the broker may cost. Try again later, or place a limit order."
            return AppError(
                .serviceUnavailable, code: "market_data_unavailable", detail: message, errors: [.init(field: "symbol", code: "stale_price", message: message)],
                headers: [.retryAfter: "60"])
        case .overfill, .impossibleTransition, .unusableFill:
            // Broker and worker paths: a request never causes these.
            return AppError(.internalServerError, code: "internal_error", detail: "Something went wrong on our side. Quote the request id if you contact support.")
        }
    }

    static func openOrders(_ count: Int) -> String {
        count == 1 ? "1 open order" : "\(count) open orders"
    }

    /// One being canceled already (`pending_cancel`) waits on its broker's confirmation: the user can only wait for it.
    static func cancelOrWait(_ count: Int) -> String {
        let them = count == 1 ? "it" : "them"
        return "cancel \(them) or let \(them) finish (an order already being canceled ends once its broker confirms)"
    }

    static func erasure(_ refusal: PersonalDataErasure.Refusal) -> AppError {
        switch refusal {
        case .openOrders(let count):
            return AppError(.conflict, code: "open_orders", detail: "You have \(Self.openOrders(count)); \(Self.cancelOrWait(count)), then erase your account.")
        case .lastAdministrator:
            return AppError(.conflict, code: "last_administrator", detail: "You are the only administrator; make someone else an administrator first.")
        case .alreadyErased:
            return AppError(.conflict, code: "already_erased", detail: "This account was already erased.")
        case .rebalanceRunning:
            return AppError(.conflict, code: "rebalance_running", detail: "A rebalance is still running; let it finish, then erase your account.")
        case .linkedWhileErasing:
            return AppError(.conflict, code: "linked_while_erasing", detail: "A bank was linked while your account was being erased; nothing was erased. Send the request again.")
        }
    }

    static func brokerage(_ error: BrokerageError) -> AppError {
        switch error {
        case .keysRefused:
            return AppError(
                .unprocessableContent, code: "broker_keys_refused", detail: "Alpaca did not accept this key id and secret; check them, and that they are for the environment chosen (paper or live).",
                errors: [.init(field: "secret_key", code: "refused", message: "The broker refused these keys.")])
        case .brokerUnavailable:
            return AppError(.serviceUnavailable, code: "broker_unavailable", detail: "The broker could not be reached; nothing was changed. Try again shortly.", headers: [.retryAfter: "30"])
        case .unsupportedAccount(let reason):
            return AppError(
                .unprocessableContent, code: "broker_account_unsupported", detail: "Folio cannot mirror this account: \(reason).",
                errors: [.init(field: "key_id", code: "unsupported", message: reason)])
        case .alreadyLinked(let account?, let name):
            return AppError(.conflict, code: "already_linked", detail: "This broker account is already linked as your Folio account “\(name)” (\(account)).")
        case .alreadyLinked(nil, _):
            // Another user's: which one is not said.
            return AppError(.conflict, code: "already_linked", detail: "This broker account is already linked to a Folio account; an account is mirrored by one Folio account at a time.")
        case .linkNotFound:
            return .notFound("brokerage link")
        case .openOrders(let count):
            return AppError(.conflict, code: "open_orders", detail: "The account has \(Self.openOrders(count)) at the broker; \(Self.cancelOrWait(count)) before unlinking.")
        case .cashMovesAtBroker:
            return AppError(
                .conflict, code: "cash_moves_at_broker",
                detail: "Money moves in and out of this account at the broker; Folio mirrors what arrives there. Deposit or withdraw with the broker.",
                errors: [.init(field: "amount", code: "cash_moves_at_broker", message: "Not for a brokerage account.")])
        case .keysForAnotherAccount:
            return AppError(
                .unprocessableContent, code: "broker_keys_for_another_account",
                detail: "These keys open another Alpaca account than the one this Folio account mirrors; nothing was changed. Link that account on its own instead.",
                errors: [.init(field: "key_id", code: "another_account", message: "The keys are for another Alpaca account.")])
        case .unlinked:
            return AppError(
                .conflict, code: "brokerage_unlinked", detail: "This account's brokerage link was removed; link the broker account again to trade.",
                errors: [.init(field: "account_id", code: "unlinked", message: "The account is no longer linked.")])
        }
    }

    static func link(_ error: LinkError) -> AppError {
        switch error {
        case .notConfigured:
            return AppError(
                .serviceUnavailable, code: "plaid_not_configured",
                detail: "Linking banks and brokerages is not set up on this server: the operator sets PLAID_CLIENT_ID and PLAID_SECRET.")
        case .itemNotFound:
            return .notFound("linked item")
        case .accountNotFound:
            return AppError(
                .unprocessableContent, code: "invalid", detail: "account_id names no linked account of yours.",
                errors: [.init(field: "account_id", code: "not_found", message: "No linked account has this id.")])
        case .plaidUnavailable:
            return AppError(.serviceUnavailable, code: "plaid_unavailable", detail: "Plaid could not be reached; nothing was changed. Try again shortly.", headers: [.retryAfter: "30"])
        case .refused(let code, let message, let field):
            // Plaid's display_message is meant for the user; its error_message is not shown.
            return AppError(
                .unprocessableContent, code: "plaid_refused", detail: message ?? "Plaid refused the request (\(code)).",
                errors: field.map { [.init(field: $0, code: code.lowercased(), message: message ?? "Plaid refused this value.")] } ?? [])
        case .alreadyLinked:
            return AppError(.conflict, code: "already_linked", detail: "This login is already linked; see GET /api/links.")
        case .sameLoginLinked(let itemID, let institution):
            return AppError(
                .conflict, code: "already_linked",
                detail: """
                    Your \(institution) login is linked already (link \(itemID.lowercasedString)), with these accounts; the new link was not kept. \
                    If that link asks you to sign in again, use its "Sign in again" instead of linking anew.
                    """)
        case .loginStillRequired:
            return AppError(
                .conflict, code: "login_still_required",
                detail: "Plaid still needs you to sign in to this bank again; nothing was changed. Finish signing in through Link, then try again.")
        }
    }

    static func rebalance(_ error: RebalanceError) -> AppError {
        switch error {
        case .targetsNotSet:
            return AppError(.conflict, code: "targets_not_set", detail: "This account has no target allocation; set one with PUT /api/accounts/{id}/targets.")
        case .noPrice(let symbol):
            return AppError(
                .unprocessableContent, code: "unknown_symbol", detail: TradingError.unknownSymbolsMessage([symbol]) + " The targets or holdings name it.",
                errors: [.init(field: "targets", code: "unknown_symbol", message: TradingError.unknownSymbolsMessage([symbol]))])
        case .nothingHeldInClass(let assetClass):
            return AppError(
                .unprocessableContent, code: "nothing_held_in_class",
                detail: "The targets give \(assetClass) a weight, but the account holds nothing of that class to share it among; buy a symbol of it first, or set targets by symbol.",
                errors: [.init(field: "asset_classes", code: "nothing_held", message: "Nothing of class \(assetClass) is held.")])
        case .runInProgress:
            return AppError(.conflict, code: "rebalance_in_progress", detail: "A rebalance of this account is still running; wait for it to finish.")
        case .runNotFound:
            return .notFound("rebalance")
        case .noTrades(let code, let message):
            return AppError(
                .unprocessableContent, code: "nothing_to_rebalance", detail: message,
                errors: [.init(field: "execute", code: code, message: message)])
        case .planChanged(let field, let message):
            return AppError(.conflict, code: "plan_changed", detail: message, errors: [.init(field: field, code: "changed", message: message)])
        }
    }

    static func identity(_ error: IdentityError) -> AppError {
        switch error {
        case .invalid(let issues):
            return .validation(issues, detail: issues.count == 1 ? issues[0].message : nil)
        case .invalidCredentials:
            return AppError(.unauthorized, code: "invalid_credentials", detail: "The email or password is wrong.")
        case .tooManyAttempts(let wait):
            return AppError(
                .tooManyRequests, code: "too_many_attempts", detail: "Too many wrong passwords or codes. Try again in \(wait) seconds, or reset your password.",
                headers: [.retryAfter: String(wait)])
        case .accountDisabled:
            return AppError(.forbidden, code: "account_disabled", detail: "This account is disabled.")
        case .twoFactorRequired:
            return AppError(.unauthorized, code: "two_factor_required", detail: "Enter the code from your authenticator app or a recovery code.")
        case .wrongSecondFactor(let refusal):
            return AppError(.unauthorized, code: "invalid_two_factor_code", detail: refusal.message)
        case .secondFactorBlocked:
            return AppError(
                .forbidden, code: "two_factor_blocked",
                detail: "Too many wrong authenticator codes were sent with this password, so codes are no longer taken: reset your password, or sign in with a recovery code.")
        case .emailNotVerified:
            return AppError(.forbidden, code: "email_not_verified", detail: "Verify your email address first; a new link can be requested.")
        case .invalidRefreshToken:
            return AppError(.unauthorized, code: "invalid_refresh_token", detail: "The refresh token is invalid; sign in again.")
        case .refreshRaced:
            return AppError(
                .unauthorized, code: "refresh_token_just_used",
                detail: "This refresh token was used a moment ago by another request; go on with the tokens (or the cookie) that request received.")
        case .twoFactorAlreadyEnabled:
            return AppError(.conflict, code: "two_factor_already_enabled", detail: "Two-factor authentication is already on; disable it first to enrol again.")
        case .twoFactorNotEnrolling:
            return AppError(.conflict, code: "two_factor_not_enrolling", detail: "Start enrolment first.")
        case .twoFactorSetUpReplaced:
            return AppError(
                .conflict, code: "two_factor_setup_replaced",
                detail: "A new set-up was started meanwhile (in another window or session), so the secret this code came from no longer counts. Nothing was turned on: set up again and add the new secret to your app.")
        case .twoFactorNotEnabled:
            return AppError(.conflict, code: "two_factor_not_enabled", detail: "Two-factor authentication is not on.")
        case .cannotDisableSelf:
            return AppError(.conflict, code: "cannot_disable_self", detail: "Administrators cannot disable their own account.")
        case .lastAdministrator:
            return AppError(.conflict, code: "last_administrator", detail: "This is the only enabled administrator; make someone else an administrator first.")
        case .userNotFound:
            return .notFound("user")
        case .userErased:
            return AppError(.conflict, code: "user_erased", detail: "This person's account was erased; it stays disabled.")
        case .sessionNotFound:
            return .notFound("session")
        }
    }

    static func marketData(_ error: MarketDataUnavailable) -> AppError {
        var headers = HTTPFields()
        if let retryAfter = error.retryAfter { headers[.retryAfter] = String(retryAfter) }
        let detail = switch error.subject {
        case .quote: "Market data is unavailable right now and no earlier quote is known; try again later."
        case .history: "Daily history is unavailable right now; try again later."
        case .search: "Symbol search is unavailable right now; try again later."
        }
        return AppError(.serviceUnavailable, code: "market_data_unavailable", detail: detail, headers: headers)
    }
}
