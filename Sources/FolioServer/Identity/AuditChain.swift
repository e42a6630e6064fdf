import Crypto
import FluentKit
import Foundation
import SQLKit

/// The audit trail's hash chain: each row's hash is SHA-256 over the previous
/// row's hash and this row's canonical content, so changing, removing or
/// reordering any row breaks every link after it.
enum AuditChain {
    static let genesis = String(repeating: "0", count: 64)

    /// Sorted keys, times in whole milliseconds since 1970: the same bytes on both databases.
    static func canonicalContent(of event: AuditEvent, sequence: Int64) -> String {
        let fields: [(String, String)] = [
            ("action", event.action),
            ("actor_id", event.actorID?.uuidString.lowercased() ?? ""),
            ("details", event.details),
            ("id", event.id!.uuidString.lowercased()),
            ("ip", event.ip ?? ""),
            ("occurred_at_ms", String(milliseconds(event.occurredAt))),
            ("request_id", event.requestID ?? ""),
            ("sequence", String(sequence)),
            ("subject_id", event.subjectID ?? ""),
            ("subject_type", event.subjectType),
            ("user_id", event.userID?.uuidString.lowercased() ?? ""),
        ]
        return fields.map { "\($0.0)=\(JSONText.quote($0.1))" }.joined(separator: "\n")
    }

    static func hash(of event: AuditEvent, sequence: Int64, previousHash: String) -> String {
        let input = previousHash + "\n" + canonicalContent(of: event, sequence: sequence)
        return SHA256.hash(data: Data(input.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    static func milliseconds(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 * 1000).rounded())
    }

    /// The time an event records: whole milliseconds, so it survives any database's date storage.
    static func recordedTime(_ date: Date) -> Date {
        Date(timeIntervalSince1970: Double(milliseconds(date)) / 1000)
    }

    /// Appends one event at the head of the chain. Appends are serialized: a
    /// transaction-scoped advisory lock on PostgreSQL, the single connection on
    /// SQLite; so two appends can never chain to the same previous row.
    static func append(_ event: AuditEvent, on database: any Database) async throws {
        if database.inTransaction {
            try await appendLocked(event, on: database)
        } else {
            try await database.transaction { try await appendLocked(event, on: $0) }
        }
    }

    private static func appendLocked(_ event: AuditEvent, on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        if sql.dialect.name == "postgresql" {
            try await sql.raw("SELECT pg_advisory_xact_lock(7220101)").run()
        }
        let head = try await sql.raw("SELECT sequence, hash FROM audit_events ORDER BY sequence DESC LIMIT 1").first()
        let sequence = (try head?.decode(column: "sequence", as: Int64.self) ?? 0) + 1
        let previous = try head?.decode(column: "hash", as: String.self) ?? genesis
        event.sequence = sequence
        event.previousHash = previous
        event.hash = hash(of: event, sequence: sequence, previousHash: previous)
        try await event.create(on: database)
    }

    struct Break: Sendable, CustomStringConvertible {
        var sequence: Int64
        var id: UUID
        var reason: String
        var description: String { "audit event \(sequence) (\(id.uuidString.lowercased())): \(reason)" }
    }

    /// Walks the chain from the start; the first broken link, or nil when intact. Also the number of events read.
    static func verify(on database: any Database) async throws -> (events: Int, firstBreak: Break?) {
        var previous = genesis
        var expected: Int64 = 1
        var count = 0
        var after: Int64 = 0
        while true {
            let page = try await AuditEvent.query(on: database).filter(\.$sequence > after).sort(\.$sequence).limit(1000).all()
            if page.isEmpty { return (count, nil) }
            for event in page {
                count += 1
                guard let sequence = event.sequence, let stored = event.hash else {
                    return (count, Break(sequence: event.sequence ?? 0, id: event.id!, reason: "has no place in the chain"))
                }
                if sequence != expected {
                    return (count, Break(sequence: sequence, id: event.id!, reason: "expected sequence \(expected): a row is missing"))
                }
                if event.previousHash != previous {
                    return (count, Break(sequence: sequence, id: event.id!, reason: "does not link to the row before it"))
                }
                if hash(of: event, sequence: sequence, previousHash: previous) != stored {
                    return (count, Break(sequence: sequence, id: event.id!, reason: "its content does not match its hash: it was changed"))
                }
                previous = stored
                expected += 1
                after = sequence
            }
        }
    }
}
