import FolioDomain
import Foundation
import Hummingbird

/// `/api/orders`: place, list, show and cancel orders. Another user's order is 404.
struct OrdersController: Sendable {
    let orders: OrderService
    /// Placements of one account made at the same time share a transaction.
    let placements: PlacementQueue
    let store: TradingStore
    let idempotency: Idempotency

    static let maximumPageSize = 200

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let api = router.group("/api/orders", context: AuthenticatedContext.self)
        api.post(use: place)
        api.get(use: list)
        api.get("/:id", use: show)
        api.delete("/:id", use: cancel)
        api.delete(use: cancelAll)
    }

    /// The seed's body `{"symbol":"AAPL","quantity":1,"side":"BUY","order_type":"MARKET"}` and the full form.
    struct PlaceRequest: Decodable {
        var symbol: String
        var quantity: Quantity?
        var notional: Cash?
        var side: String
        var orderType: String
        var limitPrice: Price?
        var stopPrice: Price?
        var timeInForce: String?
        var clientOrderID: String?
        var accountID: AccountID?

        /// The placement, or every field that names no known value.
        func placement() throws -> OrderService.Placement {
            var issues: [FieldIssue] = []
            let side = OrderSide(rawValue: side.uppercased())
            if side == nil { issues.append(.init(field: "side", code: "invalid", message: "side must be BUY or SELL.")) }
            let type = OrderType(rawValue: orderType.uppercased())
            if type == nil { issues.append(.init(field: "order_type", code: "invalid", message: "order_type must be MARKET, LIMIT, STOP or STOP_LIMIT.")) }
            let timeInForce = TimeInForce(rawValue: (self.timeInForce ?? "DAY").uppercased())
            if timeInForce == nil { issues.append(.init(field: "time_in_force", code: "invalid", message: "time_in_force must be DAY, GTC, IOC or FOK.")) }
            if let clientOrderID, !(1...64).contains(UserText.length(clientOrderID)) {
                issues.append(.init(field: "client_order_id", code: "invalid", message: "client_order_id must have 1 to 64 characters."))
            } else if let clientOrderID, UserText.hasHiddenCharacters(clientOrderID) {
                issues.append(.init(field: "client_order_id", code: "invalid_characters", message: "client_order_id may not contain control or text-direction characters."))
            }
            guard let side, let type, let timeInForce else { throw TradingError.invalid(issues) }
            let draft = OrderDraft(
                symbol: symbol, side: side, type: type, timeInForce: timeInForce, quantity: quantity, notional: notional,
                limitPrice: limitPrice, stopPrice: stopPrice)
            issues += draft.validate()
            if !issues.isEmpty { throw TradingError.invalid(issues) }
            return OrderService.Placement(draft: draft, accountID: accountID, clientOrderID: clientOrderID)
        }
    }

    struct OrderResponse: ResponseEncodable {
        var id: OrderID
        var accountID: AccountID
        var clientOrderID: String?
        var symbol: String
        var side: OrderSide
        var orderType: OrderType
        var timeInForce: TimeInForce
        var quantity: Quantity?
        var notional: Cash?
        var limitPrice: Price?
        var stopPrice: Price?
        /// The order's status, or `pending_cancel` while a requested cancel waits on the broker.
        var status: String
        var filledQuantity: Quantity
        var averageFillPrice: Price?
        var reservedCash: Cash
        var reservedQuantity: Quantity
        var rejectReason: String?
        var cancelRequestedAt: Date?
        /// When a stop order's stop price was reached (the paper broker's; Alpaca keeps its own).
        var triggeredAt: Date?
        var createdAt: Date
        var updatedAt: Date

        init(_ order: OrderState) {
            id = order.id
            accountID = order.accountID
            clientOrderID = order.clientOrderID
            symbol = order.symbol
            side = order.side
            orderType = order.type
            timeInForce = order.timeInForce
            quantity = order.quantity
            notional = order.notional
            limitPrice = order.limitPrice
            stopPrice = order.stopPrice
            status = order.shownStatus
            filledQuantity = order.filledQuantity
            averageFillPrice = order.averageFillPrice
            reservedCash = order.reservedCash
            reservedQuantity = order.reservedQuantity
            rejectReason = order.rejectReason
            cancelRequestedAt = order.cancelRequestedAt
            triggeredAt = order.triggeredAt
            createdAt = order.createdAt
            updatedAt = order.updatedAt
        }
    }

    @Sendable func place(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let body = try await request.decodeBody(as: PlaceRequest.self, context: context)
        let userID = context.identity.userID, audit = context.auditContext, orders = self.orders, placements = self.placements
        let defaultAccount = context.identity.defaultAccountID
        return try await idempotency.run(
            request, userID: userID, status: .created, prepare: { try await orders.price(try body.placement()) },
            claimed: { priced, claim in
                let account = try await orders.account(of: priced.placement, userID: userID, defaultAccount: defaultAccount, on: orders.database.sql)
                let member = PlacementQueue.Member(placing: .init(priced: priced, context: audit), claim: claim) { order in
                    StoredResponse(body: try FolioJSON.encode(OrderResponse(order)), location: "/api/orders/\(order.id)")
                }
                return try await placements.place(member, account: account, owner: userID)
            })
    }

    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> Page<OrderResponse> {
        let limit = try Pagination.pageSize(request, maximum: Self.maximumPageSize)
        var filter = TradingStore.OrderFilter()
        if let raw = request.query["status"] {
            guard let status = TradingStore.ListedStatus(raw.lowercased()) else {
                throw TradingError.invalid(field: "status", code: "invalid", message: "status must be one of \(TradingStore.ListedStatus.names.joined(separator: ", ")).")
            }
            filter.status = status
        }
        (filter.accountID, filter.symbol) = try Self.accountAndSymbol(request)
        let cursor = try request.query["cursor"].map(Pagination.decode)
        try await store.requireOwned(filter.accountID, by: context.identity.userID)
        let found = try await store.orders(of: context.identity.userID, filter: filter, after: cursor, limit: limit + 1)
        let page = found.prefix(limit)
        return Page(data: page.map(OrderResponse.init), nextCursor: found.count > limit ? page.last.map { Pagination.cursor(after: $0.id.uuid) } : nil)
    }

    /// The `account_id` and `symbol` a list or a cancel of every order is narrowed to.
    static func accountAndSymbol(_ request: Request) throws -> (AccountID?, String?) {
        var account: AccountID?, symbol: String?
        if let raw = request.query["symbol"] {
            guard let ticker = OrderDraft.normalizedSymbol(String(raw)) else { throw TradingError.invalid(field: "symbol", code: "invalid", message: "symbol must be a ticker.") }
            symbol = ticker
        }
        if let raw = request.query["account_id"] {
            guard let id = AccountID(raw) else { throw TradingError.invalid(field: "account_id", code: "invalid", message: "account_id must be a UUID.") }
            account = id
        }
        return (account, symbol)
    }

    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> OrderResponse {
        guard let id = context.parameters.get("id").flatMap(OrderID.init),
              let order = try await store.order(id, owner: context.identity.userID)
        else { throw TradingError.orderNotFound }
        return OrderResponse(order)
    }

    /// 200 with the canceled order; 202 while a cancel waits on the broker
    /// (the order is still `new`, with `cancel_requested_at`).
    @Sendable func cancel(_ request: Request, context: AuthenticatedContext) async throws -> EditedResponse<OrderResponse> {
        guard let id = context.parameters.get("id").flatMap(OrderID.init) else { throw TradingError.orderNotFound }
        let order = try await orders.cancel(orderID: id, userID: context.identity.userID, context: context.auditContext)
        // 202 while the broker has yet to confirm (`pending_cancel`); 200 once the order has ended.
        return EditedResponse(status: order.status.isOpen ? .accepted : .ok, response: OrderResponse(order))
    }

    struct CanceledOrders: ResponseEncodable {
        var data: [OrderResponse]
    }

    /// Cancels every open order (of `account_id`, of `symbol`): 200 with each
    /// order as it is now, ended or `pending_cancel` while its broker
    /// confirms. When some could not be asked (their broker could not be
    /// reached), the ones that could are canceled and the answer is the
    /// problem `cancel_incomplete` naming the others, to be asked again.
    @Sendable func cancelAll(_ request: Request, context: AuthenticatedContext) async throws -> CanceledOrders {
        let (accountID, symbol) = try Self.accountAndSymbol(request)
        try await store.requireOwned(accountID, by: context.identity.userID)
        let outcomes = try await orders.cancelAll(userID: context.identity.userID, accountID: accountID, symbol: symbol, context: context.auditContext)
        var answered: [OrderResponse] = [], refused: [ProblemDetails.FieldError] = [], serverSide = false
        for (id, outcome) in outcomes {
            switch outcome {
            case .success(let order): answered.append(OrderResponse(order))
            case .failure(let error):
                let problem = ProblemMapping.appError(for: error)
                    ?? AppError(.internalServerError, code: "internal_error", detail: "Something went wrong on our side.")
                if problem.status.code >= 500 {
                    serverSide = true
                    context.logger.error("canceling one of every open order failed", metadata: ["order_id": "\(id)", "error": "\(error)"])
                }
                refused.append(.init(field: "orders", code: problem.code, message: "Order \(id) was not canceled: \(problem.detail)"))
            }
        }
        if !refused.isEmpty {
            // The ones asked stay asked; the rest are named, to be asked again.
            throw AppError(
                serverSide ? .serviceUnavailable : .conflict, code: "cancel_incomplete",
                detail: "\(answered.count) of \(outcomes.count) open orders were canceled or asked to cancel; \(refused.count) could not be. Try again to cancel the rest.",
                errors: refused, headers: serverSide ? [.retryAfter: "2"] : [:])
        }
        return CanceledOrders(data: answered)
    }
}
