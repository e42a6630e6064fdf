import Crypto
import FolioDomain
import Foundation

/// A ledger row's digest, as its audit event commits to it: SHA-256 over the
/// row's fields in a fixed order, amounts in their canonical text and the
/// time in whole milliseconds, so both databases give the same bytes.
enum LedgerDigest {
    static func of(_ entry: LedgerLine, account: AccountID) -> String {
        let fields: [(String, String)] = [
            ("account_id", account.description),
            // Amounts in the canonical text the first rows were digested with; display formats may change, this must not.
            ("amount", entry.amount.formatted(minimumFractionDigits: 2)),
            ("description", entry.description ?? ""),
            ("id", entry.id.description),
            ("occurred_at_ms", String(AuditChain.milliseconds(entry.occurredAt))),
            ("order_id", entry.orderID?.description ?? ""),
            ("price", entry.price?.formatted(minimumFractionDigits: 0) ?? ""),
            ("quantity", entry.quantity?.formatted(minimumFractionDigits: 0) ?? ""),
            ("symbol", entry.symbol ?? ""),
            ("type", entry.kind.rawValue),
        ]
        let text = fields.map { "\($0.0)=\(JSONText.quote($0.1))" }.joined(separator: "\n")
        return AuditChain.hex(SHA256.hash(data: Data(text.utf8)))
    }

    /// One digest over several rows (in id order, so the order they are read in does not matter).
    static func of(_ entries: [LedgerLine], account: AccountID) -> String {
        let digests = entries.sorted { $0.id.description < $1.id.description }.map { of($0, account: account) }
        return AuditChain.hex(SHA256.hash(data: Data(digests.joined(separator: "\n").utf8)))
    }
}
