import Foundation
import SQLKit

/// A vendor's allowance of calls per minute and per UTC day, counted in the
/// database so that every server instance and worker draws on the same budget.
/// A call is claimed before it is made; when either period is spent the call
/// is not made at all.
struct CallBudget: Sendable {
    let database: FolioDatabase
    let provider: String
    let perMinute: Int
    let perDay: Int
    let clock: AppClock

    struct Exhausted: Error, Sendable {
        /// When the spent period ends.
        var retryAt: Date
    }

    /// Who a call is for. What a person looks up (a quote of any ticker, a search, a chart's history) may
    /// spend all but a fifth of each period's calls: the rest is kept for pricing orders and for jobs, so
    /// one user typing tickers cannot leave everyone's orders without a price.
    enum Purpose: Sendable { case lookingUp, trading }
    @TaskLocal static var purpose: Purpose = .trading

    /// A period's limit for the current purpose.
    static func limit(_ limit: Int, for purpose: Purpose) -> Int {
        purpose == .lookingUp ? limit - limit / 5 : limit
    }

    /// Counts one call, or throws `Exhausted` without counting anything.
    func claim() async throws {
        let now = clock.now()
        let minute = Self.periodStart(of: now, length: 60)
        let day = Self.periodStart(of: now, length: 86_400)
        let purpose = Self.purpose
        try await database.modelTransaction { db in
            let sql = database.sqlDatabase(db)
            guard try await increment(period: "minute", start: minute, limit: Self.limit(perMinute, for: purpose), on: sql) else {
                // The day's calls may be spent too: then the next minute would be refused as well.
                let dayUsed = try await sql.select().column("calls").from("market_data_calls")
                    .where("provider", .equal, provider).where("period", .equal, "day").where("period_start", .equal, day)
                    .first(decodingColumn: "calls", as: Int.self) ?? 0
                let end = dayUsed >= Self.limit(perDay, for: purpose) ? day + 86_400 : minute + 60
                throw Exhausted(retryAt: Date(timeIntervalSince1970: TimeInterval(end)))
            }
            guard try await increment(period: "day", start: day, limit: Self.limit(perDay, for: purpose), on: sql) else {
                throw Exhausted(retryAt: Date(timeIntervalSince1970: TimeInterval(day + 86_400)))
            }
            // Old periods are of no further use.
            try await sql.delete(from: "market_data_calls")
                .where("provider", .equal, provider)
                .where("period_start", .lessThan, day - 86_400)
                .run()
        }
    }

    /// Calls left in the current minute and day (for health and tests).
    func remaining() async throws -> (minute: Int, day: Int) {
        let now = clock.now()
        func used(_ period: String, _ start: Int64) async throws -> Int {
            try await database.sql.select().column("calls").from("market_data_calls")
                .where("provider", .equal, provider).where("period", .equal, period).where("period_start", .equal, start)
                .first(decodingColumn: "calls", as: Int.self) ?? 0
        }
        return (perMinute - (try await used("minute", Self.periodStart(of: now, length: 60))),
                perDay - (try await used("day", Self.periodStart(of: now, length: 86_400))))
    }

    /// Adds one to the period's count unless it has reached `limit`; false when it has.
    private func increment(period: String, start: Int64, limit: Int, on sql: any SQLDatabase) async throws -> Bool {
        guard limit > 0 else { return false }
        let row = try await sql.raw("""
            INSERT INTO market_data_calls (provider, period, period_start, calls) VALUES (\(bind: provider), \(bind: period), \(bind: start), 1)
            ON CONFLICT (provider, period, period_start) DO UPDATE SET calls = market_data_calls.calls + 1
            WHERE market_data_calls.calls < \(bind: limit)
            RETURNING calls
            """).first()
        return row != nil
    }

    static func periodStart(of date: Date, length: Int64) -> Int64 {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        return seconds - seconds % length
    }
}
