import AsyncHTTPClient
import FolioDomain
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// What Plaid said went wrong, in its own terms (https://plaid.com/docs/errors/).
enum PlaidError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Plaid answered with an error object: `error_type`, `error_code`, and the message to show a user, if any.
    case api(status: Int, type: String, code: String, message: String, displayMessage: String?)
    /// No usable answer (a timeout, a refused connection, a body that is not a JSON object): try again later.
    case unreachable(String)
    /// An answer Folio cannot use as it is: a missing field, or an amount with more places than Folio keeps.
    case unreadable(String)

    var code: String? {
        if case .api(_, _, let code, _, _) = self { return code }
        return nil
    }

    /// Text from Plaid (or an institution through it) as Folio shows and keeps it: control and text-direction
    /// characters neutralised, at most 300 characters. Stored on the item, shown in problems and pages.
    static func shown(_ message: String?) -> String? {
        UserText.fromVendor(message)
    }

    /// Plaid's message meant for the user, when it gave one.
    var displayMessage: String? {
        if case .api(_, _, _, _, let message) = self { return message }
        return nil
    }

    /// Worth trying again later: Plaid or the institution was busy or down.
    var isTransient: Bool {
        switch self {
        case .unreachable: return true
        case .unreadable: return false
        case .api(let status, let type, let code, _, _):
            return status == 429 || status >= 500 || ["RATE_LIMIT_EXCEEDED", "API_ERROR", "INSTITUTION_ERROR"].contains(type)
                || ["PRODUCT_NOT_READY", "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"].contains(code)
        }
    }

    var description: String {
        switch self {
        case .api(let status, let type, let code, let message, _): "Plaid answered HTTP \(status) \(type)/\(code): \(message)"
        case .unreachable(let reason): "Plaid could not be reached: \(reason)"
        case .unreadable(let reason): "Plaid's answer could not be read: \(reason)"
        }
    }
}

struct PlaidAccount: Sendable, Equatable {
    var plaidAccountID: String
    var name: String
    var officialName: String?
    var mask: String?
    var type: String
    var subtype: String?
    var current: Cash?
    var available: Cash?
    var limit: Cash?
    var currency: String?
}

/// A transaction as Folio keeps it: `amount` is positive for money into the
/// account. Plaid's own sign is the reverse (positive is money out); it is
/// turned here, once, and nowhere else.
struct PlaidTransaction: Sendable, Equatable {
    var transactionID: String
    var plaidAccountID: String
    var amount: Cash
    var currency: String?
    var date: String
    var authorizedDate: String?
    var name: String
    var merchantName: String?
    var category: String?
    var pending: Bool
}

struct PlaidSyncPage: Sendable, Equatable {
    var added: [PlaidTransaction]
    var modified: [PlaidTransaction]
    var removed: [String]
    var nextCursor: String
    var hasMore: Bool
}

struct PlaidHolding: Sendable, Equatable {
    var plaidAccountID: String
    var securityID: String
    var ticker: String?
    var securityName: String?
    var securityType: String?
    var quantity: Quantity
    var costBasis: Cash?
    var institutionPrice: Price
    var institutionPriceAsOf: String?
    var institutionValue: Cash
    var currency: String?
}

/// A JWK from `/webhook_verification_key/get`.
struct PlaidVerificationKey: Sendable, Equatable {
    var kid: String
    var alg: String
    var crv: String
    var x: String
    var y: String
    /// Plaid has given the key an `expired_at`: it signs nothing any more.
    var expired: Bool
}

/// Plaid's API, as https://plaid.com/docs/api/ documents it: every call a
/// POST of JSON, the client id and secret in the `PLAID-CLIENT-ID` and
/// `PLAID-SECRET` headers (never in a body that could be logged), errors as
/// an object with `error_type` and `error_code`. Amounts are JSON numbers,
/// read from their text into Folio's fixed-point types, never through `Double`.
struct PlaidClient: Sendable {
    let settings: AppConfiguration.PlaidSettings
    var httpClient: HTTPClient = .vendors
    let logger: Logger
    var metrics: FolioMetrics? = nil
    var timeout: TimeAmount = .seconds(30)

    static let apiVersion = "2020-09-14"

    // MARK: - Link

    /// A Link token for the user (or, with `accessToken`, for re-linking an item in update mode).
    func createLinkToken(userID: UserID, accessToken: String? = nil) async throws -> (token: String, expiration: String?) {
        var body: [String: JSONValue] = [
            "client_name": .string("Folio"), "language": .string("en"), "country_codes": .array([.string("US")]),
            "user": .object(["client_user_id": .string(userID.description)]),
        ]
        if let accessToken {
            body["access_token"] = .string(accessToken)
        } else {
            // Transactions from every institution; investments wherever the institution has them (a bank without any still links).
            body["products"] = .array([.string("transactions")])
            body["required_if_supported_products"] = .array([.string("investments")])
        }
        if let webhook = settings.webhookURL { body["webhook"] = .string(webhook) }
        let answer = try await call("/link/token/create", body)
        guard let token = answer["link_token"]?.string else { throw PlaidError.unreadable("link token without link_token") }
        return (token, answer["expiration"]?.string)
    }

    func exchange(publicToken: String) async throws -> (accessToken: String, itemID: String) {
        let answer = try await call("/item/public_token/exchange", ["public_token": .string(publicToken)])
        guard let token = answer["access_token"]?.string else { throw PlaidError.unreadable("exchange without access_token") }
        guard let item = answer["item_id"]?.string else {
            // An item Folio cannot name is not kept; it is not left at Plaid either, syncing and billed.
            do { try await removeItem(accessToken: token) } catch {
                logger.warning("an exchanged item without item_id was not removed at Plaid", metadata: ["error": "\(type(of: error))"])
            }
            throw PlaidError.unreadable("exchange without item_id")
        }
        return (token, item)
    }

    func removeItem(accessToken: String) async throws {
        _ = try await call("/item/remove", ["access_token": .string(accessToken)])
    }

    /// What Plaid's `/item/get` says of an item now (it answers for an item in error too).
    struct ItemCondition: Equatable, Sendable {
        /// The item's `error_code`, or nil when it has none.
        var errorCode: String?
        /// `consent_expiration_time`: when the user's consent ends, if it does.
        var consentExpiresAt: Date?
    }

    func itemCondition(accessToken: String) async throws -> ItemCondition {
        let answer = try await call("/item/get", ["access_token": .string(accessToken)])
        guard let item = answer["item"] else { throw PlaidError.unreadable("item/get without an item") }
        var condition = ItemCondition()
        if let error = item["error"], error != .null { condition.errorCode = error["error_code"]?.string ?? "ITEM_ERROR" }
        if let expiry = item["consent_expiration_time"], expiry != .null {
            guard let text = expiry.string, let date = try? Date(text, strategy: .iso8601) else {
                throw PlaidError.unreadable("item/get with an unreadable consent_expiration_time")
            }
            condition.consentExpiresAt = date
        }
        return condition
    }

    // MARK: - Accounts and institutions

    func accounts(accessToken: String) async throws -> (accounts: [PlaidAccount], institutionID: String?) {
        let answer = try await call("/accounts/get", ["access_token": .string(accessToken)])
        var rounded = 0
        let accounts = try answer["accounts"].map { try Self.accounts($0, rounded: &rounded) } ?? []
        if rounded > 0 { logger.notice("Plaid balances rounded to Folio's places", metadata: ["figures": "\(rounded)"]) }
        return (accounts, answer["item"]?["institution_id"]?.string)
    }

    func institutionName(_ institutionID: String) async throws -> String? {
        let answer = try await call(
            "/institutions/get_by_id", ["institution_id": .string(institutionID), "country_codes": .array([.string("US")])])
        return Self.text(answer["institution"]?["name"])
    }

    /// Balances are shown, never booked, and an investment account's are sums Plaid works out in floating
    /// point (4357.459999999999): kept to cash's places, half to even, and counted in `rounded`, as a
    /// holding's figures are, rather than refuse the item's every sync for one figure.
    static func accounts(_ list: JSONValue, rounded: inout Int) throws -> [PlaidAccount] {
        try list.elements.map { account in
            guard let id = account["account_id"]?.string, let type = account["type"]?.string else {
                throw PlaidError.unreadable("an account without account_id or type")
            }
            let balances = account["balances"]
            return PlaidAccount(
                plaidAccountID: id, name: Self.text(account["name"]) ?? Self.text(account["official_name"]) ?? "Account",
                officialName: Self.text(account["official_name"]), mask: Self.code(account["mask"]), type: type, subtype: Self.code(account["subtype"]),
                current: try cash(balances?["current"], field: "balances.current", rounded: &rounded),
                available: try cash(balances?["available"], field: "balances.available", rounded: &rounded),
                limit: try cash(balances?["limit"], field: "balances.limit", rounded: &rounded),
                currency: Self.code(balances?["iso_currency_code"]) ?? Self.code(balances?["unofficial_currency_code"]))
        }
    }

    // MARK: - Transactions

    /// One page of `/transactions/sync` after `cursor` (nil: from the beginning).
    func syncTransactions(accessToken: String, cursor: String?, count: Int = 500) async throws -> PlaidSyncPage {
        var body: [String: JSONValue] = ["access_token": .string(accessToken), "count": .number(String(count))]
        if let cursor, !cursor.isEmpty { body["cursor"] = .string(cursor) }
        let answer = try await call("/transactions/sync", body)
        guard let next = answer["next_cursor"]?.string, let hasMore = answer["has_more"]?.bool else {
            throw PlaidError.unreadable("a sync page without next_cursor or has_more")
        }
        return PlaidSyncPage(
            added: try (answer["added"]?.elements ?? []).map(Self.transaction),
            modified: try (answer["modified"]?.elements ?? []).map(Self.transaction),
            removed: try (answer["removed"]?.elements ?? []).map { removed in
                guard let id = removed["transaction_id"]?.string else { throw PlaidError.unreadable("a removed transaction without transaction_id") }
                return id
            },
            nextCursor: next, hasMore: hasMore)
    }

    static func transaction(_ value: JSONValue) throws -> PlaidTransaction {
        guard let id = value["transaction_id"]?.string, let account = value["account_id"]?.string, let date = value["date"]?.string else {
            throw PlaidError.unreadable("a transaction without transaction_id, account_id or date")
        }
        guard date.utf8.count == 10, PlaidStore.midnight(date) != nil else { throw PlaidError.unreadable("transaction \(id) has date \(date), not YYYY-MM-DD") }
        guard let plaidAmount = try cash(value["amount"], field: "amount") else { throw PlaidError.unreadable("transaction \(id) has no amount") }
        // Plaid: positive is money out of the account. Folio: positive is money in.
        let amount = -plaidAmount
        let category = Self.text(value["personal_finance_category"]?["primary"])
            ?? value["category"]?.elements.compactMap(Self.text).joined(separator: " > ").nilIfEmpty
        return PlaidTransaction(
            transactionID: id, plaidAccountID: account, amount: amount,
            currency: value["iso_currency_code"]?.string ?? value["unofficial_currency_code"]?.string,
            date: date, authorizedDate: value["authorized_date"]?.string, name: Self.text(value["name"]) ?? Self.text(value["merchant_name"]) ?? "",
            merchantName: Self.text(value["merchant_name"]), category: category, pending: value["pending"]?.bool ?? false)
    }

    // MARK: - Investments

    func holdings(accessToken: String) async throws -> (accounts: [PlaidAccount], holdings: [PlaidHolding]) {
        let answer = try await call("/investments/holdings/get", ["access_token": .string(accessToken)])
        var securities: [String: JSONValue] = [:]
        for security in answer["securities"]?.elements ?? [] {
            if let id = security["security_id"]?.string { securities[id] = security }
        }
        // Plaid works a holding's figures out in floating point (institution_value 4357.459999999999, a coin's
        // 18-place quantity). They are shown, never booked: each is kept to its column's places, half to even,
        // and the import says how many it rounded, rather than refuse the whole import for one figure.
        var rounded = 0
        let holdings = try (answer["holdings"]?.elements ?? []).map { holding in
            guard let account = holding["account_id"]?.string, let securityID = holding["security_id"]?.string else {
                throw PlaidError.unreadable("a holding without account_id or security_id")
            }
            guard let quantity = try Self.quantity(holding["quantity"], rounded: &rounded), let price = try Self.price(holding["institution_price"], rounded: &rounded),
                  let value = try Self.cash(holding["institution_value"], field: "institution_value", rounded: &rounded)
            else { throw PlaidError.unreadable("holding of \(securityID) without quantity, institution_price or institution_value") }
            let security = securities[securityID]
            return PlaidHolding(
                plaidAccountID: account, securityID: securityID, ticker: Self.code(security?["ticker_symbol"]), securityName: Self.text(security?["name"]),
                securityType: Self.code(security?["type"]), quantity: quantity, costBasis: try Self.cash(holding["cost_basis"], field: "cost_basis", rounded: &rounded),
                institutionPrice: price, institutionPriceAsOf: holding["institution_price_as_of"]?.string, institutionValue: value,
                currency: Self.code(holding["iso_currency_code"]) ?? Self.code(holding["unofficial_currency_code"]))
        }
        let accounts = try answer["accounts"].map { try Self.accounts($0, rounded: &rounded) } ?? []
        if rounded > 0 { logger.notice("Plaid holdings figures rounded to Folio's places", metadata: ["figures": "\(rounded)"]) }
        return (accounts, try Self.merged(holdings))
    }

    /// One holding per security in an account, as Folio keeps them: an institution that reports a security
    /// twice in one account (in lots) has its parts added up, quantity, value and cost basis (unknown when a
    /// part's is), at the first part's price. Parts in different currencies cannot be added: unreadable.
    static func merged(_ holdings: [PlaidHolding]) throws -> [PlaidHolding] {
        var merged: [PlaidHolding] = []
        var index: [String: Int] = [:]
        for holding in holdings {
            let key = holding.plaidAccountID + "\n" + holding.securityID
            guard let at = index[key] else {
                index[key] = merged.count
                merged.append(holding)
                continue
            }
            var whole = merged[at]
            guard whole.currency == holding.currency else {
                throw PlaidError.unreadable("holdings of \(holding.securityID) in one account in different currencies")
            }
            do {
                whole.quantity = try whole.quantity + holding.quantity
                whole.institutionValue = try whole.institutionValue + holding.institutionValue
                if let one = whole.costBasis, let other = holding.costBasis { whole.costBasis = try one + other } else { whole.costBasis = nil }
            } catch {
                throw PlaidError.unreadable("holdings of \(holding.securityID) in one account add up to more than Folio can hold")
            }
            merged[at] = whole
        }
        return merged
    }

    /// A bank's text as Folio keeps and shows it: no control character forges a line in an export or a log.
    static func text(_ value: JSONValue?) -> String? {
        value?.string.map(UserText.shown)
    }

    /// A short code (a mask, a subtype, a currency, a ticker) as shown: no hidden characters, no space around it.
    static func code(_ value: JSONValue?) -> String? {
        guard let shown = text(value)?.trimmingCharacters(in: .whitespaces), !shown.isEmpty else { return nil }
        return shown
    }

    // MARK: - Webhook keys

    func verificationKey(kid: String) async throws -> PlaidVerificationKey {
        let answer = try await call("/webhook_verification_key/get", ["key_id": .string(kid)])
        guard let key = answer["key"], let id = key["kid"]?.string, let alg = key["alg"]?.string, let crv = key["crv"]?.string,
              let x = key["x"]?.string, let y = key["y"]?.string
        else { throw PlaidError.unreadable("a verification key without kid, alg, crv, x or y") }
        // Any expired_at at all retires the key, whatever its form.
        let expired = key["expired_at"].map { !$0.isNull } ?? false
        return PlaidVerificationKey(kid: id, alg: alg, crv: crv, x: x, y: y, expired: expired)
    }

    // MARK: - Amounts

    /// A holding's figure: exact when it fits its type's places, else rounded half to even (counted in `rounded`);
    /// one too large to keep is refused.
    static func rounding<Scale>(_ value: JSONValue?, as type: Fixed<Scale>.Type, field: String, rounded: inout Int) throws -> Fixed<Scale>? {
        guard let value, !value.isNull else { return nil }
        guard let text = value.numberText ?? value.string else { throw PlaidError.unreadable("\(field) is not a number") }
        if let exact = try? Fixed<Scale>(parsing: text) { return exact }
        guard let near = try? Fixed<Scale>(parsing: text, rounding: .halfEven) else {
            throw PlaidError.unreadable("\(field) \(text) is too large to keep")
        }
        rounded += 1
        return near
    }

    static func cash(_ value: JSONValue?, field: String, rounded: inout Int) throws -> Cash? {
        try rounding(value, as: Cash.self, field: field, rounded: &rounded)
    }

    static func quantity(_ value: JSONValue?, rounded: inout Int) throws -> Quantity? {
        try rounding(value, as: Quantity.self, field: "quantity", rounded: &rounded)
    }

    static func price(_ value: JSONValue?, rounded: inout Int) throws -> Price? {
        try rounding(value, as: Price.self, field: "institution_price", rounded: &rounded)
    }

    /// A transaction amount, exactly as written, or an error naming the field: it is never rounded.
    static func cash(_ value: JSONValue?, field: String) throws -> Cash? {
        guard let value, !value.isNull else { return nil }
        guard let text = value.numberText ?? value.string else { throw PlaidError.unreadable("\(field) is not a number") }
        do { return try Cash(parsing: text) } catch {
            throw PlaidError.unreadable("\(field) \(text) has more than 4 decimal places or is too large to keep exactly")
        }
    }

    // MARK: - Wire

    private func call(_ path: String, _ body: [String: JSONValue]) async throws -> JSONValue {
        var request = HTTPClientRequest(url: settings.baseURL.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "PLAID-CLIENT-ID", value: settings.clientID)
        request.headers.add(name: "PLAID-SECRET", value: settings.secret)
        request.headers.add(name: "Plaid-Version", value: Self.apiVersion)
        request.headers.add(name: "User-Agent", value: "Folio/\(FolioVersion.current)")
        request.body = .bytes(ByteBuffer(string: JSONValue.object(body).text))
        let status: Int
        let bytes: ByteBuffer
        let start = ContinuousClock.now
        do {
            let (response, body) = try await httpClient.executeWhole(request, timeout: timeout, upTo: 32 << 20)
            status = Int(response.status.code)
            bytes = body
        } catch {
            // The error's type only: no URL, header or body reaches the log.
            logger.warning("Plaid call failed", metadata: ["route": "\(path)", "error": "\(type(of: error))"])
            metrics?.vendorCall(vendor: "plaid", endpoint: path, result: "unreachable", duration: ContinuousClock.now - start)
            throw PlaidError.unreachable("\(path): \(type(of: error))")
        }
        metrics?.vendorCall(vendor: "plaid", endpoint: path, result: status == 200 ? "ok" : "error", duration: ContinuousClock.now - start)
        let json = (try? bytes.withUnsafeReadableBytes { try JSONValue.parse($0) }) ?? .null
        guard status == 200 else {
            let error = PlaidError.api(
                status: status, type: json["error_type"]?.string ?? "UNKNOWN", code: json["error_code"]?.string ?? "HTTP_\(status)",
                message: json["error_message"]?.string ?? "HTTP \(status)", displayMessage: PlaidError.shown(json["display_message"]?.string))
            logger.warning("Plaid answered an error", metadata: [
                "route": "\(path)", "status": "\(status)", "error_code": "\(error.code ?? "")", "request_id": "\(json["request_id"]?.string ?? "")"])
            throw error
        }
        // A 200 that is not JSON (a proxy's page, an answer cut short) is passing trouble, not Plaid's refusal: try again.
        guard case .object = json else { throw PlaidError.unreachable("\(path) answered something other than a JSON object") }
        return json
    }
}

extension String {
    var nilIfEmpty: String? { isEmpty ? nil : self }
}
