import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird

/// The web app: server-rendered pages on the API's origin. A page reads what
/// it shows through the same controller functions the API serves (the page's
/// query string is theirs: `/transactions?type=buy&cursor=…`), so filters,
/// paging and errors behave alike. Forms send JSON to the API with the
/// session's CSRF token (`app.js`); the API's problem documents are shown
/// beside the fields they name.
struct WebController: Sendable {
    let renderer: PageRenderer
    let identity: IdentityServices
    let portfolio: PortfolioController
    let performance: PerformanceController
    let orders: OrdersController
    let accounts: AccountsController
    let admin: AdminController
    let rebalance: RebalanceController
    let links: LinksController
    /// Alpaca accounts linked with their keys.
    let brokerage: BrokerageController
    /// Plaid is configured: the linking page loads Plaid Link.
    let plaidConfigured: Bool
    /// Forms posted without JavaScript.
    let forms: FormBridge
    let notifications: NotificationsController
    let accessReview: AccessReview
    let quotes: QuoteService
    /// What a market or stop buy reserves above its price (`MARKET_BUY_MARGIN`): the ticket warns by the same figure.
    let marketBuyMargin: Ratio

    /// The web app's own routes as the route table writes them: pages, not API (docs/openapi.yaml describes the API only).
    static let routes: Set<String> = [
        "/assets/{file}", "/form", "/signin", "/signup", "/verify-email", "/reset-password", "/", "/orders", "/transactions", "/gains", "/targets", "/linked", "/settings",
        "/admin", "/notifications", "/login", "/register", "/unsubscribe",
    ]

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        router.get("/assets/:file", use: asset)
        router.post(RouterPath(FormBridge.path)) { request, context in try await forms.handle(request, context: context) }
        router.get("/signin", use: signIn)
        router.get("/signup", use: signUp)
        // The names other sites use for these pages: a typed or remembered address still arrives.
        router.get("/login") { request, _ in Self.redirect("/signin" + Self.query(of: request)) }
        router.get("/register") { _, _ in Self.redirect("/signup") }
        router.get("/verify-email", use: verifyEmail)
        router.get("/reset-password", use: resetPassword)
        router.get("/", use: dashboard)
        router.get("/orders", use: ordersPage)
        router.get("/transactions", use: transactionsPage)
        router.get("/gains", use: gainsPage)
        router.get("/targets", use: targetsPage)
        router.get("/linked", use: linkedPage)
        router.get("/settings", use: settingsPage)
        router.get("/admin", use: adminPage)
        router.get("/notifications", use: notificationsPage)
        router.get(RouterPath(UnsubscribeLinks.path), use: unsubscribePage)
        router.post(RouterPath(UnsubscribeLinks.path), use: unsubscribe)
    }

    @Sendable func asset(_ request: Request, context: FolioRequestContext) async throws -> Response {
        guard let file = context.parameters.get("file"), let response = renderer.assets.response(hashedName: file) else {
            throw AppError.notFound("file")
        }
        return response
    }

    // MARK: - Signed out

    /// `?…` of the request as it came, or nothing.
    static func query(of request: Request) -> String {
        request.uri.query.map { "?" + $0 } ?? ""
    }

    /// The page to go to after signing in: a path on this site only, never another origin.
    static func nextPath(_ request: Request) -> String {
        sitePath(request.query["next"])
    }

    /// `raw` when it is a path on this site, "/" otherwise. Printable ASCII only:
    /// browsers drop tabs and newlines from URLs, so "/\t/evil.example" would become "//evil.example".
    static func sitePath(_ raw: Substring?) -> String {
        guard let raw, raw.count <= 200, raw.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F }),
              raw.hasPrefix("/"), !raw.contains("\\"), raw.dropFirst().first != "/"
        else { return "/" }
        return String(raw)
    }

    @Sendable func signIn(_ request: Request, context: FolioRequestContext) async throws -> Response {
        if context.identity != nil {
            // Signed in already (an address verified in the browser that is signed in, say): a notice that
            // holds for someone signed in is said on the page the visitor is sent to; one that says to sign
            // in (or that a password changed: perhaps another person's) is dropped.
            let next = Self.nextPath(request)
            var response = Self.redirect(next)
            if let code = PageRenderer.confirmationCode(of: request) {
                let carried = PageRenderer.signedInWording[code]
                response.headers.append(PageRenderer.confirmationHeader(carried, for: next))
            }
            return response
        }
        // What the form before did (verified, reset, signed up…), said once, as on signed-in pages.
        let done = PageRenderer.confirmation(of: request)
        var values: [String: Any] = ["next": Self.nextPath(request)]
        if let text = done.text { values["confirmation"] = text }
        var page = renderer.page("signin", title: "Sign in", viewer: nil, values: values)
        if done.clear { page.headers.append(PageRenderer.confirmationHeader(nil)) }
        return page
    }

    @Sendable func signUp(_ request: Request, context: FolioRequestContext) async throws -> Response {
        if context.identity != nil { return Self.redirect("/") }
        return renderer.page("signup", title: "Create your account", viewer: nil, values: Self.passwordPolicy(field: "password"))
    }

    @Sendable func verifyEmail(_ request: Request, context: FolioRequestContext) async throws -> Response {
        renderer.page("verify-email", title: "Verify your email", viewer: nil, values: request.query["token"].flatMap { $0.isEmpty ? nil : ["token": String($0)] } ?? [:])
    }

    /// The page a mail's "Stop … email" link opens: it asks first, as a link a mail scanner follows must change nothing.
    @Sendable func unsubscribePage(_ request: Request, context: FolioRequestContext) async throws -> Response {
        let (category, on) = try await notifications.stillMailed(request.query["token"])
        // Mail already off (the link used before, or Settings): said so, with nothing to press.
        guard on else {
            var values = Self.unsubscribeValues(category, token: nil)
            values["done"] = true
            return renderer.page("unsubscribe", title: "No more \(category.mailName) email", viewer: nil, values: values)
        }
        return renderer.page("unsubscribe", title: "Stop \(category.mailName) email", viewer: nil, values: Self.unsubscribeValues(category, token: request.query["token"]))
    }

    /// RFC 8058's one-click POST from a mail app (`List-Unsubscribe=One-Click`, the token in the header's URL), or the
    /// page's button: the category's mail is off, and the page says so. The body is not read: the link is the request.
    @Sendable func unsubscribe(_ request: Request, context: FolioRequestContext) async throws -> Response {
        let category = try await notifications.stopMail(request.query["token"], origin: context.origin)
        var values = Self.unsubscribeValues(category, token: nil)
        values["done"] = true
        return renderer.page("unsubscribe", title: "No more \(category.mailName) email", viewer: nil, values: values)
    }

    static func unsubscribeValues(_ category: NoticeCategory, token: Substring?) -> [String: Any] {
        let about = switch category {
        case .orders: "your orders: fills, rejections, expiries and cancellations"
        case .cash: "deposits, withdrawals, dividends and fees"
        case .rebalancing: "rebalancing runs when they finish"
        case .drift: "holdings that drift from their targets"
        case .links: "linked accounts that need you to sign in again"
        case .security: "the security of your account"
        }
        return ["what": category.mailName, "about": about, "token": token.map(String.init) as Any]
    }

    @Sendable func resetPassword(_ request: Request, context: FolioRequestContext) async throws -> Response {
        var values = Self.passwordPolicy(field: "new_password")
        if let token = request.query["token"], !token.isEmpty { values["token"] = token }
        return renderer.page("reset-password", title: "Reset your password", viewer: nil, values: values)
    }

    /// What the password fields say as the user types (PasswordPolicy, checked again by the server).
    static func passwordPolicy(field: String, email: String = "") -> [String: Any] {
        ["minimum": PasswordPolicy.minimumCharacters, "maximum": PasswordPolicy.maximumCharacters, "policy_field": field, "policy_email": email]
    }

    // MARK: - Signed in

    /// Runs a signed-in page: no session sends the browser to sign in, and an
    /// error the page's reads throw is shown as a page with its detail.
    func signedIn(
        _ request: Request, context: FolioRequestContext, admin: Bool = false, countsUnread: Bool = true,
        _ body: (AuthenticatedContext, PageRenderer.Viewer) async throws -> Response
    ) async throws -> Response {
        guard context.identity != nil else {
            let path = request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
            return Self.redirect("/signin?next=" + (path.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "/"))
        }
        let authenticated = try AuthenticatedContext(context: context)
        var viewer = PageRenderer.Viewer(authenticated.identity, csrf: identity.csrf)
        // What the form before this page did, said once, on the page it led to: the cookie is cleared with that page.
        let done = PageRenderer.confirmation(of: request)
        viewer.confirmation = done.text
        viewer.carriedAccount = request.query["account_id"].flatMap { AccountID($0) }.flatMap { $0 == authenticated.identity.defaultAccountID ? nil : $0 }
        // Only the person's own account rides on: another's (or none) would send every link to "not found".
        // A check that cannot run carries nothing.
        if let carried = viewer.carriedAccount, (try? await accounts.store.account(carried, of: authenticated.identity.userID)) == nil {
            viewer.carriedAccount = nil
        }
        // The navigation's badge; a count that cannot be read leaves the badge off, never the page.
        // The notifications page counts them itself, with its list.
        if countsUnread { viewer.unread = try? await notifications.store.unreadCount(of: authenticated.identity.userID.uuid) }
        do {
            if admin { _ = try AdminContext(context: authenticated) }
            // A page is a read: its quotes spend the lookups' part of the call budget, not what pricing orders needs.
            var response = try await CallBudget.$purpose.withValue(.lookingUp) { try await body(authenticated, viewer) }
            if done.clear { response.headers.append(PageRenderer.confirmationHeader(nil)) }
            return response
        } catch {
            // A browser asking for a page gets the problem as a page; any other client gets problem+json, as everywhere.
            let problem = ProblemMapping.appError(for: error) ?? (error as? AppError)
            guard let problem, request.headers[.accept]?.contains("text/html") == true else { throw error }
            // The confirmation waits for a page that is drawn; an account the page could not show is not carried on.
            viewer.confirmation = nil
            viewer.carriedAccount = nil
            return renderer.page(
                "error", title: Display.errorTitle(problem.status), viewer: viewer,
                values: ["detail": problem.code == "validation_failed" && !problem.errors.isEmpty ? Display.checkWhatYouEntered : problem.detail, "back": Self.sitePath(Substring(request.uri.path)), "has_errors": !problem.errors.isEmpty, "errors": problem.errors.map { ["field": $0.field, "message": Display.issue(field: $0.field, message: $0.message)] }]
                    .merging(Display.errorValues(status: problem.status, code: problem.code)) { _, new in new },
                status: problem.status)
        }
    }

    @Sendable func dashboard(_ request: Request, context: FolioRequestContext) async throws -> Response {
        try await signedIn(request, context: context) { context, viewer in
            let valuation = try await portfolio.account(request, context: context)
            let history = try await portfolio.history(request, context: context)
            // The return over the range the chart shows (performance alone defaults to a year).
            let returns = try await performance.performance(Self.request(request, query: "range=\(history.range)"), context: context)
            let choice = try await accountChoice(request, context: context, current: valuation.accountID, page: "/")
            let view = try await DashboardView.build(valuation: valuation, history: history, returns: returns, quotes: quotes, choice: choice)
            return renderer.page("dashboard", title: "Dashboard", viewer: viewer, section: "dashboard", accounts: choice, values: view)
        }
    }

    @Sendable func ordersPage(_ request: Request, context: FolioRequestContext) async throws -> Response {
        try await signedIn(request, context: context) { context, viewer in
            let valuation = try await portfolio.account(request, context: context)
            let choice = try await accountChoice(request, context: context, current: valuation.accountID, page: "/orders")
            // With several accounts the list is the shown account's orders; with one, it is every order.
            let listed = choice.accounts.count > 1 ? Self.naming(valuation.accountID, in: request) : request
            // Every open order (they hold cash), however old, and the history a page at a time: one newest-first page of
            // both left an old GTC order off the page that says "No open orders", beside the cash it holds.
            let openPage = try await orders.list(Self.request(listed, query: "status=open&limit=\(OrdersController.maximumPageSize)"), context: context)
            let cursor = request.query["cursor"].map { "&cursor=" + Self.queryEncoded(String($0)) } ?? ""
            let limit = request.query["limit"].map { "&limit=" + Self.queryEncoded(String($0)) } ?? ""
            let page = try await orders.list(Self.request(listed, query: "status=closed" + cursor + limit), context: context)
            let openRows = openPage.data.map(OrderRow.init)
            let rows = page.data.map(OrderRow.init)
            // Mustache treats an empty string as true: a value is set only when the page names an account.
            let named: [String: Any] = request.query["account_id"].map { ["account_id": String($0)] } ?? [:]
            let opens = try await orders.orders.waitsUntil(account: valuation.accountID)
            return renderer.page(
                "orders", title: "Orders", viewer: viewer, section: "orders", scripts: ["ticket.js"], accounts: choice,
                values: [
                    "next_page": choice.next("/orders"),
                    // The ticket always names the account it was drawn for, whatever a picker says by then.
                    "ticket_account_id": valuation.accountID.description, "account_name": choice.currentName as Any,
                    "several_accounts": choice.accounts.count > 1,
                    "open": openRows, "history": rows,
                    // An account may hold more open orders than a page shows: said, not dropped silently.
                    "more_open": openPage.nextCursor != nil,
                    "several_cancelable": openRows.filter(\.cancelable).count > 1, "available": Display.money(valuation.availableCash),
                    "reserved": Display.money((try? valuation.cash - valuation.availableCash) ?? .zero),
                    "available_raw": valuation.availableCash.description, "market_buy_margin": marketBuyMargin.description,
                    "holdings": valuation.positions.map { ["symbol": $0.symbol, "quantity": Display.quantity($0.quantity)] },
                    "next": page.nextCursor.map { choice.next("/orders") + (choice.named ? "&" : "?") + "cursor=\($0)" } as Any,
                    // A later page leads back to the first as well as on.
                    "newer": (request.query["cursor"] == nil ? nil : choice.next("/orders")) as Any,
                    "market_opens": opens.map(Display.marketTime) as Any,
                ].merging(named) { first, _ in first })
        }
    }

    @Sendable func transactionsPage(_ request: Request, context: FolioRequestContext) async throws -> Response {
        // The filter form sends its empty fields too; the API reads an empty `from` as a bad date.
        let parameters = request.query.all
        if parameters.contains(where: { $0.value.isEmpty }) {
            let kept = parameters.filter { !$0.value.isEmpty }.map { "\(Self.queryEncoded(String($0.key)))=\(Self.queryEncoded(String($0.value)))" }
            return Self.redirect("/transactions" + (kept.isEmpty ? "" : "?" + kept.joined(separator: "&")))
        }
        return try await signedIn(request, context: context) { context, viewer in
            let page = try await accounts.transactions(request, context: context)
            // With several accounts the filter chooses one of them, or all; another person's account is not found, as on every page.
            let all = try await accountNames(request, context: context)
            var query = parameters.filter { $0.key != "cursor" }.map { "\(Self.queryEncoded(String($0.key)))=\(Self.queryEncoded(String($0.value)))" }
            // The download takes the filters, and nothing else the address may carry (the API refuses what a route does not take).
            let filters = parameters.filter { ["account_id", "symbol", "type", "from", "to", "tz"].contains($0.key) }.map { "\(Self.queryEncoded(String($0.key)))=\(Self.queryEncoded(String($0.value)))" }
            let csv = "/api/transactions.csv" + (filters.isEmpty ? "" : "?" + filters.joined(separator: "&"))
            // A later page leads back to the first, with the same filters, as well as on.
            let newer: String? = request.query["cursor"] == nil ? nil : "/transactions" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
            let next = page.nextCursor.map { cursor -> String in
                query.append("cursor=\(cursor)")
                return "/transactions?" + query.joined(separator: "&")
            }
            let type = (request.query["type"] ?? "").lowercased()  // the filter takes any case
            let named = request.query["account_id"].flatMap(AccountID.init)
            if let named, !all.contains(where: { $0.id == named }) { throw TradingError.accountNotFound }
            // Rows of several accounts say whose they are.
            let names = all.count > 1 && named == nil ? Dictionary(all.map { ($0.id, $0.name) }, uniquingKeysWith: { first, _ in first }) : nil
            let choice = named.map {
                PageRenderer.AccountChoice(
                    accounts: all.map { ($0.id, $0.name) }, current: $0, named: $0 != context.identity.defaultAccountID, path: "/transactions", picker: false)
            }
            return renderer.page(
                "transactions", title: "Transactions", viewer: viewer, section: "transactions", accounts: choice,
                values: [
                    "has_accounts": all.count > 1,
                    "accounts": [["value": "", "label": "All accounts", "selected": named == nil]]
                        + all.map { ["value": $0.id.description, "label": $0.name, "selected": $0.id == named] },
                    "rows": page.data.map { TransactionRow($0, accounts: names) }, "by_account": names != nil, "csv": csv, "next": next as Any, "newer": newer as Any, "empty": page.data.isEmpty,
                    "symbol": request.query["symbol"] ?? "", "from": request.query["from"] ?? "", "to": request.query["to"] ?? "", "tz": request.query["tz"] ?? "",
                    // Every kind the ledger has (a correction from a reconciliation with Alpaca, say), as the API filters them.
                    "types": ([""] + LedgerKind.allCases.map(\.rawValue)).map {
                        ["value": $0, "label": $0.isEmpty ? "All types" : $0.capitalized, "selected": $0 == type]
                    },
                    "filtered": parameters.contains { $0.key != "cursor" },
                ])
        }
    }

    @Sendable func gainsPage(_ request: Request, context: FolioRequestContext) async throws -> Response {
        try await signedIn(request, context: context) { context, viewer in
            let accountID = try PortfolioController.accountID(request, identity: context.identity)
            // One read of the account's ledger for both tables (the API's two routes read it once each).
            let year = try performance.reportYear(request)
            let account = try await performance.account(request, context)
            let book = try await performance.book(of: account.id)
            let report = try performance.realized(year: year, books: [(accountID, book)])
            let lots = try await performance.lots(of: accountID, book: book)
            let choice = try await accountChoice(request, context: context, current: accountID, page: "/gains")
            var values = GainsView.build(
                report: report, lots: lots, thisYear: TradingDay(quotes.clock.now()).year, openedYear: TradingDay(account.createdAt).year, accountID: accountID,
                severalAccounts: choice.accounts.count > 1)
            if choice.named { values["account_id"] = accountID.description }
            return renderer.page("gains", title: "Gains", viewer: viewer, section: "gains", accounts: choice, values: values)
        }
    }

    @Sendable func targetsPage(_ request: Request, context: FolioRequestContext) async throws -> Response {
        try await signedIn(request, context: context) { context, viewer in
            let accountID = try PortfolioController.accountID(request, identity: context.identity)
            let stored = try await rebalance.rebalancing.targets(of: accountID, owner: context.identity.userID, version: nil)
            let targets = try await rebalance.targetsResponse(accountID, stored, owner: context.identity.userID)
            let drift = targets.version > 0 ? try await rebalance.drift(request, context: context) : nil
            let runs = try await rebalance.runs(Self.request(request, query: "limit=5"), context: context)
            let choice = try await accountChoice(request, context: context, current: accountID, page: "/targets")
            return renderer.page(
                "targets", title: "Targets", viewer: viewer, section: "targets", scripts: ["targets.js"], accounts: choice,
                values: TargetsView.build(
                    targets: targets, drift: drift, runs: runs.data, namedAccount: request.query["account_id"].map(String.init),
                    byClass: request.query["by"].flatMap { $0 == "class" ? true : $0 == "symbol" ? false : nil }))
        }
    }

    static let plaidLinkScript = "https://cdn.plaid.com/link/v2/stable/link-initialize.js"

    @Sendable func linkedPage(_ request: Request, context: FolioRequestContext) async throws -> Response {
        try await signedIn(request, context: context) { context, viewer in
            let worth = try await portfolio.netWorth(context: context)
            let items = try await links.list(request, context: context)
            let alpaca = try await brokerage.list(request, context: context)
            // The newest 25 of the institutions' transactions (the page's cursor pages on), and their holdings.
            // The page's account_id is the Folio account the navigation carries, not one of the institutions' accounts.
            let cursor = request.query["cursor"].map { "&cursor=" + Self.queryEncoded(String($0)) } ?? ""
            let transactions = items.data.isEmpty ? Page(data: [], nextCursor: nil)
                : try await links.transactions(Self.request(request, query: "limit=25" + cursor, keepingAccount: false), context: context)
            let holdings = items.data.isEmpty ? [] : try await links.holdings(request, context: context).data
            return renderer.page(
                "linked", title: "Linked accounts", viewer: viewer, section: "linked", scripts: plaidConfigured ? ["link.js"] : [],
                values: LinkedView.build(
                    worth: worth, items: items.data, plaidConfigured: plaidConfigured, alpaca: alpaca.data, transactions: transactions, holdings: holdings),
                externalScripts: plaidConfigured ? [Self.plaidLinkScript] : [],
                contentSecurityPolicy: plaidConfigured ? PageRenderer.plaidLinkPolicy : PageRenderer.contentSecurityPolicy)
        }
    }

    @Sendable func notificationsPage(_ request: Request, context: FolioRequestContext) async throws -> Response {
        try await signedIn(request, context: context, countsUnread: false) { context, viewer in
            let page = try await notifications.list(request, context: context)
            var viewer = viewer
            viewer.unread = page.unreadCount
            let unreadOnly = request.query["unread"] == "true"
            let carried = viewer.carriedAccount?.description
            func link(cursor: String?) -> String {
                Self.link("/notifications", ["unread": unreadOnly ? "true" : nil, "cursor": cursor, "account_id": carried])
            }
            let first = link(cursor: nil)
            // A mark sends the browser back to the page it was on.
            let back = link(cursor: request.query["cursor"].map(String.init))
            // "Mark all as read" marks what existed when the page was drawn: up to the newest notification then.
            let newest = request.query["cursor"] == nil && !unreadOnly
                ? page.data.first?.id : try await notifications.store.page(of: context.identity.userID.uuid, after: nil, unreadOnly: false, limit: 1).first?.id.lowercasedString
            return renderer.page(
                "notifications", title: "Notifications", viewer: viewer, section: "notifications",
                values: [
                    "items": page.data.map { notice in
                        ["id": notice.id, "title": notice.title, "body": notice.body, "category": notice.category.capitalized,
                         "when": Display.date(notice.createdAt), "read": notice.read] as [String: Any]
                    },
                    "empty": page.data.isEmpty, "has_unread": page.unreadCount > 0, "unread": page.unreadCount, "unread_only": unreadOnly, "back": back,
                    "through": newest as Any, "newer": request.query["cursor"] == nil ? nil : first as Any?,
                    "next": page.nextCursor.map { link(cursor: $0) } as Any,
                ])
        }
    }

    @Sendable func settingsPage(_ request: Request, context: FolioRequestContext) async throws -> Response {
        try await signedIn(request, context: context) { context, viewer in
            let sessions = try await identity.activeSessions(of: context.identity)
            let preferences = try await notifications.preferences(request, context: context)
            let recoveryLeft = try await identity.recoveryCodesLeft(context.identity)
            return renderer.page(
                "settings", title: "Settings", viewer: viewer, section: "settings", scripts: ["settings.js"],
                values: [
                    "two_factor": context.identity.twoFactorEnabled, "email": context.identity.email,
                    "recovery_left_text": recoveryLeft.map(IdentityServices.recoveryCodesLeftText) ?? "", "recovery_low": (recoveryLeft ?? 10) <= 3,
                    "sessions": sessions.map { session in
                        [
                            "id": session.id!.uuidString.lowercased(), "kind": session.kind == Session.Kind.cookie.rawValue ? "Web browser" : "App or API token", "created": Display.date(session.createdAt),
                            "last_used": Display.date(session.lastUsedAt), "ip": session.ip ?? "unknown", "device": Display.device(session.userAgent), "agent": session.userAgent ?? "",
                            "current": session.id == context.identity.sessionID.uuid,
                        ] as [String: Any]
                    },
                    "preferences": preferences.preferences.map { preference in
                        ["category": preference.category, "label": preference.category.replacingOccurrences(of: "_", with: " ").capitalized,
                         "email": preference.email, "locked": preference.locked] as [String: Any]
                    },
                ].merging(Self.passwordPolicy(field: "new_password", email: context.identity.email)) { first, _ in first })
        }
    }

    @Sendable func adminPage(_ request: Request, context: FolioRequestContext) async throws -> Response {
        try await signedIn(request, context: context, admin: true) { context, viewer in
            let adminContext = try AdminContext(context: context)
            let users = try await admin.listUsers(request, context: adminContext)
            let events = try await admin.auditEvents(request, context: adminContext)
            let review = try await accessReview.report()
            return renderer.page(
                "admin", title: "Administration", viewer: viewer, section: "admin",
                values: [
                    "users": users.data.map { user in
                        ["id": user.id.description, "email": user.email, "role": user.role, "verified": user.emailVerified, "two_factor": user.twoFactorEnabled,
                         "disabled": user.disabled, "erased": user.erased, "created": Display.date(user.createdAt),
                         "you": user.id == context.identity.userID] as [String: Any]
                    },
                    // A form sends the administrator back to the page of users it was on.
                    "back": Self.link("/admin", ["cursor": request.query["cursor"].map(String.init), "account_id": viewer.carriedAccount?.description]),
                    "next_users": users.nextCursor.map { Self.link("/admin", ["cursor": $0, "account_id": viewer.carriedAccount?.description]) } as Any,
                    "events": events.data.map { event in
                        ["when": Display.date(event.occurredAt), "action": event.action, "subject": event.subjectType, "ip": event.ip ?? ""] as [String: Any]
                    },
                    "review": [
                        "administrators": review.administrators.count, "without_two_factor": review.administrators.filter { !$0.twoFactor }.count,
                        "users": review.users.count, "dormant": review.dormant.count, "disabled": review.disabled.count,
                        "admin_actions": review.adminActions.count, "role_changes": review.roleChanges.count, "days": review.periodDays,
                    ],
                ])
        }
    }

    /// The person's accounts, for a page about `current`: the picker, and the
    /// account the navigation and the page's forms stay on.
    func accountChoice(_ request: Request, context: AuthenticatedContext, current: AccountID, page: String) async throws -> PageRenderer.AccountChoice {
        let all = try await accountNames(request, context: context)
        let shown = all.first { $0.id == current }
        return PageRenderer.AccountChoice(
            accounts: all.map { ($0.id, $0.name) }, current: current,
            named: request.query["account_id"] != nil && current != context.identity.defaultAccountID, path: page,
            currentKind: shown?.kind, currentUnlinked: shown?.unlinked ?? false,
            kept: Self.keptByPicker.compactMap { name in request.query[name].map { (name, String($0)) } })
    }

    /// The query a page keeps when its picker shows another account.
    static let keptByPicker = ["range", "year"]

    /// The person's accounts as the picker names them: an Alpaca account whose link was removed says so
    /// (it takes no more orders, and linking the same Alpaca account again opens another of the same name).
    func accountNames(_ request: Request, context: AuthenticatedContext) async throws -> [(id: AccountID, name: String, kind: String, unlinked: Bool)] {
        let all = try await accounts.list(request, context: context).data
        guard all.contains(where: { $0.kind == "brokerage" }) else { return all.map { ($0.id, $0.name, $0.kind, false) } }
        let unlinked = try await brokerage.links.unlinkedAccounts(of: context.identity.userID)
        return all.map { ($0.id, unlinked.contains($0.id) ? $0.name + " (unlinked)" : $0.name, $0.kind, unlinked.contains($0.id)) }
    }

    /// The same request, naming the account unless it names one already.
    static func naming(_ account: AccountID, in request: Request) -> Request {
        guard request.query["account_id"] == nil else { return request }
        var head = request.head
        head.path = request.uri.path + "?" + (request.uri.query.map { $0 + "&" } ?? "") + "account_id=\(account)"
        return Request(head: head, body: request.body)
    }

    /// The same request with another query string, for a controller function that reads its own parameters.
    static func request(_ request: Request, query: String, keepingAccount: Bool = true) -> Request {
        var head = request.head
        // The account the page is about stays the account the controller reads.
        let account = keepingAccount ? request.query["account_id"].map { "&account_id=" + queryEncoded(String($0)) } ?? "" : ""
        head.path = request.uri.path + "?" + query + account
        return Request(head: head, body: request.body)
    }

    /// `path` with the query's present values, in order, each encoded.
    static func link(_ path: String, _ query: KeyValuePairs<String, String?>) -> String {
        let parts = query.compactMap { name, value in value.map { name + "=" + queryEncoded($0) } }
        return parts.isEmpty ? path : path + "?" + parts.joined(separator: "&")
    }

    static func queryEncoded(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~:"))) ?? ""
    }

    static func redirect(_ location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location, .cacheControl: "no-store"])
    }
}

/// One order as the orders page lists it.
struct OrderRow {
    var id: String
    var symbol: String
    var side: String
    var type: String
    var quantity: String
    /// Type or prices, and time in force.
    var terms: String
    var status: String
    var filled: String
    var average: String
    var created: String
    var reason: String
    var rejected: Bool
    /// Mustache renders a section for any string, "0" included: the flags are Bool.
    var partlyFilled: Bool
    var open: Bool
    var cancelable: Bool

    static let timeInForce: [TimeInForce: String] = [.day: "day", .goodTillCanceled: "good till canceled", .immediateOrCancel: "immediate or cancel", .fillOrKill: "fill or kill"]

    init(_ order: OrdersController.OrderResponse) {
        id = order.id.description
        symbol = order.symbol
        side = order.side.rawValue.lowercased()
        type = order.orderType.rawValue.lowercased().replacingOccurrences(of: "_", with: " ")
        quantity = order.quantity.map(Display.quantity) ?? order.notional.map { Display.money($0) + " of" } ?? ""
        // "market · day", "limit $190.00 · good till canceled", "stop $180.00, limit $179.50 · day".
        // A stop whose price was reached says so while it rests: "stop $180.00 (reached), limit $179.50".
        let reached = order.triggeredAt != nil && order.filledQuantity.isZero ? " (reached)" : ""
        let prices = [order.stopPrice.map { "stop " + Display.price($0) + reached }, order.limitPrice.map { "limit " + Display.price($0) }].compactMap { $0 }
        terms = ([prices.isEmpty ? type : prices.joined(separator: ", "), Self.timeInForce[order.timeInForce] ?? order.timeInForce.rawValue.lowercased()])
            .joined(separator: " · ")
        status = order.status.replacingOccurrences(of: "_", with: " ")
        filled = Display.quantity(order.filledQuantity)
        average = order.averageFillPrice.map(Display.price) ?? "—"
        created = Display.date(order.createdAt)
        reason = order.rejectReason ?? ""
        rejected = order.rejectReason != nil
        partlyFilled = order.filledQuantity.isPositive
        let state = OrderStatus(rawValue: order.status)
        open = state.map(\.isOpen) ?? (order.status == "pending_cancel")
        cancelable = state.map(\.isOpen) ?? false
    }
}

/// One ledger line as the transactions page lists it.
struct TransactionRow {
    var when: String
    var type: String
    var symbol: String
    var quantity: String
    var price: String
    var amount: String
    var negative: Bool
    var description: String
    /// The account's name, when the page lists several accounts' rows.
    var account: String?

    init(_ entry: AccountsController.EntryResponse, accounts: [AccountID: String]? = nil) {
        account = accounts.map { $0[entry.accountID] ?? "" }
        when = Display.date(entry.occurredAt)
        type = entry.type
        symbol = entry.symbol ?? ""
        quantity = entry.quantity.map(Display.quantity) ?? ""
        price = entry.price.map(Display.price) ?? ""
        amount = Display.money(entry.amount)
        negative = entry.amount.isNegative
        description = entry.description ?? ""
    }
}
