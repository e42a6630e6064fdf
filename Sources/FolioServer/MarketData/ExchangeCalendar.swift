import FolioDomain
import Foundation
import Logging
import Synchronization

/// The exchange calendar Folio keeps time by: the NYSE's rules, overlaid
/// with Alpaca's published calendar (`GET /v2/calendar`) once an Alpaca
/// account is linked, so an unscheduled closure or early close Alpaca knows
/// of is kept too; and Alpaca's clock (`GET /v2/clock`), read at most once a
/// minute, for whether the market is open right now. Read by the paper
/// broker, the expiry of DAY orders and `GET /api/market/clock`; refreshed
/// daily by a job and at start.
final class ExchangeCalendar: Sendable {
    struct Clock: Sendable, Equatable {
        var isOpen: Bool
        var nextOpen: Date
        var nextClose: Date
        var readAt: Date
    }

    private struct State {
        var calendar: MarketCalendar = .nyse
        var clock: Clock?
    }

    private let state = Mutex(State())
    let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    var current: MarketCalendar { state.withLock { $0.calendar } }

    /// Alpaca's clock if it was read within the last minute of `now`.
    func brokerClock(at now: Date) -> Clock? {
        state.withLock { state in
            guard let clock = state.clock, now.timeIntervalSince(clock.readAt) < 60, now >= clock.readAt else { return nil }
            return clock
        }
    }

    static let schedule = RecurringJob(name: "market_calendar", kind: .refreshMarketCalendar, cadence: .every(86_400), payload: { _ in .refreshMarketCalendar })

    /// Reads Alpaca's calendar from a week ago to a year ahead and its clock.
    func refresh(from alpaca: AlpacaBroker, now: Date) async throws {
        let today = TradingDay(now)
        let range = today.adding(days: -7)...today.adding(days: 366)
        let sessions = try await alpaca.calendar(from: range.lowerBound, to: range.upperBound)
        // Believed only for the days it covers, first session to last; an empty answer leaves the rules.
        guard let first = sessions.map(\.day).min(), let last = sessions.map(\.day).max() else {
            throw BrokerError.unavailable("GET /v2/calendar answered no sessions")
        }
        let clock = try await alpaca.clock(now: now)
        state.withLock { state in
            state.calendar = MarketCalendar(published: sessions, covering: first...last)
            state.clock = clock
        }
        logger.info("read the market calendar from Alpaca", metadata: ["sessions": "\(sessions.count)"])
    }

    /// Alpaca's clock, read again when the cached one is over a minute old.
    func refreshClock(from alpaca: AlpacaBroker, now: Date) async throws {
        guard brokerClock(at: now) == nil else { return }
        let clock = try await alpaca.clock(now: now)
        state.withLock { $0.clock = clock }
    }
}
