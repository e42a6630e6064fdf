import FolioDomain
import Foundation
import Synchronization
import HTTPTypes
import Hummingbird
import Mustache

/// Renders the web app's pages: a page template (`Resources/web/templates`)
/// inside `layout.mustache`, with the hashed asset paths, the signed-in user
/// and the session's CSRF token. Templates are loaded and checked at start-up.
struct PageRenderer: Sendable {
    let library: MustacheLibrary
    let assets: WebAssets

    /// Scripts from Folio's origin only, no inline script or style, nothing
    /// framed, forms posting only to Folio.
    static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        + "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

    /// The linking page's one exception: Plaid Link's script from Plaid's CDN,
    /// the frame it opens, and the calls that frame makes (Plaid's documented CSP).
    static let plaidLinkPolicy =
        "default-src 'none'; script-src 'self' https://cdn.plaid.com/link/v2/stable/link-initialize.js; style-src 'self'; img-src 'self' data:; "
        + "connect-src 'self' https://production.plaid.com https://sandbox.plaid.com; frame-src https://cdn.plaid.com; "
        + "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static let pages = [
        "layout", "signin", "signup", "verify-email", "reset-password", "dashboard", "orders", "transactions", "targets", "linked", "settings", "two-factor-enrolment", "recovery-codes", "rebalance-plan", "admin", "error",
    ]

    /// Loaded once per process: every `FolioServices` (each test app, each CLI command) shares it.
    static func bundled() async throws -> PageRenderer {
        if let loaded = loaded.withLock({ $0 }) { return loaded }
        let renderer = try await load()
        loaded.withLock { $0 = renderer }
        return renderer
    }

    private static let loaded = Mutex<PageRenderer?>(nil)

    private static func load() async throws -> PageRenderer {
        guard let web = Bundle.module.url(forResource: "web", withExtension: nil) else {
            throw Failure(description: "the web templates are missing from the FolioServer bundle")
        }
        ScalarHTMLEscaping.register()
        let library = try await MustacheLibrary(directory: web.appendingPathComponent("templates").path)
        for page in pages where library.getTemplate(named: page) == nil {
            throw Failure(description: "the page template \(page).mustache is missing")
        }
        return PageRenderer(library: library, assets: try WebAssets.load(directory: web.appendingPathComponent("assets")))
    }

    /// Who the page is for: nil on the signed-out pages.
    struct Viewer {
        var identity: Identity
        var csrfToken: String
        /// Notifications not yet read, for the navigation's badge; nil when not counted.
        var unread: Int?
        /// An account other than the default that the page's query names: a page about no account
        /// (linked, notifications, settings) carries it on in its navigation, so the reader's choice holds.
        var carriedAccount: AccountID?
        /// What a form just did, said at the top of the page it led to (the `confirmationCookie`, one of `confirmations`).
        var confirmation: String?

        /// The signed-in person a page is for, with their session's CSRF token.
        init(_ identity: Identity, csrf: CSRFTokens) {
            self.identity = identity
            self.csrfToken = csrf.token(for: identity.sessionID.uuid)
        }
    }

    /// The confirmations a form can ask for (`_done`), by code. The form's answer (FormBridge's
    /// redirect, or app.js) sets `confirmationCookie` to the code and the path of the page it leads
    /// to ("deposited:/"), Secure and SameSite=Strict, for a minute; that page says the text and
    /// clears it, and a page at another path (another tab) leaves it alone. Neither another site nor
    /// a link can make a Folio page confirm what did not happen, and a reload does not confirm it again.
    static let confirmations: [String: String] = [
        "deposited": "Deposit received: the cash is in the account.",
        "withdrawn": "Withdrawal made: the cash has left the account.",
        "order_placed": "Order placed: it is listed below.",
        "cancel_asked": "Cancellation asked for: the order shows canceled once the broker confirms.",
        "cancel_all_asked": "Cancellation asked for every open order: each shows canceled once its broker confirms.",
        // What the two above become when the answer says it is done already (`settled`).
        "canceled": "Order canceled: what it had not filled is no longer reserved.",
        "canceled_all": "Every open order is canceled (any that filled first stay filled): what they had not filled is no longer reserved.",
        "targets_saved": "Target weights saved.",
        "rebalance_started": "Rebalance started: its orders are listed under Recent runs.",
        "alpaca_linked": "Alpaca account linked: choose it in the account picker above the dashboard.",
        "keys_replaced": "New keys saved: Folio uses them from now on.",
        "alpaca_unlinked": "Alpaca account unlinked: its history stays in Folio.",
        "sync_asked": "Sync asked for: new transactions appear here once the institution sends them.",
        "institution_removed": "Institution removed.",
        "user_disabled": "User disabled: their sessions are ended.",
        "user_enabled": "User enabled.",
        "session_revoked": "Session ended: that device is signed out.",
        "preferences_saved": "Email preferences saved.",
        // Said on the sign-in page, after a form of a signed-out page or one that ends the session.
        "email_verified": "Your email is verified. Sign in to continue.",
        "password_reset": "Your password is changed. Sign in with the new one.",
        "signed_up": "Check your email: Folio sent a link to verify your address. Open it, then sign in.",
        "reset_requested": "If an account uses that address, a reset link is on its way.",
        "verification_resent": "If the address needs verifying, a new link is on its way.",
        "account_erased": "Your account is deleted.",
        "password_changed": "Your password is changed and every session, this one too, is ended. Sign in with the new password.",
        "signed_out": "You are signed out.",
        "signed_out_everywhere": "You are signed out on every device.",
        // `email_verified` as said to a visitor signed in already (the address may be another account's).
        "email_verified_signed_in": "The address is verified.",
        alreadyDone: "This form had been sent already: what it asked was done then, once, and not again.",
    ]
    /// The confirmation a form's answer earns: a cancel the API answered as done (200, not 202 `pending_cancel`)
    /// says so rather than that it was asked for. app.js's `settled` says the same of the same answers.
    static let settlesByAnswer: Set<String> = ["cancel_asked", "cancel_all_asked"]

    static func settled(_ code: String, status: HTTPResponse.Status, answer: [String: Any]) -> String {
        switch code {
        case "cancel_asked" where status == .ok && answer["status"] as? String != "pending_cancel": "canceled"
        case "cancel_all_asked" where (answer["data"] as? [[String: Any]])?.allSatisfy({ $0["status"] as? String != "pending_cancel" }) == true:
            "canceled_all"
        default: code
        }
    }

    /// The sign-in page's notices that still hold for a visitor who is signed in already, as said to them.
    static let signedInWording = ["email_verified": "email_verified_signed_in", "reset_requested": "reset_requested", "verification_resent": "verification_resent"]
    /// Said instead of the form's own confirmation when its idempotency key answered with an earlier result.
    static let alreadyDone = "already_done"
    /// `__Host-` and Secure, as the session cookie: no sibling subdomain nor plain-HTTP answer can plant it.
    static let confirmationCookie = "__Host-folio_done"

    /// A refusal as a page, for a browser: its detail, the fields it names, what to do next, and when to
    /// come back (`Retry-After`) if it says.
    /// `sentForm`: the refused request was a form sent (a POST), whose advice is about sending it again;
    /// an address opened (a link, an asset, a page with a bad query) gets advice about the address.
    func refusalPage(_ problem: AppError, viewer: Viewer?, sentForm: Bool) -> Response {
        let errors = problem.errors.map { ["field": $0.field, "message": Display.issue(field: $0.field, message: $0.message)] }
        let advice = sentForm ? FormBridge.advice(status: problem.status, code: problem.code, fields: problem.errors.map(\.field)) : Self.addressAdvice(status: problem.status)
        var page = page(
            "error", title: Display.errorTitle(problem.status), viewer: viewer,
            values: [
                // As on every error page: the fields' own messages follow, so the detail would say the first of them twice.
                "detail": problem.code == "validation_failed" && !errors.isEmpty ? Display.checkWhatYouEntered : problem.detail,
                "has_errors": !errors.isEmpty, "errors": errors, "advice": advice,
            ].merging(Display.errorValues(status: problem.status, code: problem.code)) { _, new in new },
            status: problem.status)
        if let retryAfter = problem.headers[.retryAfter] { page.headers[.retryAfter] = retryAfter }
        return page
    }

    /// What to do about an address that was refused, rather than a form.
    static func addressAdvice(status: HTTPResponse.Status) -> String {
        switch status {
        case .tooManyRequests: "Nothing was changed; try again in a moment."
        case .unauthorized: "Sign in, then open the page again."
        default: checkTheAddress
        }
    }

    static let checkTheAddress = "Check the address, or start again from the dashboard."

    /// The page for an address that is no page (a stale link, a typo), as a browser asked for it: in the
    /// signed-in layout for whoever `AuthenticationMiddleware` found signed in, the signed-out one otherwise.
    func missingPage(for signedIn: Identity?, csrf: CSRFTokens) -> Response {
        page("error", title: "Not Found", viewer: signedIn.map { PageRenderer.Viewer($0, csrf: csrf) }, values: [
            "detail": "There is no page at this address.", "advice": Self.checkTheAddress,
        ].merging(Display.errorValues(status: .notFound, code: "not_found")) { _, new in new }, status: .notFound)
    }

    /// The header that sets the confirmation for the page at `next` (its path, and the account it
    /// names; the rest of the query is left out), or (nil) clears it once said.
    static func confirmationHeader(_ code: String?, for next: String = "/") -> HTTPField {
        let value = code.map { "\($0):\(confirmationPath(next))" } ?? ""
        return HTTPField(name: .setCookie, value: confirmationCookie + "=\(value); Path=/; Max-Age=\(code == nil ? 0 : 60); Secure; SameSite=Strict")
    }

    /// The page a site path leads to, as the cookie names it: its path, when it holds only characters a
    /// cookie value may (Folio's pages do; "/" otherwise), and the account its `account_id` names, if any
    /// ("/?account_id=…"): the dashboard of one account is not the dashboard of another.
    static func confirmationPath(_ next: String) -> String {
        let path = next.prefix { $0 != "?" && $0 != "#" }
        let page = !path.isEmpty && path.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "/_.-".unicodeScalars.contains($0)) })
            ? String(path) : "/"
        let query = next.dropFirst(path.count).first == "?" ? String(next.dropFirst(path.count + 1).prefix { $0 != "#" }) : nil
        return confirmationPage(path: page, query: FormQuery(query))
    }

    /// The request's page as `confirmationPath` names it.
    static func confirmationPage(of request: Request) -> String {
        confirmationPage(path: request.uri.path, query: request.query)
    }

    /// A page's path and the account it shows, the only part of its query a confirmation keeps.
    private static func confirmationPage(path: String, query: FormQuery) -> String {
        path + (query["account_id"].flatMap { AccountID($0) }.map { "?account_id=\($0)" } ?? "")
    }

    /// What the confirmation cookie means for the request's page: the text to say (nil for none),
    /// and whether to clear it (said here, or not a confirmation at all; one for another page is kept).
    static func confirmation(of request: Request) -> (text: String?, clear: Bool) {
        confirmation(cookie: request.cookies[confirmationCookie]?.value, onPage: confirmationPage(of: request))
    }

    /// The code of a confirmation meant for the request's page, if there is one.
    static func confirmationCode(of request: Request) -> String? {
        guard let value = request.cookies[confirmationCookie]?.value, confirmation(of: request).text != nil else { return nil }
        return String(value.prefix { $0 != ":" })
    }

    static func confirmation(cookie value: String?, onPage path: String) -> (text: String?, clear: Bool) {
        guard let value else { return (nil, false) }
        let parts = value.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let text = confirmations[String(parts[0])] else { return (nil, true) }
        return parts[1] == path ? (text, true) : (nil, false)
    }

    /// The person's accounts, on a page about one of them (the dashboard,
    /// orders, targets): with more than one, the page shows a picker, and
    /// the navigation's account pages stay on a named account.
    struct AccountChoice {
        var accounts: [(id: AccountID, name: String)]
        var current: AccountID
        /// The page's query named the account; the default one is not named, so links stay plain.
        var named: Bool
        /// The page the picker reloads, with the account chosen.
        var path: String
        /// The picker above the page; off where the page chooses the account itself (the transactions' filter).
        var picker = true
        /// The shown account's kind (`paper`, `brokerage`), when it is one of the person's.
        var currentKind: String?
        /// The shown account is an Alpaca account whose link was removed: it takes no orders.
        var currentUnlinked = false
        /// The page's own choices the picker keeps when it shows another account (the dashboard's chart range).
        var kept: [(name: String, value: String)] = []

        /// The shown account's name.
        var currentName: String? { accounts.first { $0.id == current }?.name }

        /// Where a form on the page goes next: the same page, on the same account.
        func next(_ path: String) -> String {
            named ? path + "?account_id=\(current)" : path
        }
    }

    /// One page: `template` rendered with `values`, inside the layout.
    func page(
        _ template: String, title: String, viewer: Viewer?, section: String? = nil, scripts: [String] = [], accounts: AccountChoice? = nil,
        values: [String: Any] = [:], status: HTTPResponse.Status = .ok, externalScripts: [String] = [],
        contentSecurityPolicy: String = PageRenderer.contentSecurityPolicy
    ) -> Response {
        var values = Self.withoutNils(values)
        if let viewer {
            // Every signed-in form carries the token (FormBridge), and an order form a fresh idempotency key.
            values["csrf"] = viewer.csrfToken
            values["idempotency_key"] = UUID.random().lowercasedString
            // A page about no account keeps the account the navigation carries: its forms and links come back with it.
            if accounts == nil, let carried = viewer.carriedAccount {
                values["carried_query"] = "?account_id=\(carried)"
                values["carried_param"] = "&account_id=\(carried)"
            }
            // An Alpaca account whose link was removed takes no orders: its pages offer none.
            if accounts?.currentUnlinked == true { values["account_unlinked"] = true }
        }
        let content = library.render(values, withTemplate: template) ?? ""
        var layout: [String: Any] = [
            "title": title, "content": content, "css": assets.path("app.css"), "icon": assets.path("icon.svg"),
            "scripts": (["app.js"] + scripts).map { ["src": assets.path($0)] },
            // A vendor's classic script (Plaid Link), before Folio's modules run.
            "external_scripts": externalScripts.map { ["src": $0] },
        ]
        if let viewer {
            layout["viewer"] = [
                "email": viewer.identity.email, "admin": viewer.identity.role == .admin, "csrf": viewer.csrfToken,
                "verified": viewer.identity.emailVerified,
            ]
            // Every link carries a named account, even to pages about no account, so coming back keeps it.
            let named = accounts.map { $0.named ? $0.current : nil } ?? viewer.carriedAccount
            layout["home"] = named.map { "/?account_id=\($0)" } ?? "/"
            layout["nav"] = Self.navigation(admin: viewer.identity.role == .admin).map { item in
                let href = named.map { item.href + "?account_id=\($0)" } ?? item.href
                var entry: [String: Any] = ["href": href, "label": item.label, "current": item.section == section]
                if item.section == "notifications", let unread = viewer.unread, unread > 0 { entry["badge"] = unread > 99 ? "99+" : String(unread) }
                return entry
            }
            if accounts?.currentUnlinked == true { layout["account_unlinked"] = true }
            if let confirmation = viewer.confirmation { layout["confirmation"] = confirmation }
            if let accounts, accounts.picker, accounts.accounts.count > 1 {
                layout["account_picker"] = [
                    "path": accounts.path, "kept": accounts.kept.map { ["name": $0.name, "value": $0.value] },
                    "options": accounts.accounts.map { ["id": $0.id.description, "name": $0.name, "selected": $0.id == accounts.current] },
                ]
            }
        }
        let html = library.render(layout, withTemplate: "layout") ?? content
        return Response(
            status: status,
            headers: [
                .contentType: "text/html; charset=utf-8", .cacheControl: "no-store", .contentSecurityPolicy: contentSecurityPolicy,
                // Nothing to other sites; Folio itself sees where a form came from (with no-referrer a form's Origin is "null").
                SecurityHeaders.referrerPolicy: "same-origin",
            ],
            body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// The values without their empty optionals. Mustache renders a section for
    /// any value that is there, and an optional put in `Any` is there even when
    /// it is nil: "Older orders" would show with no older orders.
    static func withoutNils(_ values: [String: Any]) -> [String: Any] {
        values.compactMapValues(present)
    }

    static func present(_ value: Any) -> Any? {
        let mirror = Mirror(reflecting: value)
        if mirror.displayStyle == .optional {
            guard let wrapped = mirror.children.first?.value else { return nil }
            return present(wrapped)
        }
        switch value {
        case let dictionary as [String: Any]: return withoutNils(dictionary)
        case let array as [[String: Any]]: return array.map(withoutNils)
        default: return value
        }
    }

    static func navigation(admin: Bool) -> [(href: String, label: String, section: String)] {
        [("/", "Dashboard", "dashboard"), ("/orders", "Orders", "orders"), ("/transactions", "Transactions", "transactions"), ("/gains", "Gains", "gains"),
         ("/targets", "Targets", "targets"), ("/linked", "Linked", "linked"), ("/notifications", "Notifications", "notifications"),
         ("/settings", "Settings", "settings")]
            + (admin ? [("/admin", "Admin", "admin")] : [])
    }
}
