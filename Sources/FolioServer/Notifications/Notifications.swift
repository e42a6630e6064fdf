import FolioDomain
import Foundation
import Logging
import SQLKit

/// Tells users what happened: each event is a row in `notifications`, shown
/// in the app, and mailed when the user's preference for its category says
/// so (security notices always are). Recorded in the caller's transaction:
/// the notice of a fill commits with the fill, or not at all.
struct Notifications: Sendable {
    let store: NotificationStore
    let mail: MailQueue
    let renderer: MailRenderer
    let clock: AppClock
    let ids: IDSource

    /// Records a notification for `userID` and queues its mail if wanted. Account mail (no category) is not a notification.
    func notify(_ userID: UUID, _ template: MailTemplate, _ variables: MailVariables, on db: any SQLDatabase) async throws {
        try await notify(userID, [(template, variables)], on: db)
    }

    /// Records several notifications for `userID` and queues the mail they want.
    func notify(_ userID: UUID, _ notices: [(MailTemplate, MailVariables)], on db: any SQLDatabase) async throws {
        var writes = WriteBatch(for: store.database.kind)
        try notify(userID, notices, into: &writes)
        try await writes.run(on: db)
    }

    /// Adds to `writes` the notifications for `userID` (the fills of a batch,
    /// say) and the mail they want, in a handful of statements however many
    /// there are: they are written while the caller holds the account's lock.
    func notify(_ userID: UUID, _ notices: [(MailTemplate, MailVariables)], into writes: inout WriteBatch) throws {
        let now = clock.now()
        var rows: [NotificationStore.NewRow] = []
        for (template, variables) in notices {
            guard let category = template.category else { continue }
            rows.append(NotificationStore.NewRow(
                id: ids.uuid(), template: template, category: category,
                title: try renderer.render(template, part: "subject", variables).trimmingCharacters(in: .whitespacesAndNewlines),
                body: try renderer.render(template, part: "summary", variables).trimmingCharacters(in: .whitespacesAndNewlines),
                variables: variables))
        }
        guard !rows.isEmpty else { return }
        store.insert(rows, userID: userID, now: now, into: &writes)
        for category in NoticeCategory.allCases {
            let mailed = rows.filter { $0.category == category }
            guard !mailed.isEmpty else { continue }
            mail.enqueue(
                mailed.map { MailQueue.Message(template: $0.template, variables: $0.variables, notificationID: $0.id) },
                toWhoeverOf: store.recipient(of: userID, category: category), userID: userID, into: &writes)
        }
    }
}

/// The only code that reads or writes `notifications` and `notification_preferences`.
struct NotificationStore: Sendable {
    let database: FolioDatabase

    struct Row: Sendable {
        var id: UUID
        var kind: String
        var category: String
        var title: String
        var body: String
        var data: String
        var createdAt: Date
        var readAt: Date?
    }

    /// A notification to be written.
    struct NewRow: Sendable {
        var id: UUID
        var template: MailTemplate
        var category: NoticeCategory
        var title: String
        var body: String
        var variables: MailVariables
    }

    func insert(_ rows: [NewRow], userID: UUID, now: Date, into writes: inout WriteBatch) {
        guard !rows.isEmpty else { return }
        let values: [SQLQueryString] = rows.map { row in
            """
            (\(bind: row.id), \(bind: userID), \(bind: row.template.rawValue), \(bind: row.category.rawValue), \(bind: row.title), \(bind: row.body), \
            \(bind: row.variables.json), \(bind: now))
            """
        }
        writes.add("""
            INSERT INTO notifications (id, user_id, kind, category, title, body, data, created_at) VALUES \(values.joined(separator: ", "))
            """)
    }

    /// A query of the user's address (as `email`) when they want mail of
    /// `category` (no preference row: they do), and of no row otherwise; the
    /// mail queue inserts from it, sparing a round trip inside the caller's transaction.
    func recipient(of userID: UUID, category: NoticeCategory) -> SQLQueryString {
        """
        SELECT u.email AS email FROM users u
        LEFT JOIN notification_preferences p ON p.user_id = u.id AND p.category = \(bind: category.rawValue)
        WHERE u.id = \(bind: userID) AND u.erased_at IS NULL AND (COALESCE(p.email, TRUE) OR \(bind: category.alwaysMailed))
        """
    }

    /// Whether the user wants mail of `category` now (false for a person erased).
    func wantsMail(_ userID: UUID, category: NoticeCategory) async throws -> Bool {
        try await database.sql.raw(recipient(of: userID, category: category)).first() != nil
    }

    /// Whether the user was told of `kind` since `time` (a daily digest is sent once a day).
    func exists(kind: MailTemplate, of userID: UUID, since time: Date, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw("""
            SELECT 1 AS found FROM notifications WHERE user_id = \(bind: userID) AND kind = \(bind: kind.rawValue) AND created_at >= \(bind: time)
            """).first() != nil
    }

    /// Newest first, after the cursor row.
    func page(of userID: UUID, after cursor: UUID?, unreadOnly: Bool, limit: Int) async throws -> [Row] {
        let after: SQLQueryString = cursor.map { " AND " + Pagination.after($0, table: "notifications", timeColumn: "created_at", owner: userID) } ?? ""
        let unread: SQLQueryString = unreadOnly ? " AND read_at IS NULL" : ""
        let rows = try await database.sql.raw("""
            SELECT id, kind, category, title, body, data, created_at, read_at FROM notifications
            WHERE user_id = \(bind: userID)\(after)\(unread)
            ORDER BY created_at DESC, id DESC LIMIT \(literal: limit)
            """).all().map { row in
            Row(id: try row.decode(column: "id", as: UUID.self), kind: try row.decode(column: "kind", as: String.self),
                category: try row.decode(column: "category", as: String.self), title: try row.decode(column: "title", as: String.self),
                body: try row.decode(column: "body", as: String.self), data: try row.decode(column: "data", as: String.self),
                createdAt: try row.decode(column: "created_at", as: Date.self), readAt: try row.decode(column: "read_at", as: Date?.self))
        }
        return try await Pagination.checkAnchor(rows, cursor: cursor, table: "notifications", owner: userID, on: database.sql)
    }

    func unreadCount(of userID: UUID) async throws -> Int {
        try await database.sql.raw("SELECT COUNT(*) AS n FROM notifications WHERE user_id = \(bind: userID) AND read_at IS NULL").first()?
            .decode(column: "n", as: Int.self) ?? 0
    }

    /// Marks one of the user's notifications read; false when the user has no such notification.
    func markRead(_ id: UUID, of userID: UUID, now: Date) async throws -> Bool {
        try await !database.sql.raw("""
            UPDATE notifications SET read_at = COALESCE(read_at, \(bind: now)) WHERE id = \(bind: id) AND user_id = \(bind: userID) RETURNING id
            """).all().isEmpty
    }

    /// Marks the user's unread notifications read: all of them, or (`through`) those no newer than that one,
    /// so a notice that arrived after the page was drawn stays unread. Nil when `through` is not the user's.
    func markAllRead(of userID: UUID, through: UUID? = nil, now: Date) async throws -> Int? {
        var bound: SQLQueryString = ""
        if let through {
            guard try await database.sql.raw("""
                SELECT id FROM notifications WHERE id = \(bind: through) AND user_id = \(bind: userID)
                """).first() != nil
            else { return nil }
            // In the list's order (created_at, then id), so notices of one instant are told apart too. The time is
            // compared with the stored value itself, as `Pagination.after` does: a Date read and bound back can
            // differ from SQLite's REAL in its last digits.
            let anchor: SQLQueryString = "(SELECT created_at FROM notifications WHERE id = \(bind: through) AND user_id = \(bind: userID))"
            bound = " AND (created_at < " + anchor + " OR (created_at = " + anchor + " AND id <= \(bind: through)))"
        }
        return try await database.sql.raw("""
            UPDATE notifications SET read_at = \(bind: now) WHERE user_id = \(bind: userID) AND read_at IS NULL\(bound) RETURNING id
            """).all().count
    }

    /// The user's choice per category; categories without a row are on.
    func preferences(of userID: UUID) async throws -> [NoticeCategory: Bool] {
        var choices = Dictionary(uniqueKeysWithValues: NoticeCategory.allCases.map { ($0, true) })
        for row in try await database.sql.raw("SELECT category, email FROM notification_preferences WHERE user_id = \(bind: userID)").all() {
            if let category = NoticeCategory(rawValue: try row.decode(column: "category", as: String.self)) {
                choices[category] = try row.decode(column: "email", as: Bool.self) || category.alwaysMailed
            }
        }
        return choices
    }

    enum Stopped { case stopped, alreadyOff, erased }

    /// Whether `userID` gets `category`'s mail: `.stopped` when it is on (and a link would stop it), `.alreadyOff`,
    /// or `.erased`.
    func mailState(_ category: NoticeCategory, of userID: UUID) async throws -> Stopped {
        if try await wantsMail(userID, category: category) { return .stopped }
        let erased = try await database.sql.raw("SELECT 1 AS found FROM users WHERE id = \(bind: userID) AND erased_at IS NULL").first() == nil
        return erased ? .erased : .alreadyOff
    }

    /// Turns `category`'s mail off for `userID` (an unsubscribe link). A person erased (their row stays,
    /// pseudonymous) gets no preference back; mail already off is left as it is.
    func stopMail(_ category: NoticeCategory, of userID: UUID, now: Date) async throws -> Stopped {
        let state = try await mailState(category, of: userID)
        guard state == .stopped else { return state }
        // The row held (PostgreSQL): an erasure under way is waited for, and its erased_at then seen.
        let lock = database.kind == .postgres ? " FOR SHARE" : ""
        let written = try await !database.sql.raw("""
            INSERT INTO notification_preferences (user_id, category, email, updated_at)
            SELECT id, \(bind: category.rawValue), \(bind: false), \(bind: now) FROM users WHERE id = \(bind: userID) AND erased_at IS NULL\(unsafeRaw: lock)
            ON CONFLICT (user_id, category) DO UPDATE SET email = \(bind: false), updated_at = \(bind: now)
            RETURNING user_id
            """).all().isEmpty
        return written ? .stopped : .erased
    }

    /// Keeps `choices` for `userID`; false, writing nothing, when they were erased meanwhile.
    @discardableResult
    func setPreferences(_ choices: [NoticeCategory: Bool], of userID: UUID, now: Date) async throws -> Bool {
        try await database.transaction { db in
            let sql = db
            // Held (shared) to the end: an erasure waits for these rows, and deletes them, or went first.
            guard try await IdentityStore.holdUnerasedUser(userID, on: sql) else { return false }
            for (category, email) in choices.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                try await sql.raw("""
                    INSERT INTO notification_preferences (user_id, category, email, updated_at)
                    VALUES (\(bind: userID), \(bind: category.rawValue), \(bind: email), \(bind: now))
                    ON CONFLICT (user_id, category) DO UPDATE SET email = \(bind: email), updated_at = \(bind: now)
                    """).run()
            }
            return true
        }
    }
}
