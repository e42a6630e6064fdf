import FolioDomain
import Foundation
import Logging
import SQLKit

/// Each account's value at each day's close, kept in `portfolio_snapshots`.
/// A scheduled job takes the day's snapshot of every account after the close;
/// days without one (before the first run, or while the server was down) are
/// backfilled by replaying the ledger at each day's closing prices.
struct PortfolioSnapshots: Sendable {
    let store: TradingStore
    let quotes: QuoteService
    let clock: AppClock
    let logger: Logger

    var database: FolioDatabase { store.database }

    /// Ten minutes after the close, Monday to Friday.
    static let schedule = RecurringJob(
        name: "portfolio_close_snapshots", kind: .snapshotPortfolios, cadence: .weekdaysAt(hour: 16, minute: 10),
        payload: { .snapshotPortfolios(due: $0) })
    static let batchSize = 500

    struct UnreadableDay: Error {
        var text: String
    }

    struct Snapshot: Sendable, Equatable {
        var value: DailyValue
        var source: String
        /// When the ledger stood as this value shows it: when a close snapshot
        /// was taken (16:10, say, so a deposit at 16:05 is in it), the close for a backfilled one.
        var asOf: Date
    }

    /// The job: the close of `day` for every account. While `day` is still
    /// today, at current quotes; a day already past is backfilled from its
    /// daily closes instead, so a late run never values yesterday at today's prices.
    func snapshotAll(day: TradingDay) async throws {
        let today = TradingDay(clock.now())
        var after: AccountID?
        // One account that cannot be valued (worth more than cash holds, a symbol without closes) must not
        // stop everyone's history: the others go on, and a run with a failure is tried again (days written stay).
        var failure: (any Error)?
        while true {
            let accounts = try await store.accounts(after: after, limit: Self.batchSize)
            guard let last = accounts.last else {
                if let failure { throw failure }
                return
            }
            if day == today {
                try await snapshotAtCurrentPrices(accounts, day: day)
            } else {
                for account in accounts {
                    do { try await backfill(account, through: day) } catch {
                        logger.warning("an account's snapshots could not be backfilled", metadata: ["account_id": "\(account.id)", "error": "\(error)"])
                        if !(error is MoneyError) { failure = failure ?? error }
                    }
                }
            }
            after = last.id
        }
    }

    /// One query for the batch's cash and holdings together, as they stood at one moment (the snapshot's
    /// time), and one batch of quotes.
    private func snapshotAtCurrentPrices(_ accounts: [AccountRecord], day: TradingDay) async throws {
        let now = clock.now()
        let books = try await store.books(ofAccounts: accounts)
        // A day's closing value waits for fresh prices where the source can give them.
        let prices = await quotes.quotes(for: Set(books.values.flatMap(\.holdings).map(\.symbol)), staleWhileRevalidate: false)
        var values: [(AccountRecord, DailyValue)] = []
        for account in accounts {
            // Gone between the two reads (erased): nothing to value.
            guard let (state, holdings) = books[account.id] else { continue }
            let valuation: PortfolioValuation
            do {
                valuation = try PortfolioValuation(
                    cash: state.cash, availableCash: state.availableCash,
                    holdings: holdings.map { ($0.symbol, $0.position) }, quotes: prices)
            } catch {
                // One account worth more than cash can hold must not stop the batch's other snapshots.
                logger.warning("an account's value is beyond what cash holds; its snapshot is skipped", metadata: ["account_id": "\(account.id)", "error": "\(error)"])
                continue
            }
            // A close written at an old price (the source failing, a halted stock) or at cost (no price) would stay
            // for good: a day with a close is never backfilled. Left out, the day is backfilled from its daily
            // closes when the history is next read.
            if valuation.positions.contains(where: { $0.quote?.isStale ?? true }) {
                logger.warning("an account's close snapshot waits for the backfill: a holding has no fresh price", metadata: ["account_id": "\(account.id)"])
                continue
            }
            values.append((account, DailyValue(day: day, cash: valuation.cash, marketValue: valuation.marketValue)))
        }
        let saved = values
        try await database.transaction { db in
            for (account, value) in saved { try await save(value, account: account, source: "close", now: now, on: db) }
        }
    }

    /// What a backfill did.
    struct Backfill: Sendable {
        /// It wrote days: the caller then reads on the primary, which has them.
        var wrote = false
        /// The latest day it could not value: a holding's daily closes do not reach back to it (the source's
        /// history is cut at a year or so). Such a day stays without a snapshot, rather than one at cost kept for good.
        var lastUnvalued: TradingDay?

        /// Whether every day from `first` on (every day when nil) has its value.
        func complete(from first: TradingDay?) -> Bool {
            guard let lastUnvalued else { return true }
            return first.map { lastUnvalued < $0 } ?? false
        }
    }

    /// Fills the weekdays from the account's first day through `last` that have
    /// no snapshot. Throws when a day's prices cannot be had (nothing is written then).
    @discardableResult
    func backfill(_ account: AccountRecord, through last: TradingDay) async throws -> Backfill {
        let first = TradingDay(account.createdAt)
        guard first <= last else { return Backfill() }
        let taken = Set(try await database.sql.select().column("day").from("portfolio_snapshots")
            .where("account_id", .equal, account.id).all(decodingColumn: "day", as: String.self))
        let missing = TradingDay.weekdays(from: first, through: last).filter { !taken.contains($0.description) }
        guard let earliest = missing.first else { return Backfill() }

        let entries = try await store.entries(of: account.id, through: last.close)
        let movements = entries.map(\.line).map {
            LedgerMovement(occurredAt: $0.occurredAt, cash: $0.amount, symbol: $0.symbol, quantity: $0.quantity, price: $0.price)
        }
        // Closes reaching back to the earliest missing day (a little more for a holiday before it).
        let span = max(1, min(365, Calendar(identifier: .gregorian).dateComponents([.day], from: earliest.close, to: clock.now()).day! + 7))
        var closes: [String: [(day: TradingDay, close: Price)]] = [:]
        var knownFrom: [String: TradingDay] = [:]
        for symbol in Set(movements.compactMap(\.symbol)) {
            let series = try await quotes.dailyHistory(for: symbol, days: span).map { (TradingDay($0.date, in: .gmt), $0.close) }
            closes[symbol] = series
            // Before its first close a holding has no price but its trade's (the source's history stops there: a
            // year at most, a hundred days with some keys): such a day is not valued.
            if let oldest = series.first { knownFrom[symbol] = oldest.0 }
        }
        let values = try PortfolioHistory.replay(movements: movements, closes: closes, days: missing, closesKnownFrom: knownFrom)
        let valued = Set(values.map(\.day))
        let now = clock.now()
        try await database.transaction { db in
            for value in values { try await save(value, account: account, source: "backfill", now: now, on: db) }
        }
        return Backfill(wrote: !values.isEmpty, lastUnvalued: missing.last(where: { !valued.contains($0) }))
    }

    /// The account valued now: one query for its cash, holdings and (`withDayChange`) the trades since the
    /// previous close, one batch of quotes. A value alone (history, returns) needs no trades, and waits for fresh
    /// quotes where the source can give them (`freshQuotes`), as a close does: a return is not worked out at a price
    /// kept from days ago while the portfolio read, which must not wait, shows it marked stale.
    func currentValuation(
        of accountID: AccountID, owner: UserID, using source: TradingStore? = nil, withDayChange: Bool = true, freshQuotes: Bool = false
    ) async throws -> PortfolioValuation {
        let store = source ?? self.store
        let since = withDayChange ? quotes.previousCloseTime() : nil
        let read = if let since {
            try await store.portfolio(of: accountID, owner: owner, tradesSince: since)
        } else {
            try await store.portfolio(of: accountID, owner: owner).map { ($0.account, $0.holdings, [String: DayTrades]()) }
        }
        guard let (account, holdings, dayTrades) = read else { throw TradingError.accountNotFound }
        var symbols = holdings.map(\.symbol)
        symbols += dayTrades.keys.filter { !symbols.contains($0) }
        let prices = await quotes.quotes(for: symbols, staleWhileRevalidate: !freshQuotes)
        var reserved: [String: Quantity] = [:]
        for holding in holdings where !holding.reservedQuantity.isZero { reserved[holding.symbol] = holding.reservedQuantity }
        return try PortfolioValuation(
            cash: account.cash, availableCash: account.availableCash, holdings: holdings.map { ($0.symbol, $0.position) }, quotes: prices,
            dayTrades: dayTrades, tradesSince: since, reserved: reserved)
    }

    /// Snapshots of the account from `first` on, oldest first, read on `source` (a read replica) or the primary.
    func snapshots(of account: AccountRecord, from first: TradingDay?, on source: FolioDatabase? = nil) async throws -> [Snapshot] {
        var query = (source ?? database).sql.select().columns("day", "cash", "market_value", "source", "created_at").from("portfolio_snapshots")
            .where("account_id", .equal, account.id)
        if let first { query = query.where("day", .greaterThanOrEqual, first.description) }
        return try await query.orderBy("day").all().map { row in
            let text = try row.decode(column: "day", as: String.self)
            guard let day = TradingDay(text) else { throw UnreadableDay(text: text) }
            let source = try row.decode(column: "source", as: String.self)
            return Snapshot(
                value: DailyValue(day: day, cash: try row.decode(column: "cash", as: Cash.self),
                                  marketValue: try row.decode(column: "market_value", as: Cash.self)),
                source: source, asOf: source == "close" ? try row.decode(column: "created_at", as: Date.self) : day.close)
        }
    }

    /// A close snapshot replaces a backfilled one; a backfill never replaces anything.
    private func save(_ value: DailyValue, account: AccountRecord, source: String, now: Date, on db: any SQLDatabase) async throws {
        let conflict = source == "close"
            ? "DO UPDATE SET cash = excluded.cash, market_value = excluded.market_value, total_value = excluded.total_value, source = excluded.source, created_at = excluded.created_at"
            : "DO NOTHING"
        try await db.raw("""
            INSERT INTO portfolio_snapshots (id, user_id, account_id, day, cash, market_value, total_value, source, created_at)
            VALUES (\(bind: UUID.random()), \(bind: account.userID), \(bind: account.id), \(bind: value.day.description), \(bind: value.cash),
                    \(bind: value.marketValue), \(bind: value.totalValue), \(bind: source), \(bind: now))
            ON CONFLICT (account_id, day) \(unsafeRaw: conflict)
            """).run()
    }
}
