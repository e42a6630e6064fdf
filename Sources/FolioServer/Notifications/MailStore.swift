import FolioDomain
import Foundation
import SQLKit

/// The only code that reads or writes `mail_messages`, `mail_suppressions`
/// and `sendgrid_events`.
struct MailStore: Sendable {
    let database: FolioDatabase

    /// Why a message a stopped sender left mid-send is `uncertain`.
    static let abandonedMidSend = "the sender stopped while handing this message over; it is not sent again"

    enum Status: String, Sendable {
        case queued, sending, sent, failed, suppressed
        /// Handed to the vendor by a sender that stopped before it heard back: not sent again.
        case uncertain
    }

    struct Claimed: Sendable {
        var id: UUID
        var userID: UUID?
        var recipient: String
        var template: String
        var variables: String
        var attempts: Int
        /// Whether the recipient, exactly as written, is a suppressed address (read with the claim).
        var suppressedAsWritten: Bool

        /// Whether mail to the recipient is stopped. Suppressed addresses are
        /// kept as `IdentityServices.normalizedEmail` writes them (lower-cased by
        /// Swift's rules, composed); when the recipient is written that way already the claim's own answer holds (SQL's `lower()` is
        /// ASCII-only on SQLite, so it is not asked to lower-case).
        func suppressed(_ store: MailStore) async throws -> Bool {
            IdentityServices.normalizedEmail(recipient).utf8.elementsEqual(recipient.utf8) ? suppressedAsWritten : try await store.isSuppressed(recipient)
        }
    }

    struct Row: Sendable, Equatable {
        var id: UUID
        var userID: UUID?
        var notificationID: UUID?
        var recipient: String
        var template: String
        var status: String
        var attempts: Int
        var lastError: String?
        var vendorMessageID: String?
    }

    func insert(
        id: UUID, userID: UUID?, notificationID: UUID?, recipient: String, template: MailTemplate, variables: MailVariables, now: Date,
        on db: any SQLDatabase
    ) async throws {
        try await db.raw("""
            INSERT INTO mail_messages (id, user_id, notification_id, recipient, template, variables, status, attempts, created_at, updated_at)
            VALUES (\(bind: id), \(bind: userID), \(bind: notificationID), \(bind: recipient), \(bind: template.rawValue), \(bind: variables.json),
                    'queued', 0, \(bind: now), \(bind: now))
            """).run()
    }

    /// Adds the insert of the messages to `writes`: written when `recipientFrom`
    /// selects an address (as `email`), none when it selects no address.
    func insert(
        _ messages: [(id: UUID, message: MailQueue.Message)], userID: UUID?, recipientFrom recipient: SQLQueryString, now: Date,
        into writes: inout WriteBatch
    ) {
        guard !messages.isEmpty else { return }
        let values: [SQLQueryString] = messages.map { id, message in
            "(\(bind: id), \(bind: message.notificationID), \(bind: message.template.rawValue), \(bind: message.variables.json))"
        }
        // VALUES names its columns column1, column2… on both databases.
        writes.add("""
            INSERT INTO mail_messages (id, user_id, notification_id, recipient, template, variables, status, attempts, created_at, updated_at)
            SELECT v.column1, \(bind: userID), v.column2, r.email, v.column3, v.column4, 'queued', 0, \(bind: now), \(bind: now)
            FROM (VALUES \(values.joined(separator: ", "))) AS v CROSS JOIN (\(recipient)) AS r
            """)
    }

    /// How many messages of `template` were queued for the user since `since`.
    func count(of template: MailTemplate, userID: UUID, since: Date, on db: (any SQLDatabase)? = nil) async throws -> Int {
        try await (db ?? database.sql).raw("""
            SELECT COUNT(*) AS n FROM mail_messages WHERE user_id = \(bind: userID) AND template = \(bind: template.rawValue) AND created_at >= \(bind: since)
            """).first(decodingColumn: "n", as: Int.self) ?? 0
    }

    /// Takes a queued message for sending: only one sender can, and a message
    /// found `sending` later was being sent when its sender stopped.
    func claim(_ id: UUID, now: Date) async throws -> Claimed? {
        try await database.sql.raw("""
            UPDATE mail_messages SET status = 'sending', attempts = attempts + 1, updated_at = \(bind: now)
            WHERE id = \(bind: id) AND status = 'queued'
            RETURNING id, user_id, recipient, template, variables, attempts,
                CASE WHEN EXISTS (SELECT 1 FROM mail_suppressions s WHERE s.email = mail_messages.recipient) THEN 1 ELSE 0 END AS suppressed
            """).first().map { row in
            Claimed(
                id: try row.decode(column: "id", as: UUID.self), userID: try row.decode(column: "user_id", as: UUID?.self),
                recipient: try row.decode(column: "recipient", as: String.self), template: try row.decode(column: "template", as: String.self),
                variables: try row.decode(column: "variables", as: String.self), attempts: try row.decode(column: "attempts", as: Int.self),
                suppressedAsWritten: try row.decode(column: "suppressed", as: Int.self) != 0)
        }
    }

    /// A message's status and template (nil: no such message).
    func status(of id: UUID) async throws -> (status: Status?, template: String)? {
        try await database.sql.raw("SELECT status, template FROM mail_messages WHERE id = \(bind: id)").first().map { row in
            (Status(rawValue: try row.decode(column: "status", as: String.self)), try row.decode(column: "template", as: String.self))
        }
    }

    /// Settles a message being sent. A settled message keeps no variables: a link in them may hold a token.
    @discardableResult
    func settle(_ id: UUID, as status: Status, error: String? = nil, vendorMessageID: String? = nil, now: Date, from: Status = .sending, on db: any SQLDatabase) async throws -> Bool {
        try await !db.raw(settling(id, as: status, error: error, vendorMessageID: vendorMessageID, now: now, from: from) + " RETURNING id").all().isEmpty
    }

    /// The statement that settles a message (a transport writes it with its own record of the message).
    func settling(_ id: UUID, as status: Status, error: String? = nil, vendorMessageID: String? = nil, now: Date, from: Status = .sending) -> SQLQueryString {
        """
        UPDATE mail_messages SET status = \(bind: status.rawValue), last_error = \(bind: error.map(JobQueue.storable)),
            vendor_message_id = COALESCE(\(bind: vendorMessageID), vendor_message_id), variables = '{"values":{},"items":[]}',
            sent_at = \(bind: status == .sent ? now : nil), updated_at = \(bind: now)
        WHERE id = \(bind: id) AND status = \(bind: from.rawValue)
        """
    }

    /// SendGrid says it has the message (`processed`, `delivered`): it is sent,
    /// whatever Folio recorded (a 5xx it answered after taking the message, a
    /// sender that stopped). A message waiting for a retry is then not sent again. The error that left it
    /// uncertain or failed is cleared: the outbox would otherwise show a sent message with a failure beside it.
    func confirm(_ id: UUID, vendorMessageID: String?, now: Date, on db: any SQLDatabase) async throws {
        try await db.raw("""
            UPDATE mail_messages SET status = 'sent', vendor_message_id = COALESCE(vendor_message_id, \(bind: vendorMessageID)),
                variables = '{"values":{},"items":[]}', sent_at = COALESCE(sent_at, \(bind: now)), last_error = NULL, updated_at = \(bind: now)
            WHERE id = \(bind: id) AND status IN ('queued', 'sending', 'uncertain', 'failed')
            """).run()
    }

    /// SendGrid dropped the message: `suppressed`, with its reason, whatever Folio
    /// recorded (a `processed` may have come first). `confirm` leaves it so.
    func markDropped(_ id: UUID, reason: String, now: Date, on db: any SQLDatabase) async throws -> Bool {
        try await !db.raw("""
            UPDATE mail_messages SET status = 'suppressed', last_error = \(bind: JobQueue.storable("SendGrid dropped it: \(reason)")),
                variables = '{"values":{},"items":[]}', sent_at = NULL, updated_at = \(bind: now)
            WHERE id = \(bind: id) AND status IN ('queued', 'sending', 'sent', 'uncertain', 'failed')
            RETURNING id
            """).all().isEmpty
    }

    /// Messages left `sending` longer than any send takes (their job died with
    /// its worker): `uncertain`, their variables emptied. Returns how many.
    @discardableResult
    /// The templates of the messages it settled, one per message (for the metrics).
    func settleAbandoned(before cutoff: Date, now: Date) async throws -> [String] {
        try await database.sql.raw("""
            UPDATE mail_messages SET status = 'uncertain', last_error = \(bind: Self.abandonedMidSend),
                variables = '{"values":{},"items":[]}', updated_at = \(bind: now)
            WHERE status = 'sending' AND updated_at < \(bind: cutoff)
            RETURNING template
            """).all().map { try $0.decode(column: "template", as: String.self) }
    }


    /// Puts a message back in the queue after a failure that is worth another try.
    func requeue(_ id: UUID, error: String, now: Date) async throws {
        try await database.sql.raw("""
            UPDATE mail_messages SET status = 'queued', last_error = \(bind: JobQueue.storable(error)), updated_at = \(bind: now)
            WHERE id = \(bind: id) AND status = 'sending'
            """).run()
    }

    func isSuppressed(_ email: String) async throws -> Bool {
        try await database.sql.raw("SELECT 1 AS found FROM mail_suppressions WHERE email = \(bind: IdentityServices.normalizedEmail(email))").first() != nil
    }

    /// Stops mail to an address (a bounce, a spam report); kept until the user changes address.
    func suppress(_ email: String, reason: String, detail: String?, now: Date, on db: any SQLDatabase) async throws {
        try await db.raw("""
            INSERT INTO mail_suppressions (email, reason, detail, created_at)
            VALUES (\(bind: IdentityServices.normalizedEmail(email)), \(bind: reason), \(bind: detail.map { String($0.prefix(500)) }), \(bind: now))
            ON CONFLICT (email) DO NOTHING
            """).run()
    }

    /// Lets mail go to the address again; false when it was not stopped.
    @discardableResult
    func unsuppress(_ email: String, on db: any SQLDatabase) async throws -> Bool {
        try await !db.raw("DELETE FROM mail_suppressions WHERE email = \(bind: IdentityServices.normalizedEmail(email)) RETURNING email").all().isEmpty
    }

    /// Every stopped address, with why and since when, oldest first.
    func suppressions() async throws -> [(email: String, reason: String, since: Date)] {
        try await database.sql.raw("SELECT email, reason, created_at FROM mail_suppressions ORDER BY created_at, email").all().map { row in
            (try row.decode(column: "email", as: String.self), try row.decode(column: "reason", as: String.self), try row.decode(column: "created_at", as: Date.self))
        }
    }

    /// Records an Event Webhook event by SendGrid's id; false when it was seen before.
    func recordEvent(_ eventID: String, event: String, now: Date, on db: any SQLDatabase) async throws -> Bool {
        try await !db.raw("""
            INSERT INTO sendgrid_events (sg_event_id, event, received_at) VALUES (\(bind: eventID), \(bind: event), \(bind: now))
            ON CONFLICT (sg_event_id) DO NOTHING
            RETURNING sg_event_id
            """).all().isEmpty
    }

    /// Every message, oldest first (tests and operators).
    func all() async throws -> [Row] {
        try await database.sql.raw("""
            SELECT id, user_id, notification_id, recipient, template, status, attempts, last_error, vendor_message_id
            FROM mail_messages ORDER BY created_at, id
            """).all().map { row in
            Row(id: try row.decode(column: "id", as: UUID.self), userID: try row.decode(column: "user_id", as: UUID?.self),
                notificationID: try row.decode(column: "notification_id", as: UUID?.self), recipient: try row.decode(column: "recipient", as: String.self),
                template: try row.decode(column: "template", as: String.self), status: try row.decode(column: "status", as: String.self),
                attempts: try row.decode(column: "attempts", as: Int.self), lastError: try row.decode(column: "last_error", as: String?.self),
                vendorMessageID: try row.decode(column: "vendor_message_id", as: String?.self))
        }
    }
}
