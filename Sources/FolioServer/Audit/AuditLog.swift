import FluentKit
import FolioDomain
import Foundation
import Logging
import SQLKit

/// Appends identity, security and admin events to the audit trail, each to
/// the chain of the user it is about (the `system` chain when none). Money
/// movements are appended by the `Ledger` to their account's chain.
struct AuditLog: Sendable {
    let clock: AppClock
    let anchor: AuditAnchor
    let ids: IDSource

    struct Entry: Sendable {
        var action: String
        var actorID: UUID?
        var subjectType: String
        var subjectID: String?
        /// The user whose data this is about, for per-user reads and erasure.
        var userID: UUID?
        var details: [String: String] = [:]
    }

    /// Opens a transaction unless `database` is one already.
    func record(_ entry: Entry, origin: RequestOrigin, on database: any Database) async throws {
        try await record(entry, ip: origin.ip, requestID: origin.requestID, on: database)
    }

    /// Records in a transaction of its own, run as every other is (on SQLite, again while another
    /// process's writer makes it busy).
    func record(_ entry: Entry, origin: RequestOrigin, on database: FolioDatabase) async throws {
        try await database.transaction { sql in
            try await record(entry, ip: origin.ip, requestID: origin.requestID, inTransaction: sql, holdingPerson: true)
        }
    }

    func record(_ entry: Entry, ip: String?, requestID: String?, on database: any Database) async throws {
        if database.inTransaction {
            try await record(entry, ip: ip, requestID: requestID, inTransaction: database as! any SQLDatabase)
        } else {
            try await database.transaction { db in
                try await record(entry, ip: ip, requestID: requestID, inTransaction: db as! any SQLDatabase, holdingPerson: true)
            }
        }
    }

    /// Records inside the caller's transaction `sql`. An event about a person erased meanwhile (a sign-in
    /// that raced the erasure) keeps no address of theirs. `holdingPerson` (a transaction of the event's own):
    /// the person's row is held shared first, so the event and an erasure are ordered one way or the other;
    /// a caller's transaction that needs this holds the row already (a sign-in's, for update).
    func record(_ entry: Entry, ip: String?, requestID: String?, inTransaction sql: any SQLDatabase, holdingPerson: Bool = false) async throws {
        var ip = ip
        if ip != nil, let userID = entry.userID {
            let unerased = holdingPerson
                ? try await IdentityStore.holdUnerasedUser(userID, on: sql)
                : try await sql.raw("SELECT 1 AS one FROM users WHERE id = \(bind: userID) AND erased_at IS NOT NULL").first() == nil
            if !unerased { ip = nil }
        }
        let record = AuditChain.Record(
            id: ids.uuid(), occurredAt: clock.now(), actorID: entry.actorID, action: entry.action, subjectType: entry.subjectType,
            subjectID: entry.subjectID, userID: entry.userID, details: entry.details, ip: ip, requestID: requestID)
        let chain: AuditChain.ID = entry.userID.map { .user(UserID($0)) } ?? .system
        let dialect: FolioDatabase.Kind = sql.dialect.name == "postgresql" ? .postgres : .sqlite
        try await AuditChain.appendLocking([record], to: chain, anchor: anchor, dialect: dialect, on: sql)
    }

    /// The newest events first, of one action if given: what administrators read.
    func recent(action: String?, limit: Int, on database: any Database) async throws -> [AuditEvent] {
        let query = AuditEvent.query(on: database).sort(\.$occurredAt, .descending).sort(\.$id, .descending).limit(limit)
        if let action { query.filter(\.$action == action) }
        return try await query.all()
    }
}
