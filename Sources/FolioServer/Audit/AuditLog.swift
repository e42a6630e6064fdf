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

    func record(_ entry: Entry, ip: String?, requestID: String?, on database: any Database) async throws {
        if database.inTransaction {
            try await record(entry, ip: ip, requestID: requestID, inTransaction: database as! any SQLDatabase)
        } else {
            // An event of its own about a person: one that raced an erasure waits for it (and keeps no address).
            var kept = ip
            if kept != nil, let userID = entry.userID, try await IdentityStore.isErasedAfterWaiting(userID, on: database as! any SQLDatabase) { kept = nil }
            let address = kept
            try await database.transaction { db in
                try await record(entry, ip: address, requestID: requestID, inTransaction: db as! any SQLDatabase)
            }
        }
    }

    /// Records inside the caller's transaction `sql`. An event about a person erased meanwhile (a sign-in
    /// that raced the erasure) keeps no address of theirs.
    func record(_ entry: Entry, ip: String?, requestID: String?, inTransaction sql: any SQLDatabase) async throws {
        var ip = ip
        if ip != nil, let userID = entry.userID,
           try await sql.raw("SELECT 1 AS one FROM users WHERE id = \(bind: userID) AND erased_at IS NOT NULL").first() != nil {
            ip = nil
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
