import Foundation
import Logging
import NIOConcurrencyHelpers
import SQLKit

/// Where reporting reads go: the streaming standby named by
/// `READ_DATABASE_URL` while it answers and is less than
/// `READ_REPLICA_MAX_LAG` seconds behind, the primary otherwise. Reporting
/// reads are the ledger list and its CSV, portfolio history, performance, tax
/// lots and realized gains: reads of the past that can be a moment old. Money
/// paths and anything that must see its own writes use the primary.
///
/// The standby's state is checked at most once a second (every 5 s while it
/// is down), with a 1 s limit, and every read sent back to the primary is
/// counted (`folio_read_replica_fallbacks_total{reason}`).
public final class ReadRouting: Sendable {
    let primary: FolioDatabase
    let replica: FolioDatabase?
    let maxLag: TimeInterval
    let logger: Logger
    let metrics: FolioMetrics?

    enum State: Equatable, Sendable {
        case usable
        case lagging(seconds: Double)
        case unavailable
        case notStandby
    }

    private struct Checked {
        var state: State
        var at: ContinuousClock.Instant
    }
    private let last = NIOLockedValueBox<Checked?>(nil)

    init(primary: FolioDatabase, replicaURL: String?, maxLag: TimeInterval, poolSize: Int, logger: Logger, metrics: FolioMetrics?) {
        self.primary = primary
        self.maxLag = maxLag
        self.logger = logger
        self.metrics = metrics
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .warning)
        self.replica = replicaURL.flatMap { try? FolioDatabase(
            location: .postgres(url: $0), poolSize: poolSize, preparedStatements: primary.preparedStatements != nil, logger: quiet) }
    }

    /// The database a reporting read should use now.
    func reporting() async -> FolioDatabase {
        guard let replica else { return primary }
        let state = await state(of: replica)
        let reason: String
        switch state {
        case .usable:
            metrics?.replicaRead(target: "replica")
            return replica
        case .lagging: reason = "lagging"
        case .unavailable: reason = "unavailable"
        case .notStandby: reason = "not_a_standby"
        }
        metrics?.replicaFallback(reason: reason)
        metrics?.replicaRead(target: "primary")
        return primary
    }

    /// A store for a reporting read.
    func store() async -> TradingStore {
        TradingStore(database: await reporting())
    }

    /// The standby's state, from the cache while it is fresh.
    func state(of replica: FolioDatabase) async -> State {
        let now = ContinuousClock.now
        if let cached = last.withLockedValue({ $0 }), now - cached.at < (cached.state == .unavailable ? .seconds(5) : .seconds(1)) {
            return cached.state
        }
        let state = await check(replica)
        let previous = last.withLockedValue { last -> State? in
            defer { last = Checked(state: state, at: now) }
            return last?.state
        }
        if previous != state, !(previous == nil && state == .usable) {
            switch state {
            case .usable: logger.info("reporting reads go to the read replica again")
            case .lagging(let seconds): logger.warning("the read replica lags; reporting reads go to the primary", metadata: ["lag_seconds": "\(Int(seconds))"])
            case .unavailable: logger.warning("the read replica does not answer; reporting reads go to the primary")
            case .notStandby: logger.error("READ_DATABASE_URL is not a standby (not in recovery); reporting reads go to the primary")
            }
        }
        return state
    }

    /// The standby's state, or `unavailable` when it does not answer within a second (the query goes on alone).
    private func check(_ replica: FolioDatabase) async -> State {
        let maxLag = self.maxLag
        let answered = NIOLockedValueBox(false)
        return await withCheckedContinuation { (continuation: CheckedContinuation<State, Never>) in
            @Sendable func answer(_ state: State) {
                let first = answered.withLockedValue { answered in
                    defer { answered = true }
                    return !answered
                }
                if first { continuation.resume(returning: state) }
            }
            Task {
                do {
                    // Caught up (everything received is replayed): no lag, however long ago the last write was.
                    // A standby cut off from its primary is "caught up" with what it received: it must be
                    // streaming, and have heard from the primary (data or keep-alive) lately.
                    guard let row = try await replica.sql.raw("""
                        SELECT pg_is_in_recovery() AS standby,
                               COALESCE(pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), false) AS caught_up,
                               COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)::float8 AS behind,
                               COALESCE((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false) AS streaming,
                               COALESCE((SELECT EXTRACT(EPOCH FROM now() - last_msg_receipt_time) FROM pg_stat_wal_receiver), 1e9)::float8 AS silent
                        """).first()
                    else { return answer(.unavailable) }
                    guard try row.decode(column: "standby", as: Bool.self) else { return answer(.notStandby) }
                    let silent = try row.decode(column: "silent", as: Double.self)
                    guard try row.decode(column: "streaming", as: Bool.self), silent <= max(maxLag, Self.keepAliveAllowance) else {
                        return answer(.lagging(seconds: silent))
                    }
                    if try row.decode(column: "caught_up", as: Bool.self) { return answer(.usable) }
                    let behind = try row.decode(column: "behind", as: Double.self)
                    answer(behind > maxLag ? .lagging(seconds: behind) : .usable)
                } catch {
                    answer(.unavailable)
                }
            }
            Task {
                try? await Task.sleep(for: .seconds(1))
                answer(.unavailable)
            }
        }
    }

    /// An idle primary still sends keep-alives (every `wal_sender_timeout` / 2, 30 s by default): silence longer than this is a cut link.
    static let keepAliveAllowance: TimeInterval = 90

    func shutdown() async {
        await replica?.shutdown()
    }
}
