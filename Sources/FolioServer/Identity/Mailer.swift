import FluentKit
import Foundation
import Logging

/// A message to one person.
struct MailMessage: Sendable {
    var userID: UUID?
    var recipient: String
    var subject: String
    var body: String
    /// What the message is about, e.g. `verify_email`.
    var kind: String
}

/// Sends mail. The development outbox is the only one so far; SendGrid arrives
/// later behind the same protocol.
protocol Mailer: Sendable {
    func send(_ message: MailMessage, on database: any Database, logger: Logger) async throws
}

/// Keeps messages in the `outbox_messages` table instead of sending them, and
/// logs each one (the log handler redacts tokens in links).
struct OutboxMailer: Mailer {
    let clock: AppClock

    func send(_ message: MailMessage, on database: any Database, logger: Logger) async throws {
        try await OutboxStore().insert(message, at: clock.now(), on: database)
        logger.info("mail kept in outbox", metadata: [
            "recipient": .string(message.recipient), "subject": .string(message.subject), "kind": .string(message.kind),
            "body": .string(message.body),
        ])
    }
}

/// The only code that reads or writes `outbox_messages`.
struct OutboxStore: Sendable {
    func insert(_ message: MailMessage, at now: Date, on db: any Database) async throws {
        let row = OutboxMessage()
        row.id = UUID.random()
        row.userID = message.userID
        row.recipient = message.recipient
        row.subject = message.subject
        row.body = message.body
        row.kind = message.kind
        row.createdAt = now
        try await row.create(on: db)
    }

    /// The newest messages first, to one recipient if given.
    func recent(recipient: String?, limit: Int, on db: any Database) async throws -> [OutboxMessage] {
        let query = OutboxMessage.query(on: db).sort(\.$createdAt, .descending).sort(\.$id, .descending).limit(limit)
        if let recipient { query.filter(\.$recipient == recipient) }
        return try await query.all()
    }
}
