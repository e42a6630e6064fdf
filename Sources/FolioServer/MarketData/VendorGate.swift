import FolioDomain
import Foundation
import Logging
import NIOConcurrencyHelpers

/// Whether a market-data vendor may be called now. After a rate-limit answer
/// the vendor is held off until the window the message names (the next minute,
/// or the next UTC day for a daily limit); after `threshold` errors or timeouts
/// in a row the circuit opens for a cool-down (30 s, doubling up to 5 minutes),
/// then lets one probe through (half-open): its success closes the circuit,
/// its failure opens it again. A refused call fails at once with
/// `MarketDataError.heldOff`, spending neither time nor the call budget, so
/// callers fall back to the last quote known.
final class VendorGate: Sendable {
    static let threshold = 3
    static let firstCooldown: TimeInterval = 30
    static let longestCooldown: TimeInterval = 300

    let vendor: String
    let clock: AppClock
    let logger: Logger
    private let state = NIOLockedValueBox(State())

    struct State {
        var consecutiveFailures = 0
        /// Calls are refused until then.
        var closedUntil: Date?
        var why = ""
        var cooldown = VendorGate.firstCooldown
        /// The circuit had opened: the next call after `closedUntil` is a probe.
        var circuitOpen = false
        var probing = false
    }

    /// What `/health/detailed` shows.
    struct Report: Sendable {
        var state: String
        var retryAt: Date?
        var consecutiveFailures: Int
        var reason: String?
    }

    init(vendor: String, clock: AppClock, logger: Logger) {
        self.vendor = vendor
        self.clock = clock
        self.logger = logger
    }

    /// A call let through: whether it is the half-open circuit's probe, whose
    /// outcome alone decides the circuit.
    struct Admission: Sendable {
        var isProbe: Bool
    }

    /// Lets a call through, or throws `heldOff` until the vendor may be called again.
    func admit() throws -> Admission {
        let now = clock.now()
        return try state.withLockedValue { state in
            if let until = state.closedUntil, now < until { throw MarketDataError.heldOff(retryAt: until, reason: state.why) }
            guard state.circuitOpen else { return Admission(isProbe: false) }
            // Half-open: one probe at a time.
            if state.probing { throw MarketDataError.heldOff(retryAt: now.addingTimeInterval(1), reason: "a probe of \(vendor) is under way") }
            state.probing = true
            return Admission(isProbe: true)
        }
    }

    /// The vendor answered. Only the probe closes an open circuit; a call from
    /// before a rate-limit answer does not lift the hold that answer set.
    func succeeded(_ admission: Admission) {
        let now = clock.now()
        let reopened = state.withLockedValue { state -> Bool in
            if admission.isProbe {
                state = State()
                return true
            }
            if state.circuitOpen { return false }
            state.consecutiveFailures = 0
            if let until = state.closedUntil, now >= until { state.closedUntil = nil }
            return false
        }
        if reopened { logger.notice("market data vendor answers again", metadata: ["provider": .string(vendor)]) }
    }

    /// Counts a failed call; `rejected` (a bad symbol or request) says nothing about the vendor's health.
    func failed(_ error: MarketDataError, _ admission: Admission) {
        let now = clock.now()
        let change: (until: Date, why: String)? = state.withLockedValue { state in
            let wasProbe = admission.isProbe
            if wasProbe { state.probing = false }
            switch error {
            case .rateLimited(let message):
                let until = Self.nextWindow(after: now, message: message)
                state.closedUntil = until
                state.why = "rate limited by the vendor"
                return (until, state.why)
            case .badResponse(_, aboutTheSymbol: true):
                // The vendor answered; only this symbol's answer is unusable (its refreshes pause on their own).
                return nil
            case .unreachable, .badResponse:
                state.consecutiveFailures += 1
                // A call let through before the circuit opened, failing late, does not lengthen the cool-down.
                if state.circuitOpen, !wasProbe, let until = state.closedUntil, now < until { return nil }
                guard state.circuitOpen || state.consecutiveFailures >= Self.threshold else { return nil }
                let until = now.addingTimeInterval(state.cooldown)
                state.cooldown = min(state.cooldown * 2, Self.longestCooldown)
                state.circuitOpen = true
                state.closedUntil = until
                state.why = "\(state.consecutiveFailures) failed calls in a row"
                return (until, state.why)
            case .rejected, .budgetExhausted, .heldOff:
                return nil
            }
        }
        if let change {
            logger.warning("market data vendor held off", metadata: [
                "provider": .string(vendor), "until": .string(change.until.formatted(.iso8601)), "reason": .string(change.why),
            ])
        }
    }

    var report: Report {
        let now = clock.now()
        return state.withLockedValue { state in
            if let until = state.closedUntil, now < until {
                return Report(state: state.circuitOpen ? "open" : "held_off", retryAt: until, consecutiveFailures: state.consecutiveFailures, reason: state.why)
            }
            if state.circuitOpen { return Report(state: "half_open", retryAt: nil, consecutiveFailures: state.consecutiveFailures, reason: state.why) }
            return Report(state: "closed", retryAt: nil, consecutiveFailures: state.consecutiveFailures, reason: nil)
        }
    }

    /// The start of the next window the vendor's message names. Alpha
    /// Vantage's `Note` ("5 calls per minute and 500 calls per day") comes with
    /// the per-minute limit: the next minute. Its `Information` ("25 requests
    /// per day") names only a daily limit: the next UTC day. Anything else: the
    /// next minute.
    static func nextWindow(after now: Date, message: String) -> Date {
        let lowered = message.lowercased()
        let seconds = Int64(now.timeIntervalSince1970.rounded(.down))
        // "per day" only: "daily" is also in function names (TIME_SERIES_DAILY). A burst ("more sparingly
        // (1 request per second)") waits a minute, though its text may name the daily limit too.
        let burst = lowered.contains("per second") || lowered.contains("sparingly")
        let daily = !burst && !lowered.contains("per minute") && lowered.contains("per day")
        let length: Int64 = daily ? 86_400 : 60
        return Date(timeIntervalSince1970: TimeInterval(seconds - seconds % length + length))
    }
}

/// A vendor behind its gate: every call is admitted first and its outcome counted.
struct GatedMarketDataProvider: MarketDataProvider {
    let base: any MarketDataProvider
    let gate: VendorGate
    var name: String { base.name }
    var answersUnknownByMistake: Bool { base.answersUnknownByMistake }

    func quote(for symbol: String) async throws -> PriceQuote? {
        try await through { try await base.quote(for: symbol) }
    }

    func search(_ query: String) async throws -> [SymbolMatch] {
        try await through { try await base.search(query) }
    }

    func dailyHistory(for symbol: String, days: Int) async throws -> [DailyClose] {
        try await through { try await base.dailyHistory(for: symbol, days: days) }
    }

    func previousCloseTime(at date: Date, calendar: MarketCalendar) -> Date {
        base.previousCloseTime(at: date, calendar: calendar)
    }

    private func through<T>(_ call: () async throws -> T) async throws -> T {
        let admission = try gate.admit()
        do {
            let value = try await call()
            gate.succeeded(admission)
            return value
        } catch {
            let reason = QuoteService.reason(error)
            // A refusal (a bad symbol or call), or an answer unusable for one symbol, is an answer: the vendor is up.
            switch reason {
            case .rejected, .badResponse(_, aboutTheSymbol: true): gate.succeeded(admission)
            default: gate.failed(reason, admission)
            }
            throw error
        }
    }
}
