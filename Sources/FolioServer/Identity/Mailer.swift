import FluentKit
import Foundation
import Logging
import SQLKit

/// A message to one person, as the development outbox keeps it.
struct MailMessage: Sendable {
    var userID: UUID?
    var recipient: String
    var subject: String
    var body: String
    var html: String? = nil
    /// What the message is about, e.g. `verify_email`.
    var kind: String
}

/// The only code that reads or writes `outbox_messages`.
struct OutboxStore: Sendable {
    func insert(_ message: MailMessage, at now: Date, on db: any SQLDatabase) async throws {
        try await db.raw("""
            INSERT INTO outbox_messages (id, user_id, recipient, subject, body, html, kind, created_at)
            VALUES (\(bind: UUID.random()), \(bind: message.userID), \(bind: message.recipient), \(bind: message.subject), \(bind: message.body),
                    \(bind: message.html), \(bind: message.kind), \(bind: now))
            """).run()
    }

    /// The newest messages first, to one recipient if given.
    func recent(recipient: String?, limit: Int, on db: any Database) async throws -> [OutboxMessage] {
        let query = OutboxMessage.query(on: db).sort(\.$createdAt, .descending).sort(\.$id, .descending).limit(limit)
        if let recipient { query.filter(\.$recipient == recipient) }
        return try await query.all()
    }
}
