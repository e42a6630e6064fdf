import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SQLKit
import Testing

@testable import FolioServer

/// Reporting reads on a real streaming standby (`pg_basebackup -R`, started by
/// `.ci/run` and named by `FOLIO_TEST_REPLICA_URL`), back on the primary while
/// it lags or is gone.
@Suite("Read replica")
struct ReadReplicaTests {
    static let standby = ProcessInfo.processInfo.environment["FOLIO_TEST_REPLICA_URL"]
    static let inCI = ProcessInfo.processInfo.environment["CI"] != nil

    /// A series' value in the exposition, 0 when absent.
    static func counter(_ env: TestEnvironment, _ series: String) -> Double {
        let line = env.services.metrics.exposition().split(separator: "\n").first { $0.hasPrefix(series + " ") }
        return line.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
    }

    static func transactions(_ client: some TestClientProtocol, _ tokens: [String: Any]) async throws -> [[String: Any]] {
        let response = try await client.execute(uri: "/api/transactions?limit=200", method: .get, headers: bearer(tokens))
        #expect(response.status == .ok)
        return try json(response)["data"] as? [[String: Any]] ?? []
    }

    /// Polls the standby's state until it is usable, for up to `seconds`; the last state seen.
    /// Generous: while the whole suite runs, the standby replays every test's
    /// CREATE DATABASE and writes on a share of two loaded cores. CI saw it replay
    /// slower than the suite wrote, still a minute behind two minutes after its
    /// replay resumed; it catches up once the suite's heavy tests end, so the
    /// wait outlasts the suite (about three and a half minutes in CI).
    static func usable(_ reads: ReadRouting, _ replica: FolioDatabase, within seconds: Double = 420) async throws -> ReadRouting.State {
        let deadline = ContinuousClock.now + .seconds(seconds)
        var state = await reads.state(of: replica)
        while state != .usable, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(250))
            state = await reads.state(of: replica)
        }
        return state
    }

    /// Lists the ledger until one list is read on the standby and has `rows` rows (it may fall
    /// behind again while other tests write): true once that happens within three minutes
    /// (it follows a wait until the standby was usable).
    static func readOnStandby(_ env: TestEnvironment, _ client: some TestClientProtocol, _ tokens: [String: Any], rows: Int) async throws -> Bool {
        try await eventually(180) {
            let before = counter(env, #"folio_read_replica_reads_total{target="replica"}"#)
            return try await transactions(client, tokens).count == rows && counter(env, #"folio_read_replica_reads_total{target="replica"}"#) > before
        }
    }

    /// The standby's own account of its replay, for a failure message.
    static func replayReport(_ standbyAdmin: String, _ env: TestEnvironment) async -> String {
        guard let admin = try? FolioDatabase(location: .postgres(url: standbyAdmin), poolSize: 1, preparedStatements: false, logger: env.services.logger) else {
            return "the standby's address did not open"
        }
        let report: String
        do {
            let rows = try await admin.sql.raw("""
                SELECT COALESCE(pg_last_wal_receive_lsn()::text, 'none') AS received, COALESCE(pg_last_wal_replay_lsn()::text, 'none') AS replayed,
                       pg_is_wal_replay_paused() AS paused, COALESCE(pg_last_xact_replay_timestamp()::text, '') AS last_commit,
                       COALESCE((SELECT status FROM pg_stat_wal_receiver), 'no receiver') AS receiver
                """).all()
            if let row = rows.first {
                report = try ["received", "replayed", "last_commit", "receiver"].map { "\($0) \(try row.decode(column: $0, as: String.self))" }.joined(separator: ", ")
                    + ", paused \(try row.decode(column: "paused", as: Bool.self))"
            } else {
                report = "no answer"
            }
        } catch {
            report = "the standby did not answer: \(error)"
        }
        await admin.shutdown()
        return report
    }

    /// Polls until `condition` holds, for up to `seconds`.
    static func eventually(_ seconds: Double = 20, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(200))
        }
        return try await condition()
    }

    @Test("reporting reads go to the standby; while its replay is paused and it falls behind they go to the primary, counted; then back", .enabled(if: standby != nil || inCI))
    func standbyRouting() async throws {
        let standbyAdmin = try #require(Self.standby, "CI starts a standby and sets FOLIO_TEST_REPLICA_URL")
        try await withTestApp(.postgres, configure: { configuration in
            var replica = URLComponents(string: standbyAdmin)!
            replica.path = URLComponents(string: configuration.database.postgresURL!)!.path
            configuration.readDatabaseURL = replica.string
            configuration.readReplicaMaxLag = 3
        }) { client, env in
            let reads = env.services.reads
            let replica = try #require(reads.replica)
            let tokens = try await signUp(client, env, email: "replica@example.com")
            let accountID = try await env.firstAccount().id.description

            // The standby has the new database and its rows once it has replayed them.
            let caughtUp = try await Self.usable(reads, replica)
            let caughtUpReport = caughtUp == .usable ? "" : await Self.replayReport(standbyAdmin, env)
            try #require(caughtUp == .usable, "the standby never caught up; last state \(caughtUp); \(caughtUpReport)")
            #expect(try await Self.readOnStandby(env, client, tokens, rows: 1), "the ledger list was read on the standby, with its row")
            let rows = try await replica.sql.raw("SELECT COUNT(*) AS n FROM transactions").first()?.decode(column: "n", as: Int.self)
            #expect(rows == 1, "the standby holds the row itself")

            // Replay paused: the standby receives but does not apply, and falls behind.
            let admin = try FolioDatabase(location: .postgres(url: standbyAdmin), poolSize: 1, preparedStatements: false, logger: env.services.logger)
            try await admin.sql.raw("SELECT pg_wal_replay_pause()").run()
            do {
                let deposit = try await post(client, "/api/accounts/\(accountID)/deposits", ["amount": "5.00"], headers: bearer(tokens))
                #expect(deposit.status == .created)
                #expect(try await Self.eventually(30) {
                    if case .lagging = await reads.state(of: replica) { return true }
                    return false
                })
                // Counted as lagging, or as unavailable when the loaded standby took more than a second to say how far
                // behind it is (the full suite on two cores): either way the read went to the primary, counted.
                func fallbacks() -> Double {
                    Self.counter(env, #"folio_read_replica_fallbacks_total{reason="lagging"}"#)
                        + Self.counter(env, #"folio_read_replica_fallbacks_total{reason="unavailable"}"#)
                }
                let before = fallbacks()
                let listed = try await Self.transactions(client, tokens)
                #expect(listed.count == 2, "the new deposit is read on the primary")
                #expect(fallbacks() > before)
                let history = try await client.execute(uri: "/api/portfolio/history?range=1M", method: .get, headers: bearer(tokens))
                #expect(history.status == .ok)
            } catch {
                try? await admin.sql.raw("SELECT pg_wal_replay_resume()").run()
                await admin.shutdown()
                throw error
            }
            try await admin.sql.raw("SELECT pg_wal_replay_resume()").run()
            await admin.shutdown()

            let resumed = try await Self.usable(reads, replica)
            let resumedReport = resumed == .usable ? "" : await Self.replayReport(standbyAdmin, env)
            try #require(resumed == .usable, "the standby never caught up after its replay resumed; last state \(resumed); \(resumedReport)")
            #expect(try await Self.readOnStandby(env, client, tokens, rows: 2), "both rows were read on the standby")
            await reads.shutdown()
        }
    }

    @Test("a replica that does not answer: reporting reads are served by the primary and counted")
    func unavailableReplica() async throws {
        guard TestDatabaseKind.all.contains(.postgres) else { return }
        try await withTestApp(.postgres, configure: { configuration in
            configuration.readDatabaseURL = "postgres://postgres@127.0.0.1:1/folio?sslmode=disable"
        }) { client, env in
            let tokens = try await signUp(client, env, email: "noreplica@example.com")
            #expect(try await Self.transactions(client, tokens).count == 1)
            #expect(Self.counter(env, #"folio_read_replica_fallbacks_total{reason="unavailable"}"#) >= 1)
            let csv = try await client.execute(uri: "/api/transactions.csv", method: .get, headers: bearer(tokens))
            #expect(csv.status == .ok)
            let lots = try await client.execute(uri: "/api/portfolio/lots", method: .get, headers: bearer(tokens))
            #expect(lots.status == .ok)
            await env.services.reads.shutdown()
        }
    }
}
