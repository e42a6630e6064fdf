import FluentKit
import FolioDomain
import Foundation
import Hummingbird

/// `/api/orders`: place, list, show and cancel orders. Another user's order is 404.
struct OrdersController: Sendable {
    let orders: OrderService
    let database: FolioDatabase
    let idempotency: Idempotency

    static let maximumPageSize = 200

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let api = router.group("/api/orders", context: AuthenticatedContext.self)
        api.post(use: place)
        api.get(use: list)
        api.get("/:id", use: show)
        api.delete("/:id", use: cancel)
    }

    /// The seed's body `{"symbol":"AAPL","quantity":1,"side":"BUY","order_type":"MARKET"}` and the full form.
    struct PlaceRequest: Decodable {
        var symbol: String
        var quantity: DecimalValue?
        var notional: DecimalValue?
        var side: String
        var orderType: String
        var limitPrice: DecimalValue?
        var stopPrice: DecimalValue?
        var timeInForce: String?
        var clientOrderID: String?
        var accountID: UUID?

        enum CodingKeys: String, CodingKey {
            case symbol, quantity, notional, side
            case orderType = "order_type"
            case limitPrice = "limit_price"
            case stopPrice = "stop_price"
            case timeInForce = "time_in_force"
            case clientOrderID = "client_order_id"
            case accountID = "account_id"
        }

        /// The draft, or every field that names no known value.
        func draft() throws -> OrderDraft {
            var issues: [FieldIssue] = []
            let side = OrderSide(rawValue: side.uppercased())
            if side == nil { issues.append(.init(field: "side", code: "invalid", message: "side must be BUY or SELL.")) }
            let type = OrderType(rawValue: orderType.uppercased())
            if type == nil { issues.append(.init(field: "order_type", code: "invalid", message: "order_type must be MARKET, LIMIT, STOP or STOP_LIMIT.")) }
            let timeInForce = TimeInForce(rawValue: (self.timeInForce ?? "DAY").uppercased())
            if timeInForce == nil { issues.append(.init(field: "time_in_force", code: "invalid", message: "time_in_force must be DAY, GTC, IOC or FOK.")) }
            if let clientOrderID, !(1...64).contains(clientOrderID.count) {
                issues.append(.init(field: "client_order_id", code: "invalid", message: "client_order_id must have 1 to 64 characters."))
            }
            guard let side, let type, let timeInForce else { throw AppError.validation(issues) }
            let draft = OrderDraft(
                symbol: symbol, side: side, type: type, timeInForce: timeInForce, quantity: quantity?.value, notional: notional?.value,
                limitPrice: limitPrice?.value, stopPrice: stopPrice?.value)
            issues += draft.validate()
            if !issues.isEmpty { throw AppError.validation(issues) }
            return draft
        }
    }

    struct OrderResponse: ResponseEncodable {
        var id: UUID
        var accountID: UUID
        var clientOrderID: String?
        var symbol: String
        var side: String
        var orderType: String
        var timeInForce: String
        var quantity: String?
        var notional: String?
        var limitPrice: String?
        var stopPrice: String?
        var status: String
        var filledQuantity: String
        var averageFillPrice: String?
        var reservedCash: String
        var reservedQuantity: String
        var rejectReason: String?
        var createdAt: Date
        var updatedAt: Date

        enum CodingKeys: String, CodingKey {
            case id, symbol, side, quantity, notional, status
            case accountID = "account_id"
            case clientOrderID = "client_order_id"
            case orderType = "order_type"
            case timeInForce = "time_in_force"
            case limitPrice = "limit_price"
            case stopPrice = "stop_price"
            case filledQuantity = "filled_quantity"
            case averageFillPrice = "average_fill_price"
            case reservedCash = "reserved_cash"
            case reservedQuantity = "reserved_quantity"
            case rejectReason = "reject_reason"
            case createdAt = "created_at"
            case updatedAt = "updated_at"
        }

        init(_ order: Order) {
            id = order.id!
            accountID = order.accountID
            clientOrderID = order.clientOrderID
            symbol = order.symbol
            side = order.side
            orderType = order.type
            timeInForce = order.timeInForce
            quantity = order.quantity.map { ExactDecimal.format($0.value) }
            notional = order.notional.map { Cash.text($0.value) }
            limitPrice = order.limitPrice.map { ExactDecimal.format($0.value) }
            stopPrice = order.stopPrice.map { ExactDecimal.format($0.value) }
            status = order.status
            filledQuantity = ExactDecimal.format(order.filledQuantity.value)
            averageFillPrice = order.averageFillPrice.map { ExactDecimal.format($0.value) }
            reservedCash = Cash.text(order.reservedCash.value)
            reservedQuantity = ExactDecimal.format(order.reservedQuantity.value)
            rejectReason = order.rejectReason
            createdAt = order.createdAt
            updatedAt = order.updatedAt
        }
    }

    @Sendable func place(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let body = try await request.decodeBody(as: PlaceRequest.self, context: context)
        let draft = try body.draft()
        let placement = OrderService.Placement(draft: draft, accountID: body.accountID, clientOrderID: body.clientOrderID)
        let userID = context.identity.userID, ip = context.parent.clientIP, requestID = context.parent.requestID
        let orders = self.orders
        let priced = try await orders.price(placement)
        return try await idempotency.run(request, userID: userID, status: .created, location: { "/api/orders/\($0.id.uuidString)" }) { db in
            OrderResponse(try await orders.place(priced, userID: userID, ip: ip, requestID: requestID, on: db))
        }
    }

    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> Page<OrderResponse> {
        let limit = try Pagination.pageSize(request, maximum: Self.maximumPageSize)
        let query = Order.query(on: database.db).filter(\.$userID == context.identity.userID)
            .sort(\.$createdAt, .descending).sort(\.$id, .descending).limit(limit + 1)
        if let raw = request.uri.queryParameters["status"] {
            guard let status = OrderStatus(rawValue: String(raw)) else {
                throw AppError.validation(field: "status", code: "invalid", message: "status must be one of \(OrderStatus.allCases.map(\.rawValue).joined(separator: ", ")).")
            }
            query.filter(\.$status == status.rawValue)
        }
        if let raw = request.uri.queryParameters["symbol"] {
            guard let symbol = OrderDraft.normalizedSymbol(String(raw)) else { throw AppError.validation(field: "symbol", code: "invalid", message: "symbol must be a ticker.") }
            query.filter(\.$symbol == symbol)
        }
        if let raw = request.uri.queryParameters["cursor"] {
            query.filter(Pagination.after(try Pagination.decode(raw), table: Order.schema, timeColumn: "created_at", descending: true, owner: context.identity.userID))
        }
        let found = try await query.all()
        let page = found.prefix(limit)
        return Page(data: page.map(OrderResponse.init), nextCursor: found.count > limit ? page.last.map { Pagination.cursor(after: $0.id!) } : nil)
    }

    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> OrderResponse {
        guard let id = context.parameters.get("id", as: UUID.self),
              let order = try await Order.query(on: database.db).filter(\.$id == id).filter(\.$userID == context.identity.userID).first()
        else { throw AppError.notFound("order") }
        return OrderResponse(order)
    }

    @Sendable func cancel(_ request: Request, context: AuthenticatedContext) async throws -> OrderResponse {
        guard let id = context.parameters.get("id", as: UUID.self) else { throw AppError.notFound("order") }
        return OrderResponse(try await orders.cancel(orderID: id, userID: context.identity.userID, ip: context.parent.clientIP, requestID: context.parent.requestID))
    }
}
