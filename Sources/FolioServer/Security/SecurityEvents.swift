import FluentKit
import Foundation
import Logging
import NIOConcurrencyHelpers

/// Security events (failed logins, lockouts, refused CSRF, CORS and token
/// checks): each is logged with the request id, recorded in the audit trail
/// when `audited` (events about a known user), and counted so operations can
/// alert on bursts.
final class SecurityEvents: Sendable {
    let audit: AuditLog
    let database: FolioDatabase
    let clock: AppClock
    /// Each event is counted by name (`folio_security_events_total`).
    let metrics: FolioMetrics?
    private let failedLoginTimes = NIOLockedValueBox<[Date]>([])

    init(audit: AuditLog, database: FolioDatabase, clock: AppClock, metrics: FolioMetrics? = nil) {
        self.audit = audit
        self.database = database
        self.clock = clock
        self.metrics = metrics
    }

    /// `userID` is whom the event is about; `byUser` says the user acted themselves (signed in), which makes them the audit event's
    /// actor. A failed sign-in, a lockout or a reused refresh token is about a user but may be anyone's doing: no actor.
    func record(_ event: String, userID: UUID? = nil, byUser: Bool = false, details: [String: String] = [:], origin: RequestOrigin, audited: Bool = false) async {
        var metadata: Logger.Metadata = ["event": .string(event), "client_ip": .string(origin.ip ?? "unknown")]
        if let userID { metadata["user_id"] = .string(userID.lowercasedString) }
        for (key, value) in details { metadata[key] = .string(value) }
        origin.logger.warning("security event", metadata: metadata)
        metrics?.securityEvent(event)
        if event == "login_failed" {
            countFailedLogin()
            metrics?.authenticationFailure(reason: details["reason"] ?? "unknown")
        }
        guard audited else { return }
        do {
            try await audit.record(
                .init(action: "security." + event, actorID: byUser ? userID : nil, subjectType: "user", subjectID: userID?.lowercasedString, userID: userID, details: details),
                origin: origin, on: database)
        } catch {
            origin.logger.error("could not record security event", metadata: ["error": .string(DatabaseErrorText.forLog(error))])
        }
    }

    private func countFailedLogin() {
        let now = clock.now()
        failedLoginTimes.withLockedValue { times in
            times.append(now)
            times.removeAll { now.timeIntervalSince($0) > 60 }
        }
    }

    /// Failed logins in the last minute, across all accounts (alert above 5).
    var failedLoginsLastMinute: Int {
        let now = clock.now()
        return failedLoginTimes.withLockedValue { times in times.filter { now.timeIntervalSince($0) <= 60 }.count }
    }
}
