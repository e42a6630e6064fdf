import Foundation
import HTTPTypes
import Hummingbird
import Synchronization

/// Forms without JavaScript. A page's form posts, as browsers do, to
/// `POST /form` with its fields and hidden ones: `_api` (the API route),
/// `_method`, `_next` (where to go after success), `_done` (what that page
/// confirms), `_csrf` (the session's CSRF token) and, where a request must
/// happen once, `_key` (its idempotency key). The bridge turns the fields into
/// the JSON `app.js` would send (values trimmed but passwords, dotted names
/// nest, index segments make arrays, amounts stay strings) and
/// hands the request to the router itself, with the browser's cookie and the
/// token as `X-CSRF-Token`: every middleware, the CSRF check included, runs on
/// it exactly as on a request from the script. Success is a 303 to `_next`
/// (with any cookie the API set, and the confirmation's); a problem comes back, to a browser, as a
/// page with its detail and each field's message (the browser's Back button
/// returns to the filled-in form), and to any other client as the API's answer.
struct FormBridge: Sendable {
    /// The router, set once it is built (the bridge is one of its routes).
    final class Slot: Sendable {
        let responder = Mutex<RouterResponder<FolioRequestContext>?>(nil)
    }

    static let path = "/form"
    static let methods: [String: HTTPRequest.Method] = ["POST": .post, "PUT": .put, "PATCH": .patch, "DELETE": .delete]
    /// Names the bridge reads itself; they never reach the API.
    /// `_show` names an `AnswerPage`: on success the API's answer is shown as that page, not followed by a redirect.
    /// `_again` names the `AnswerPage` a refusal shows again, with the problem, from the page's own fields (`_secret`, `_uri`).
    static let controlFields: Set<String> = ["_api", "_method", "_next", "_done", "_csrf", "_key", "_show", "_again", "_secret", "_uri"]
    /// Fields whose "true"/"false" text is a JSON boolean: `execute`, and each
    /// notification category's email choice (a checkbox after a hidden "false").
    static let booleanFields: Set<String> = Set(["execute"] + NoticeCategory.allCases.map { "email.\($0.rawValue)" })
    /// Fields whose digits are a JSON number (`data-integer` in app.js): the targets version a plan was previewed for.
    static let integerFields: Set<String> = ["targets_version"]
    /// Fields whose text is a list of words, separated by commas or spaces (`data-list` in app.js): the symbols a rebalance leaves out.
    static let listFields: Set<String> = ["excluded_symbols"]

    /// Limits on what a form may hold, checked before anything is built from it.
    static let maximumFields = 400
    static let maximumDepth = 6

    let slot: Slot
    let renderer: PageRenderer
    /// Finds who a page the bridge answers with is for, so it keeps their layout (navigation, sign-out).
    let identity: IdentityServices
    /// CSRF protection is on: a form must show it comes from a Folio page.
    let requireSameOrigin: Bool

    struct Refused: Error {}

    func handle(_ request: Request, context: FolioRequestContext) async throws -> Response {
        do {
            return try await forward(request, context: context)
        } catch {
            // A form refused before it reached the API (its type, its size, where it came from): a browser
            // gets a page all the same. A 5xx stays the problem middleware's, which logs and reports it.
            guard !(error is Refused), ProblemMiddleware.isBrowserPage(request) else { throw error }
            let problem = ProblemMiddleware.appError(for: error, context: context)
            guard problem.status.code < 500 else { throw error }
            // The bridge's own refusal page: the bridge's route ignores the cookie, so the viewer is read here.
            return renderer.refusalPage(problem, viewer: await viewer(of: request), sentForm: true)
        }
    }

    private func forward(_ request: Request, context: FolioRequestContext) async throws -> Response {
        guard request.headers[.contentType]?.lowercased().hasPrefix("application/x-www-form-urlencoded") == true else {
            throw AppError(.unsupportedMediaType, code: "unsupported_media_type", detail: "POST /form takes a form (application/x-www-form-urlencoded).")
        }
        // The sign-in, sign-up and reset routes need no session, so no token protects them: a form another
        // site posts could sign the visitor into the attacker's account. A browser says where a form
        // comes from (Sec-Fetch-Site, or an Origin the origin guard has already checked); neither is a refusal.
        if requireSameOrigin, request.headers[OriginGuardMiddleware.fetchSite]?.lowercased() != "same-origin", request.headers[.origin] == nil {
            throw AppError(.forbidden, code: "csrf_failed", detail: "A form must come from a Folio page.")
        }
        let body = try await request.body.collect(upTo: context.maxUploadSize)
        let pairs = FormQuery.pairs(String(buffer: body))
        guard pairs.count <= Self.maximumFields, pairs.allSatisfy({ $0.0.utf8.count <= 200 && $0.0.split(separator: ".").count <= Self.maximumDepth }) else {
            throw AppError.validation(
                field: "form", code: "too_large", message: "A form has at most \(Self.maximumFields) fields, each named in at most \(Self.maximumDepth) parts.")
        }
        let control = Dictionary(pairs.filter { Self.controlFields.contains($0.0) }, uniquingKeysWith: { _, last in last })
        guard let api = control["_api"], api.hasPrefix("/api/"), !api.contains(".."), api.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F }),
              let method = Self.methods[(control["_method"] ?? "POST").uppercased()]
        else {
            throw AppError.validation(field: "_api", code: "invalid", message: "_api must name an API route, and _method POST, PUT, PATCH or DELETE.")
        }
        // As app.js sends them: each value trimmed (a password as typed), and an empty one left out.
        let fields = pairs.filter { !Self.controlFields.contains($0.0) }
            .map { ($0.0, Self.isPassword($0.0) ? $0.1 : $0.1.trimmingCharacters(in: Self.scriptWhitespace)) }.filter { !$0.1.isEmpty }
        let json = try Self.json(fields)
        var headers: HTTPFields = [.contentType: "application/json", .accept: "application/json"]
        if let cookie = request.headers[.cookie] { headers[.cookie] = cookie }
        if let token = control["_csrf"], !token.isEmpty { headers[AuthController.csrfHeader] = token }
        if let key = control["_key"], !key.isEmpty { headers[Idempotency.header] = key }
        // The same request id in the access log, the audit trail and the page.
        if !context.requestID.isEmpty, let name = HTTPField.Name("X-Request-ID") { headers[name] = context.requestID }
        if let userAgent = request.headers[.userAgent] { headers[.userAgent] = userAgent }
        // The client's address as the proxy forwarded it, so the inner request is logged and limited as the outer one.
        for raw in ["X-Forwarded-For", "Forwarded", "X-Real-IP"] {
            if let name = HTTPField.Name(raw), let value = request.headers[name] { headers[name] = value }
        }
        guard let responder = slot.responder.withLock({ $0 }) else { throw Refused() }
        func send(_ headers: HTTPFields) async throws -> Response {
            let inner = Request(
                head: HTTPRequest(method: method, scheme: request.head.scheme, authority: request.head.authority, path: api, headerFields: headers),
                body: .init(buffer: ByteBuffer(bytes: json)))
            var innerContext = context
            innerContext.identity = nil
            innerContext.forwardedFromForm = true
            // Its own route: the endpoint path is a shared box, and the inner request's match would otherwise relabel
            // the outer one (its access line and metrics counted a failed form sign-in twice, under the API's route).
            innerContext.coreContext.endpointPath = EndpointPath()
            return try await responder.respond(to: inner, context: innerContext)
        }
        var answer = try await send(headers)
        if api == Self.signOutRoute, method == .post {
            answer = try await signOutAnyway(answer, request: request, headers: headers, send: send)
        }
        if (200..<300).contains(answer.status.code) {
            if let shown = control["_show"].flatMap(AnswerPage.init(rawValue:)), shown.showsAnswer {
                let json = try await Self.read(answer).object ?? [:]
                var page = renderer.page(shown.template, title: shown.title, viewer: await viewer(of: request), values: shown.values(answer: json, fields: fields, control: control))
                Self.passCookies(of: answer, to: &page)
                return page
            }
            let next = WebController.sitePath(control["_next"].map { Substring($0) })
            var redirect = WebController.redirect(next)
            Self.passCookies(of: answer, to: &redirect)
            // After the API's cookies: signing out clears any confirmation, and this one, set last, is the one kept.
            if var done = Self.confirmation(control) {
                // The same form sent again (Back, then send): its key answered with the first result, nothing was done twice.
                let replayed = answer.headers[Idempotency.replayedHeader] == "true"
                if !replayed, PageRenderer.settlesByAnswer.contains(done) {
                    done = PageRenderer.settled(done, status: answer.status, answer: try await Self.read(answer).object ?? [:])
                }
                redirect.headers.append(PageRenderer.confirmationHeader(replayed ? PageRenderer.alreadyDone : done, for: next))
            }
            return redirect
        }
        // A browser gets the problem as a page; any other client the API's own answer.
        guard request.headers[.accept]?.contains("text/html") == true else { return answer }
        let problem = try await Self.read(answer).object
        let issues = problem?["errors"] as? [[String: Any]] ?? []
        let sent = (try? JSONSerialization.jsonObject(with: json)) as? [String: Any]
        let fieldErrors: [[String: String]] = issues.map { issue in
            let field = issue["field"] as? String ?? ""
            return ["field": field, "message": Display.issue(field: field, message: issue["message"] as? String ?? "", request: sent)]
        }
        let code = problem?["code"] as? String ?? "error"
        // A problem of its own (an unknown symbol) whose one field says the detail's sentence again: said once.
        let errors = code != "validation_failed" && fieldErrors.count == 1 && fieldErrors[0]["message"] == problem?["detail"] as? String ? [] : fieldErrors
        // A form's own key reused with other values: a page kept from before (Back) was changed and sent again.
        let detail = code == "idempotency_key_reused"
            ? "This form was sent before, with other values; it cannot send new ones."
            : code == "validation_failed" && !errors.isEmpty ? Display.checkWhatYouEntered
            : problem?["detail"] as? String ?? "Folio answered \(answer.status.code)."
        let viewer = await viewer(of: request)
        // A page made from an earlier answer (the two-factor secret) comes back with the refusal on it: going Back would ask for a new one.
        // So is a refused sign-in: the form again, the address kept and the code's field in reach, rather than a page to go Back from.
        if let again = control["_again"].flatMap(AnswerPage.init(rawValue:)), var values = again.again(control: control, fields: fields) {
            values["detail"] = detail
            values["code"] = code
            values["errors"] = errors
            values["has_errors"] = !errors.isEmpty
            values["second_factor"] = ["two_factor_required", "invalid_two_factor_code"].contains(code)
            return renderer.page(again.template, title: again.title, viewer: viewer, values: values, status: answer.status)
        }
        var page = renderer.page(
            "error", title: Display.errorTitle(answer.status), viewer: viewer,
            values: [
                "detail": detail, "has_errors": !errors.isEmpty, "errors": errors,
                // A mailed link that is used or expired cannot be corrected and sent again: only a new link helps.
                "advice": issues.contains { $0["code"] as? String == "invalid_token" } ? Self.deadLinkAdvice : Self.advice(status: answer.status, code: code, fields: issues.compactMap { $0["field"] as? String }),
            ].merging(Display.errorValues(status: answer.status, code: code)) { _, new in new },
            status: answer.status)
        Self.passCookies(of: answer, to: &page)
        return page
    }

    static let signOutRoute = "/api/auth/logout"

    /// Signing out is safe to repeat, and ends what the browser holds now, as app.js's `signOutAnyway` does:
    /// a session that has already ended (another tab signed out) is signed out; a page older than the session
    /// (its token from an earlier one) ends the session the cookie names now, with that session's own token.
    /// The form came from a Folio page (`forward` checked where it comes from) before any of this.
    private func signOutAnyway(
        _ answer: Response, request: Request, headers: HTTPFields, send: (HTTPFields) async throws -> Response
    ) async throws -> Response {
        var answer = answer
        if answer.status == .forbidden {
            let body = try await Self.read(answer)
            // The answer's body is read: a refusal for another reason is rebuilt as it was.
            guard body.object?["code"] as? String == "csrf_failed", let viewer = await viewer(of: request) else {
                return Response(status: answer.status, headers: answer.headers, body: .init(byteBuffer: body.bytes))
            }
            var fresh = headers
            fresh[AuthController.csrfHeader] = viewer.csrfToken
            answer = try await send(fresh)
        }
        // No session (any more): the browser is signed out, which is what was asked. Its cookie is cleared all the same.
        if answer.status == .unauthorized {
            var done = Response(status: .noContent)
            done.setCookie(AuthController.sessionCookie("", maxAge: 0))
            return done
        }
        return answer
    }

    /// Any cookie the API set (a session it rotated or ended) reaches the browser, whatever page answers.
    static func passCookies(of answer: Response, to page: inout Response) {
        for cookie in answer.headers[values: .setCookie] { page.headers.append(HTTPField(name: .setCookie, value: cookie)) }
    }

    /// 503s the API answers before changing anything, whose detail says so.
    static let refusedBeforeAnyChange: Set<String> = ["broker_unavailable", "plaid_unavailable", "orders_backlogged", "market_data_unavailable"]

    static let deadLinkAdvice = "Nothing was changed. Ask for a new link: from the sign-in page (Forgot your password?), or, for your address, by signing in."

    /// What to do next, under a refusal. A 5xx or a send still running may hide a request that went
    /// through (its key is kept, as app.js keeps it): never "nothing was changed" there.
    static func advice(status: HTTPResponse.Status, code: String, fields: [String] = []) -> String {
        switch (status, code) {
        case (_, "idempotency_request_in_progress"):
            "The first send of this form is still being done: wait a moment, then look at the page before sending anything again."
        case (_, "idempotency_key_reused"): "Go back and reload the page for a fresh form."
        case (.conflict, _): "Go back and reload the page: what it showed may have changed since it was drawn."
        case (.tooManyRequests, _): "Nothing was changed; try again in a moment."
        case (.unauthorized, "invalid_credentials"), (.unauthorized, "two_factor_required"), (.unauthorized, "invalid_two_factor_code"):
            "Go back to the form and send it again, corrected."
        case (.unauthorized, _): "Nothing was changed: your session has ended. Sign in again, then send the form again."
        case (.forbidden, "csrf_failed") where fields.contains("Origin"): "Nothing was changed."
        case (.forbidden, "csrf_failed"): "Nothing was changed: the form is older than your session. Go back and reload the page, then send it again."
        // Outages the API itself answers before changing anything ("nothing was changed" in its detail).
        case (.serviceUnavailable, "plaid_not_configured"): "Nothing was changed."
        case (.serviceUnavailable, let code) where Self.refusedBeforeAnyChange.contains(code): "Try again in a moment."
        case _ where status.code >= 500: "It may have been done all the same: look at the page before sending it again."
        default: "Go back to the form and send it again, corrected."
        }
    }

    /// Who a page is for: the session the browser's cookie names now, if any.
    /// The bridge's own route ignores the cookie (the request it forwards is
    /// the one checked), so it is read here, only to draw the page.
    private func viewer(of request: Request) async -> PageRenderer.Viewer? {
        guard let cookie = request.cookies[AuthController.cookieName]?.value, !cookie.isEmpty,
              let signedIn = try? await identity.sessions.identity(cookieToken: cookie)
        else { return nil }
        return PageRenderer.Viewer(signedIn, csrf: identity.csrf)
    }

    /// The body the router answered (a few hundred bytes), and the JSON object it holds, if it is one.
    static func read(_ answer: Response) async throws -> (bytes: ByteBuffer, object: [String: Any]?) {
        let collector = BodyCollector()
        try await answer.body.write(collector)
        let bytes = collector.box.buffer
        return (bytes, (try? JSONSerialization.jsonObject(with: Data(buffer: bytes))) as? [String: Any])
    }

    /// Reads a problem document the router answered (a few hundred bytes).
    struct BodyCollector: ResponseBodyWriter {
        final class Box: @unchecked Sendable {
            var buffer = ByteBuffer()
        }
        let box = Box()

        mutating func write(_ buffer: ByteBuffer) async throws {
            var buffer = buffer
            box.buffer.writeBuffer(&buffer)
        }

        consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
    }

    /// What JavaScript's `String.prototype.trim` removes: its WhiteSpace (tab, vertical tab,
    /// form feed, space, no-break space, U+FEFF and every Zs space) and LineTerminator
    /// (LF, CR, U+2028, U+2029). Foundation's `.whitespacesAndNewlines` differs (U+0085, U+200B).
    static let scriptWhitespace: CharacterSet = {
        var set = CharacterSet(charactersIn: "\u{9}\u{B}\u{C}\u{20}\u{A0}\u{FEFF}\u{A}\u{D}\u{2028}\u{2029}")
        for scalar in (0...0x3000).compactMap(Unicode.Scalar.init) where scalar.properties.generalCategory == .spaceSeparator {
            set.insert(scalar)
        }
        return set
    }()

    /// A password field (`password`, `new_password`, …) is sent as typed: a space is part of a password.
    static func isPassword(_ name: String) -> Bool {
        name == "password" || name.hasSuffix("_password")
    }

    /// What the next page should confirm: `_done` when it is a known confirmation (app.js sets the same cookie).
    static func confirmation(_ control: [String: String]) -> String? {
        control["_done"].flatMap { PageRenderer.confirmations[$0] == nil ? nil : $0 }
    }

    /// The JSON `app.js` would send for the same fields. A repeated name keeps its last value
    /// (a hidden "false" before a checkbox's "true").
    static func json(_ fields: [(String, String)]) throws -> Data {
        let root = Node.object([:])
        for (name, value) in fields {
            let path = name.split(separator: ".").map(String.init)
            guard !path.isEmpty, path.allSatisfy({ !$0.isEmpty }) else { continue }
            let leaf: Any = booleanFields.contains(name) ? (value == "true")
                : integerFields.contains(name) ? (value.count <= 15 ? Int(value).map { $0 as Any } ?? value : value)
                : listFields.contains(name) ? Self.words(value) as Any : value
            root.set(path, leaf)
        }
        return try JSONSerialization.data(withJSONObject: root.value(), options: [.sortedKeys])
    }

    /// `AAPL, msft  VTI` as `["AAPL", "msft", "VTI"]`, as app.js splits a `data-list` field.
    static func words(_ text: String) -> [String] {
        text.split { $0 == "," || $0.unicodeScalars.allSatisfy(scriptWhitespace.contains) }.map(String.init)
    }

    /// A tree of nested fields; an object whose keys are all indexes becomes an array in index order.
    final class Node {
        var children: [String: Node] = [:]
        var leaf: Any?

        static func object(_ children: [String: Node]) -> Node {
            let node = Node()
            node.children = children
            return node
        }

        func set(_ path: [String], _ value: Any) {
            guard let first = path.first else { return }
            if path.count == 1 {
                let node = Node()
                node.leaf = value
                children[first] = node
                return
            }
            let child = children[first] ?? Node()
            child.leaf = nil
            children[first] = child
            child.set(Array(path.dropFirst()), value)
        }

        func value() -> Any {
            if let leaf { return leaf }
            if !children.isEmpty, children.keys.allSatisfy({ Int($0) != nil }) {
                return children.sorted { Int($0.key)! < Int($1.key)! }.map { $0.value.value() }
            }
            return children.mapValues { $0.value() }
        }
    }
}
