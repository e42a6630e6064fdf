import FluentKit
import FolioDomain
import Foundation
import SQLKit

/// A job enqueued again and again.
struct RecurringJob: Sendable {
    enum Cadence: Sendable {
        case every(TimeInterval)
        /// Monday to Friday at this New York time.
        case weekdaysAt(hour: Int, minute: Int)
        /// On this day of each month, at this hour UTC.
        case monthly(day: Int, hour: Int)
    }

    var name: String
    var kind: JobPayload.Kind
    var cadence: Cadence
    /// The job to enqueue for a run due at this Unix time.
    var payload: @Sendable (Int64) -> JobPayload

    /// The first run strictly after `date`.
    func nextRun(after date: Date) -> Date {
        switch cadence {
        case .every(let interval):
            return date.addingTimeInterval(interval)
        case .weekdaysAt(let hour, let minute):
            var day = TradingDay(date)
            while !day.isWeekday || day.at(hour: hour, minute: minute) <= date {
                day = day.adding(days: 1)
            }
            return day.at(hour: hour, minute: minute)
        case .monthly(let day, let hour):
            var calendar = Calendar(identifier: .gregorian)
            calendar.timeZone = TimeZone(identifier: "UTC")!
            return calendar.nextDate(
                after: date, matching: DateComponents(day: day, hour: hour, minute: 0, second: 0), matchingPolicy: .nextTime) ?? date.addingTimeInterval(30 * 86_400)
        }
    }
}

/// Enqueues recurring jobs when they are due, exactly once however many
/// workers ask: each schedule's next run is moved forward with a
/// compare-and-set on `job_schedules`, in the transaction that enqueues the job.
struct JobScheduler: Sendable {
    let database: FolioDatabase
    let queue: JobQueue
    let schedules: [RecurringJob]

    /// The names of the schedules enqueued now.
    @discardableResult
    func enqueueDue() async throws -> [String] {
        let now = queue.clock.now()
        let rows = try await database.sql.select().columns("name", "next_run_at").from("job_schedules").all()
        var nextRuns: [String: Int64] = [:]
        for row in rows { nextRuns[try row.decode(column: "name", as: String.self)] = try row.decode(column: "next_run_at", as: Int64.self) }
        var enqueued: [String] = []
        for schedule in schedules {
            guard let due = nextRuns[schedule.name] else {
                // A new schedule first runs at its next time, not at once.
                try await database.sql.raw("""
                    INSERT INTO job_schedules (name, kind, next_run_at) VALUES (\(bind: schedule.name), \(bind: schedule.kind.rawValue), \(bind: Self.seconds(schedule.nextRun(after: now))))
                    ON CONFLICT (name) DO NOTHING
                    """).run()
                continue
            }
            guard due <= Self.seconds(now) else { continue }
            let next = Self.seconds(schedule.nextRun(after: now))
            let won = try await database.transaction { db -> Bool in
                let claimed = try await db.raw("""
                    UPDATE job_schedules SET next_run_at = \(bind: next), last_enqueued_at = \(bind: Self.seconds(now))
                    WHERE name = \(bind: schedule.name) AND next_run_at = \(bind: due)
                    RETURNING name
                    """).first()
                guard claimed != nil else { return false }
                try await queue.enqueue(schedule.payload(due), on: db)
                return true
            }
            if won { enqueued.append(schedule.name) }
        }
        return enqueued
    }

    static func seconds(_ date: Date) -> Int64 {
        Int64(date.timeIntervalSince1970.rounded(.down))
    }
}
