import Crypto
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers

@testable import FolioServer

/// A local Plaid on loopback answering the calls Folio makes in the shapes
/// https://plaid.com/docs/api/ documents: credentials in the PLAID-CLIENT-ID
/// and PLAID-SECRET headers, every call a POST of JSON, errors as
/// `{error_type, error_code, error_message, display_message, request_id}`,
/// amounts as JSON numbers (written here as text, so a test can send a value
/// `Double` cannot hold). Items come from `issuePublicToken`, like Link's
/// sandbox; `/transactions/sync` pages through a log of changes by cursor and
/// can report a mutation during pagination. Webhooks are signed with the
/// fake's own ES256 key, served by `/webhook_verification_key/get`.
final class FakePlaid: Sendable {
    static let clientID = "fakeplaidclient0001"
    static let secret = "fake-plaid-secret-0123456789abcdef"

    struct Account: Sendable {
        var id: String
        var name: String
        var type: String
        var subtype: String
        var current: String
        var available: String = "null"
        var currency: String = "USD"
    }

    enum Change: Sendable {
        case added(id: String, account: String, amount: String, date: String, name: String)
        case modified(id: String, account: String, amount: String, date: String, name: String)
        case removed(id: String)
    }

    struct Holding: Sendable {
        var account: String
        var securityID: String
        var ticker: String
        var quantity: String
        var price: String
        var value: String
        var costBasis: String
    }

    struct Item: Sendable {
        var itemID: String
        var accessToken: String
        var institutionID = "ins_109508"
        var accounts: [Account]
        var changes: [Change] = []
        var holdings: [Holding] = []
        var errorCode: String?
        /// `consent_expiration_time` as `/item/get` gives it.
        var consentExpiration: String?
        var removed = false
    }

    private struct State {
        var publicTokens: [String: Item] = [:]
        var items: [String: Item] = [:]  // by access token
        var linkTokenRequests: [JSONValue] = []
        var syncCursors: [String?] = []
        var pageSize = 2
        /// The sync call (1-based, counted from now) that answers TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION.
        var mutationOnSyncCall: Int?
        var mutation: (@Sendable (inout Item) -> Void)?
        /// The sync call that answers HTTP 500, once.
        var failSyncCall: Int?
        /// Every sync answers has_more with no changes and the cursor it was sent (a faulty or hostile Plaid).
        var stuckCursor = false
        /// Syncs answer has_more with no changes, each cursor followed by the next of these, round and round.
        var cursorCircle: [String] = []
        /// Run once, before the next `/accounts/get` is answered (a test's moment between a sync's start and its first write).
        var beforeAccountsAnswer: (@Sendable () async throws -> Void)?
        /// Run once, before the next `/transactions/sync` is answered.
        var beforeSyncAnswer: (@Sendable () async throws -> Void)?
        var syncCalls = 0
        /// The next answer to a path, in place of the real one: HTTP 200 with this body (a garbled answer).
        var answerOnce: [String: String] = [:]
        /// The next exchange makes its item but answers without `item_id`.
        var exchangeWithoutItemID = false
        var keyFetches: [String] = []
        var keys: [String: (key: P256.Signing.PrivateKey, expired: Bool)] = [:]
        var removeCalls = 0
        /// Plaid's error code each `/item/remove` answers with (400, INVALID_INPUT), until cleared.
        var removeRefusal: String?
        var itemGets = 0
        /// Syncs answer ITEM_LOGIN_REQUIRED while the item itself (`/item/get`) shows no error.
        var loginErrorOnSyncOnly = false
        /// `/item/get` answers HTTP 500.
        var itemGetFails = false
        var sequence = 0
        var badCredentials = 0
    }

    private let state = NIOLockedValueBox(State())
    /// Runs while the next `/item/remove` is being answered (something that happens meanwhile).
    private let duringRemove = NIOLockedValueBox<(@Sendable () async throws -> Void)?>(nil)

    /// Every `/item/remove` refused with this Plaid error code (nil: answered again).
    func refuseRemoves(_ code: String?) {
        state.withLockedValue { $0.removeRefusal = code }
    }

    /// The next call of `path` is answered HTTP 200 with `body`, whatever it asked; the call still does its work
    /// (an exchange still makes its item, a removal still removes), as when an answer is garbled on its way back.
    func answerNextWith(_ path: String, body: String) {
        state.withLockedValue { $0.answerOnce[path] = body }
    }

    func answerNextExchangeWithoutItemID() {
        state.withLockedValue { $0.exchangeWithoutItemID = true }
    }

    /// Whether the item was removed at Plaid.
    func isRemoved(itemID: String) -> Bool {
        state.withLockedValue { state in state.items.values.contains { $0.itemID == itemID && $0.removed } }
    }

    func duringNextRemove(_ hook: @escaping @Sendable () async throws -> Void) {
        duringRemove.withLockedValue { $0 = hook }
    }
    let baseURL: String
    let kid = "fake-kid-2026"

    init(baseURL: String) {
        self.baseURL = baseURL
        state.withLockedValue { $0.keys[kid] = (P256.Signing.PrivateKey(), false) }
    }

    var settings: AppConfiguration.PlaidSettings {
        AppConfiguration.PlaidSettings(
            clientID: Self.clientID, secret: Self.secret, environment: .sandbox, baseURL: baseURL, webhookURL: "https://folio.example.com/webhooks/plaid")
    }

    // MARK: - What tests arrange and read

    /// A public token as Link's onSuccess gives it, for a new item with these accounts.
    func issuePublicToken(
        accounts: [Account], changes: [Change] = [], holdings: [Holding] = [], institutionID: String = "ins_109508"
    ) -> (publicToken: String, itemID: String) {
        state.withLockedValue { state in
            state.sequence += 1
            let token = "public-sandbox-\(UUID().uuidString.lowercased())"
            let item = Item(
                itemID: "item-\(state.sequence)-\(UUID().uuidString.prefix(8))", accessToken: "access-sandbox-\(UUID().uuidString.lowercased())",
                institutionID: institutionID, accounts: accounts, changes: changes, holdings: holdings)
            state.publicTokens[token] = item
            return (token, item.itemID)
        }
    }

    /// A public token for an item already linked, as Link's update mode gives one.
    func issuePublicToken(forExisting itemID: String) -> String? {
        state.withLockedValue { state in
            guard let item = state.items.values.first(where: { $0.itemID == itemID }) else { return nil }
            let token = "public-sandbox-\(UUID().uuidString.lowercased())"
            state.publicTokens[token] = item
            return token
        }
    }

    func update(item itemID: String, _ change: @Sendable (inout Item) -> Void) {
        state.withLockedValue { state in
            for (token, item) in state.items where item.itemID == itemID { change(&state.items[token]!) }
        }
    }

    func accessToken(of itemID: String) -> String? {
        state.withLockedValue { $0.items.values.first { $0.itemID == itemID }?.accessToken }
    }

    var linkTokenRequests: [JSONValue] { state.withLockedValue { $0.linkTokenRequests } }
    var syncCursors: [String?] { state.withLockedValue { $0.syncCursors } }
    var keyFetches: [String] { state.withLockedValue { $0.keyFetches } }
    var removeCalls: Int { state.withLockedValue { $0.removeCalls } }
    var loginErrorOnSyncOnly: Bool {
        get { state.withLockedValue { $0.loginErrorOnSyncOnly } }
        set { state.withLockedValue { $0.loginErrorOnSyncOnly = newValue } }
    }

    var itemGetFails: Bool {
        get { state.withLockedValue { $0.itemGetFails } }
        set { state.withLockedValue { $0.itemGetFails = newValue } }
    }

    /// `/item/get` calls served.
    var itemGets: Int { state.withLockedValue { $0.itemGets } }
    var badCredentials: Int { state.withLockedValue { $0.badCredentials } }

    func beforeNextAccountsAnswer(_ body: @escaping @Sendable () async throws -> Void) {
        state.withLockedValue { $0.beforeAccountsAnswer = body }
    }

    func beforeNextSyncAnswer(_ body: @escaping @Sendable () async throws -> Void) {
        state.withLockedValue { $0.beforeSyncAnswer = body }
    }

    var stuckCursor: Bool {
        get { state.withLockedValue { $0.stuckCursor } }
        set { state.withLockedValue { $0.stuckCursor = newValue } }
    }

    var cursorCircle: [String] {
        get { state.withLockedValue { $0.cursorCircle } }
        set { state.withLockedValue { $0.cursorCircle = newValue } }
    }

    var pageSize: Int {
        get { state.withLockedValue { $0.pageSize } }
        set { state.withLockedValue { $0.pageSize = newValue } }
    }

    /// The `n`th sync call from now (1 is the next) reports a mutation during pagination; `change`, if
    /// given, is the mutation: it rewrites the item's log then, as Plaid's data changed under the pages.
    func mutateDuringPagination(onCall n: Int, change: (@Sendable (inout Item) -> Void)? = nil) {
        state.withLockedValue {
            $0.mutationOnSyncCall = $0.syncCalls + n
            $0.mutation = change
        }
    }

    /// The `n`th sync call from now answers HTTP 500.
    func failSync(onCall n: Int) {
        state.withLockedValue { $0.failSyncCall = $0.syncCalls + n }
    }

    func expireKey() {
        state.withLockedValue { $0.keys[kid]?.expired = true }
    }

    // MARK: - Webhooks

    static func webhookBody(type: String, code: String, itemID: String, extra: String = "") -> String {
        #"{"environment":"sandbox","item_id":"\#(itemID)","webhook_code":"\#(code)","webhook_type":"\#(type)"\#(extra.isEmpty ? "" : "," + extra)}"#
    }

    /// The `Plaid-Verification` header for `body`: an ES256 JWT signed by the fake's key (or `signer`).
    func sign(_ body: String, iat: Date, kid: String? = nil, alg: String = "ES256", signer: P256.Signing.PrivateKey? = nil, claimedHash: String? = nil) -> String {
        let key = signer ?? state.withLockedValue { $0.keys[self.kid]!.key }
        let hash = claimedHash ?? SHA256.hash(data: Data(body.utf8)).map { String(format: "%02x", $0) }.joined()
        let header = SecureToken.base64URL(Data(#"{"alg":"\#(alg)","kid":"\#(kid ?? self.kid)","typ":"JWT"}"#.utf8))
        let payload = SecureToken.base64URL(Data(#"{"iat":\#(Int(iat.timeIntervalSince1970)),"request_body_sha256":"\#(hash)"}"#.utf8))
        let signature = try! key.signature(for: Data((header + "." + payload).utf8)).rawRepresentation
        return header + "." + payload + "." + SecureToken.base64URL(signature)
    }

    // MARK: - Serving

    func answer(_ request: Request, path: String) async throws -> Response {
        guard request.headers[HTTPField.Name("PLAID-CLIENT-ID")!] == Self.clientID, request.headers[HTTPField.Name("PLAID-SECRET")!] == Self.secret else {
            state.withLockedValue { $0.badCredentials += 1 }
            return error(400, type: "INVALID_INPUT", code: "INVALID_API_KEYS", message: "invalid client_id or secret provided")
        }
        var request = request
        let bytes = try await request.collectBody(upTo: 1 << 20)
        let body = (try? JSONValue.parse(Array(buffer: bytes))) ?? .null
        let real = try await realAnswer(path: path, body: body)
        if let garbled = state.withLockedValue({ $0.answerOnce.removeValue(forKey: path) }) { return json(garbled) }
        return real
    }

    private func realAnswer(path: String, body: JSONValue) async throws -> Response {
        switch path {
        case "/link/token/create":
            state.withLockedValue { $0.linkTokenRequests.append(body) }
            return json(#"{"expiration":"2026-11-30T08:00:00Z","link_token":"link-sandbox-\#(UUID().uuidString.lowercased())","request_id":"req1"}"#)
        case "/item/public_token/exchange":
            guard let token = body["public_token"]?.string, let item = state.withLockedValue({ $0.publicTokens.removeValue(forKey: token) }) else {
                return error(400, type: "INVALID_INPUT", code: "INVALID_PUBLIC_TOKEN", message: "provided public token is expired",
                             display: "This link has expired; link the account again.")
            }
            state.withLockedValue { $0.items[item.accessToken] = item }
            if state.withLockedValue({ state in defer { state.exchangeWithoutItemID = false }; return state.exchangeWithoutItemID }) {
                return json(#"{"access_token":"\#(item.accessToken)","request_id":"req2"}"#)
            }
            return json(#"{"access_token":"\#(item.accessToken)","item_id":"\#(item.itemID)","request_id":"req2"}"#)
        case "/institutions/get_by_id":
            return json(#"{"institution":{"institution_id":"ins_109508","name":"First Platypus Bank","products":["transactions","investments"]},"request_id":"req3"}"#)
        case "/webhook_verification_key/get":
            let kid = body["key_id"]?.string ?? ""
            state.withLockedValue { $0.keyFetches.append(kid) }
            guard let key = state.withLockedValue({ $0.keys[kid] }) else {
                return error(400, type: "INVALID_INPUT", code: "INVALID_WEBHOOK_VERIFICATION_KEY_ID", message: "invalid key_id provided")
            }
            let raw = key.key.publicKey.rawRepresentation
            let x = SecureToken.base64URL(raw.prefix(32)), y = SecureToken.base64URL(raw.suffix(32))
            return json(#"{"key":{"alg":"ES256","created_at":1560466150,"crv":"P-256","expired_at":\#(key.expired ? "1767225600" : "null"),"kid":"\#(kid)","kty":"EC","use":"sig","x":"\#(x)","y":"\#(y)"},"request_id":"req4"}"#)
        default:
            break
        }
        guard let token = body["access_token"]?.string, let item = state.withLockedValue({ $0.items[token] }), !item.removed else {
            return error(400, type: "INVALID_INPUT", code: "INVALID_ACCESS_TOKEN", message: "could not find matching access token")
        }
        if path == "/item/get" {
            // Answered for an item in error too: the error is the item's `error`.
            state.withLockedValue { $0.itemGets += 1 }
            if state.withLockedValue({ $0.itemGetFails }) {
                return error(500, type: "API_ERROR", code: "INTERNAL_SERVER_ERROR", message: "an unexpected error occurred")
            }
            let expiry = item.consentExpiration.map { #""\#($0)""# } ?? "null"
            let error = item.errorCode.map { #"{"display_message":null,"error_code":"\#($0)","error_message":"the login details of this item have changed","error_type":"ITEM_ERROR","status":400}"# } ?? "null"
            return json(#"{"item":{"item_id":"\#(item.itemID)","institution_id":"\#(item.institutionID)","webhook":"https://folio.example.com/webhooks/plaid","error":\#(error),"consent_expiration_time":\#(expiry),"available_products":[],"billed_products":["transactions"]},"request_id":"req8"}"#)
        }
        if let code = item.errorCode {
            return error(400, type: "ITEM_ERROR", code: code, message: "the login details of this item have changed",
                         display: "The login details of this account have changed. Sign in again.")
        }
        switch path {
        case "/accounts/get":
            if let hook = state.withLockedValue({ state in defer { state.beforeAccountsAnswer = nil }; return state.beforeAccountsAnswer }) { try await hook() }
            return json(#"{"accounts":[\#(item.accounts.map(Self.account).joined(separator: ","))],"item":{"item_id":"\#(item.itemID)","institution_id":"\#(item.institutionID)","webhook":"https://folio.example.com/webhooks/plaid","error":null},"request_id":"req5"}"#)
        case "/transactions/sync":
            if state.withLockedValue({ $0.loginErrorOnSyncOnly }) {
                return error(400, type: "ITEM_ERROR", code: "ITEM_LOGIN_REQUIRED", message: "the login details of this item have changed",
                             display: "The login details of this account have changed. Sign in again.")
            }
            if let hook = state.withLockedValue({ state in defer { state.beforeSyncAnswer = nil }; return state.beforeSyncAnswer }) { try await hook() }
            return sync(item, cursor: body["cursor"]?.string)
        case "/investments/holdings/get":
            let holdings = item.holdings.map { h in
                #"{"account_id":"\#(h.account)","cost_basis":\#(h.costBasis),"institution_price":\#(h.price),"institution_price_as_of":"2026-11-27","institution_value":\#(h.value),"iso_currency_code":"USD","quantity":\#(h.quantity),"security_id":"\#(h.securityID)","unofficial_currency_code":null}"#
            }
            let securities = item.holdings.map { h in
                #"{"security_id":"\#(h.securityID)","ticker_symbol":"\#(h.ticker)","name":"\#(h.ticker) Corp","type":"equity","close_price":\#(h.price),"iso_currency_code":"USD"}"#
            }
            let investment = item.accounts.filter { $0.type == "investment" }.map(Self.account)
            return json(#"{"accounts":[\#(investment.joined(separator: ","))],"holdings":[\#(holdings.joined(separator: ","))],"securities":[\#(securities.joined(separator: ","))],"item":{"item_id":"\#(item.itemID)"},"request_id":"req6"}"#)
        case "/item/remove":
            if let hook = duringRemove.withLockedValue({ hook in defer { hook = nil }; return hook }) { try await hook() }
            if let code = state.withLockedValue({ $0.removeRefusal }) { return error(400, type: "INVALID_INPUT", code: code, message: "refused by the test") }
            state.withLockedValue { $0.items[token]?.removed = true; $0.removeCalls += 1 }
            return json(#"{"request_id":"req7"}"#)
        default:
            return error(404, type: "INVALID_REQUEST", code: "UNKNOWN_FIELDS", message: "no route \(path)")
        }
    }

    private func sync(_ item: Item, cursor: String?) -> Response {
        let (call, mutation, failure, size) = state.withLockedValue { state in
            state.syncCalls += 1
            state.syncCursors.append(cursor)
            return (state.syncCalls, state.mutationOnSyncCall, state.failSyncCall, state.pageSize)
        }
        if call == failure { return error(500, type: "API_ERROR", code: "INTERNAL_SERVER_ERROR", message: "an unexpected error occurred") }
        if call == mutation {
            state.withLockedValue { state in
                if let change = state.mutation, state.items[item.accessToken] != nil { change(&state.items[item.accessToken]!) }
                state.mutation = nil
            }
            return error(400, type: "TRANSACTIONS_ERROR", code: "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION",
                         message: "Underlying transaction data changed since last page was fetched. Please restart pagination from last update.")
        }
        if state.withLockedValue({ $0.stuckCursor }) {
            return json(#"{"added":[],"has_more":true,"modified":[],"next_cursor":"\#(cursor ?? "cursor-0")","removed":[],"request_id":"req8"}"#)
        }
        let circle = state.withLockedValue { $0.cursorCircle }
        if !circle.isEmpty {
            let next = circle[((cursor.flatMap { circle.firstIndex(of: $0) } ?? -1) + 1) % circle.count]
            return json(#"{"added":[],"has_more":true,"modified":[],"next_cursor":"\#(next)","removed":[],"request_id":"req8"}"#)
        }
        let start = cursor.flatMap { Int($0.dropFirst("cursor-".count)) } ?? 0
        let end = min(item.changes.count, start + size)
        var added: [String] = [], modified: [String] = [], removed: [String] = []
        for change in item.changes[start..<end] {
            switch change {
            case .added(let id, let account, let amount, let date, let name): added.append(Self.transaction(id, account, amount, date, name))
            case .modified(let id, let account, let amount, let date, let name): modified.append(Self.transaction(id, account, amount, date, name))
            case .removed(let id): removed.append(#"{"account_id":null,"transaction_id":"\#(id)"}"#)
            }
        }
        return json(#"{"added":[\#(added.joined(separator: ","))],"has_more":\#(end < item.changes.count),"modified":[\#(modified.joined(separator: ","))],"next_cursor":"cursor-\#(end)","removed":[\#(removed.joined(separator: ","))],"request_id":"req8","transactions_update_status":"HISTORICAL_UPDATE_COMPLETE"}"#)
    }

    static func account(_ a: Account) -> String {
        #"{"account_id":"\#(a.id)","balances":{"available":\#(a.available),"current":\#(a.current),"iso_currency_code":"\#(a.currency)","limit":null,"unofficial_currency_code":null},"mask":"0000","name":"\#(a.name)","official_name":"Plaid \#(a.name)","subtype":"\#(a.subtype)","type":"\#(a.type)"}"#
    }

    static func transaction(_ id: String, _ account: String, _ amount: String, _ date: String, _ name: String) -> String {
        #"{"account_id":"\#(account)","amount":\#(amount),"authorized_date":"\#(date)","category":["Shops"],"date":"\#(date)","iso_currency_code":"USD","merchant_name":"\#(name)","name":"\#(name)","payment_channel":"in store","pending":false,"personal_finance_category":{"detailed":"GENERAL_MERCHANDISE_OTHER","primary":"GENERAL_MERCHANDISE"},"transaction_id":"\#(id)","unofficial_currency_code":null}"#
    }

    func error(_ status: Int, type: String, code: String, message: String, display: String? = nil) -> Response {
        json(
            #"{"display_message":\#(display.map { JSONText.quote($0) } ?? "null"),"error_code":"\#(code)","error_message":\#(JSONText.quote(message)),"error_type":"\#(type)","request_id":"req-err"}"#,
            status: .init(code: status))
    }

    func json(_ body: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// Runs a fake Plaid on a free loopback port for the length of `body`.
func withFakePlaid<T: Sendable>(_ body: @escaping @Sendable (FakePlaid) async throws -> T) async throws -> T {
    // The fake's credentials are configured secrets of whatever talks to it, masked in every log line from
    // now on, as the composition root registers the configuration's before it builds a client: a test that
    // builds a client without an app must not depend on another test's app having registered them first.
    ConfiguredSecrets.register([FakePlaid.clientID, FakePlaid.secret])
    return try await withLoopbackFake(
        "fake-plaid", make: { FakePlaid(baseURL: "http://127.0.0.1:\($0)") }, answer: { fake, request in try await fake.answer(request, path: request.uri.path) },
        body)
}
