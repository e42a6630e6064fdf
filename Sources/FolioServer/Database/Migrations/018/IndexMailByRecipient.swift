import FluentKit
import SQLKit

/// 018: the mail a user was sent of one kind since a time, by index: the
/// per-address limit on mail anyone can trigger (`IdentityServices.mayMail`)
/// counts it on every reset request, and `mail_messages` keeps 90 days of all mail.
struct IndexMailByRecipient: AsyncMigration {
    var name: String { "018_index_mail_by_recipient" }

    func prepare(on database: any Database) async throws {
        try await (database as! any SQLDatabase).raw("CREATE INDEX mail_messages_user_template_idx ON mail_messages (user_id, template, created_at)").run()
    }

    func revert(on database: any Database) async throws {
        try await (database as! any SQLDatabase).raw("DROP INDEX mail_messages_user_template_idx").run()
    }
}
