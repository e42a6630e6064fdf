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
            ("amount", entry.amount.description),
            ("description", entry.description ?? ""),
            ("id", entry.id.description),
            ("occurred_at_ms", String(AuditChain.milliseconds(entry.occurredAt))),
            ("order_id", entry.orderID?.description ?? ""),
            ("price", entry.price?.description ?? ""),
            ("quantity", entry.quantity?.description ?? ""),
            ("symbol", entry.symbol ?? ""),
            ("type", entry.kind.rawValue),
        ]
        let text = fields.map { "\($0.0)=\(JSONText.quote($0.1))" }.joined(separator: "\n")
        return AuditChain.hex(SHA256.hash(data: Data(text.utf8)))
    }
}
