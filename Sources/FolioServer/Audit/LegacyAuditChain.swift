import Crypto
import Foundation

/// The audit trail's first form (migration 005): one global chain over every
/// event, linked by the global `sequence`. Rows written before migration 009
/// keep it (their `chain_id` is NULL) and are verified by it; newer rows
/// belong to one chain per account or user (see AuditChain.swift).
extension AuditChain {
    static let genesis = String(repeating: "0", count: 64)

    /// Sorted keys, times in whole milliseconds since 1970: the same bytes on both databases.
    static func canonicalContent(of event: AuditEvent, sequence: Int64) -> String {
        let fields: [(String, String)] = [
            ("action", event.action),
            ("actor_id", event.actorID?.lowercasedString ?? ""),
            ("details", event.details),
            ("id", event.id!.lowercasedString),
            ("ip", event.ip ?? ""),
            ("occurred_at_ms", String(milliseconds(event.occurredAt))),
            ("request_id", event.requestID ?? ""),
            ("sequence", String(sequence)),
            ("subject_id", event.subjectID ?? ""),
            ("subject_type", event.subjectType),
            ("user_id", event.userID?.lowercasedString ?? ""),
        ]
        return fields.map { "\($0.0)=\(JSONText.quote($0.1))" }.joined(separator: "\n")
    }

    /// The legacy link: SHA-256 over the previous hash and the row's content.
    static func hash(of event: AuditEvent, sequence: Int64, previousHash: String) -> String {
        let input = previousHash + "\n" + canonicalContent(of: event, sequence: sequence)
        return hex(SHA256.hash(data: Data(input.utf8)))
    }

    static func milliseconds(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 * 1000).rounded())
    }

    /// The time an event records: whole milliseconds, so it survives any database's date storage.
    static func recordedTime(_ date: Date) -> Date {
        Date(timeIntervalSince1970: Double(milliseconds(date)) / 1000)
    }

    static func hex(_ digest: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(64)
        for byte in digest {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
