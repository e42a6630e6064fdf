import Foundation
import Logging
import ServiceLifecycle
import SQLKit

/// Each running `folio serve` or `folio worker` is an instance with a row in
/// `instances` and a heartbeat every second. Work it holds (job leases,
/// in-flight idempotency keys) names the instance, so when a process is
/// killed its heartbeat stops and another instance takes that work over
/// within seconds instead of waiting for a lease of minutes.
struct Instances: Sendable {
    let database: FolioDatabase
    let clock: AppClock
    /// Fingerprints of the keys this process knows (`SECRET_KEY`, then `PREVIOUS_SECRET_KEYS`), comma-separated.
    var keyFingerprints: String? = nil

    static func fingerprints(secretKey: String, previousKeys: [String]) -> String {
        ([secretKey] + previousKeys).map(SecureToken.fingerprint(of:)).joined(separator: ",")
    }

    /// An instance whose heartbeat is older than this is taken for dead.
    static let deadAfter: TimeInterval = 5
    static let interval: Duration = .seconds(1)

    func register(_ id: String, kind: String) async throws {
        let now = clock.now()
        try await database.sql.raw("""
            INSERT INTO instances (id, kind, started_at, heartbeat_at, key_fingerprints)
            VALUES (\(bind: id), \(bind: kind), \(bind: now), \(bind: now), \(bind: keyFingerprints))
            ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, key_fingerprints = excluded.key_fingerprints
            """).run()
    }

    func beat(_ id: String) async throws {
        try await database.sql.raw("UPDATE instances SET heartbeat_at = \(bind: clock.now()) WHERE id = \(bind: id)").run()
    }

    /// A graceful stop: the instance's work is released at once.
    func retire(_ id: String) async throws {
        try await database.sql.raw("DELETE FROM instances WHERE id = \(bind: id)").run()
    }

    /// Rows of instances dead for an hour are only noise.
    func forgetLongDead() async throws {
        try await database.sql.raw("DELETE FROM instances WHERE heartbeat_at < \(bind: clock.now().addingTimeInterval(-3600))").run()
    }

    /// The kind (`serve`, `worker`) of an instance whose heartbeat is younger than `window`, if any runs.
    func anyAlive(within window: TimeInterval = deadAfter) async throws -> String? {
        try await database.sql.raw("""
            SELECT kind FROM instances WHERE heartbeat_at >= \(bind: clock.now().addingTimeInterval(-window)) LIMIT 1
            """).first()?.decode(column: "kind", as: String.self)
    }

    /// The kinds of the running instances that do not know `secretKey` (or do not say which keys they know); with
    /// `asCurrent`, that do not sign with it (a rotation run with the keys swapped would seal everything under the old one).
    func aliveWithout(key secretKey: String, asCurrent: Bool = false) async throws -> [String] {
        let fingerprint = SecureToken.fingerprint(of: secretKey)
        return try await database.sql.raw("""
            SELECT kind, key_fingerprints FROM instances WHERE heartbeat_at >= \(bind: clock.now().addingTimeInterval(-Self.deadAfter))
            """).all().compactMap { row in
            let known = try row.decode(column: "key_fingerprints", as: String?.self)?.split(separator: ",").map(String.init) ?? []
            let knows = asCurrent ? known.first == fingerprint : known.contains(fingerprint)
            return knows ? nil : try row.decode(column: "kind", as: String.self)
        }
    }

    /// Whether `id` has a fresh heartbeat; false for an unknown instance.
    func isAlive(_ id: String) async throws -> Bool {
        try await database.sql.raw("""
            SELECT 1 AS alive FROM instances WHERE id = \(bind: id) AND heartbeat_at >= \(bind: clock.now().addingTimeInterval(-Self.deadAfter))
            """).first() != nil
    }
}

/// Keeps this instance's heartbeat going until shutdown, then retires it.
struct HeartbeatService: Service {
    let instances: Instances
    let id: String
    let kind: String
    let logger: Logger

    func run() async throws {
        try await instances.register(id, kind: kind)
        try? await instances.forgetLongDead()
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: Instances.interval) }
            do {
                try await instances.beat(id)
            } catch {
                logger.warning("instance heartbeat failed", metadata: ["error": .string(DatabaseErrorText.forLog(error))])
            }
        }
        // The journal shows a graceful stop for what it is; the process's last line says when it is done.
        if Task.isShuttingDownGracefully { logger.info("shutting down gracefully: finishing what is in flight", metadata: ["kind": .string(kind)]) }
        try? await instances.retire(id)
    }
}
