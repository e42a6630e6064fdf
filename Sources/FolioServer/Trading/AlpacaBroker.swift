import AsyncHTTPClient
import FolioDomain
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// Why the broker could not be asked: the job that asked fails and is retried.
enum BrokerError: Error, Sendable, CustomStringConvertible {
    /// No answer, a 5xx, a 429, or a body that is not the documented shape.
    case unavailable(String)

    var description: String {
        switch self {
        case .unavailable(let reason): "the broker is unavailable: \(reason)"
        }
    }
}

/// Orders executed at Alpaca (https://docs.alpaca.markets, Trading API v2):
/// `POST /v2/orders` with Folio's order id as `client_order_id`, so a retried
/// submission finds the order instead of placing a second one;
/// `GET /v2/orders:by_client_order_id` to look again; `DELETE /v2/orders/{id}`
/// to cancel; fills from `GET /v2/account/activities/FILL`, each with its own
/// id, so a fill reported twice is applied once. Quantities and prices arrive
/// as JSON strings and are parsed exactly. The key and secret travel only in
/// the `APCA-API-KEY-ID` and `APCA-API-SECRET-KEY` headers, never in a URL or a log.
struct AlpacaBroker: Broker {
    let settings: AppConfiguration.AlpacaSettings
    let httpClient: HTTPClient
    let logger: Logger
    var timeout: TimeAmount = .seconds(10)

    var holdsOrders: Bool { true }

    /// An order as Alpaca describes it (the fields Folio reads).
    struct RemoteOrder: Sendable {
        var id: String
        var clientOrderID: String
        var status: String
        var filledQuantity: Quantity
        var createdAt: String?

        init(_ json: JSONValue) throws {
            guard case .object(let fields) = json, case .string(let id)? = fields["id"], case .string(let status)? = fields["status"] else {
                throw BrokerError.unavailable("an order without id or status")
            }
            self.id = id
            self.status = status
            if case .string(let client)? = fields["client_order_id"] { clientOrderID = client } else { clientOrderID = "" }
            if case .string(let filled)? = fields["filled_qty"], let quantity = try? Quantity(parsing: filled) {
                filledQuantity = quantity
            } else {
                filledQuantity = .zero
            }
            if case .string(let created)? = fields["created_at"] { createdAt = created }
        }
    }

    /// The account the keys belong to, as `GET /v2/account` describes it.
    struct RemoteAccount: Sendable, Equatable {
        var accountNumber: String
        var status: String
        var currency: String
        /// Parsed exactly from Alpaca's string; negative on a margin account that borrowed.
        var cash: Cash
        var tradingBlocked: Bool
    }

    /// Why `GET /v2/account` gave no account.
    enum AccountAnswer: Sendable, Equatable {
        case account(RemoteAccount)
        /// 401 or 403: the key id and secret do not open an account.
        case refused
    }

    /// Reads the account the keys open (`GET /v2/account`); throws when Alpaca cannot be asked.
    func account() async throws -> AccountAnswer {
        let answer = try await call(.GET, "/v2/account")
        switch answer.status {
        case 200:
            guard case .object(let fields) = answer.json, case .string(let number)? = fields["account_number"],
                  case .string(let cash)? = fields["cash"], let amount = try? Cash(parsing: cash)
            else { throw BrokerError.unavailable("GET /v2/account answered an account without a number or cash") }
            var status = "", currency = "USD", blocked = false
            if case .string(let value)? = fields["status"] { status = value }
            if case .string(let value)? = fields["currency"] { currency = value }
            for flag in ["trading_blocked", "account_blocked", "trade_suspended_by_user"] {
                if case .bool(true)? = fields[flag] { blocked = true }
            }
            return .account(RemoteAccount(accountNumber: number, status: status, currency: currency, cash: amount, tradingBlocked: blocked))
        case 401, 403:
            return .refused
        default:
            throw BrokerError.unavailable("GET /v2/account answered HTTP \(answer.status)")
        }
    }

    // MARK: - Broker

    func submit(_ order: BrokerOrder) async throws -> BrokerReport {
        let answer = try await call(.POST, "/v2/orders", body: Self.orderBody(order))
        switch answer.status {
        case 200, 201:
            return try await report(RemoteOrder(answer.json))
        case 403:
            // Alpaca's own checks refused it (buying power, a short sale it will not allow).
            return .rejected(reason: "the broker refused the order: \(answer.message)")
        case 422:
            // Sent before (the answer was lost): the order is there under our id.
            if let existing = try await find(order.id) { return try await report(existing) }
            return .rejected(reason: "the broker refused the order: \(answer.message)")
        default:
            throw BrokerError.unavailable("POST /v2/orders answered HTTP \(answer.status)")
        }
    }

    func recheck(_ order: BrokerOrder) async throws -> BrokerReport? {
        guard let existing = try await find(order.id) else { return nil }
        let report = try await report(existing)
        return report == .accepted ? nil : report
    }

    func cancel(_ order: BrokerOrder) async throws -> BrokerReport {
        guard let existing = try await find(order.id) else { return .canceled(reason: "canceled before it reached the broker") }
        let answer = try await call(.DELETE, "/v2/orders/\(existing.id)")
        switch answer.status {
        case 200, 204, 422:
            // 422: no longer cancelable (it filled first). Either way, what the order is now says what happened.
            let final = try await remoteOrder(existing.id)
            let report = try await report(final)
            if final.status == "pending_cancel" { return .canceled(reason: "canceled by user") }
            return report
        case 404:
            return .canceled(reason: "canceled before it reached the broker")
        default:
            throw BrokerError.unavailable("DELETE /v2/orders answered HTTP \(answer.status)")
        }
    }

    // MARK: - Reading orders and fills

    func find(_ id: OrderID) async throws -> RemoteOrder? {
        let answer = try await call(.GET, "/v2/orders:by_client_order_id?client_order_id=\(id)")
        switch answer.status {
        case 200: return try RemoteOrder(answer.json)
        case 404: return nil
        default: throw BrokerError.unavailable("GET /v2/orders:by_client_order_id answered HTTP \(answer.status)")
        }
    }

    func remoteOrder(_ remoteID: String) async throws -> RemoteOrder {
        let answer = try await call(.GET, "/v2/orders/\(remoteID)")
        guard answer.status == 200 else { throw BrokerError.unavailable("GET /v2/orders/{id} answered HTTP \(answer.status)") }
        return try RemoteOrder(answer.json)
    }

    /// What the order's state means for Folio.
    func report(_ order: RemoteOrder) async throws -> BrokerReport {
        let fills = order.filledQuantity.isPositive ? try await fills(of: order) : []
        switch order.status {
        case "filled":
            return .filled(fills)
        case "canceled", "done_for_day":
            return fills.isEmpty ? .canceled(reason: "canceled at the broker") : .filledThenCanceled(fills, reason: "canceled at the broker")
        case "expired":
            return fills.isEmpty ? .expired : .filledThenCanceled(fills, reason: "expired at the broker")
        case "rejected", "suspended", "stopped":
            return fills.isEmpty ? .rejected(reason: "the broker \(order.status) the order") : .filledThenCanceled(fills, reason: "the broker \(order.status) the rest")
        default:
            // new, accepted, pending_new, partially_filled, pending_cancel, held, calculated…: still open there.
            return fills.isEmpty ? .accepted : .partiallyFilled(fills)
        }
    }

    /// The order's fills, from the account's FILL activities since it was made, oldest first.
    func fills(of order: RemoteOrder) async throws -> [BrokerFill] {
        var fills: [BrokerFill] = []
        var pageToken: String?
        for _ in 0..<50 {
            var path = "/v2/account/activities/FILL?direction=asc&page_size=100"
            if let created = order.createdAt { path += "&after=\(Self.encode(created))" }
            if let pageToken { path += "&page_token=\(Self.encode(pageToken))" }
            let answer = try await call(.GET, path)
            guard answer.status == 200, case .array(let activities) = answer.json else {
                throw BrokerError.unavailable("GET /v2/account/activities/FILL answered HTTP \(answer.status)")
            }
            for activity in activities {
                guard case .object(let fields) = activity, case .string(let id)? = fields["id"] else { continue }
                pageToken = id
                guard case .string(let orderID)? = fields["order_id"], orderID == order.id,
                      case .string(let qty)? = fields["qty"], case .string(let price)? = fields["price"],
                      let quantity = try? Quantity(parsing: qty), let executed = try? Price(parsing: price, rounding: .halfEven)
                else { continue }
                fills.append(BrokerFill(id: "alpaca-\(id)", quantity: quantity, price: executed))
            }
            if activities.count < 100 { break }
        }
        return fills
    }

    // MARK: - Wire

    static func orderBody(_ order: BrokerOrder) -> String {
        let type = switch order.type {
        case .market: "market"
        case .limit: "limit"
        case .stop: "stop"
        case .stopLimit: "stop_limit"
        }
        let timeInForce = switch order.timeInForce {
        case .day: "day"
        case .goodTillCanceled: "gtc"
        case .immediateOrCancel: "ioc"
        case .fillOrKill: "fok"
        }
        var fields: [String: String] = [
            "symbol": order.symbol, "side": order.side == .buy ? "buy" : "sell", "client_order_id": order.id.description,
            "type": type, "time_in_force": timeInForce,
        ]
        if let quantity = order.quantity { fields["qty"] = quantity.description }
        if let notional = order.notional { fields["notional"] = notional.description }
        if let limit = order.limitPrice { fields["limit_price"] = limit.description }
        if let stop = order.stopPrice { fields["stop_price"] = stop.description }
        return "{" + fields.keys.sorted().map { JSONText.quote($0) + ":" + JSONText.quote(fields[$0]!) }.joined(separator: ",") + "}"
    }

    struct Answer {
        var status: Int
        var json: JSONValue
        /// Alpaca's error `message`, when there is one.
        var message: String {
            if case .object(let fields) = json, case .string(let message)? = fields["message"] { return message }
            return "HTTP \(status)"
        }
    }

    private func call(_ method: HTTPMethod, _ path: String, body: String? = nil) async throws -> Answer {
        var request = HTTPClientRequest(url: settings.baseURL.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + path)
        request.method = method
        request.headers.add(name: "APCA-API-KEY-ID", value: settings.keyID)
        request.headers.add(name: "APCA-API-SECRET-KEY", value: settings.secretKey)
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "Folio/\(FolioVersion.current)")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let status: Int
        let bytes: ByteBuffer
        do {
            let response = try await httpClient.execute(request, timeout: timeout)
            status = Int(response.status.code)
            bytes = try await response.body.collect(upTo: 8 << 20)
        } catch {
            // The error names its type only: a URL or header never reaches the log.
            logger.warning("broker call failed", metadata: ["broker": "alpaca", "method": "\(method.rawValue)", "error": "\(type(of: error))"])
            throw BrokerError.unavailable("\(method.rawValue) \(path.prefix { $0 != "?" }): \(type(of: error))")
        }
        if status == 429 || status >= 500 {
            throw BrokerError.unavailable("\(method.rawValue) \(path.prefix { $0 != "?" }) answered HTTP \(status)")
        }
        let json = bytes.readableBytes == 0 ? JSONValue.null : ((try? bytes.withUnsafeReadableBytes { try JSONValue.parse($0) }) ?? .null)
        return Answer(status: status, json: json)
    }

    static func encode(_ text: String) -> String {
        var unreserved = CharacterSet.alphanumerics
        unreserved.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? ""
    }
}
