import FolioDomain
import Foundation
import SQLKit

/// One version of an account's targets.
struct StoredTargets: Sendable {
    var id: UUID
    var accountID: AccountID
    var version: Int
    var allocation: TargetAllocation
    var createdBy: UserID?
    var createdAt: Date
}

/// A rebalance run as stored: what it was asked to do, where it is, why it ended as it did.
struct RebalanceRun: Sendable {
    enum Status: String, Sendable, CaseIterable, Codable {
        case selling, buying, done
        case partiallyDone = "partially_done"
        case failed

        var isFinished: Bool { self == .done || self == .partiallyDone || self == .failed }
    }

    /// What the run keeps of the request and the plan.
    struct Instructions: Codable, Sendable {
        var targetsVersion: Int
        var cashReserve: Cash
        var minimumTrade: Cash
        var allowFractional: Bool
        /// How far a buy's quote may move from the plan's before the buys are planned again, in percent.
        var priceTolerancePercent: Ratio
        /// For targets by asset class: the weights by symbol the plan shared them out to.
        var symbolTargets: [SymbolTarget]?
        /// Symbols the plan left as they are (`RebalanceOptions.excluded`); nil in runs from before there were any.
        var excludedSymbols: [String]?
    }

    struct SymbolTarget: Codable, Sendable {
        var symbol: String
        var percent: Ratio
    }

    /// A trade of the plan, as it was shown.
    struct Trade: Codable, Sendable, Equatable {
        var symbol: String
        var side: OrderSide
        var quantity: Quantity
        var price: Price
        var estimatedAmount: Cash

        init(_ trade: PlannedTrade) {
            symbol = trade.symbol
            side = trade.side
            quantity = trade.quantity
            price = trade.price
            estimatedAmount = trade.estimatedAmount
        }
    }

    var id: RebalanceRunID
    var userID: UserID
    var accountID: AccountID
    var mode: RebalanceMode
    var status: Status
    var instructions: Instructions
    var plannedTrades: [Trade]
    /// Why the run fell short: orders that did not fill whole, buys that could not be placed.
    var reasons: [String]
    /// What the run did that the plan did not say (buys planned again, say); not failures.
    var notes: [String]
    var buyRounds: Int
    var createdAt: Date
    var updatedAt: Date
    var finishedAt: Date?
}

/// An order a run placed, and in which phase and round.
struct RunOrder: Sendable {
    var orderID: OrderID
    var phase: OrderSide
    var round: Int
}

/// The only code that reads or writes targets and rebalance runs.
struct RebalanceStore: Sendable {
    let database: FolioDatabase

    // MARK: - Targets

    /// The newest version of the account's targets (or version `version`), if any.
    func targets(of accountID: AccountID, version: Int? = nil, on db: (any SQLDatabase)? = nil) async throws -> StoredTargets? {
        let db = db ?? database.sql
        let which: SQLQueryString = version.map { "AND version = \(bind: $0)" } ?? "ORDER BY version DESC LIMIT 1"
        guard let row = try await db.raw("""
            SELECT id, version, cash_percent, drift_absolute_points, drift_relative_percent, created_by, created_at
            FROM target_allocations WHERE account_id = \(bind: accountID) \(which)
            """).first()
        else { return nil }
        let id = try row.decode(column: "id", as: UUID.self)
        let weights = try await db.raw("SELECT symbol, percent FROM target_weights WHERE allocation_id = \(bind: id)").all().map { row in
            TargetWeight(symbol: try row.decode(column: "symbol", as: String.self), percent: try row.decode(column: "percent", as: Ratio.self))
        }
        var classWeights: [ClassWeight] = []
        for row in try await db.raw("SELECT asset_class, percent FROM target_class_weights WHERE allocation_id = \(bind: id)").all() {
            guard let assetClass = AssetClass(rawValue: try row.decode(column: "asset_class", as: String.self)) else { continue }
            classWeights.append(ClassWeight(assetClass: assetClass, percent: try row.decode(column: "percent", as: Ratio.self)))
        }
        let allocation = try TargetAllocation(
            weights: weights, classWeights: classWeights, cashPercent: try row.decode(column: "cash_percent", as: Ratio.self),
            band: DriftBand(
                absolutePoints: try row.decode(column: "drift_absolute_points", as: Ratio.self),
                relativePercent: try row.decode(column: "drift_relative_percent", as: Ratio.self)))
        return StoredTargets(
            id: id, accountID: accountID, version: try row.decode(column: "version", as: Int.self), allocation: allocation,
            createdBy: try row.decode(column: "created_by", as: UserID?.self), createdAt: try row.decode(column: "created_at", as: Date.self))
    }

    /// Every open account that has targets, with its owner (an erased person's are closed: no digest for no one).
    func accountsWithTargets() async throws -> [(account: AccountID, owner: UserID, name: String)] {
        try await database.sql.raw("""
            SELECT DISTINCT t.account_id, t.user_id, a.name FROM target_allocations t JOIN accounts a ON a.id = t.account_id
            WHERE a.closed_at IS NULL ORDER BY t.user_id, t.account_id
            """).all().map { row in
            (try row.decode(column: "account_id", as: AccountID.self), try row.decode(column: "user_id", as: UserID.self),
             try row.decode(column: "name", as: String.self))
        }
    }

    struct VersionSummary: Sendable {
        var version: Int
        var createdBy: UserID?
        var createdAt: Date
    }

    /// Every version of the account's targets, newest first.
    func targetVersions(of accountID: AccountID) async throws -> [VersionSummary] {
        try await database.sql.raw("""
            SELECT version, created_by, created_at FROM target_allocations WHERE account_id = \(bind: accountID) ORDER BY version DESC
            """).all().map { row in
            VersionSummary(
                version: try row.decode(column: "version", as: Int.self), createdBy: try row.decode(column: "created_by", as: UserID?.self),
                createdAt: try row.decode(column: "created_at", as: Date.self))
        }
    }

    /// Adds the next version of the account's targets; the caller holds the account's lock.
    func addTargets(_ allocation: TargetAllocation, account: AccountState, by actor: UserID?, id: UUID, now: Date, on db: any SQLDatabase) async throws -> StoredTargets {
        let latest = try await db.raw("SELECT MAX(version) AS version FROM target_allocations WHERE account_id = \(bind: account.id)")
            .first()?.decode(column: "version", as: Int?.self) ?? 0
        let version = latest + 1
        try await db.raw("""
            INSERT INTO target_allocations (id, account_id, user_id, version, cash_percent, drift_absolute_points, drift_relative_percent, created_by, created_at)
            VALUES (\(bind: id), \(bind: account.id), \(bind: account.userID), \(bind: version), \(bind: allocation.cashPercent),
                    \(bind: allocation.band.absolutePoints), \(bind: allocation.band.relativePercent), \(bind: actor), \(bind: now))
            """).run()
        // In slices, so ten thousand weights stay under every database's limit of bound values.
        for slice in stride(from: 0, to: allocation.weights.count, by: 500).map({ allocation.weights[$0..<min($0 + 500, allocation.weights.count)] }) {
            let rows = slice.map { weight -> SQLQueryString in "(\(bind: id), \(bind: weight.symbol), \(bind: weight.percent))" }
            try await db.raw("INSERT INTO target_weights (allocation_id, symbol, percent) VALUES \(rows.joined(separator: ", "))").run()
        }
        if !allocation.classWeights.isEmpty {
            let rows = allocation.classWeights.map { weight -> SQLQueryString in "(\(bind: id), \(bind: weight.assetClass.rawValue), \(bind: weight.percent))" }
            try await db.raw("INSERT INTO target_class_weights (allocation_id, asset_class, percent) VALUES \(rows.joined(separator: ", "))").run()
        }
        return StoredTargets(id: id, accountID: account.id, version: version, allocation: allocation, createdBy: actor, createdAt: now)
    }

    // MARK: - Runs

    static let runColumns = "id, user_id, account_id, mode, status, options, plan, reasons, notes, buy_rounds, created_at, updated_at, finished_at"

    func insert(_ run: RebalanceRun, on db: any SQLDatabase) async throws {
        try await db.raw("""
            INSERT INTO rebalance_runs (\(unsafeRaw: Self.runColumns))
            VALUES (\(bind: run.id), \(bind: run.userID), \(bind: run.accountID), \(bind: run.mode.rawValue), \(bind: run.status.rawValue),
                    \(bind: try Self.json(run.instructions)), \(bind: try Self.json(run.plannedTrades)), \(bind: try Self.json(run.reasons)), \(bind: try Self.json(run.notes)),
                    \(bind: run.buyRounds), \(bind: run.createdAt), \(bind: run.updatedAt), \(bind: run.finishedAt))
            """).run()
    }

    /// The run, if it is the owner's (any owner when nil).
    func run(_ id: RebalanceRunID, owner: UserID? = nil, on db: (any SQLDatabase)? = nil) async throws -> RebalanceRun? {
        let ownerCondition: SQLQueryString = owner.map { " AND user_id = \(bind: $0)" } ?? ""
        return try await (db ?? database.sql).raw("SELECT \(unsafeRaw: Self.runColumns) FROM rebalance_runs WHERE id = \(bind: id)\(ownerCondition)")
            .first().map(Self.run)
    }

    /// The account's runs, newest first.
    func runs(of accountID: AccountID, owner: UserID, limit: Int) async throws -> [RebalanceRun] {
        try await database.sql.raw("""
            SELECT \(unsafeRaw: Self.runColumns) FROM rebalance_runs WHERE account_id = \(bind: accountID) AND user_id = \(bind: owner)
            ORDER BY created_at DESC, id DESC LIMIT \(literal: limit)
            """).all().map(Self.run)
    }

    /// Runs that have not finished, oldest first.
    func activeRuns(limit: Int = 1000) async throws -> [RebalanceRun] {
        try await database.sql.raw("""
            SELECT \(unsafeRaw: Self.runColumns) FROM rebalance_runs WHERE status IN ('selling', 'buying') ORDER BY created_at, id LIMIT \(literal: limit)
            """).all().map(Self.run)
    }

    /// A run of the account that has not finished, if any.
    func activeRun(of accountID: AccountID, on db: any SQLDatabase) async throws -> RebalanceRunID? {
        try await db.raw("""
            SELECT id FROM rebalance_runs WHERE account_id = \(bind: accountID) AND status IN ('selling', 'buying') LIMIT 1
            """).first()?.decode(column: "id", as: RebalanceRunID.self)
    }

    /// Moves the run on from the state it was read in; false when someone else moved it first.
    func advance(_ run: RebalanceRun, from status: RebalanceRun.Status, rounds: Int, now: Date, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw("""
            UPDATE rebalance_runs SET status = \(bind: run.status.rawValue), reasons = \(bind: try Self.json(run.reasons)), notes = \(bind: try Self.json(run.notes)),
                buy_rounds = \(bind: run.buyRounds), updated_at = \(bind: now), finished_at = \(bind: run.finishedAt)
            WHERE id = \(bind: run.id) AND status = \(bind: status.rawValue) AND buy_rounds = \(bind: rounds)
            RETURNING id
            """).first() != nil
    }

    func link(_ orders: [RunOrder], to run: RebalanceRunID, on db: any SQLDatabase) async throws {
        // In slices, under every database's limit of bound values.
        for start in stride(from: 0, to: orders.count, by: 500) {
            let rows = orders[start..<min(start + 500, orders.count)].map { order -> SQLQueryString in
                "(\(bind: run), \(bind: order.orderID), \(bind: order.phase == .sell ? "sell" : "buy"), \(bind: order.round))"
            }
            try await db.raw("INSERT INTO rebalance_orders (run_id, order_id, phase, round) VALUES \(rows.joined(separator: ", "))").run()
        }
    }

    func orders(of run: RebalanceRunID, on db: (any SQLDatabase)? = nil) async throws -> [RunOrder] {
        try await (db ?? database.sql).raw("SELECT order_id, phase, round FROM rebalance_orders WHERE run_id = \(bind: run) ORDER BY round, phase DESC, order_id")
            .all().map { row in
                RunOrder(
                    orderID: try row.decode(column: "order_id", as: OrderID.self),
                    phase: try row.decode(column: "phase", as: String.self) == "sell" ? .sell : .buy, round: try row.decode(column: "round", as: Int.self))
            }
    }

    static func run(_ row: any SQLRow) throws -> RebalanceRun {
        let mode = try row.decode(column: "mode", as: String.self), status = try row.decode(column: "status", as: String.self)
        guard let mode = RebalanceMode(rawValue: mode), let status = RebalanceRun.Status(rawValue: status) else {
            throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "unknown rebalance mode \(mode) or status \(status)"))
        }
        return RebalanceRun(
            id: try row.decode(column: "id", as: RebalanceRunID.self), userID: try row.decode(column: "user_id", as: UserID.self),
            accountID: try row.decode(column: "account_id", as: AccountID.self), mode: mode, status: status,
            instructions: try decode(RebalanceRun.Instructions.self, row, "options"), plannedTrades: try decode([RebalanceRun.Trade].self, row, "plan"),
            reasons: try decode([String].self, row, "reasons"), notes: try decode([String].self, row, "notes"), buyRounds: try row.decode(column: "buy_rounds", as: Int.self),
            createdAt: try row.decode(column: "created_at", as: Date.self), updatedAt: try row.decode(column: "updated_at", as: Date.self),
            finishedAt: try row.decode(column: "finished_at", as: Date?.self))
    }

    static func json(_ value: some Encodable) throws -> String {
        String(decoding: try FolioJSON.encode(value), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ row: any SQLRow, _ column: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(type, from: Data(try row.decode(column: column, as: String.self).utf8))
    }
}
