import FluentKit
import Foundation
import SQLKit

/// After `SECRET_KEY` changes (the old key moved to `PREVIOUS_SECRET_KEYS`):
/// everything sealed under an old key is sealed again under the new one, so
/// the old key can then be dropped. `folio secrets rotate` runs it; it is
/// safe to run twice.
public enum SecretRotation {
    public struct Outcome: Sendable, Equatable {
        /// Brokerage links' key id and secret.
        public var brokerageLinks = 0
        /// Plaid items' access tokens.
        public var plaidItems = 0
        /// Users' TOTP secrets.
        public var totpSecrets = 0
        /// Sealed values no configured key opens: they stay as they are, and need the user to link or enrol again.
        public var unreadable = 0
        /// Audit chain heads signed again.
        public var auditHeads = 0
        /// Audit chain heads signed under no configured key: nothing more is appended to those chains.
        public var unsignedAuditHeads = 0
    }

    /// A running `folio serve` or `folio worker` does not know this command's `SECRET_KEY`: once the audit heads
    /// are signed under it, that instance could record nothing (its deposits and fills would fail until restarted).
    public struct InstancesWithoutTheKey: CommandRefusal {
        public var kinds: [String]
        public var description: String {
            "\(kinds.count) running instance(s) (\(kinds.sorted().joined(separator: ", "))) do not sign with this SECRET_KEY: "
                + "give every instance the new SECRET_KEY with the old one in PREVIOUS_SECRET_KEYS and restart it, then run this again "
                + "(and check that this shell's SECRET_KEY is the new one). Nothing was changed"
        }
    }

    public static func run(services: FolioServices) async throws -> Outcome {
        let unaware = try await services.instances.aliveWithout(key: services.configuration.secretKey, asCurrent: true)
        guard unaware.isEmpty else { throw InstancesWithoutTheKey(kinds: unaware) }
        var outcome = Outcome()
        let box = services.identity.secretBox, brokerage = services.brokerage
        let (links, unreadableLinks) = try await services.database.transaction { db in try await brokerage.resealCredentials(on: db) }
        outcome.brokerageLinks = links
        outcome.unreadable = unreadableLinks
        let plaid = services.plaid
        let (items, unreadableItems) = try await services.database.transaction { db in try await plaid.resealAccessTokens(on: db) }
        outcome.plaidItems = items
        outcome.unreadable += unreadableItems
        // One user at a time, each replaced only if unchanged since it was read.
        let store = IdentityStore(), fluent = services.database.db
        for user in try await store.usersWithTOTPSecret(on: fluent) {
            guard let id = user.id, let sealed = user.totpSecretSealed, let opened = box.openReportingKey(sealed) else { outcome.unreadable += 1; continue }
            guard opened.sealedWithOldKey else { continue }
            try await store.replaceSealedTOTPSecret(of: id, old: sealed, new: try box.seal(opened.text), on: fluent)
            outcome.totpSecrets += 1
        }
        outcome.auditHeads = try await AuditChain.resignHeads(anchor: services.anchor, database: services.database)
        outcome.unsignedAuditHeads = try await AuditChain.unsignedHeads(anchor: services.anchor, database: services.database).count
        try await services.identity.audit.record(
            .init(action: "admin.secrets_rotated", subjectType: "system", details: [
                "brokerage_links": String(outcome.brokerageLinks), "plaid_items": String(outcome.plaidItems), "totp_secrets": String(outcome.totpSecrets),
                "audit_heads": String(outcome.auditHeads), "unreadable": String(outcome.unreadable), "unsigned_audit_heads": String(outcome.unsignedAuditHeads),
            ]),
            origin: RequestOrigin(ip: "cli", requestID: nil, logger: services.logger), on: services.database)
        return outcome
    }
}
