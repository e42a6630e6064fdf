import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdOTP
import HummingbirdTesting
import Testing

@testable import FolioServer

/// The web app's pages as a browser receives them: the page CSP, hashed
/// assets, redirects for signed-out visitors, and the figures the API holds.
/// The flows themselves run in Chromium (ops/browser-tests).
@Suite("Web app")
struct WebAppTests {
    static func text(_ response: TestResponse) -> String {
        String(buffer: response.body)
    }

    /// Signs in with a cookie session as a browser does; the Cookie header to send.
    static func cookieSession(_ client: some TestClientProtocol, _ env: TestEnvironment, email: String) async throws -> HTTPFields {
        try await signUp(client, env, email: email)
        let login = try await post(client, "/api/auth/login", ["email": email, "password": strongPassword, "session": "cookie"])
        let cookie = String(try #require(login.headers[.setCookie]).split(separator: ";")[0])
        return [.cookie: cookie]
    }

    /// Opens a second paper account for the person signed in as `email`: the account a page's navigation carries must be theirs.
    static func secondAccount(_ env: TestEnvironment, email: String) async throws -> String {
        let services = env.services
        // Opened after the first, which stays the default (the oldest account is).
        env.clock.advance(by: 1)
        let userID = try #require(try await services.database.sql.raw("SELECT id FROM users WHERE email = \(bind: email)").first()?.decode(column: "id", as: UUID.self))
        let accountID = try await services.database.transaction { db in
            try await services.ledger.openAccount(
                for: UserID(userID), kind: "paper", name: "Second paper", startingCash: .zero, cashDescription: "Starting paper cash", details: [:],
                context: AuditContext(), on: db)
        }
        return accountID.description
    }

    @Test("every table on every page has a name a screen reader says (a caption, or the heading it is labelled by), and a stacked row's cells say their column")
    func tablesAreNamed() async throws {
        try await withTestApp(.sqlite) { client, env in
            try await UserAdministration(services: env.services).createAdmin(email: "tables@example.com", password: strongPassword)
            let tokens = try json(try await post(client, "/api/auth/login", ["email": "tables@example.com", "password": strongPassword]))
            #expect(try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "2", "side": "buy", "order_type": "market"], headers: bearer(tokens)).status == .created)
            await env.worker.drain()
            #expect(try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "sell", "order_type": "market"], headers: bearer(tokens)).status == .created)
            await env.worker.drain()
            let account = try await env.firstAccount()
            #expect(try await RebalanceTests.put(client, "/api/accounts/\(account.id)/targets", RebalanceTests.targets, headers: bearer(tokens)).status == .ok)
            _ = try await Self.secondAccount(env, email: "tables@example.com")
            let login = try await post(client, "/api/auth/login", ["email": "tables@example.com", "password": strongPassword, "session": "cookie"])
            let cookie: HTTPFields = [.cookie: String(try #require(login.headers[.setCookie]).split(separator: ";")[0]), .accept: "text/html"]
            let dashboard = Self.text(try await client.execute(uri: "/", method: .get, headers: cookie))
            let css = String(try #require(dashboard.firstMatch(of: /<link rel="stylesheet" href="([^"]+)"/)?.output.1))
            let stylesheet = Self.text(try await client.execute(uri: css, method: .get))
            for path in ["/", "/orders", "/transactions", "/gains", "/targets", "/linked", "/settings", "/admin"] {
                let html = Self.text(try await client.execute(uri: path, method: .get, headers: cookie))
                let ids = Set(html.matches(of: /id="([^"]+)"/).map { String($0.output.1) })
                if path == "/transactions" { #expect(html.contains(#"class="stack by-account""#), "two accounts: the rows say whose") }
                let tables = html.matches(of: /<table([^>]*)>(\s*<caption)?/)
                #expect(!tables.isEmpty || path == "/linked", "\(path) shows a table")
                for table in tables {
                    let labelledBy = table.output.1.firstMatch(of: /aria-labelledby="([^"]+)"/).map { String($0.output.1) }
                    #expect(table.output.2 != nil || labelledBy.map(ids.contains) == true, "\(path): <table\(table.output.1)> has no name")
                }
                // A stacked table (a phone's layout) shows each cell under its column's name.
                for table in html.matches(of: /<table[^>]*class="stack( by-account)?"[^>]*>(?:(?!<\/table>).)*<\/table>/.dotMatchesNewlines()) {
                    // Transactions of every account: the stylesheet names the second cell (the account's) itself.
                    let byAccount = table.output.1 != nil
                    #expect(!byAccount || stylesheet.contains(#"table.stack.by-account tbody td:nth-child(2)::before { content: "Account";"#))
                    for row in String(table.output.0).matches(of: /<tr(?:(?!<\/tr>).)*<\/tr>/.dotMatchesNewlines()) where row.output.contains("<td") {
                        for (index, cell) in String(row.output).matches(of: /<td(?![^>]*colspan)([^>]*)>/).enumerated() where !(byAccount && index == 1) {
                            #expect(cell.output.1.contains("data-label="), "\(path): a stacked cell without its column's name: <td\(cell.output.1)>")
                        }
                    }
                }
            }
        }
    }

    @Test("a page has the strict CSP, no-store, and links assets whose hashed names are cached for a year")
    func pageHeadersAndAssets() async throws {
        try await withTestApp(.sqlite) { client, _ in
            let page = try await client.execute(uri: "/signin", method: .get)
            #expect(page.status == .ok)
            #expect(page.headers[.contentType] == "text/html; charset=utf-8")
            #expect(page.headers[.cacheControl] == "no-store")
            let policy = try #require(page.headers[.contentSecurityPolicy])
            #expect(policy.contains("script-src 'self'") && policy.contains("style-src 'self'") && policy.contains("frame-ancestors 'none'"))
            #expect(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"))
            let html = Self.text(page)
            #expect(!html.contains("<script>") && !html.contains("style="), "no inline script or style")
            let assets = html.matches(of: /\/assets\/[a-z-]+\.[0-9a-f]{12}\.(css|js|svg)/).map { String($0.output.0) }
            #expect(Set(assets).count >= 3, "\(assets)")
            for path in Set(assets) {
                let asset = try await client.execute(uri: path, method: .get)
                #expect(asset.status == .ok, "\(path)")
                #expect(asset.headers[.cacheControl] == "public, max-age=31536000, immutable")
            }
            #expect(try await client.execute(uri: "/assets/app.000000000000.css", method: .get).status == .notFound)
            // The API keeps its own locked-down policy.
            let api = try await client.execute(uri: "/api/market/clock", method: .get)
            #expect(api.headers[.contentSecurityPolicy] == "default-src 'none'; frame-ancestors 'none'")
        }
    }

    @Test("a donut slice of nearly the whole (beside a sliver under a thousandth of a percent) is drawn, not an arc from a point back to itself; a sell-only run is named so")
    func nearlyWholeSliceAndRunModes() throws {
        let svg = Charts.donut(id: "d", title: "By symbol", slices: [.init(label: "Cash", share: 0.99999), .init(label: "AAPL", share: 0.00001)])
        let paths = svg.components(separatedBy: "<path ").dropFirst().map { $0.components(separatedBy: " d=\"")[1].components(separatedBy: "\"")[0] }
        let whole = try #require(paths.first)
        // Every arc ends elsewhere than it starts.
        let points = whole.split(separator: " ").compactMap { part -> String? in
            part.first == "A" || part.first == "L" ? nil : (part.contains(",") && !part.hasPrefix("M") ? String(part) : nil)
        }
        let start = try #require(whole.components(separatedBy: " L").dropFirst().first?.components(separatedBy: " ").first)
        #expect(whole.components(separatedBy: " A").count - 1 == 2, "\(whole)")
        var previous = start
        for point in points {
            #expect(point != previous, "an arc from \(previous) to itself: \(whole)")
            previous = point
        }
        #expect(TargetsView.modeName(.sellOnly) == "Sell only" && TargetsView.modeName(.buyOnly) == "Invest cash only" && TargetsView.modeName(.full) == "Buy and sell")
    }

    @Test("WebController.routes, which the OpenAPI check leaves out, names exactly the web app's routes")
    func routeList() async throws {
        try await withTestApp(.sqlite) { _, env in
            let table = RouteTable()
            _ = env.services.buildRouter(table: table)
            let pages = Set(table.routes.map(\.path).filter { !$0.hasPrefix("/api") && !$0.hasPrefix("/health") && !$0.hasPrefix("/webhooks") })
                .subtracting(["/metrics", "/openapi.json", "/docs"])
            #expect(pages == WebController.routes)
        }
    }

    @Test("an address that is no page: a browser gets a page to go on from, any other client and the API problem+json")
    func missingPage() async throws {
        try await withTestApp(.sqlite) { client, env in
            let html: HTTPFields = [.accept: "text/html,application/xhtml+xml"]
            let page = try await client.execute(uri: "/orders/does-not-exist", method: .get, headers: html)
            #expect(page.status == .notFound && page.headers[.contentType]?.hasPrefix("text/html") == true)
            #expect(Self.text(page).contains("There is no page at this address.") && Self.text(page).contains("Check the address, or start again from the dashboard."))
            #expect(Self.text(page).contains("<h1>Not found</h1>") && Self.text(page).contains("Code: <code>not_found</code>"))
            #expect(!Self.text(page).contains(#"<a href="/orders">Orders</a>"#), "signed out: no signed-in navigation")
            // Signed in, the page keeps the signed-in layout, so the way back is one click.
            _ = try await signUp(client, env, email: "lost@example.com")
            let session = try await Self.signInWithoutJavaScript(client, email: "lost@example.com")
            let signedIn = try await client.execute(
                uri: "/orders/does-not-exist", method: .get, headers: [.cookie: try #require(session[.cookie]), .accept: "text/html"])
            #expect(signedIn.status == .notFound && Self.text(signedIn).contains("There is no page at this address."))
            #expect(Self.text(signedIn).contains(#"<a href="/orders">Orders</a>"#) && Self.text(signedIn).contains("lost@example.com"), "\(Self.text(signedIn).prefix(400))")
            for (path, headers) in [("/nowhere", HTTPFields()), ("/api/nowhere", html), ("/api", html)] {
                let response = try await client.execute(uri: path, method: .get, headers: headers)
                #expect(response.status == .notFound && response.headers[.contentType] == ProblemDetails.mediaType, "\(path)")
                #expect(try problem(response).code == "not_found")
            }
            // The names other sites use lead to Folio's pages.
            let login = try await client.execute(uri: "/login?next=%2Forders", method: .get, headers: html)
            #expect(login.status == .seeOther && login.headers[.location] == "/signin?next=%2Forders")
            #expect(try await client.execute(uri: "/register", method: .get, headers: html).headers[.location] == "/signup")
            // A known page with the wrong method is still the API's 405.
            let post = try await client.execute(uri: "/orders", method: .post, headers: html)
            #expect(post.status == .methodNotAllowed)
        }
    }

    @Test("signed out, a page sends the browser to sign in and back; next never leaves the site")
    func signedOutRedirects() async throws {
        try await withTestApp(.sqlite) { client, _ in
            for path in ["/", "/orders", "/transactions?type=buy", "/settings", "/admin"] {
                let response = try await client.execute(uri: path, method: .get)
                #expect(response.status == .seeOther, "\(path)")
                #expect(response.headers[.location]?.hasPrefix("/signin?next=%2F") == true, "\(path)")
            }
            // A hostile `next` is escaped where it is written, and never followed off the site.
            let hostile = try await client.execute(uri: "/signin?next=%2F%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E", method: .get)
            #expect(!Self.text(hostile).contains("<script>alert"))
        }
        for (raw, expected) in [
            ("//evil.example", "/"), ("https://evil.example", "/"), ("/\\evil.example", "/"), ("/%09/evil.example", "/"), ("/%0A/evil.example", "/"),
            ("/%E2%80%8B/evil.example", "/"), ("/orders", "/orders"), ("/transactions?type=buy", "/transactions?type=buy"),
        ] {
            let request = Request(head: .init(method: .get, scheme: nil, authority: nil, path: "/signin?next=\(raw)"), body: .init(buffer: ByteBuffer()))
            #expect(WebController.nextPath(request) == expected, "\(raw)")
        }
    }

    @Test("escaping is by Unicode scalar: a quote or bracket joined to a combining mark or a prepend character is still escaped")
    func graphemeEscaping() async throws {
        #expect(ScalarHTMLEscaping.escape("\"\u{301}") == "&quot;\u{301}")
        #expect(ScalarHTMLEscaping.escape("\u{600}<") == "\u{600}&lt;")
        try await withTestApp(.sqlite) { client, _ in
            // The verification page echoes its token into an attribute: the attack closes it with a quote carrying a combining mark.
            let attack = "%22%CC%81%D8%80%3E%D8%80%3Cmeta%20http-equiv%3Drefresh%20content%3D0%3Burl%3Dhttps%3A%2F%2Fevil.example%2F%D8%80%3E"
            let html = Self.text(try await client.execute(uri: "/verify-email?token=\(attack)", method: .get))
            #expect(!html.contains("<meta http-equiv"), "the token broke out of its attribute")
            #expect(html.contains("&quot;\u{301}"))
        }
    }

    @Test("the dashboard's chart ends at the total it heads with, even when a quote was refreshed between the two", arguments: TestDatabaseKind.all)
    func dashboardTotalsAgree(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let session = try await Self.cookieSession(client, env, email: "totals@example.com")
            let tokens = try json(try await post(client, "/api/auth/login", ["email": "totals@example.com", "password": strongPassword]))
            #expect(try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "3", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens)).status == .created)
            await env.worker.drain()
            // Past the quotes' time to live: the headline is valued at the remembered quote while it is refreshed, the
            // chart's today at a fresh one (the simulated market moves minute by minute).
            env.clock.advance(by: 300)
            let html = Self.text(try await client.execute(uri: "/", method: .get, headers: session))
            let headline = try #require(html.firstMatch(of: /id="total-value">([^<]+)</)?.1, "\(html.prefix(3000))")
            let today = try #require(html.firstMatch(of: /<tbody><tr><td>[0-9-]+<\/td><td class="num">([^<]+)</)?.1)
            #expect(headline == today, "headline \(headline), chart \(today)")
        }
    }

    @Test("the dashboard, orders and transactions pages show what the API holds, with the session's CSRF token", arguments: TestDatabaseKind.all)
    func signedInPages(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let session = try await Self.cookieSession(client, env, email: "pages@example.com")
            let tokens = try json(try await post(client, "/api/auth/login", ["email": "pages@example.com", "password": strongPassword]))
            let placed = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "3", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
            #expect(placed.status == .created)
            await env.worker.drain()

            let dashboard = try await client.execute(uri: "/", method: .get, headers: session)
            #expect(dashboard.status == .ok)
            let html = Self.text(dashboard)
            let portfolio = try json(try await client.execute(uri: "/api/portfolio", method: .get, headers: bearer(tokens)))
            let cashText = try #require(portfolio["cash"] as? String)
            let cash = try #require(Cash(cashText))
            #expect(html.contains(Display.money(cash)), "the dashboard shows the API's cash")
            #expect(html.contains("<th scope=\"row\">AAPL</th>"))
            #expect(html.contains("<title id=\"by-symbol-title\">Allocation by symbol</title>"))
            #expect(html.contains("<title id=\"history-title\">Total value over one month</title>"))
            let csrfAnswer = try json(try await client.execute(uri: "/api/auth/csrf", method: .get, headers: session))
            let csrf = try #require(csrfAnswer["csrf_token"] as? String)
            #expect(html.contains("<meta name=\"csrf-token\" content=\"\(csrf)\">"))

            let orders = Self.text(try await client.execute(uri: "/orders", method: .get, headers: session))
            #expect(orders.contains("buy 3 AAPL") && orders.contains("filled"))
            // An absent value is no section: one order has no older page, a filled order no refusal.
            #expect(!orders.contains("Older orders"))
            #expect(!orders.contains("<br><span class=\"muted\"></span>"))

            let transactions = try await client.execute(uri: "/transactions?type=buy", method: .get, headers: session)
            #expect(Self.text(transactions).contains("AAPL"))
            #expect(Self.text(transactions).contains("href=\"/api/transactions.csv?type=buy\""))
            #expect(!Self.text(transactions).contains("Next page"))
            // The filter form's empty fields are dropped before the API reads them.
            let empty = try await client.execute(uri: "/transactions?type=buy&symbol=&from=&to=", method: .get, headers: session)
            #expect(empty.status == .seeOther)
            #expect(empty.headers[.location] == "/transactions?type=buy")
            // A parameter's name is encoded too: one named "type=deposit&x" is not read back as a filter on deposits.
            let oddName = try await client.execute(uri: "/transactions?type%3Ddeposit%26x=1&b=", method: .get, headers: session)
            #expect(oddName.headers[.location] == "/transactions?type%3Ddeposit%26x=1")
            // A filter the API refuses is shown as a page with its detail and field.
            var browser = session
            browser[.accept] = "text/html,application/xhtml+xml"
            let refused = try await client.execute(uri: "/transactions?type=teleport", method: .get, headers: browser)
            #expect(refused.status == .unprocessableContent)
            #expect(refused.headers[.contentType] == "text/html; charset=utf-8")
            #expect(Self.text(refused).contains("<li>Type must be one of "), "the field's message in a person's words")
            // Any other client gets the problem document, as from every route.
            let asProblem = try await client.execute(uri: "/transactions?type=teleport", method: .get, headers: session)
            #expect(asProblem.status == .unprocessableContent)
            #expect(try problem(asProblem).code == "validation_failed")
        }
    }

    @Test("settings lists the sessions; the admin page is for administrators only")
    func settingsAndAdmin() async throws {
        try await withTestApp(.sqlite) { client, env in
            let session = try await Self.cookieSession(client, env, email: "plain@example.com")
            let settings = Self.text(try await client.execute(uri: "/settings", method: .get, headers: session))
            #expect(settings.contains("This session"))
            #expect(settings.contains("<input type=\"hidden\" name=\"_api\" value=\"/api/auth/2fa/enroll\">"))
            var browser = session
            browser[.accept] = "text/html"
            let admin = try await client.execute(uri: "/admin", method: .get, headers: browser)
            #expect(admin.status == .forbidden)
            #expect(Self.text(admin).contains("This is for administrators only."))
            #expect(!Self.text(admin).contains("plain@example.com</th>"))
        }
    }

    @Test("the linked-accounts page: Plaid Link's script and CSP only there and only when Plaid is configured; items and net worth listed")
    func linkedAccounts() async throws {
        try await withTestApp(.sqlite) { client, env in
            let session = try await Self.cookieSession(client, env, email: "unlinked@example.com")
            let page = try await client.execute(uri: "/linked", method: .get, headers: session)
            #expect(page.headers[.contentSecurityPolicy] == PageRenderer.contentSecurityPolicy)
            #expect(!Self.text(page).contains("cdn.plaid.com"))
            #expect(Self.text(page).contains("does not have configured"))
            #expect(Self.text(page).contains("<p class=\"muted\">Assets $100,000.00 · debts $0.00</p>"), "the page's own values, not the layout's asset paths")
        }
        try await withFakePlaid { fake in
            try await withTestApp(.sqlite, configure: { $0.plaid = fake.settings }) { client, env in
                let session = try await Self.cookieSession(client, env, email: "linked@example.com")
                let tokens = try json(try await post(client, "/api/auth/login", ["email": "linked@example.com", "password": strongPassword]))
                let issued = fake.issuePublicToken(accounts: PlaidTests.accounts, changes: PlaidTests.changes, holdings: PlaidTests.holdings)
                #expect(try await post(client, "/api/links/plaid/exchange", ["public_token": issued.publicToken], headers: bearer(tokens)).status == .created)
                await env.worker.drain()
                let page = try await client.execute(uri: "/linked", method: .get, headers: session)
                let html = Self.text(page)
                // The institutions' transactions, newest first, money out negative; and their holdings, exact.
                let rows = html.matches(of: /<tr><td>(2026-11-\d\d)<\/td><td>([^<]*)<\/td><td>([^<]*)<\/td>/).map { "\($0.output.1) \($0.output.2) \($0.output.3)" }
                #expect(rows == ["2026-11-22 Card ···0000 Books", "2026-11-21 Checking ···0000 Payroll", "2026-11-20 Checking ···0000 Coffee House"], "\(rows)")
                #expect(html.contains(#"<td class="num down">−$12.35</td>"#) && html.contains(#"<td class="num ">$2,500.00</td>"#))
                #expect(!html.contains("Parking"), "a removed transaction is gone")
                #expect(html.contains("<th scope=\"row\">VTI · VTI Corp</th><td class=\"num\">3.123456789</td><td class=\"num\">$240.12345678</td><td class=\"num\">$749.93</td><td class=\"num\">$700.00</td>"))
                #expect(page.headers[.contentSecurityPolicy] == PageRenderer.plaidLinkPolicy)
                #expect(html.contains("<script src=\"\(WebController.plaidLinkScript)\" defer></script>"))
                #expect(html.contains("data-plaid-link"))
                // Plaid's window needs JavaScript: without it the button is hidden and the page says why, not a form that does nothing.
                #expect(html.contains(#"<form id="link-new" data-plaid-link data-needs-script>"#))
                #expect(html.contains("<noscript><p class=\"notice\">Linking a bank, or signing in to one again, opens Plaid's window, which needs JavaScript"))
                #expect(html.contains(PlaidTests.checking.name))
                // A Folio account the navigation carries is not taken for one of the institutions' accounts.
                let carried = try await client.execute(uri: "/linked?account_id=\(try await Self.secondAccount(env, email: "linked@example.com"))", method: .get, headers: session)
                let carriedHTML = Self.text(carried)
                #expect(carried.status == .ok && carriedHTML.contains("Coffee House"), "\(carriedHTML.prefix(300))")
                #expect(carriedHTML.contains(#"<a href="/orders?account_id="#), "the chosen account rides on")
                // Every other page keeps the strict policy.
                let dashboard = try await client.execute(uri: "/", method: .get, headers: session)
                #expect(dashboard.headers[.contentSecurityPolicy] == PageRenderer.contentSecurityPolicy)
            }
        }
    }

    static func form(_ fields: [(String, String)]) -> ByteBuffer {
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
        return ByteBuffer(string: fields.map { "\($0.0.addingPercentEncoding(withAllowedCharacters: allowed)!)=\($0.1.addingPercentEncoding(withAllowedCharacters: allowed)!)" }
            .joined(separator: "&"))
    }

    @Test("the form bridge writes the JSON app.js would: nesting, arrays in index order, the last of a repeated name, booleans by name")
    func bridgeJSON() throws {
        let data = try FormBridge.json([
            ("targets.1.symbol", "MSFT"), ("targets.0.symbol", "AAPL"), ("targets.0.percent", "60"), ("targets.1.percent", "40"),
            ("cash_percent", "0"), ("execute", "true"), ("note", "a"), ("note", "b"),
            ("email.orders", "false"), ("email.cash", "false"), ("email.cash", "true"),
        ])
        #expect(String(decoding: data, as: UTF8.self)
            == #"{"cash_percent":"0","email":{"cash":true,"orders":false},"execute":true,"note":"b","targets":[{"percent":"60","symbol":"AAPL"},{"percent":"40","symbol":"MSFT"}]}"#)
        // Only a known confirmation is asked for; passwords are the only names sent untrimmed.
        #expect(FormBridge.confirmation(["_done": "targets_saved"]) == "targets_saved")
        // A refusal's figures: what is available rounded down, what is needed up.
        let available = Cash(uncheckedUnits: 1_000_060)
        #expect(Display.money(available, .down) == "$100.00" && Display.money(available, .up) == "$100.01" && Display.money(available) == "$100.01")
        // Sessions are told apart by browser and system, not by a raw User-Agent.
        #expect(Display.device("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0") == "Edge on Windows")
        #expect(Display.device("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15") == "Safari on macOS")
        #expect(Display.device("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0 Mobile/15E148 Safari/604.1") == "Chrome on iPhone")
        #expect(Display.device("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0") == "Firefox on Linux")
        #expect(Display.device("Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36") == "Chrome on Android")
        #expect(Display.device("curl/8.5.0") == "curl")
        #expect(Display.device(nil) == "Unknown device" && Display.device("  ") == "Unknown device")
        // A field's message in a person's words, not the API's field names.
        #expect(Display.issue(field: "limit_price", message: "limit_price must be greater than zero.") == "Limit price must be greater than zero.")
        // A row is named by its symbol in what was sent: the API counts only the rows sent, not the form's.
        let sent: [String: Any] = ["targets": [["symbol": "VTI", "percent": "60"], ["symbol": "BND", "percent": "140"]]]
        #expect(Display.issue(field: "targets[1].percent", message: "targets[1].percent must be from 0 to 100.", request: sent) == "BND: percent must be from 0 to 100.")
        #expect(Display.issue(field: "targets[1].percent", message: "targets[1].percent must be from 0 to 100.") == "Percent must be from 0 to 100.")
        // An asset class's row by its class; a row with neither by its place.
        let classes: [String: Any] = ["asset_classes": [["asset_class": "equity"]], "targets": [["symbol": "", "percent": "5"]]]
        #expect(Display.issue(field: "asset_classes[0].percent", message: "asset_classes[0].percent is required.", request: classes) == "Stocks: percent is required.")
        #expect(Display.issue(field: "targets[0].symbol", message: "targets[0].symbol is required.", request: classes) == "Row 1: symbol is required.")
        #expect(Display.issue(field: "targets", message: "The percentages must add up to 100.") == "The percentages must add up to 100.")
        // Under a refusal, what to do; a 5xx or a send still running may have been done, and never says otherwise.
        #expect(FormBridge.advice(status: .internalServerError, code: "internal_error").hasPrefix("It may have been done"))
        #expect(FormBridge.advice(status: .conflict, code: "idempotency_request_in_progress").contains("still being done"))
        #expect(FormBridge.advice(status: .tooManyRequests, code: "rate_limited") == "Nothing was changed; try again in a moment.")
        #expect(FormBridge.advice(status: .unauthorized, code: "invalid_credentials") == "Go back to the form and send it again, corrected.")
        #expect(FormBridge.advice(status: .unauthorized, code: "invalid_token").contains("Sign in again"), "a session that ended is not the form's fault")
        #expect(FormBridge.advice(status: .forbidden, code: "csrf_failed").contains("reload the page"))
        #expect(FormBridge.advice(status: .unprocessableContent, code: "validation_failed") == "Go back to the form and send it again, corrected.")
        // An outage the API answers before changing anything does not say it may have been done.
        for code in ["broker_unavailable", "plaid_unavailable", "orders_backlogged", "market_data_unavailable"] {
            #expect(FormBridge.advice(status: .serviceUnavailable, code: code) == "Try again in a moment.", "\(code)")
        }
        #expect(FormBridge.advice(status: .serviceUnavailable, code: "database_unavailable").hasPrefix("It may have been done"))
        // A position's average cost reads to four places; the exact figure stays in the API.
        #expect(Display.averagePrice(Price(uncheckedUnits: 18_935_214_689)) == "$189.3521" && Display.averagePrice(250 as Price) == "$250.00")
        #expect(Display.averagePrice(Price(uncheckedUnits: 43_955_900_000)) == "$439.5590", "four places once past the cents, as its neighbours show")
        #expect(Display.averagePrice(Price(uncheckedUnits: 1_050_000_000)) == "$10.50" && Display.averagePrice(Price(uncheckedUnits: 1_000_004_999)) == "$10.00")
        #expect(FormBridge.confirmation(["_done": "You won"]) == nil && FormBridge.confirmation([:]) == nil)
        // The confirmation names the page it is for: its path only, and "/" for one a cookie cannot carry.
        #expect(PageRenderer.confirmationPath("/targets?account_id=7") == "/targets" && PageRenderer.confirmationPath("/?range=3M") == "/")
        #expect(PageRenderer.confirmationPath("/caf\u{E9}") == "/" && PageRenderer.confirmationPath("/a;b") == "/")
        // One account's page is not another's: a confirmation names the account its page shows.
        let account = "0b7e4a1c-5d2f-4e3a-9c8b-7a6f5e4d3c2b"
        #expect(PageRenderer.confirmationPath("/?account_id=\(account.uppercased())&range=1M") == "/?account_id=\(account)")
        #expect(PageRenderer.confirmation(cookie: "deposited:/?account_id=\(account)", onPage: "/").text == nil)
        #expect(PageRenderer.confirmation(cookie: "deposited:/?account_id=\(account)", onPage: "/?account_id=\(account)").text != nil)
        let onDashboard = PageRenderer.confirmation(cookie: "deposited:/", onPage: "/")
        #expect(onDashboard.text == PageRenderer.confirmations["deposited"] && onDashboard.clear)
        let onOrders = PageRenderer.confirmation(cookie: "deposited:/", onPage: "/orders")
        #expect(onOrders.text == nil && !onOrders.clear, "kept for its own page")
        let unknown = PageRenderer.confirmation(cookie: "deposited", onPage: "/"), forged = PageRenderer.confirmation(cookie: "You won:/", onPage: "/")
        #expect(unknown.text == nil && unknown.clear && forged.text == nil && forged.clear)
        #expect(["password", "new_password", "current_password"].allSatisfy(FormBridge.isPassword))
        #expect(!FormBridge.isPassword("amount") && !FormBridge.isPassword("secret_key") && !FormBridge.isPassword("passwords"))
        // Trimmed exactly as String.prototype.trim trims: U+FEFF and U+3000 go, U+0085 and U+200B stay.
        #expect("\u{FEFF}\u{3000} 5\u{2028}\t".trimmingCharacters(in: FormBridge.scriptWhitespace) == "5")
        #expect("\u{200B}5\u{85}".trimmingCharacters(in: FormBridge.scriptWhitespace) == "\u{200B}5\u{85}")
    }

    /// Headers a browser sends with a form posted from a Folio page.
    static let browserForm: HTTPFields = [
        .contentType: "application/x-www-form-urlencoded", .accept: "text/html", HTTPField.Name("Sec-Fetch-Site")!: "same-origin",
    ]

    /// Signs in through the sign-in form, as a browser without JavaScript does; the form headers with the session's cookie.
    static func signInWithoutJavaScript(_ client: some TestClientProtocol, email: String, password: String = strongPassword) async throws -> HTTPFields {
        let signIn = try await client.execute(
            uri: "/form", method: .post, headers: browserForm,
            body: form([("_api", "/api/auth/login"), ("_next", "/"), ("session", "cookie"), ("email", email), ("password", password)]))
        #expect(signIn.status == .seeOther)
        var headers = browserForm
        headers[.cookie] = String(try #require(signIn.headers[.setCookie]).split(separator: ";")[0])
        return headers
    }

    @Test("signing out without JavaScript ends what the browser holds, as the script does: a session already ended, or a page older than the session")
    func signOutAnywayWithoutJavaScript() async throws {
        try await withTestApp(.sqlite, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            _ = try await signUp(client, env, email: "leaving@example.com")
            let first = try await Self.signInWithoutJavaScript(client, email: "leaving@example.com")
            let page = Self.text(try await client.execute(uri: "/", method: .get, headers: first))
            let oldToken = String(try #require(page.firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1))
            func signOut(_ headers: HTTPFields, token: String) async throws -> TestResponse {
                try await client.execute(
                    uri: "/form", method: .post, headers: headers,
                    body: Self.form([("_api", "/api/auth/logout"), ("_next", "/signin"), ("_done", "signed_out"), ("_csrf", token)]))
            }
            #expect(try await signOut(first, token: oldToken).status == .seeOther)
            // The same form again (another tab signed out first): signed out is what was asked, not "your session has ended".
            let again = try await signOut(first, token: oldToken)
            #expect(again.status == .seeOther && again.headers[.location] == "/signin", "\(Self.text(again).prefix(300))")
            #expect(again.headers[values: .setCookie].contains { $0.hasPrefix("__Host-folio_session=;") }, "the dead cookie is dropped")
            #expect(again.headers[values: .setCookie].contains("__Host-folio_done=signed_out:/signin; Path=/; Max-Age=60; Secure; SameSite=Strict"))
            // A page drawn for the earlier session, sent with the new session's cookie: the session the browser holds now ends.
            let second = try await Self.signInWithoutJavaScript(client, email: "leaving@example.com")
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: second).status == .ok)
            let stale = try await signOut(second, token: oldToken)
            #expect(stale.status == .seeOther && stale.headers[.location] == "/signin", "\(Self.text(stale).prefix(300))")
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: second).status == .unauthorized, "signed out")
            // Only a form from a Folio page: one posted by another site is refused before anything, as every form is.
            let third = try await Self.signInWithoutJavaScript(client, email: "leaving@example.com")
            var crossSite = third
            crossSite[HTTPField.Name("Sec-Fetch-Site")!] = "cross-site"
            #expect(try await signOut(crossSite, token: oldToken).status == .forbidden)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: third).status == .ok, "still signed in")
            // Any other form with a stale token is still refused: only signing out is safe to repeat.
            let refused = try await client.execute(
                uri: "/form", method: .post, headers: third, body: Self.form([("_api", "/api/auth/logout-all"), ("_next", "/signin"), ("_csrf", oldToken)]))
            #expect(refused.status == .forbidden)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: third).status == .ok)
        }
    }

    @Test("the sign-in page says what the form before it did (signed up, verified, reset…), once, from the confirmation cookie only", arguments: TestDatabaseKind.all)
    func signInConfirmations(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let signUpPage = Self.text(try await client.execute(uri: "/signup", method: .get))
            #expect(signUpPage.contains(#"<input type="hidden" name="_next" value="/signin"><input type="hidden" name="_done" value="signed_up">"#))
            let registered = try await client.execute(
                uri: "/form", method: .post, headers: Self.browserForm,
                body: Self.form([("_api", "/api/auth/register"), ("_next", "/signin"), ("_done", "signed_up"), ("email", "confirm@example.com"), ("password", strongPassword)]))
            #expect(registered.status == .seeOther && registered.headers[.location] == "/signin")
            #expect(registered.headers[values: .setCookie].contains("__Host-folio_done=signed_up:/signin; Path=/; Max-Age=60; Secure; SameSite=Strict"))
            let page = try await client.execute(uri: "/signin", method: .get, headers: [.cookie: "__Host-folio_done=signed_up:/signin"])
            #expect(Self.text(page).contains(#"id="confirmation">Check your email: Folio sent a link to verify your address. Open it, then sign in.</p>"#))
            #expect(page.headers[values: .setCookie].contains("__Host-folio_done=; Path=/; Max-Age=0; Secure; SameSite=Strict"), "said once")
            // The old flags in the address say nothing: a link cannot make the page claim an address is verified.
            let flagged = Self.text(try await client.execute(uri: "/signin?verified=1", method: .get))
            #expect(!flagged.contains(#"id="confirmation""#) && !flagged.contains("verified"))

            // Signed in already (the verification link opened in the browser that is signed in): the notice goes on to the next page.
            _ = try await signUp(client, env, email: "signed-in@example.com")
            let session = try #require(try await Self.signInWithoutJavaScript(client, email: "signed-in@example.com")[.cookie])
            let sent = try await client.execute(uri: "/signin", method: .get, headers: [.cookie: session + "; __Host-folio_done=email_verified:/signin"])
            #expect(sent.status == .seeOther && sent.headers[.location] == "/")
            #expect(sent.headers[values: .setCookie].contains("__Host-folio_done=email_verified_signed_in:/; Path=/; Max-Age=60; Secure; SameSite=Strict"))
            let dashboard = Self.text(try await client.execute(uri: "/", method: .get, headers: [.cookie: session + "; __Host-folio_done=email_verified_signed_in:/"]))
            #expect(dashboard.contains(#"id="confirmation">The address is verified.</p>"#), "\(dashboard.prefix(600))")
            // "Your password is changed. Sign in…" may be about another person's account (a reset link opened here): not carried, cleared.
            let dropped = try await client.execute(uri: "/signin", method: .get, headers: [.cookie: session + "; __Host-folio_done=password_reset:/signin"])
            #expect(dropped.status == .seeOther && dropped.headers[values: .setCookie].contains("__Host-folio_done=; Path=/; Max-Age=0; Secure; SameSite=Strict"))
            // Signing out clears a confirmation left unsaid: it is not the next person's.
            let csrf = String(try #require(dashboard.firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1))
            var signOutHeaders = Self.browserForm
            signOutHeaders[.cookie] = session
            let signOut = try await client.execute(
                uri: "/form", method: .post, headers: signOutHeaders, body: Self.form([("_api", "/api/auth/logout"), ("_next", "/signin"), ("_csrf", csrf)]))
            #expect(signOut.headers[values: .setCookie].contains("__Host-folio_done=; Path=/; Max-Age=0; Secure; SameSite=Strict"), "\(signOut.headers)")
            // The sign-out form's own confirmation comes after that clearing, so it is the one the browser keeps.
            let again = try #require(try await Self.signInWithoutJavaScript(client, email: "signed-in@example.com")[.cookie])
            let home = Self.text(try await client.execute(uri: "/", method: .get, headers: [.cookie: again]))
            signOutHeaders[.cookie] = again
            let signedOut = try await client.execute(
                uri: "/form", method: .post, headers: signOutHeaders,
                body: Self.form([("_api", "/api/auth/logout"), ("_next", "/signin"), ("_done", "signed_out"),
                                 ("_csrf", String(try #require(home.firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1)))]))
            let doneCookies = signedOut.headers[values: .setCookie].filter { $0.hasPrefix("__Host-folio_done=") }
            #expect(doneCookies.last == "__Host-folio_done=signed_out:/signin; Path=/; Max-Age=60; Secure; SameSite=Strict", "\(doneCookies)")
        }
    }

    @Test("without JavaScript: the orders page cancels every open order of the shown account with one form", arguments: TestDatabaseKind.all)
    func cancelAllWithoutJavaScript(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "tidy@example.com")
            for price in ["1.00", "2.00"] {
                let placed = try await post(
                    client, "/api/orders", ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": price, "time_in_force": "GTC"],
                    headers: bearer(tokens))
                #expect(placed.status == .created)
            }
            await env.worker.drain()
            var headers = try await Self.signInWithoutJavaScript(client, email: "tidy@example.com")
            let page = Self.text(try await client.execute(uri: "/orders", method: .get, headers: headers))
            let csrf = String(try #require(page.firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1))
            let api = String(try #require(page.firstMatch(of: /id="cancel-all"><input type="hidden" name="_api" value="([^"]+)"/)?.output.1))
            #expect(page.contains("Cancel all open orders"))
            let account = try #require(try await accounts(client, tokens).first?["id"] as? String)
            #expect(api == "/api/orders?account_id=\(account)")
            let canceled = try await client.execute(
                uri: "/form", method: .post, headers: headers,
                body: Self.form([("_api", api), ("_method", "DELETE"), ("_next", "/orders"), ("_done", "cancel_all_asked"), ("_csrf", csrf)]))
            #expect(canceled.status == .seeOther && canceled.headers[.location] == "/orders")
            // The paper broker canceled both at once: the page is told they are canceled, not that it was asked.
            #expect(canceled.headers[values: .setCookie].contains { $0.hasPrefix("__Host-folio_done=canceled_all:/orders;") }, "\(canceled.headers)")
            #expect(try await accounts(client, tokens).first?["reserved_cash"] as? String == "0.00")
            headers[.cookie] = try #require(headers[.cookie]) + "; __Host-folio_done=cancel_all_asked:/orders"
            let after = Self.text(try await client.execute(uri: "/orders", method: .get, headers: headers))
            #expect(after.contains("Cancellation asked for every open order"))
            #expect(after.contains("No open orders.") && !after.contains("Cancel all open orders"))
        }
    }

    @Test("the orders page lists every open order, however many newer orders filled since; only the history is paged", arguments: TestDatabaseKind.all)
    func oldOpenOrderShown(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let session = try await Self.cookieSession(client, env, email: "oldgtc@example.com")
            let tokens = try json(try await post(client, "/api/auth/login", ["email": "oldgtc@example.com", "password": strongPassword]))
            let resting = try await post(client, "/api/orders", ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC"], headers: bearer(tokens))
            #expect(resting.status == .created)
            await env.worker.drain()
            for symbol in ["AAPL", "MSFT"] {
                #expect(try await post(client, "/api/orders", ["symbol": symbol, "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens)).status == .created)
                await env.worker.drain()
            }
            let page = Self.text(try await client.execute(uri: "/orders?limit=1", method: .get, headers: session))
            let open = String(try #require(page.firstMatch(of: /<table id="open-orders">(?:(?!<\/table>).)*<\/table>/.dotMatchesNewlines())?.output))
            #expect(open.contains("KO") && !open.contains("No open orders"), "\(open)")
            let history = String(try #require(page.firstMatch(of: /<table id="order-history"[^>]*>(?:(?!<\/table>).)*<\/table>/.dotMatchesNewlines())?.output))
            #expect(history.contains("MSFT") != history.contains("AAPL") && !history.contains("KO"), "one filled order a page: \(history)")
        }
    }

    @Test("a later page of orders or transactions leads back to the newest, keeping the filters; the first page has no such link", arguments: TestDatabaseKind.all)
    func pagesLeadBack(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let session = try await Self.cookieSession(client, env, email: "paging@example.com")
            let tokens = try json(try await post(client, "/api/auth/login", ["email": "paging@example.com", "password": strongPassword]))
            for symbol in ["AAPL", "MSFT"] {
                #expect(try await post(client, "/api/orders", ["symbol": symbol, "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens)).status == .created)
                await env.worker.drain()
            }
            func page(_ path: String) async throws -> String { Self.text(try await client.execute(uri: path, method: .get, headers: session)) }
            let firstOrders = try await page("/orders?limit=1")
            #expect(!firstOrders.contains("Newest orders"))
            let older = try #require(firstOrders.firstMatch(of: /<a href="([^"]+)">Older orders<\/a>/)).output.1
            let secondOrders = try await page(String(older).replacingOccurrences(of: "&amp;", with: "&") + "&limit=1")
            #expect(secondOrders.contains(#"<a href="/orders">Newest orders</a>"#), "\(older)")

            let firstTransactions = try await page("/transactions?type=buy&limit=1")
            #expect(!firstTransactions.contains("Newest transactions"))
            let next = try #require(firstTransactions.firstMatch(of: /<a href="([^"]+)" rel="next">Next page<\/a>/)).output.1
            let secondTransactions = try await page(String(next).replacingOccurrences(of: "&amp;", with: "&"))
            #expect(secondTransactions.contains(#"<a href="/transactions?limit=1&amp;type=buy">Newest transactions</a>"#), "\(next)")
        }
    }

    @Test("the dashboard says how much of the day's change comes from holdings sold out today, which no row shows", arguments: TestDatabaseKind.all)
    func soldOutDayChange(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock) { client, env in
            let tokens = try await signUp(client, env, email: "roundtrip-page@example.com")
            for side in ["BUY", "SELL"] {
                #expect(try await post(client, "/api/orders", ["symbol": "KO", "quantity": "2", "side": side, "order_type": "MARKET"], headers: bearer(tokens)).status == .created)
                await env.worker.drain()
                clock.advance(by: 120)  // the next price
            }
            await env.services.quotes.settle()
            _ = try await env.services.quotes.quote(for: "KO")
            var roundTrip = Cash.zero
            for line in try await env.entries() where line.symbol == "KO" { roundTrip = try roundTrip + line.amount }
            #expect(!roundTrip.isZero)
            let headers = try await Self.signInWithoutJavaScript(client, email: "roundtrip-page@example.com")
            let page = Self.text(try await client.execute(uri: "/", method: .get, headers: headers))
            #expect(page.contains("Includes \(Display.change(roundTrip)) from holdings sold out today"), "\(roundTrip)")
        }
    }

    @Test("a value history of one day is a level line across the chart ending at its value, not a dot at the left edge")
    func oneDayChart() {
        let svg = Charts.line(id: "h", title: "Value", points: [.init(label: "2026-11-24", value: 100_000)], lowLabel: "$100,000.00", highLabel: "$100,000.00")
        #expect(svg.contains(#"<path class="stroke" d="M8.00,100.00 L632.00,100.00"/>"#), "\(svg)")
        #expect(svg.contains(#"<circle class="dot" cx="632.00" cy="100.00" r="4"/>"#), "\(svg)")
    }

    @Test("without JavaScript: a cancel the broker makes at once is confirmed as done", arguments: TestDatabaseKind.all)
    func cancelConfirmedWithoutJavaScript(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "one-cancel@example.com")
            let placed = try await post(
                client, "/api/orders", ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC"],
                headers: bearer(tokens))
            let id = try #require(try json(placed)["id"] as? String)
            await env.worker.drain()
            var headers = try await Self.signInWithoutJavaScript(client, email: "one-cancel@example.com")
            let page = Self.text(try await client.execute(uri: "/orders", method: .get, headers: headers))
            let csrf = String(try #require(page.firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1))
            let canceled = try await client.execute(
                uri: "/form", method: .post, headers: headers,
                body: Self.form([("_api", "/api/orders/\(id)"), ("_method", "DELETE"), ("_next", "/orders"), ("_done", "cancel_asked"), ("_csrf", csrf)]))
            #expect(canceled.status == .seeOther)
            let done = try #require(canceled.headers[values: .setCookie].first { $0.hasPrefix("__Host-folio_done=") })
            #expect(done.hasPrefix("__Host-folio_done=canceled:/orders;"), "\(done)")
            headers[.cookie] = try #require(headers[.cookie]) + "; " + String(done.split(separator: ";")[0])
            let after = Self.text(try await client.execute(uri: "/orders", method: .get, headers: headers))
            #expect(after.contains("Order canceled: what it had not filled is no longer reserved."))
        }
    }

    @Test("the gains page shows the year's sales matched to their lots, the totals by term, the open lots and the CSV of the same year", arguments: TestDatabaseKind.all)
    func gainsPage(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "taxes@example.com")
            for (side, quantity) in [("BUY", "3"), ("SELL", "1")] {
                #expect(try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": quantity, "side": side, "order_type": "MARKET"], headers: bearer(tokens)).status == .created)
                await env.worker.drain()
            }
            let report = try json(try await client.execute(uri: "/api/reports/realized-gains", method: .get, headers: bearer(tokens)))
            let sale = try #require((report["data"] as? [[String: Any]])?.first)
            let gain = try Cash(parsing: try #require(sale["gain"] as? String))
            let lots = try #require(try json(try await client.execute(uri: "/api/portfolio/lots", method: .get, headers: bearer(tokens)))["data"] as? [[String: Any]])
            #expect(lots.count == 1 && lots.first?["quantity"] as? String == "2")

            let session = try await Self.signInWithoutJavaScript(client, email: "taxes@example.com")
            let page = try await client.execute(uri: "/gains", method: .get, headers: session)
            #expect(page.status == .ok)
            let text = Self.text(page)
            #expect(text.contains("<h2 id=\"realized-heading\">Realized gains in 2026</h2>"))
            #expect(text.contains("<option value=\"2026\" selected>2026</option>"))
            #expect(text.contains("<th scope=\"row\">Total</th>"))
            #expect(text.contains(Display.change(gain)), "the sale's gain, as the API says it")
            #expect(text.contains("<td class=\"day\">2026-11-24</td><th scope=\"row\">AAPL</th><td class=\"num\">1</td><td class=\"day\">2026-11-24</td>"), "sold, symbol, quantity, acquired")
            #expect(text.contains("<th scope=\"row\">AAPL</th><td class=\"day\">2026-11-24</td><td class=\"num\">2</td>"), "the open lot")
            #expect(text.contains("href=\"/api/reports/realized-gains.csv?year=2026&amp;account_id="))
            #expect(text.contains("aria-current=\"page\">Gains</a>"))
            // Another year: no sales, the same lots.
            let earlier = Self.text(try await client.execute(uri: "/gains?year=2024", method: .get, headers: session))
            #expect(earlier.contains("No sales in 2024.") && earlier.contains("<option value=\"2024\" selected>2024</option>"))
            // The years offered are the account's (opened in 2026), and the one asked for.
            let offered = earlier.matches(of: /<option value="(\d{4})"/).map { String($0.output.1) }
            #expect(offered == ["2026", "2024"], "\(offered)")
            #expect(try await client.execute(uri: "/gains?year=3000", method: .get, headers: session).status == .unprocessableContent)
            // Another person's account is not found, as on every page.
            let other = try await signUp(client, env, email: "other@example.com")
            let theirs = try #require(try await accounts(client, other).first?["id"] as? String)
            #expect(try await client.execute(uri: "/gains?account_id=\(theirs)", method: .get, headers: session).status == .notFound)
        }
    }

    @Test("without JavaScript: a password with spaces at its ends signs in as typed, and not trimmed", arguments: TestDatabaseKind.all)
    func spacedPasswordWithoutJavaScript(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let spaced = "  \(strongPassword) "
            _ = try await signUp(client, env, email: "spaces@example.com", password: spaced)
            let session = try await Self.signInWithoutJavaScript(client, email: " spaces@example.com ", password: spaced)
            let dashboard = try await client.execute(uri: "/", method: .get, headers: [.cookie: try #require(session[.cookie])])
            #expect(dashboard.status == .ok)
            let trimmed = try await client.execute(
                uri: "/form", method: .post, headers: Self.browserForm,
                body: Self.form([("_api", "/api/auth/login"), ("_next", "/"), ("session", "cookie"), ("email", "spaces@example.com"), ("password", strongPassword)]))
            #expect(trimmed.status == .unauthorized, "the password without its spaces is another password")
        }
    }

    @Test("without JavaScript: the email preferences form saves each box, ticked or not, and security stays on", arguments: TestDatabaseKind.all)
    func preferencesWithoutJavaScript(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            let tokens = try await signUp(client, env, email: "prefs@example.com")
            let session = try await Self.signInWithoutJavaScript(client, email: "prefs@example.com")
            let cookie = try #require(session[.cookie])
            let page = Self.text(try await client.execute(uri: "/settings", method: .get, headers: [.cookie: cookie]))
            #expect(!page.contains("Changing these needs JavaScript"))
            let token = String(try #require(page.firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1))
            // What the browser sends: every box's hidden "false", then "true" for the ticked ones; the disabled security box sends nothing.
            let form = try #require(page.firstMatch(of: /<form[^>]*>(?:(?!<\/form>).)*notifications\/preferences(?:(?!<\/form>).)*<\/form>/.dotMatchesNewlines()))
            let hidden = String(form.output).matches(of: /<input type="hidden" name="(email\.[a-z]+)" value="false"/).map { String($0.output.1) }
            #expect(hidden == ["email.orders", "email.cash", "email.rebalancing", "email.drift", "email.links"], "\(hidden)")
            var fields: [(String, String)] = [("_api", "/api/notifications/preferences"), ("_method", "PUT"), ("_next", "/settings"), ("_csrf", token)]
            for name in hidden {
                fields.append((name, "false"))
                if name == "email.cash" { fields.append((name, "true")) }
            }
            let saved = try await client.execute(uri: "/form", method: .post, headers: session, body: Self.form(fields))
            #expect(saved.status == .seeOther, "\(Self.text(saved))")
            #expect(saved.headers[.location] == "/settings")
            let preferences = try json(try await client.execute(uri: "/api/notifications/preferences", method: .get, headers: bearer(tokens)))
            let email = Dictionary(uniqueKeysWithValues: try #require(preferences["preferences"] as? [[String: Any]]).compactMap { row in
                (row["category"] as? String).map { ($0, row["email"] as? Bool) }
            })
            #expect(email == ["orders": false, "cash": true, "rebalancing": false, "drift": false, "links": false, "security": true], "\(preferences)")
            let after = Self.text(try await client.execute(uri: "/settings", method: .get, headers: [.cookie: cookie]))
            #expect(after.contains(#"id="pref-cash" name="email.cash" value="true" checked"#) && after.contains(#"id="pref-orders" name="email.orders" value="true">"#))
        }
    }

    @Test("without JavaScript: a refused sign-in shows the form again with the reason and the address typed, never the password; asked for the code, the person signs in with it", arguments: TestDatabaseKind.all)
    func signInRefusedWithoutJavaScript(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "nojs-signin@example.com")
            func signIn(_ fields: [(String, String)]) async throws -> TestResponse {
                let page = Self.text(try await client.execute(uri: "/signin?next=%2Forders", method: .get))
                let form = String(try #require(page.firstMatch(of: /<form(?:(?!<\/form>).)*<\/form>/.dotMatchesNewlines())?.output))
                let hidden = form.matches(of: /<input type="hidden" name="([^"]+)" value="([^"]*)">/).map { (String($0.output.1), String($0.output.2)) }
                return try await client.execute(uri: "/form", method: .post, headers: Self.browserForm, body: Self.form(hidden + fields))
            }
            let wrong = try await signIn([("email", "nojs-signin@example.com"), ("password", "not the password at all")])
            let wrongPage = Self.text(wrong)
            #expect(wrong.status == .unauthorized)
            #expect(wrongPage.contains(#"<p class="form-error" role="alert" data-error-for="">The email or password is wrong.</p>"#), "\(wrongPage)")
            #expect(wrongPage.contains(#"value="nojs-signin@example.com" required>"#) && !wrongPage.contains("not the password at all"))
            #expect(wrongPage.contains(#"<input type="hidden" name="_next" value="/orders">"#), "still leads where it was to")
            #expect(wrongPage.contains(#"autocomplete="current-password" required autofocus>"#))
            #expect(!wrongPage.contains("Code: <code>") && !wrongPage.contains("Go back to the form"), "the form itself, not an error page to go Back from")

            // Two-factor on: the password alone is asked for the code, on the same form.
            _ = try await client.execute(uri: "/api/auth/2fa/enroll", method: .post, headers: bearer(tokens))
            let user = try #require(try await User.query(on: env.database.db).filter(\.$email == "nojs-signin@example.com").first())
            let sealed = try #require(user.totpSecretSealed)
            let secret = try #require(env.services.identity.secretBox.open(sealed))
            func code() -> String { String(format: "%06d", TOTP(secret: secret).compute(date: env.clock.now)) }
            #expect(try await post(client, "/api/auth/2fa/confirm", ["password": strongPassword, "totp_code": code()], headers: bearer(tokens)).status == .ok)
            env.clock.advance(by: 60)
            let asked = try await signIn([("email", "nojs-signin@example.com"), ("password", strongPassword)])
            let askedPage = Self.text(asked)
            #expect(asked.status == .unauthorized)
            #expect(askedPage.contains("Enter the code from your authenticator app or a recovery code.</p>"))
            #expect(askedPage.contains(#"id="password-again""#) && !askedPage.contains(strongPassword))
            let signedIn = try await signIn([("email", "nojs-signin@example.com"), ("password", strongPassword), ("totp_code", code())])
            #expect(signedIn.status == .seeOther && signedIn.headers[.location] == "/orders")
            #expect(signedIn.headers[values: .setCookie].contains { $0.hasPrefix("__Host-folio_session=") })
        }
    }

    @Test("a recovery code spent is audited and mailed with how many are left; new codes replace the old with the password and a code, by the API and without JavaScript; settings counts them", arguments: TestDatabaseKind.all)
    func recoveryCodes(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            let tokens = try await signUp(client, env, email: "codes@example.com")
            _ = try await client.execute(uri: "/api/auth/2fa/enroll", method: .post, headers: bearer(tokens))
            let user = try #require(try await User.query(on: env.database.db).filter(\.$email == "codes@example.com").first())
            let sealed = try #require(user.totpSecretSealed)
            let secret = try #require(env.services.identity.secretBox.open(sealed))
            func code() -> String { String(format: "%06d", TOTP(secret: secret).compute(date: env.clock.now)) }
            let confirmed = try await post(client, "/api/auth/2fa/confirm", ["password": strongPassword, "totp_code": code()], headers: bearer(tokens))
            let first = try #require(try json(confirmed)["recovery_codes"] as? [String])
            func left(_ tokens: [String: Any]) async throws -> Int? {
                try json(try await client.execute(uri: "/api/auth/2fa", method: .get, headers: bearer(tokens)))["recovery_codes_left"] as? Int
            }
            #expect(try await left(tokens) == 10)
            func signIn(_ second: [String: String]) async throws -> TestResponse {
                try await post(client, "/api/auth/login", ["email": "codes@example.com", "password": strongPassword].merging(second) { _, new in new })
            }

            // Spent to sign in: audited, and the owner told, with what is left.
            let byCode = try await signIn(["recovery_code": first[0]])
            #expect(byCode.status == .ok)
            let used = try await env.outbox(kind: "recovery_code_used")
            #expect(used.count == 1)
            #expect(used.first?.body.contains("9 recovery codes are left.") == true, "\(used.first?.body ?? "")")
            let audited = try await env.database.sql.raw("SELECT details FROM audit_events WHERE action = 'user.recovery_code_used'").all()
            #expect(audited.count == 1)
            #expect(try await left(tokens) == 9)

            // New codes: the password and a code (a wrong one refused, and nothing replaced).
            let wrong = try await post(client, "/api/auth/2fa/recovery-codes", ["password": strongPassword, "totp_code": code() == "000000" ? "111111" : "000000"], headers: bearer(tokens))
            #expect(wrong.status == .unprocessableContent)
            #expect(try problem(wrong).errors?.first?.field == "totp_code")
            let noPassword = try await post(client, "/api/auth/2fa/recovery-codes", ["password": "not the password", "totp_code": code()], headers: bearer(tokens))
            #expect(try problem(noPassword).errors?.first?.field == "password")
            #expect(try await left(tokens) == 9)
            env.clock.advance(by: 30)
            let replaced = try await post(client, "/api/auth/2fa/recovery-codes", ["password": strongPassword, "totp_code": code()], headers: bearer(tokens))
            #expect(replaced.status == .ok)
            let second = try #require(try json(replaced)["recovery_codes"] as? [String])
            #expect(second.count == 10 && Set(second).isDisjoint(with: first))
            #expect(try await left(tokens) == 10)
            #expect(try await env.outbox(kind: "recovery_codes_replaced").count == 1)
            #expect(try problem(try await signIn(["recovery_code": first[1]])).code == "invalid_two_factor_code", "the old codes no longer work")
            #expect(try await signIn(["recovery_code": second[0]]).status == .ok)
            // The password alone: a code is asked for (not called wrong).
            let noCode = try await post(client, "/api/auth/2fa/recovery-codes", ["password": strongPassword], headers: bearer(tokens))
            #expect(try problem(noCode).errors?.first?.field == "totp_code" && problem(noCode).errors?.first?.code == "required")
            // An erasure that would be refused (an open order) spends no recovery code.
            let resting = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC"], headers: bearer(tokens))
            #expect(resting.status == .created)
            var jsonHeaders = bearer(tokens)
            jsonHeaders[.contentType] = "application/json"
            let refusedErasure = try await client.execute(
                uri: "/api/me", method: .delete, headers: jsonHeaders,
                body: ByteBuffer(string: #"{"password": "\#(strongPassword)", "recovery_code": "\#(second[1])"}"#))
            #expect(try refusedErasure.status == .conflict && problem(refusedErasure).code == "open_orders")
            #expect(try await left(tokens) == 9, "the code was not spent")

            // Without JavaScript, from the settings page: the count, then the new codes as a page of their own.
            env.clock.advance(by: 30)
            let signedIn = try await client.execute(
                uri: "/form", method: .post, headers: Self.browserForm,
                body: Self.form([("_api", "/api/auth/login"), ("_next", "/"), ("session", "cookie"), ("email", "codes@example.com"), ("password", strongPassword), ("totp_code", code())]))
            let cookie = String(try #require(signedIn.headers[.setCookie]).split(separator: ";")[0])
            let settings = Self.text(try await client.execute(uri: "/settings", method: .get, headers: [.cookie: cookie]))
            #expect(settings.contains(#"<p id="recovery-left">9 recovery codes are left.</p>"#), "\(settings)")
            let form = String(try #require(settings.firstMatch(of: /<form[^>]*id="replace-recovery"(?:(?!<\/form>).)*<\/form>/.dotMatchesNewlines())?.output))
            let hidden = form.matches(of: /<input type="hidden" name="([^"]+)" value="([^"]*)">/).map { (String($0.output.1), String($0.output.2)) }
            var headers = Self.browserForm
            headers[.cookie] = cookie
            let page = try await client.execute(uri: "/form", method: .post, headers: headers, body: Self.form(hidden + [("password", strongPassword), ("recovery_code", second[1])]))
            let shown = Self.text(page)
            #expect(page.status == .ok && page.headers[.cacheControl] == "no-store")
            #expect(shown.contains(#"<h1 id="recovery-heading">Your new recovery codes</h1>"#) && shown.contains("The old codes no longer work."))
            let third = shown.matches(of: /<li>([a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4})<\/li>/).map { String($0.output.1) }
            #expect(third.count == 10 && Set(third).isDisjoint(with: second))
            #expect(try await env.outbox(kind: "recovery_code_used").count == 2, "spent to make new codes: that news is the mail of new codes")
            #expect(try await env.outbox(kind: "recovery_codes_replaced").count == 2)
            let after = Self.text(try await client.execute(uri: "/settings", method: .get, headers: [.cookie: cookie]))
            #expect(after.contains(#"<p id="recovery-left">10 recovery codes are left.</p>"#))
        }
    }

    @Test("without JavaScript: two-factor enrolment shows the secret on the settings page, and confirming shows the recovery codes once", arguments: TestDatabaseKind.all)
    func twoFactorWithoutJavaScript(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            try await signUp(client, env, email: "nojs2fa@example.com")
            let formHeaders = try await Self.signInWithoutJavaScript(client, email: "nojs2fa@example.com")
            let cookie = try #require(formHeaders[.cookie])
            let page = Self.text(try await client.execute(uri: "/settings", method: .get, headers: [.cookie: cookie]))
            #expect(!page.contains("needs JavaScript, to show the secret"))
            #expect(page.contains(#"<div id="enrolment" hidden>"#))
            let token = String(try #require(page.firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1))

            // The set-up form's answer is a page: the secret, its link and the form that confirms it.
            #expect(page.contains(#"name="_show" value="two-factor-enrolment""#))
            let enrolled = try await client.execute(
                uri: "/form", method: .post, headers: formHeaders, body: Self.form([("_api", "/api/auth/2fa/enroll"), ("_show", "two-factor-enrolment"), ("_csrf", token)]))
            #expect(enrolled.status == .ok && enrolled.headers[.cacheControl] == "no-store")
            let enrolment = Self.text(enrolled)
            let shown = String(try #require(enrolment.firstMatch(of: /<code id="totp-secret">([A-Z2-7]+)<\/code>/)?.output.1))
            #expect(enrolment.contains("otpauth://totp/Folio:nojs2fa@example.com?secret=\(shown)"))
            #expect(enrolment.contains(#"<div class="qr"><svg xmlns="http://www.w3.org/2000/svg""#), "the QR code to scan, drawn in the page")
            #expect(enrolment.contains(#"id="confirm-enrolment" data-native"#) && enrolment.contains(#"name="_show" value="recovery-codes""#))
            #expect(enrolment.contains(#"<nav aria-label="Main">"#), "an answer page keeps the signed-in layout")
            // The settings page never shows a secret: one begun and left is replaced by the next start, not offered again.
            let settings = Self.text(try await client.execute(uri: "/settings", method: .get, headers: [.cookie: cookie]))
            #expect(!settings.contains(shown))
            let user = try #require(try await User.query(on: env.database.db).filter(\.$email == "nojs2fa@example.com").first())
            let sealed = try #require(user.totpSecretSealed)
            let secret = try #require(env.services.identity.secretBox.open(sealed))
            let code = String(format: "%06d", TOTP(secret: secret).compute(date: env.clock.now))

            // The page's own form, as the browser sends it; a wrong code brings the same secret back with the reason.
            let confirmForm = String(try #require(enrolment.firstMatch(of: /<form[^>]*id="confirm-enrolment"(?:(?!<\/form>).)*<\/form>/.dotMatchesNewlines())?.output))
            let hidden = confirmForm.matches(of: /<input type="hidden" name="([^"]+)" value="([^"]*)">/).map { (String($0.output.1), String($0.output.2)) }
            #expect(hidden.contains { $0 == ("_again", "two-factor-enrolment") } && hidden.contains { $0 == ("_secret", shown) })
            let wrong = try await client.execute(
                uri: "/form", method: .post, headers: formHeaders, body: Self.form(hidden + [("password", strongPassword), ("totp_code", code == "000000" ? "111111" : "000000")]))
            let again = Self.text(wrong)
            #expect(wrong.status.code >= 400 && again.contains(#"<code id="totp-secret">\#(shown)</code>"#) && again.contains("totp_code"), "\(again)")
            #expect(again.contains(#"<div class="qr"><svg "#), "the code stays on screen with the secret")
            #expect(again.contains(#"<nav aria-label="Main">"#))
            let confirmed = try await client.execute(
                uri: "/form", method: .post, headers: formHeaders, body: Self.form(hidden + [("password", strongPassword), ("totp_code", code)]))
            #expect(confirmed.status == .ok)
            #expect(confirmed.headers[.cacheControl] == "no-store")
            let codes = Self.text(confirmed).matches(of: /<li>([^<]+)<\/li>/).map { String($0.output.1) }
            #expect(codes.count == IdentityServices.recoveryCodeCount && Set(codes).count == codes.count, "\(Self.text(confirmed))")
            let on = try await User.query(on: env.database.db).filter(\.$email == "nojs2fa@example.com").first()
            #expect(on?.totpEnabledAt != nil)
            // Once on, the page shows neither the secret nor the codes again.
            let after = Self.text(try await client.execute(uri: "/settings", method: .get, headers: [.cookie: cookie]))
            #expect(!after.contains(shown) && !after.contains(codes[0]))
        }
    }

    @Test("without JavaScript: an Alpaca account is linked from the linked page, picked above the account pages, given new keys and unlinked", arguments: TestDatabaseKind.all)
    func alpacaWithoutJavaScript(kind: TestDatabaseKind) async throws {
        try await withFakeAlpaca { fake in
            try await withTestApp(kind, configure: { $0.alpacaURLs = fake.urls; $0.csrfProtectionEnabled = true }) { client, env in
                let tokens = try await signUp(client, env, email: "alpaca-web@example.com")
                let session = try await Self.signInWithoutJavaScript(client, email: "alpaca-web@example.com")
                let cookie: HTTPFields = [.cookie: try #require(session[.cookie]), .accept: "text/html"]
                func page(_ path: String) async throws -> String { Self.text(try await client.execute(uri: path, method: .get, headers: cookie)) }
                func submit(_ fields: [(String, String)]) async throws -> TestResponse {
                    let token = String(try #require(try await page("/linked").firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1))
                    return try await client.execute(uri: "/form", method: .post, headers: session, body: Self.form(fields + [("_next", "/linked"), ("_csrf", token)]))
                }

                // One account: no picker anywhere, and the linking form open.
                let before = try await page("/linked")
                #expect(before.contains("<details open><summary>Link an Alpaca account</summary>"))
                #expect(!(try await page("/")).contains("account-picker"))

                let refused = try await submit([("_api", "/api/brokerage/alpaca"), ("key_id", FakeAlpaca.keyID), ("secret_key", "not-the-secret-0000000"), ("environment", "paper")])
                #expect(refused.status == .unprocessableContent)
                #expect(Self.text(refused).contains("<li>The broker refused these keys.</li>"))
                #expect(Self.text(refused).contains("<h1>Check what you entered</h1>") && !Self.text(refused).contains("validation_failed"), "fields say what is wrong, not a code")
                env.clock.advance(by: 60)  // the paper account stays the first opened, so the default
                let linked = try await submit([("_api", "/api/brokerage/alpaca"), ("key_id", FakeAlpaca.keyID), ("secret_key", FakeAlpaca.secretKey), ("environment", "paper")])
                #expect(linked.status == .seeOther, "\(Self.text(linked))")
                #expect(linked.headers[.location] == "/linked")
                let accounts = try await env.accounts()
                let alpaca = try #require(accounts.first { $0.kind == "brokerage" }), paper = try #require(accounts.first { $0.kind == "paper" })
                let name = "Alpaca paper ····" + String(FakeAlpaca.accountNumber.suffix(4))

                let listed = try await page("/linked")
                #expect(listed.contains(#"<h3 id="alpaca-\#(alpaca.id)">\#(name)</h3>"#))
                #expect(listed.contains("Alpaca account \(FakeAlpaca.accountNumber) · key …" + String(FakeAlpaca.keyID.suffix(4))))
                #expect(listed.contains("<details><summary>Link an Alpaca account</summary>"), "closed once an account is linked")
                #expect(!listed.contains(FakeAlpaca.secretKey))
                // A password manager must not fill the person's Folio password into the secret, nor keep the secret as a password.
                #expect(listed.contains(#"name="secret_key" type="password" autocomplete="new-password""#) && !listed.contains(#"name="secret_key" type="password" autocomplete="off""#))
                #expect(listed.contains(#"<form method="get" action="/" class="account-picker">"#) == false, "no picker on the linked page")

                // The picker: the default account shown and chosen, links plain; the Alpaca account named, and the account pages' links stay on it.
                let dashboard = try await page("/")
                #expect(dashboard.contains(#"<option value="\#(paper.id)" selected>Paper brokerage</option>"#))
                #expect(dashboard.contains(#"<option value="\#(alpaca.id)">\#(name)</option>"#))
                #expect(dashboard.contains(#"<a href="/orders">Orders</a>"#))
                #expect(dashboard.contains(#"<form method="get" action="/" class="account-picker">"#))
                let onAlpaca = try await page("/?account_id=\(alpaca.id)")
                #expect(onAlpaca.contains(#"<option value="\#(alpaca.id)" selected>"#))
                for path in ["/orders", "/transactions", "/targets"] {
                    #expect(onAlpaca.contains(#"<a href="\#(path)?account_id=\#(alpaca.id)">"#), "\(path)")
                }
                // Pages about no account carry the choice on, so coming back to the dashboard keeps it.
                #expect(onAlpaca.contains(#"<a href="/linked?account_id=\#(alpaca.id)">Linked</a>"#))
                let linkedOnAlpaca = try await page("/linked?account_id=\(alpaca.id)")
                #expect(linkedOnAlpaca.contains(#"<a href="/?account_id=\#(alpaca.id)">"#))
                #expect(linkedOnAlpaca.contains(#"<a href="/orders?account_id=\#(alpaca.id)">Orders</a>"#))
                // And so do that page's own forms, and the brand's link home.
                #expect(linkedOnAlpaca.contains(#"name="_next" value="/linked?account_id=\#(alpaca.id)""#))
                #expect(linkedOnAlpaca.contains(#"<a class="brand" href="/?account_id=\#(alpaca.id)">"#))
                let noticesOnAlpaca = try await page("/notifications?account_id=\(alpaca.id)")
                #expect(noticesOnAlpaca.contains(#"<a href="/notifications?unread=true&amp;account_id=\#(alpaca.id)">Unread only</a>"#))
                let linkedOnDefault = try await page("/linked?account_id=\(paper.id)"), linkedOnNonsense = try await page("/linked?account_id=nonsense")
                #expect(linkedOnDefault.contains(#"<a href="/orders">Orders</a>"#), "the default account is not named")
                #expect(linkedOnNonsense.contains(#"<a href="/orders">Orders</a>"#))
                #expect(onAlpaca.contains(#"<a class="button" href="/orders?account_id=\#(alpaca.id)">New order</a>"#))
                #expect(!onAlpaca.contains("paper-cash-heading"), "a brokerage account's cash moves at its broker")
                #expect(dashboard.contains("paper-cash-heading"))
                #expect(onAlpaca.contains(#"href="/?account_id=\#(alpaca.id)&amp;range=1M""#) || onAlpaca.contains(#"href="/?account_id=\#(alpaca.id)&range=1M""#))
                // Showing another account keeps the chart's range.
                let threeMonths = try await page("/?account_id=\(alpaca.id)&range=3M")
                #expect(threeMonths.contains(#"<form method="get" action="/" class="account-picker"><input type="hidden" name="range" value="3M">"#))

                // The orders page lists the shown account's orders, and its forms come back to it.
                let placed = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
                #expect(placed.status == .created || placed.status == .accepted, "\(Self.text(placed))")
                let order = try #require(try json(placed)["id"] as? String)
                #expect(try await page("/orders").contains(order))
                let alpacaOrders = try await page("/orders?account_id=\(alpaca.id)")
                #expect(!alpacaOrders.contains(order))
                #expect(alpacaOrders.contains(#"name="_next" value="/orders?account_id=\#(alpaca.id)""#))
                // The ticket names the account it was drawn for, whatever the picker says by the time it is sent.
                #expect(alpacaOrders.contains(#"<input type="hidden" name="account_id" value="\#(alpaca.id)">"#))
                #expect(alpacaOrders.contains(#"<p class="muted" id="ticket-account">In <strong>\#(name)</strong></p>"#))
                #expect(try await page("/orders").contains(#"<input type="hidden" name="account_id" value="\#(paper.id)">"#))
                #expect(alpacaOrders.contains(#"<select id="account-pick" name="account_id" autocomplete="off">"#), "Back does not bring back a stale choice")
                let filtered = try json(try await client.execute(uri: "/api/orders?account_id=\(alpaca.id)", method: .get, headers: bearer(tokens)))
                #expect((filtered["data"] as? [Any])?.isEmpty == true)
                let transactions = try await page("/transactions?account_id=\(alpaca.id)")
                #expect(transactions.contains(#"<option value="\#(alpaca.id)" selected>\#(name)</option>"#))
                #expect(!transactions.contains("account-picker"), "the filter chooses the account there")
                #expect(transactions.contains(#"<option value="correction">Correction</option>"#))
                #expect(!transactions.contains(#"<th scope="col">Account</th>"#))
                let everyAccount = try await page("/transactions")
                #expect(everyAccount.contains(#"<th scope="col">Account</th>"#) && everyAccount.contains("<td>\(name)</td>") && everyAccount.contains("<td>Paper brokerage</td>"))

                let linkedWorth = try json(try await client.execute(uri: "/api/portfolio?view=net_worth", method: .get, headers: bearer(tokens)))
                #expect((linkedWorth["accounts"] as? [[String: Any]])?.allSatisfy { $0["included"] as? Bool == true && $0["unlinked"] as? Bool == false } == true)
                // New keys, made at Alpaca; then the account is unlinked and its history stays among the accounts.
                fake.regenerateKeys(id: "PKFAKEKEYID0002", secret: "fake-secret-key-rotated-9876543210zyx")
                let replaced = try await submit([
                    ("_api", "/api/brokerage/alpaca/\(alpaca.id)/keys"), ("_method", "PUT"), ("key_id", "PKFAKEKEYID0002"), ("secret_key", "fake-secret-key-rotated-9876543210zyx"),
                ])
                #expect(replaced.status == .seeOther, "\(Self.text(replaced))")
                #expect(try await page("/linked").contains("· key …0002 ·"))
                let unlinked = try await submit([("_api", "/api/brokerage/alpaca/\(alpaca.id)"), ("_method", "DELETE")])
                #expect(unlinked.status == .seeOther, "\(Self.text(unlinked))")
                let after = try await page("/linked")
                #expect(!after.contains(#"id="alpaca-\#(alpaca.id)""#))
                #expect(try await page("/").contains(#"<option value="\#(alpaca.id)">\#(name) (unlinked)</option>"#))
                // The unlinked account says so, takes no orders from its page, and is no longer counted in net worth.
                let unlinkedDashboard = try await page("/?account_id=\(alpaca.id)")
                #expect(unlinkedDashboard.contains(#"id="account-unlinked""#) && !unlinkedDashboard.contains(">New order</a>"))
                let unlinkedOrders = try await page("/orders?account_id=\(alpaca.id)")
                #expect(unlinkedOrders.contains("This account takes no orders") && !unlinkedOrders.contains(#"id="ticket""#))
                // Its targets can still be kept, but the targets page offers no rebalance to place.
                let weights: [String: Any] = ["targets": [["symbol": "VTI", "percent": "90"]], "cash_percent": "10"]
                let kept = try await RebalanceTests.put(client, "/api/accounts/\(alpaca.id)/targets", weights, headers: bearer(tokens))
                #expect(kept.status == .ok || kept.status == .created, "\(Self.text(kept))")
                let unlinkedTargets = try await page("/targets?account_id=\(alpaca.id)")
                #expect(unlinkedTargets.contains(#"id="drift""#) && unlinkedTargets.contains("This account takes no orders"))
                #expect(!unlinkedTargets.contains(#"id="plan-form""#) && !unlinkedTargets.contains(#"id="execute-form""#))
                let worth = try json(try await client.execute(uri: "/api/portfolio?view=net_worth", method: .get, headers: bearer(tokens)))
                let listedAccounts = try #require(worth["accounts"] as? [[String: Any]])
                let mirror = try #require(listedAccounts.first { $0["id"] as? String == alpaca.id.description })
                #expect(mirror["included"] as? Bool == false && mirror["unlinked"] as? Bool == true)
                let paperValue = try #require(listedAccounts.first { $0["id"] as? String == paper.id.description }?["value"] as? String)
                #expect(worth["folio_total"] as? String == paperValue, "only the paper account counts")
                #expect(try await page("/linked").contains(#"<span class="badge warn">unlinked</span>"#))
                // Another person's account (or none) on the transactions page: not found, as on every page.
                let foreign = try await client.execute(uri: "/transactions?account_id=\(UUID().uuidString.lowercased())", method: .get, headers: cookie)
                #expect(foreign.status == .notFound)
            }
        }
    }

    @Test("without JavaScript: paper cash is added and taken out from the dashboard, once per form, and a brokerage account has no such form", arguments: TestDatabaseKind.all)
    func paperCashWithoutJavaScript(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            _ = try await signUp(client, env, email: "paper-cash@example.com")
            let session = try await Self.signInWithoutJavaScript(client, email: "paper-cash@example.com")
            let cookie: HTTPFields = [.cookie: try #require(session[.cookie]), .accept: "text/html"]
            let account = try await env.firstAccount()
            let dashboard = Self.text(try await client.execute(uri: "/", method: .get, headers: cookie))
            #expect(dashboard.contains(#"<h2 id="paper-cash-heading">Paper cash</h2>"#))
            let token = String(try #require(dashboard.firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1))
            let keys = dashboard.matches(of: /name="_key" value="([0-9a-f-]{36})"/).map { String($0.output.1) }
            #expect(Set(keys).count == 2, "each form its own idempotency key: \(keys)")
            // A form comes back to the chart range it was sent from.
            let onThreeMonths = Self.text(try await client.execute(uri: "/?range=3M", method: .get, headers: cookie))
            #expect(onThreeMonths.contains(#"<input type="hidden" name="_next" value="/?range=3M">"#))
            #expect(dashboard.contains(#"<input type="hidden" name="_next" value="/">"#))
            func send(_ path: String, _ amount: String, key: String) async throws -> TestResponse {
                try await client.execute(uri: "/form", method: .post, headers: session, body: Self.form([
                    ("_api", "/api/accounts/\(account.id)/\(path)"), ("_next", "/"), ("_done", path == "deposits" ? "deposited" : "withdrawn"), ("_csrf", token), ("_key", key),
                    ("description", "Paper cash added"), ("amount", amount),
                ]))
            }
            // Spaces around a figure are trimmed, as app.js trims them: the same request as without them (the key's fingerprint is the body).
            let added = try await send("deposits", " 1234.56\t", key: keys[0])
            #expect(added.status == .seeOther, "\(Self.text(added))")
            // The page it leads to says what was done, once, in Folio's words only; a link cannot make it say so.
            #expect(dashboard.contains(#"<input type="hidden" name="_done" value="deposited">"#))
            #expect(added.headers[.location] == "/")
            #expect(added.headers[values: .setCookie].contains("__Host-folio_done=deposited:/; Path=/; Max-Age=60; Secure; SameSite=Strict"))
            var withDone = cookie
            withDone[.cookie] = (cookie[.cookie] ?? "") + "; __Host-folio_done=deposited:/"
            // Another page drawn meanwhile (another tab) neither says it nor clears it.
            let elsewhere = try await client.execute(uri: "/orders", method: .get, headers: withDone)
            #expect(!Self.text(elsewhere).contains(#"id="confirmation""#) && elsewhere.headers[values: .setCookie].isEmpty)
            let confirmedPage = try await client.execute(uri: "/", method: .get, headers: withDone)
            #expect(Self.text(confirmedPage).contains(#"<p class="notice ok" role="status" id="confirmation">Deposit received: the cash is in the account.</p>"#))
            #expect(confirmedPage.headers[values: .setCookie].contains("__Host-folio_done=; Path=/; Max-Age=0; Secure; SameSite=Strict"), "said once")
            withDone[.cookie] = (cookie[.cookie] ?? "") + "; __Host-folio_done=Call%20us"
            let unknown = Self.text(try await client.execute(uri: "/?done=deposited", method: .get, headers: withDone))
            #expect(!unknown.contains(#"id="confirmation""#) && !unknown.contains("Call us"))
            // The browser's Back and the same form sent again: the key answers with the first deposit, no second one,
            // and the page says so rather than "Deposit received" again.
            let again = try await send("deposits", "1234.56", key: keys[0])
            #expect(again.status == .seeOther)
            #expect(again.headers[values: .setCookie].contains("__Host-folio_done=already_done:/; Path=/; Max-Age=60; Secure; SameSite=Strict"))
            #expect(try await env.firstAccount().cash == (try account.cash + Cash(parsing: "1234.56")))
            withDone[.cookie] = (cookie[.cookie] ?? "") + "; __Host-folio_done=already_done:/"
            let repeated = Self.text(try await client.execute(uri: "/", method: .get, headers: withDone))
            #expect(repeated.contains(#"id="confirmation">This form had been sent already: what it asked was done then, once, and not again.</p>"#))
            // Sent again with other values under its old key: said in a web user's words, with what to do.
            let changed = try await send("deposits", "99.00", key: keys[0])
            #expect(changed.status == .unprocessableContent)
            #expect(Self.text(changed).contains("This form was sent before, with other values; it cannot send new ones.") && Self.text(changed).contains("Go back and reload the page for a fresh form."))
            #expect(try await env.firstAccount().cash == (try account.cash + Cash(parsing: "1234.56")))
            let tooMuch = try await send("withdrawals", "1000000.00", key: keys[1])
            #expect(tooMuch.status == .unprocessableContent)
            #expect(Self.text(tooMuch).contains("<code>insufficient_funds</code>") && Self.text(tooMuch).contains("<li>Amount exceeds the available cash"))
            #expect(Self.text(tooMuch).contains("available cash of " + Display.money(try account.cash + Cash(parsing: "1234.56"))), "read as money, as the page shows it")
            #expect(try await env.firstAccount().cash == (try account.cash + Cash(parsing: "1234.56")), "nothing taken")
            let after = Self.text(try await client.execute(uri: "/", method: .get, headers: cookie))
            #expect(after.contains(Display.money(try account.cash + Cash(parsing: "1234.56"))))
        }
    }

    @Test("notifications: the navigation counts the unread, the page lists them, and they are marked read one by one or all at once without JavaScript", arguments: TestDatabaseKind.all)
    func notificationsWithoutJavaScript(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            let tokens = try await signUp(client, env, email: "notices@example.com")
            let session = try await Self.signInWithoutJavaScript(client, email: "notices@example.com")
            let cookie: HTTPFields = [.cookie: try #require(session[.cookie]), .accept: "text/html"]
            func page(_ path: String) async throws -> String { Self.text(try await client.execute(uri: path, method: .get, headers: cookie)) }
            func unread() async throws -> Int {
                try #require(try json(try await client.execute(uri: "/api/notifications", method: .get, headers: bearer(tokens)))["unread_count"] as? Int)
            }
            // A time with digits below the microsecond, as a real clock gives: SQLite keeps it as a REAL that a Date read back can miss.
            env.clock.advance(by: 0.123_456_789)
            for _ in 0..<2 {
                let placed = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
                #expect(placed.status == .created)
            }
            await env.worker.drain()
            let count = try await unread()
            #expect(count >= 2, "an order filled is a notice")
            let listed = try json(try await client.execute(uri: "/api/notifications", method: .get, headers: bearer(tokens)))
            let first = try #require((listed["data"] as? [[String: Any]])?.first)
            let id = try #require(first["id"] as? String)

            let dashboard = try await page("/")
            #expect(dashboard.contains(#"Notifications <span class="badge">\#(count)<span class="visually-hidden"> unread</span></span></a>"#))
            let notices = try await page("/notifications")
            #expect(notices.contains(#"<h2 id="notice-\#(id)"><span class="badge">new</span> "#))
            #expect(notices.contains("\(count) unread"))
            #expect(notices.contains(#"<input type="hidden" name="through" value="\#(id)">"#), "mark all is bounded by the newest the page shows")
            // An account the navigation carries comes back with each mark.
            let carried = try await Self.secondAccount(env, email: "notices@example.com")
            let carriedNotices = try await page("/notifications?unread=true&account_id=\(carried)")
            #expect(carriedNotices.contains(#"name="_next" value="/notifications?unread=true&amp;account_id=\#(carried)""#))
            #expect(carriedNotices.contains(#"<input type="hidden" name="through" value="\#(id)">"#), "the newest of all, not of the unread page")
            let token = String(try #require(notices.firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1))
            func send(_ api: String) async throws -> TestResponse {
                try await client.execute(uri: "/form", method: .post, headers: session, body: Self.form([("_api", api), ("_next", "/notifications"), ("_csrf", token)]))
            }
            let one = try await send("/api/notifications/\(id)/read")
            #expect(one.status == .seeOther && one.headers[.location] == "/notifications")
            #expect(try await unread() == count - 1)
            #expect(!(try await page("/notifications")).contains(#"<h2 id="notice-\#(id)"><span class="badge">new</span>"#))
            #expect(try await page("/notifications?unread=true").contains("\(count - 1) unread"))
            // "Mark all" bounded by the newest the page showed: a notice that arrived since stays unread.
            let oldest = try #require((listed["data"] as? [[String: Any]])?.last?["id"] as? String)
            let bounded = try await client.execute(uri: "/form", method: .post, headers: session, body: Self.form([
                ("_api", "/api/notifications/read"), ("_next", "/notifications"), ("_csrf", token), ("through", oldest)]))
            #expect(bounded.status == .seeOther)
            #expect(try await unread() == count - 2, "only the oldest was marked (the first one was read already)")
            #expect(try await send("/api/notifications/read").status == .seeOther)
            #expect(try await unread() == 0)
            let after = try await page("/notifications?unread=true")
            #expect(after.contains("Nothing unread") && after.contains("No unread notifications."))
            #expect(!after.contains(#"<span class="visually-hidden"> unread</span>"#), "no badge once all are read")
            #expect(try await page("/notifications").contains(#"<h2 id="notice-\#(id)">"#), "read ones stay listed")
            // Someone else's notification: the API's 404, as a page.
            let other = try await send("/api/notifications/\(UUID().uuidString.lowercased())/read")
            #expect(other.status == .notFound)
        }
    }

    @Test("without JavaScript: an administrator disables and enables a user from the admin page, never themselves", arguments: TestDatabaseKind.all)
    func adminDisablesWithoutJavaScript(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            try await UserAdministration(services: env.services).createAdmin(email: "root@example.com", password: strongPassword)
            let member = try await signUp(client, env, email: "member@example.com")
            let memberID = try #require(try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(member)))["id"] as? String)
            let rootID = try #require(try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(
                try json(try await post(client, "/api/auth/login", ["email": "root@example.com", "password": strongPassword])))))["id"] as? String)
            let session = try await Self.signInWithoutJavaScript(client, email: "root@example.com")
            let cookie: HTTPFields = [.cookie: try #require(session[.cookie]), .accept: "text/html"]
            func page() async throws -> String { Self.text(try await client.execute(uri: "/admin", method: .get, headers: cookie)) }
            let before = try await page()
            #expect(before.contains("/api/admin/users/\(memberID)/disable"))
            #expect(!before.contains("/api/admin/users/\(rootID)/disable"), "no form to disable oneself")
            let carried = try await Self.secondAccount(env, email: "root@example.com")
            let carriedAdmin = Self.text(try await client.execute(uri: "/admin?account_id=\(carried)", method: .get, headers: cookie))
            #expect(carriedAdmin.contains(#"name="_next" value="/admin?account_id=\#(carried)""#), "a form comes back with the account the navigation carries")
            // Another person's account (or none) is not carried: every link would lead to "not found".
            let foreign = UUID().uuidString.lowercased()
            let foreignAdmin = Self.text(try await client.execute(uri: "/admin?account_id=\(foreign)", method: .get, headers: cookie))
            #expect(foreignAdmin.contains(#"name="_next" value="/admin""#) && !foreignAdmin.contains(foreign), "\(foreignAdmin.prefix(200))")
            let membersAccount = try await Self.secondAccount(env, email: "member@example.com")
            let membersOnSettings = Self.text(try await client.execute(uri: "/settings?account_id=\(membersAccount)", method: .get, headers: cookie))
            #expect(membersOnSettings.contains(#"<a href="/orders">Orders</a>"#) && !membersOnSettings.contains(membersAccount))
            // A page that could not show its account does not carry it on: its links lead out, not to the same 404.
            let foreignOrders = Self.text(try await client.execute(uri: "/orders?account_id=\(foreign)", method: .get, headers: cookie))
            #expect(foreignOrders.contains(#"<a href="/orders">Orders</a>"#) && foreignOrders.contains(#"<a class="brand" href="/">"#), "\(foreignOrders.prefix(200))")
            let token = String(try #require(before.firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1))
            func send(_ api: String) async throws -> TestResponse {
                try await client.execute(uri: "/form", method: .post, headers: session, body: Self.form([("_api", api), ("_next", "/admin"), ("_csrf", token)]))
            }
            let disabled = try await send("/api/admin/users/\(memberID)/disable")
            #expect(disabled.status == .seeOther && disabled.headers[.location] == "/admin")
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(member)).status == .unauthorized, "signed out everywhere")
            let after = try await page()
            #expect(after.contains("/api/admin/users/\(memberID)/enable") && !after.contains("/api/admin/users/\(memberID)/disable"))
            // Oneself, through a hand-made form: the API's refusal, as a page.
            let own = try await send("/api/admin/users/\(rootID)/disable")
            #expect(own.status.code >= 400 && own.status.code < 500)
            #expect(try await send("/api/admin/users/\(memberID)/enable").status == .seeOther)
            #expect(try await page().contains("/api/admin/users/\(memberID)/disable"))
            let again = try await post(client, "/api/auth/login", ["email": "member@example.com", "password": strongPassword])
            #expect(again.status == .ok, "enabled again")

            // Someone erased at their request stays disabled for good: no form, and the API refuses to enable them.
            var erase = bearer(try json(again))
            erase[.contentType] = "application/json"
            let erased = try await client.execute(uri: "/api/me", method: .delete, headers: erase, body: ByteBuffer(string: #"{"password": "\#(strongPassword)"}"#))
            #expect(erased.status == .noContent || erased.status == .ok, "\(Self.text(erased))")
            let listed = try await page()
            #expect(listed.contains(#"<span class="badge">erased</span>"#))
            #expect(!listed.contains("/api/admin/users/\(memberID)/enable") && !listed.contains("/api/admin/users/\(memberID)/disable"))
            let revived = try await send("/api/admin/users/\(memberID)/enable")
            #expect(revived.status == .conflict && Self.text(revived).contains("user_erased"))
        }
    }

    @Test("without JavaScript: targets set by asset class are shown and saved by class, and the drift names each class", arguments: TestDatabaseKind.all)
    func targetsByClassWithoutJavaScript(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            let tokens = try await signUp(client, env, email: "classes@example.com")
            try await RebalanceTests.buy(client, env, tokens, "AAPL", 50)
            try await RebalanceTests.buy(client, env, tokens, "VTI", 40)
            let account = try await env.firstAccount()
            let byClass: [String: Any] = ["asset_classes": [["asset_class": "etf", "percent": "50"], ["asset_class": "equity", "percent": "45"]], "cash_percent": "5"]
            #expect(try await RebalanceTests.put(client, "/api/accounts/\(account.id)/targets", byClass, headers: bearer(tokens)).status == .ok)
            let formHeaders = try await Self.signInWithoutJavaScript(client, email: "classes@example.com")
            let cookie = try #require(formHeaders[.cookie])
            let page = Self.text(try await client.execute(uri: "/targets", method: .get, headers: [.cookie: cookie]))
            #expect(page.contains(#"<option value="equity" selected>Stocks</option>"#) && page.contains(#"<option value="etf" selected>ETFs</option>"#), "\(page)")
            #expect(page.contains(#"name="asset_classes.0.percent" value="45""#) || page.contains(#"name="asset_classes.1.percent" value="45""#))
            #expect(!page.contains(#"name="targets.0.symbol""#), "no symbol rows to fill in that would replace the classes")
            let labels = page.matches(of: /<th scope="row">([^<]+)<\/th>/).map { String($0.output.1) }
            #expect(Set(labels) == ["Stocks", "ETFs", "Cash"], "\(labels)")
            // Every mode the API takes is offered: full, buy only and sell only.
            #expect(page.contains(#"<option value="full">"#) && page.contains(#"<option value="buy_only">"#) && page.contains(#"<option value="sell_only">"#))

            // The page's form as the browser sends it: every row, the unused ones empty.
            let form = String(try #require(page.firstMatch(of: /<form[^>]*id="targets"(?:(?!<\/form>).)*<\/form>/.dotMatchesNewlines())?.output))
            let hidden = form.matches(of: /<input type="hidden" name="([^"]+)" value="([^"]*)">/).map { (String($0.output.1), String($0.output.2)) }
            var rows: [(String, String)] = [("asset_classes.0.asset_class", "equity"), ("asset_classes.0.percent", "60"), ("asset_classes.1.asset_class", "bond"), ("asset_classes.1.percent", "35")]
            for index in 2..<7 { rows += [("asset_classes.\(index).asset_class", ""), ("asset_classes.\(index).percent", "")] }
            let saved = try await client.execute(
                uri: "/form", method: .post, headers: formHeaders,
                body: Self.form(hidden + rows + [("cash_percent", "5"), ("drift_band.absolute_points", "5"), ("drift_band.relative_percent", "25")]))
            #expect(saved.status == .seeOther, "\(Self.text(saved))")
            let stored = try json(try await client.execute(uri: "/api/accounts/\(account.id)/targets", method: .get, headers: bearer(tokens)))
            let classes = (stored["asset_classes"] as? [[String: Any]] ?? []).map { "\($0["asset_class"] ?? "") \($0["percent"] ?? "")" }
            #expect(Set(classes) == ["equity 60", "bond 35"], "\(stored)")

            // And by symbol, when asked: the classes are replaced only when symbol weights are saved.
            let bySymbol = Self.text(try await client.execute(uri: "/targets?by=symbol", method: .get, headers: [.cookie: cookie]))
            #expect(bySymbol.contains(#"name="targets.0.symbol""#) && bySymbol.contains("Set weights by asset class instead"))
        }
    }

    @Test("without JavaScript: a rebalance preview is a page with the trades and a form that places them once", arguments: TestDatabaseKind.all)
    func rebalanceWithoutJavaScript(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            let tokens = try await signUp(client, env, email: "nojsplan@example.com")
            try await RebalanceTests.buy(client, env, tokens, "AAPL", 300)
            let account = try await env.firstAccount()
            #expect(try await RebalanceTests.put(client, "/api/accounts/\(account.id)/targets", RebalanceTests.targets, headers: bearer(tokens)).status == .ok)
            let formHeaders = try await Self.signInWithoutJavaScript(client, email: "nojsplan@example.com")
            let cookie = try #require(formHeaders[.cookie])
            let page = Self.text(try await client.execute(uri: "/targets", method: .get, headers: [.cookie: cookie]))
            #expect(!page.contains("needs JavaScript"))
            let form = String(try #require(page.firstMatch(of: /<form[^>]*id="plan-form"(?:(?!<\/form>).)*<\/form>/.dotMatchesNewlines())?.output))
            #expect(form.contains(#"name="_show" value="rebalance-plan""#))
            let token = String(try #require(page.firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1))

            let preview = try await client.execute(
                uri: "/form", method: .post, headers: formHeaders,
                body: Self.form([("_api", "/api/portfolio/rebalance"), ("_show", "rebalance-plan"), ("_csrf", token), ("mode", "full"), ("cash_reserve", ""), ("min_trade_amount", "")]))
            #expect(preview.status == .ok)
            let plan = Self.text(preview)
            #expect(plan.contains("<td>sell ") && plan.contains(" AAPL</td>") && plan.contains(" MSFT</td>"), "\(plan)")
            #expect(try await env.orders().count == 1, "a preview places nothing")
            // The page's form, as the browser sends it.
            let execute = String(try #require(plan.firstMatch(of: /<form[^>]*id="execute-form"(?:(?!<\/form>).)*<\/form>/.dotMatchesNewlines())?.output))
            let fields = execute.matches(of: /<input type="hidden" name="([^"]+)" value="([^"]*)">/).map { (String($0.output.1), String($0.output.2)) }
            #expect(fields.contains { $0 == ("execute", "true") } && fields.contains { $0 == ("mode", "full") } && fields.contains { $0.0 == "_key" })
            let placed = try await client.execute(uri: "/form", method: .post, headers: formHeaders, body: Self.form(fields))
            #expect(placed.status == .seeOther && placed.headers[.location] == "/targets", "\(Self.text(placed))")
            let again = try await client.execute(uri: "/form", method: .post, headers: formHeaders, body: Self.form(fields))
            #expect(again.status == .seeOther)
            await env.worker.drain()
            let runs = try await env.database.sql.raw("SELECT COUNT(*) AS n FROM rebalance_runs").first()?.decode(column: "n", as: Int.self)
            #expect(runs == 1, "the same page's form sent twice is one run")
            #expect(try await env.orders().count > 1)
        }
    }

    @Test("without JavaScript: a rebalance around a symbol left out, from the preview to the run", arguments: [TestDatabaseKind.sqlite])
    func rebalanceAroundWithoutJavaScript(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            let tokens = try await signUp(client, env, email: "nojsaround@example.com")
            try await RebalanceTests.buy(client, env, tokens, "AAPL", 300)
            try await RebalanceTests.buy(client, env, tokens, "MSFT", 90)
            let account = try await env.firstAccount()
            #expect(try await RebalanceTests.put(client, "/api/accounts/\(account.id)/targets", RebalanceTests.targets, headers: bearer(tokens)).status == .ok)
            let formHeaders = try await Self.signInWithoutJavaScript(client, email: "nojsaround@example.com")
            let page = Self.text(try await client.execute(uri: "/targets", method: .get, headers: [.cookie: try #require(formHeaders[.cookie])]))
            #expect(page.contains(#"name="excluded_symbols""#))
            let token = String(try #require(page.firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1))
            func preview(_ excluded: String) async throws -> (HTTPResponse.Status, String) {
                let answer = try await client.execute(
                    uri: "/form", method: .post, headers: formHeaders,
                    body: Self.form([("_api", "/api/portfolio/rebalance"), ("_show", "rebalance-plan"), ("_csrf", token), ("mode", "full"), ("excluded_symbols", excluded)]))
                return (answer.status, Self.text(answer))
            }
            let (typoStatus, typo) = try await preview("appl")
            #expect(typoStatus == .unprocessableContent && typo.contains("APPL is neither held in the account nor among its targets."), "\(typo)")
            let (status, plan) = try await preview(" aapl, ")
            #expect(status == .ok, "\(plan)")
            #expect(plan.contains("AAPL is left as it is") && !plan.contains(" AAPL</td>") && plan.contains(" MSFT</td>"), "\(plan)")
            let execute = String(try #require(plan.firstMatch(of: /<form[^>]*id="execute-form"(?:(?!<\/form>).)*<\/form>/.dotMatchesNewlines())?.output))
            let fields = execute.matches(of: /<input type="hidden" name="([^"]+)" value="([^"]*)">/).map { (String($0.output.1), String($0.output.2)) }
            #expect(fields.contains { $0 == ("excluded_symbols", "aapl,") }, "\(fields)")
            let placed = try await client.execute(uri: "/form", method: .post, headers: formHeaders, body: Self.form(fields))
            #expect(placed.status == .seeOther, "\(Self.text(placed))")
            let runs = try json(try await client.execute(uri: "/api/portfolio/rebalances", method: .get, headers: bearer(tokens)))
            let run = try #require((runs["data"] as? [[String: Any]])?.first, "\(runs)")
            #expect(run["excluded_symbols"] as? [String] == ["AAPL"], "\(run)")
            #expect(!(run["planned_trades"] as? [[String: Any]] ?? []).contains { $0["symbol"] as? String == "AAPL" }, "\(run)")
            // The bridge splits the list as app.js does: at commas and spaces.
            #expect(String(decoding: try FormBridge.json([("excluded_symbols", "aapl,MSFT \t vti")]), as: UTF8.self) == #"{"excluded_symbols":["aapl","MSFT","vti"]}"#)
        }
    }

    @Test("a used or made-up reset or verification link sent from its page says to ask for a new link, not to correct the form", arguments: [TestDatabaseKind.sqlite])
    func deadLinkPage(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, _ in
            for (api, fields) in [("/api/auth/password-reset/confirm", [("token", "not-a-real-token-0000000000000000"), ("new_password", "another long passphrase here")]),
                                  ("/api/auth/verify-email", [("token", "not-a-real-token-0000000000000000")])] {
                let page = try await client.execute(uri: "/form", method: .post, headers: Self.browserForm, body: Self.form([("_api", api)] + fields))
                let html = Self.text(page)
                #expect(page.status == .unprocessableContent, "\(api)")
                #expect(html.contains("Ask for a new link") && !html.contains("send it again, corrected"), "\(api): \(html)")
            }
        }
    }

    @Test("without JavaScript: a plan page left open while the targets change places nothing; its form is refused, saying why", arguments: TestDatabaseKind.all)
    func stalePlanPage(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            let tokens = try await signUp(client, env, email: "staleplan@example.com")
            let account = try await env.firstAccount()
            #expect(try await RebalanceTests.put(client, "/api/accounts/\(account.id)/targets", RebalanceTests.targets, headers: bearer(tokens)).status == .ok)
            let formHeaders = try await Self.signInWithoutJavaScript(client, email: "staleplan@example.com")
            let page = Self.text(try await client.execute(uri: "/targets", method: .get, headers: [.cookie: try #require(formHeaders[.cookie])]))
            let token = String(try #require(page.firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1))
            let preview = try await client.execute(
                uri: "/form", method: .post, headers: formHeaders,
                body: Self.form([("_api", "/api/portfolio/rebalance"), ("_show", "rebalance-plan"), ("_csrf", token), ("mode", "full"), ("cash_reserve", ""), ("min_trade_amount", "")]))
            let plan = Self.text(preview)
            let execute = String(try #require(plan.firstMatch(of: /<form[^>]*id="execute-form"(?:(?!<\/form>).)*<\/form>/.dotMatchesNewlines())?.output))
            let fields = execute.matches(of: /<input type="hidden" name="([^"]+)" value="([^"]*)">/).map { (String($0.output.1), String($0.output.2)) }
            #expect(fields.contains { $0 == ("targets_version", "1") } && fields.contains { $0.0 == "previewed_estimated_cost" && !$0.1.isEmpty }, "\(fields)")
            // Another tab saves other targets.
            let other: [String: Any] = ["targets": [["symbol": "KO", "percent": "90"]], "cash_percent": "10"]
            #expect(try await RebalanceTests.put(client, "/api/accounts/\(account.id)/targets", other, headers: bearer(tokens)).status == .ok)
            let placed = try await client.execute(uri: "/form", method: .post, headers: formHeaders, body: Self.form(fields))
            #expect(placed.status == .conflict)
            #expect(Self.text(placed).contains("The targets changed after this plan was previewed"), "\(Self.text(placed))")
            await env.worker.drain()
            #expect(try await env.orders().isEmpty)
            // The bridge sends the version as the number the API takes.
            #expect(String(decoding: try FormBridge.json([("targets_version", "12"), ("mode", "7")]), as: UTF8.self) == #"{"mode":"7","targets_version":12}"#)
        }
    }

    @Test("a form refused before it reaches the API (its type, its fields, its origin) is a page for a browser and a problem for anyone else", arguments: [TestDatabaseKind.sqlite])
    func formRefusedBeforeTheAPI(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            let browser: HTTPFields = [.contentType: "application/x-www-form-urlencoded", .accept: "text/html", HTTPField.Name("Sec-Fetch-Site")!: "same-origin"]
            let signIn = Self.form([("_api", "/api/auth/login"), ("email", "a@example.com"), ("password", strongPassword)])
            var json = browser
            json[.contentType] = "application/json"
            var unplaced = browser
            unplaced[HTTPField.Name("Sec-Fetch-Site")!] = nil
            let cases: [(String, HTTPFields, ByteBuffer, HTTPResponse.Status, String)] = [
                ("too many fields", browser, Self.form((0...FormBridge.maximumFields).map { ("f\($0)", "1") }), .unprocessableContent, "form"),
                ("not a form", json, signIn, .unsupportedMediaType, "unsupported_media_type"),
                ("from no page", unplaced, signIn, .forbidden, "csrf_failed"),
            ]
            for (name, headers, body, status, shown) in cases {
                let page = try await client.execute(uri: "/form", method: .post, headers: headers, body: body)
                #expect(page.status == status, "\(name)")
                #expect(page.headers[.contentType]?.hasPrefix("text/html") == true, "\(name): \(page.headers[.contentType] ?? "")")
                #expect(Self.text(page).contains(shown) && Self.text(page).contains("<a href=\"/\">Dashboard</a>"), "\(name)")
                // A client that does not ask for HTML gets the problem document, as before.
                var plain = headers
                plain[.accept] = "application/json"
                let problem = try await client.execute(uri: "/form", method: .post, headers: plain, body: body)
                #expect(problem.status == status && problem.headers[.contentType] == ProblemDetails.mediaType, "\(name)")
            }
            // A page opened at another address of the server (localhost for 127.0.0.1): told where Folio is, not to reload.
            var elsewhere = browser
            elsewhere[.origin] = "http://localhost:1"
            let moved = Self.text(try await client.execute(uri: "/form", method: .post, headers: elsewhere, body: signIn))
            let own = try #require(OriginGuardMiddleware.ownOrigin(env.configuration))
            #expect(moved.contains("Open Folio at \(own)") && !moved.contains("older than your session"), "\(moved)")
            // A hand-made form's bad `_api`: its message once, the field named without its mark.
            let badRoute = Self.text(try await client.execute(
                uri: "/form", method: .post, headers: browser, body: Self.form([("_api", "/api/accounts/..%2f..%2fform")])))
            #expect(badRoute.components(separatedBy: "must name an API route").count == 2, "said once: \(badRoute)")
            #expect(badRoute.contains("<li>Api must name an API route") && badRoute.contains(Display.checkWhatYouEntered))
        }
    }

    @Test("an error page's way back stays on the site: a path that starts with two slashes is not a link to another host", arguments: [TestDatabaseKind.sqlite])
    func errorPageBackLink(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            var headers = try await Self.cookieSession(client, env, email: "back@example.com")
            headers[.accept] = "text/html"
            for uri in ["//orders?limit=abc", "/orders?limit=abc"] {
                let page = try await client.execute(uri: uri, method: .get, headers: headers)
                #expect(page.status == .unprocessableContent, "\(uri)")
                #expect(!Self.text(page).contains("href=\"//"), "\(uri)")
            }
            #expect(Self.text(try await client.execute(uri: "/orders?limit=abc", method: .get, headers: headers)).contains("href=\"/orders\""))
            // An address opened, not a form sent: the advice is about the address.
            for uri in ["/assets/nope.js", "/orders?x=%00"] {
                let refused = Self.text(try await client.execute(uri: uri, method: .get, headers: headers))
                #expect(refused.contains(PageRenderer.checkTheAddress) && !refused.contains("Go back to the form"), "\(uri)")
            }
        }
    }

    @Test("a refusal a browser meets outside the API before any page answers (a body past the limit, a NUL in a page's query) is a page; the API stays JSON", arguments: [TestDatabaseKind.sqlite])
    func refusalsBeforeThePagesArePages(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.maxBodySize = 4096 }) { client, env in
            let html: HTTPFields = [.accept: "text/html", .contentType: "application/x-www-form-urlencoded", HTTPField.Name("Sec-Fetch-Site")!: "same-origin"]
            let big = Self.form([("_api", "/api/auth/login"), ("note", String(repeating: "x", count: 10_000))])
            let cases: [(String, HTTPRequest.Method, ByteBuffer?, HTTPResponse.Status)] = [
                ("/form", .post, big, .contentTooLarge),
                ("/orders?cursor=%00", .get, nil, .badRequest),
            ]
            for (uri, method, body, status) in cases {
                let page = try await client.execute(uri: uri, method: method, headers: html, body: body)
                #expect(page.status == status, "\(uri)")
                #expect(page.headers[.contentType]?.hasPrefix("text/html") == true, "\(uri): \(page.headers[.contentType] ?? "")")
                #expect(Self.text(page).contains("<a href=\"/\">Dashboard</a>"), "\(uri)")
                var json = html
                json[.accept] = "application/json"
                let problem = try await client.execute(uri: uri, method: method, headers: json, body: body)
                #expect(problem.status == status && problem.headers[.contentType] == ProblemDetails.mediaType, "\(uri)")
            }
            // The API answers problems whatever the client accepts.
            let api = try await client.execute(uri: "/api/orders?cursor=%00", method: .get, headers: [.accept: "text/html"])
            #expect(api.headers[.contentType] == ProblemDetails.mediaType)
        }
    }

    @Test("a browser turned away by the rate limit gets a page that says when to come back; the API and other clients get the problem", arguments: [TestDatabaseKind.sqlite])
    func rateLimitedPage(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.rateLimit = .init(enabled: true, requestsPerMinute: 2, authRequestsPerMinute: 2) }) { client, _ in
            let html: HTTPFields = [.accept: "text/html"]
            for _ in 0..<2 { #expect(try await client.execute(uri: "/signin", method: .get, headers: html).status == .ok) }
            let page = try await client.execute(uri: "/signin", method: .get, headers: html)
            #expect(page.status == .tooManyRequests)
            #expect(page.headers[.contentType]?.hasPrefix("text/html") == true, "\(page.headers[.contentType] ?? "")")
            #expect(Self.text(page).contains("Nothing was changed; try again in a moment."))
            #expect((page.headers[.retryAfter].flatMap(Int.init) ?? 0) >= 1)
            #expect(page.headers[RateLimitMiddleware.policyHeader] != nil && page.headers[RateLimitMiddleware.stateHeader] != nil)
            let problem = try await client.execute(uri: "/signin", method: .get, headers: [.accept: "application/json"])
            #expect(problem.status == .tooManyRequests && problem.headers[.contentType] == ProblemDetails.mediaType)
            let api = try await client.execute(uri: "/api/portfolio", method: .get, headers: html)
            #expect(api.status == .tooManyRequests && api.headers[.contentType] == ProblemDetails.mediaType)
        }
    }

    @Test("a form without JavaScript is one request against the address's rate limit, not two (the form and the API request it stands for)", arguments: [TestDatabaseKind.sqlite])
    func formCountedOnce(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.rateLimit = .init(enabled: true, requestsPerMinute: 3, authRequestsPerMinute: 100) }) { client, _ in
            let headers: HTTPFields = [
                .contentType: "application/x-www-form-urlencoded", .accept: "text/html", HTTPField.Name("Sec-Fetch-Site")!: "same-origin",
            ]
            func signIn() async throws -> TestResponse {
                try await client.execute(
                    uri: "/form", method: .post, headers: headers,
                    body: ByteBuffer(string: "_api=/api/auth/login&email=nobody%40example.com&password=not+the+password+at+all"))
            }
            for attempt in 1...3 {
                let status = try await signIn().status
                #expect(status != .tooManyRequests, "form \(attempt) of 3")
            }
            let fourth = try await signIn().status
            #expect(fourth == .tooManyRequests, "the fourth is past the limit")
        }
    }

    @Test("without JavaScript: a form signs in through the bridge, places an order with the session's token, and is refused without it", arguments: TestDatabaseKind.all)
    func formsWithoutJavaScript(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.csrfProtectionEnabled = true }) { client, env in
            try await signUp(client, env, email: "nojs@example.com")
            // As a browser posts a form from a Folio page.
            let formHeaders: HTTPFields = [
                .contentType: "application/x-www-form-urlencoded", .accept: "text/html", HTTPField.Name("Sec-Fetch-Site")!: "same-origin",
            ]
            // A form from nowhere (no Sec-Fetch-Site, no Origin) cannot even sign in: that would be login CSRF.
            let unplaced = try await client.execute(
                uri: "/form", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                body: Self.form([("_api", "/api/auth/login"), ("session", "cookie"), ("email", "nojs@example.com"), ("password", strongPassword)]))
            #expect(unplaced.status == .forbidden)
            #expect(unplaced.headers[.setCookie] == nil)
            // Another site's form is refused by the origin guard.
            var crossSite = formHeaders
            crossSite[HTTPField.Name("Sec-Fetch-Site")!] = "cross-site"
            crossSite[.origin] = "https://evil.example"
            let foreign = try await client.execute(
                uri: "/form", method: .post, headers: crossSite,
                body: Self.form([("_api", "/api/auth/login"), ("session", "cookie"), ("email", "nojs@example.com"), ("password", strongPassword)]))
            #expect(foreign.status == .forbidden)
            // A form built to exhaust the server (a name of thousands of parts) is refused before anything is built.
            let deep = try await client.execute(
                uri: "/form", method: .post, headers: formHeaders,
                body: Self.form([("_api", "/api/auth/login"), (Array(repeating: "a", count: 5_000).joined(separator: "."), "1")]))
            #expect(deep.status == .unprocessableContent)
            let signIn = try await client.execute(
                uri: "/form", method: .post, headers: formHeaders,
                body: Self.form([("_api", "/api/auth/login"), ("_next", "/orders"), ("session", "cookie"), ("email", "nojs@example.com"), ("password", strongPassword)]))
            #expect(signIn.status == .seeOther)
            #expect(signIn.headers[.location] == "/orders")
            let cookie = String(try #require(signIn.headers[.setCookie]).split(separator: ";")[0])
            #expect(cookie.hasPrefix("__Host-folio_session="))

            var session = formHeaders
            session[.cookie] = cookie
            let page = Self.text(try await client.execute(uri: "/orders", method: .get, headers: [.cookie: cookie]))
            let token = try #require(page.firstMatch(of: /name="_csrf" value="([^"]+)"/)?.output.1)
            let key = try #require(page.firstMatch(of: /name="_key" value="([^"]+)"/)?.output.1)
            let order: [(String, String)] = [
                ("_api", "/api/orders"), ("_next", "/orders"), ("_key", String(key)), ("symbol", "AAPL"), ("side", "BUY"), ("order_type", "MARKET"),
                ("quantity", "2"), ("time_in_force", "DAY"), ("limit_price", ""),
            ]
            // Without the token the API's CSRF check refuses it, and nothing is placed.
            let forged = try await client.execute(uri: "/form", method: .post, headers: session, body: Self.form(order))
            #expect(forged.status == .forbidden)
            #expect(try await env.orders().isEmpty)
            let placed = try await client.execute(uri: "/form", method: .post, headers: session, body: Self.form(order + [("_csrf", String(token))]))
            #expect(placed.status == .seeOther)
            #expect(placed.headers[.location] == "/orders")
            // The same form sent again (a reload, a double click) is the same order.
            let again = try await client.execute(uri: "/form", method: .post, headers: session, body: Self.form(order + [("_csrf", String(token))]))
            #expect(again.status == .seeOther)
            #expect(try await env.orders().count == 1)

            // A refusal is a page for a browser, with the field's message, and the API's problem for anyone else.
            let bad = order.map { $0.0 == "quantity" ? ("quantity", "many") : $0.0 == "_key" ? ("_key", UUID().uuidString) : $0 } + [("_csrf", String(token))]
            let refused = try await client.execute(uri: "/form", method: .post, headers: session, body: Self.form(bad))
            #expect(refused.status == .unprocessableContent)
            #expect(refused.headers[.contentType] == "text/html; charset=utf-8")
            #expect(Self.text(refused).contains("<li>Quantity must be "))
            // In the signed-in layout, with the navigation and sign-out, as the page the form came from.
            #expect(Self.text(refused).contains(#"<nav aria-label="Main">"#) && Self.text(refused).contains(#"value="/api/auth/logout""#))
            // Someone signed out who is refused gets the signed-out layout.
            let wrongSignIn = try await client.execute(
                uri: "/form", method: .post, headers: formHeaders,
                body: Self.form([("_api", "/api/auth/login"), ("_next", "/"), ("session", "cookie"), ("email", "nobody@example.com"), ("password", strongPassword)]))
            #expect(wrongSignIn.status == .unauthorized && !Self.text(wrongSignIn).contains(#"<nav aria-label="Main">"#))
            var plain = session
            plain[.accept] = "application/json"
            let asProblem = try await client.execute(uri: "/form", method: .post, headers: plain, body: Self.form(bad))
            #expect(try problem(asProblem).code == "validation_failed")

            // Only API routes, never a page or another site.
            for api in ["/admin", "https://evil.example/api/orders", "/api/../admin"] {
                let odd = try await client.execute(uri: "/form", method: .post, headers: session, body: Self.form([("_api", api), ("_csrf", String(token))]))
                #expect(odd.status == .unprocessableContent, "\(api)")
            }
            // After success, _next is followed only on this site.
            let away = try await client.execute(
                uri: "/form", method: .post, headers: session,
                body: Self.form([("_api", "/api/notifications/read"), ("_next", "//evil.example"), ("_csrf", String(token))]))
            #expect(away.headers[.location] == "/")
        }
    }
}
