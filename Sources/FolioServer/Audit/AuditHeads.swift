import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import SQLKit

/// Writes the audit chains' heads to the log every ten minutes: a copy
/// outside the database, so that restoring older copies of both the events
/// and their anchored heads still leaves a trace to compare against. Each
/// line carries the heads that moved since this process last logged, and a
/// digest over all of them (each hash as its first 16 hex digits).
struct AuditHeads: Sendable {
    let database: FolioDatabase
    let logger: Logger
    private let logged = NIOLockedValueBox<[String: Int64]>([:])

    init(database: FolioDatabase, logger: Logger) {
        self.database = database
        self.logger = logger
    }

    static let schedule = RecurringJob(name: "audit_heads", kind: .logAuditHeads, cadence: .every(600), payload: { _ in .logAuditHeads })

    /// The first 16 hex digits (64 bits) of a hash: enough to tell two heads apart, and short of what
    /// the log redactor takes for a leaked key (a whole hash would be masked, and the line say nothing).
    static func short(_ hash: String) -> String { String(hash.prefix(16)) }

    func log() async throws {
        let rows = try await database.sql.raw("SELECT chain_id, sequence, hash FROM (\(AuditChain.anchoredHeads)) heads ORDER BY chain_id").all()
        var digest = SHA256()
        var moved: [Logger.Metadata.Value] = []
        var heads: [String: Int64] = [:]
        for row in rows {
            let chain = try row.decode(column: "chain_id", as: String.self)
            let sequence = try row.decode(column: "sequence", as: Int64.self)
            let hash = try row.decode(column: "hash", as: String.self)
            digest.update(data: Data("\(chain) \(sequence) \(hash)\n".utf8))
            heads[chain] = sequence
            if logged.withLockedValue({ $0[chain] }) != sequence { moved.append(.string("\(chain) \(sequence) \(Self.short(hash))")) }
        }
        logged.withLockedValue { $0 = heads }
        logger.notice("audit chain heads", metadata: [
            "chains": .stringConvertible(rows.count), "digest": .string(Self.short(AuditChain.hex(digest.finalize()))), "moved": .array(moved),
        ])
    }
}
