import FluentKit
import Foundation
import Logging

/// Appends rows to the audit trail: every security event and admin action
/// (and, later, every financial change), readable by the access review.
struct AuditLog: Sendable {
    let clock: AppClock

    struct Entry: Sendable {
        var action: String
        var actorID: UUID?
        var subjectType: String
        var subjectID: String?
        /// The user whose data this is about, for per-user reads and erasure.
        var userID: UUID?
        var details: [String: String] = [:]
    }

    func record(_ entry: Entry, context: FolioRequestContext, on database: any Database) async throws {
        try await record(entry, ip: context.clientIP, requestID: context.requestID.isEmpty ? nil : context.requestID, on: database)
    }

    /// For actions outside a request, such as the `folio users` commands.
    func record(_ entry: Entry, ip: String?, requestID: String?, on database: any Database) async throws {
        let event = AuditEvent()
        event.id = UUID()
        event.occurredAt = AuditChain.recordedTime(clock.now())
        event.actorID = entry.actorID
        event.action = entry.action
        event.subjectType = entry.subjectType
        event.subjectID = entry.subjectID
        event.userID = entry.userID
        event.details = String(decoding: try FolioJSON.encode(entry.details), as: UTF8.self)
        event.ip = ip
        event.requestID = requestID
        try await AuditChain.append(event, on: database)
    }
}
