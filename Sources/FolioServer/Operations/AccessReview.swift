import FolioDomain
import Foundation
import SQLKit

/// The monthly access review: who can administer Folio and whether they use
/// a second factor, who signs in and who no longer does, who is disabled,
/// and what administrators did in the period. `folio access-review` prints
/// it; a monthly job mails it to every administrator.
public struct AccessReview: Sendable {
    let database: FolioDatabase
    let clock: AppClock

    /// No sign-in for this long makes an account dormant.
    public static let dormantAfter: TimeInterval = 90 * 86_400

    public struct Report: Codable, Sendable, Equatable {
        public var generatedAt: Date
        public var periodDays: Int
        public var administrators: [Person]
        public var users: [Person]
        /// Enabled accounts with no sign-in for 90 days (or never, when older than that).
        public var dormant: [Person]
        public var disabled: [Person]
        public var erasedCount: Int
        public var adminActions: [Action]
        public var roleChanges: [Action]
    }

    public struct Person: Codable, Sendable, Equatable {
        public var email: String
        public var role: String
        public var twoFactor: Bool
        public var lastSignInAt: Date?
        public var createdAt: Date
        public var disabledAt: Date?
    }

    public struct Action: Codable, Sendable, Equatable {
        public var occurredAt: Date
        public var action: String
        /// The administrator's address, or `operator` for the command line.
        public var actor: String
        public var subject: String?
        /// The event's details (`from`, `to`, `reason`…), as an object in JSON.
        public var details: [String: String]

        /// "from=user, to=admin", for the text report.
        var detailsText: String { details.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") }
    }

    /// An audit event's stored details: a JSON object of strings (other values as their JSON text).
    static func details(_ text: String) -> [String: String] {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else { return text.isEmpty ? [:] : ["text": text] }
        return object.mapValues { value in
            if let string = value as? String { return string }
            if let data = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .sortedKeys]) { return String(decoding: data, as: UTF8.self) }
            return "\(value)"
        }
    }

    public func report(periodDays: Int = 30) async throws -> Report {
        let now = clock.now()
        let sql = database.sql
        var people: [UUID: Person] = [:]
        var erased = 0
        for row in try await sql.raw("""
            SELECT id, email, role, totp_enabled_at, last_sign_in_at, created_at, disabled_at, erased_at FROM users ORDER BY email
            """).all() {
            if try row.decode(column: "erased_at", as: Date?.self) != nil {
                erased += 1
                continue
            }
            people[try row.decode(column: "id", as: UUID.self)] = Person(
                email: try row.decode(column: "email", as: String.self), role: try row.decode(column: "role", as: String.self),
                twoFactor: try row.decode(column: "totp_enabled_at", as: Date?.self) != nil,
                lastSignInAt: try row.decode(column: "last_sign_in_at", as: Date?.self), createdAt: try row.decode(column: "created_at", as: Date.self),
                disabledAt: try row.decode(column: "disabled_at", as: Date?.self))
        }
        let everyone = people.values.sorted { $0.email < $1.email }
        let since = now.addingTimeInterval(-Double(periodDays) * 86_400)
        var actions: [Action] = []
        // Money an operator moved is theirs to answer for too: dividends and fees are booked only by `folio ledger post`
        // (no route of the API books one), and fills only by `folio broker record-fills` besides the brokers.
        for row in try await sql.raw("""
            SELECT occurred_at, action, actor_id, subject_id, details FROM audit_events
            WHERE occurred_at >= \(bind: since) AND (action LIKE 'admin.%' OR action = 'user.erased'
                OR action IN ('order.fills_recorded_by_operator', 'ledger.dividend', 'ledger.fee'))
            ORDER BY occurred_at, sequence
            """).all() {
            let actor = try row.decode(column: "actor_id", as: UUID?.self)
            let subjectID = try row.decode(column: "subject_id", as: String?.self)
            // A person who erased their own account is no administrator's doing: counted under erasures, not listed here.
            if try row.decode(column: "action", as: String.self) == "user.erased", let actor, subjectID?.lowercased() == actor.lowercasedString { continue }
            actions.append(Action(
                occurredAt: try row.decode(column: "occurred_at", as: Date.self), action: try row.decode(column: "action", as: String.self),
                actor: actor.map { people[$0]?.email ?? $0.lowercasedString } ?? "operator",
                subject: subjectID.map { id in
                    UUID(uuidString: id).flatMap { people[$0]?.email } ?? id
                },
                details: Self.details(try row.decode(column: "details", as: String.self))))
        }
        return Report(
            generatedAt: now, periodDays: periodDays,
            administrators: everyone.filter { $0.role == User.Role.admin.rawValue },
            users: everyone,
            dormant: everyone.filter { person in
                person.disabledAt == nil && now.timeIntervalSince(person.lastSignInAt ?? person.createdAt) > Self.dormantAfter
            },
            disabled: everyone.filter { $0.disabledAt != nil },
            erasedCount: erased,
            adminActions: actions.filter { $0.action != "admin.role_changed" },
            roleChanges: actions.filter { $0.action == "admin.role_changed" })
    }

    /// The report as an operator reads it.
    public static func text(_ report: Report) -> String {
        func day(_ date: Date?) -> String { date.map { String(LogTimestamp.format(milliseconds: Int64($0.timeIntervalSince1970 * 1000)).prefix(10)) } ?? "never" }
        var lines = ["Folio access review, \(day(report.generatedAt)) (admin actions over the last \(report.periodDays) days)", ""]
        lines.append("Administrators (\(report.administrators.count)):")
        for admin in report.administrators {
            lines.append("  \(admin.email)  2FA \(admin.twoFactor ? "on" : "OFF")  last sign-in \(day(admin.lastSignInAt))\(admin.disabledAt == nil ? "" : "  disabled")")
        }
        let withoutTwoFactor = report.administrators.filter { !$0.twoFactor && $0.disabledAt == nil }
        if !withoutTwoFactor.isEmpty { lines.append("  ! \(withoutTwoFactor.count) administrator(s) without two-factor authentication") }
        lines += ["", "Users and their last sign-in (\(report.users.count)):"]
        for user in report.users {
            lines.append("  \(user.email)  \(user.role)  last sign-in \(day(user.lastSignInAt))\(user.disabledAt == nil ? "" : "  disabled")")
        }
        lines += ["", "Dormant, no sign-in for 90 days (\(report.dormant.count)):"]
        lines += report.dormant.map { "  \($0.email)  last sign-in \(day($0.lastSignInAt))" }
        lines += ["", "Disabled (\(report.disabled.count)):"]
        lines += report.disabled.map { "  \($0.email)  since \(day($0.disabledAt))" }
        lines += ["", "Erased people (kept as pseudonymous records): \(report.erasedCount)"]
        lines += ["", "Role changes (\(report.roleChanges.count)):"]
        lines += report.roleChanges.map { "  \(day($0.occurredAt))  \($0.actor) → \($0.subject ?? "-")  \($0.detailsText)" }
        lines += ["", "Administrator actions (\(report.adminActions.count)):"]
        lines += report.adminActions.map { "  \(day($0.occurredAt))  \($0.actor)  \($0.action)  \($0.subject ?? "")" }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The monthly mail: one notice to each enabled administrator, listing what needs a look.
    func mailAdministrators(notifications: Notifications) async throws -> Int {
        let report = try await report()
        // Counts, not addresses: the notice is kept a year in each administrator's list, past any erasure.
        var items: [[String: String]] = []
        let withoutTwoFactor = report.administrators.filter { !$0.twoFactor && $0.disabledAt == nil }.count
        if withoutTwoFactor > 0 { items.append(["finding": "Administrators without two-factor authentication", "who": String(withoutTwoFactor)]) }
        if !report.dormant.isEmpty { items.append(["finding": "Dormant accounts (no sign-in for 90 days)", "who": String(report.dormant.count)]) }
        if !report.roleChanges.isEmpty { items.append(["finding": "Role changes this month", "who": String(report.roleChanges.count)]) }
        let variables = MailVariables([
            "administrators": String(report.administrators.count), "users": String(report.users.count), "dormant": String(report.dormant.count),
            "disabled": String(report.disabled.count), "admin_actions": String(report.adminActions.count), "findings": String(items.count),
        ], items: items)
        let admins = try await database.sql.raw("SELECT id FROM users WHERE role = 'admin' AND disabled_at IS NULL").all()
            .map { try $0.decode(column: "id", as: UUID.self) }
        try await database.transaction { db in
            for admin in admins { try await notifications.notify(admin, .accessReview, variables, on: db) }
        }
        return admins.count
    }

    /// On the first of each month.
    static let schedule = RecurringJob(name: "access_review", kind: .accessReview, cadence: .monthly(day: 1, hour: 8), payload: { _ in .accessReview })
}
