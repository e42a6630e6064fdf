import FluentKit
import SQLKit

/// 014: what Folio tells its users, and the mail that carries it.
/// - `notifications`: one row per event a user is told about, read in the app.
/// - `notification_preferences`: a user's choice of email per category (no row: the default, on).
/// - `mail_messages`: each message to send, sent by a `send_mail` job; its status
///   is what keeps a message from going out twice after a crash.
/// - `mail_suppressions`: addresses SendGrid reported as bounced or as marking
///   Folio's mail spam; nothing more is sent to them.
/// - `outbox_messages.html`: the development outbox keeps the HTML part too.
/// - `sendgrid_events`: verified Event Webhook events by id, so a retried delivery counts once.
struct CreateNotificationsAndMail: AsyncMigration {
    var name: String { "014_create_notifications_and_mail" }

    func prepare(on database: any Database) async throws {
        try await database.schema("notifications")
            .id()
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("kind", .string, .required)
            .field("category", .string, .required)
            .field("title", .string, .required)
            .field("body", .string, .required)
            // The template variables, as JSON: never a secret.
            .field("data", .string, .required)
            .field("created_at", .datetime, .required)
            .field("read_at", .datetime)
            .create()

        try await database.schema("notification_preferences")
            .field("user_id", .uuid, .required, .references("users", "id", onDelete: .cascade))
            .field("category", .string, .required)
            .field("email", .bool, .required)
            .field("updated_at", .datetime, .required)
            .compositeIdentifier(over: "user_id", "category")
            .create()

        try await database.schema("mail_messages")
            .id()
            .field("user_id", .uuid, .references("users", "id", onDelete: .setNull))
            .field("notification_id", .uuid, .references("notifications", "id", onDelete: .setNull))
            .field("recipient", .string, .required)
            .field("template", .string, .required)
            // The template variables as JSON; emptied once the message is settled (a link may hold a token).
            .field("variables", .string, .required)
            .field("status", .string, .required)
            .field("attempts", .int, .required)
            .field("last_error", .string)
            .field("vendor_message_id", .string)
            .field("created_at", .datetime, .required)
            .field("updated_at", .datetime, .required)
            .field("sent_at", .datetime)
            .constraint(.sql(unsafeRaw: """
                CONSTRAINT mail_messages_status_check CHECK (status IN ('queued', 'sending', 'sent', 'uncertain', 'failed', 'suppressed'))
                """))
            .create()

        try await database.schema("mail_suppressions")
            .field("email", .string, .identifier(auto: false))
            .field("reason", .string, .required)
            .field("detail", .string)
            .field("created_at", .datetime, .required)
            .create()

        try await database.schema("sendgrid_events")
            .field("sg_event_id", .string, .identifier(auto: false))
            .field("event", .string, .required)
            .field("received_at", .datetime, .required)
            .create()

        // The outbox keeps the HTML part too.
        try await database.schema("outbox_messages").field("html", .string).update()

        let sql = database as! any SQLDatabase
        try await sql.raw("CREATE INDEX notifications_user_id_created_at_idx ON notifications (user_id, created_at)").run()
        try await sql.raw("CREATE INDEX mail_messages_status_idx ON mail_messages (status)").run()
        try await sql.raw("CREATE INDEX sendgrid_events_received_at_idx ON sendgrid_events (received_at)").run()
    }

    func revert(on database: any Database) async throws {
        try await database.schema("outbox_messages").deleteField("html").update()
        for table in ["sendgrid_events", "mail_suppressions", "mail_messages", "notification_preferences", "notifications"] {
            try await database.schema(table).delete()
        }
    }
}
