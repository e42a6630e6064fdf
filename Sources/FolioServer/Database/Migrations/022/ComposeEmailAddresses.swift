import Foundation
import FluentKit
import SQLKit

/// 022: addresses stored in Unicode's composed form (NFC), as
/// `IdentityServices.normalizedEmail` now writes them. Before, `josé@` typed
/// with the accent as a separate mark was another address to the database than
/// `josé@` typed as one letter: two accounts for one mailbox, and a person who
/// could not sign in from a keyboard that composes differently. An address whose
/// composed form another account already holds is left for an operator; a
/// suppression whose composed form is already stopped is dropped as the same one.
struct ComposeEmailAddresses: AsyncMigration {
    var name: String { "022_compose_email_addresses" }

    func prepare(on database: any Database) async throws {
        let sql = database as! any SQLDatabase
        for row in try await sql.raw("SELECT id, email FROM users").all() {
            let id = try row.decode(column: "id", as: UUID.self), email = try row.decode(column: "email", as: String.self)
            let composed = IdentityServices.normalizedEmail(email)
            guard !composed.utf8.elementsEqual(email.utf8) else { continue }  // Swift's == holds the two forms equal
            let taken = try await sql.raw("SELECT 1 AS found FROM users WHERE lower(email) = lower(\(bind: composed)) AND id <> \(bind: id)").first() != nil
            if taken {
                // Two accounts for one mailbox: sign-in and resets now reach the composed one; an operator settles the other.
                database.logger.warning("an account's address was left as written: another account holds its composed form; see OPERATIONS (migration 022)", metadata: ["user_id": .string(id.uuidString.lowercased())])
            } else {
                try await sql.raw("UPDATE users SET email = \(bind: composed) WHERE id = \(bind: id)").run()
            }
        }
        for row in try await sql.raw("SELECT email FROM mail_suppressions").all() {
            let email = try row.decode(column: "email", as: String.self), composed = IdentityServices.normalizedEmail(email)
            guard !composed.utf8.elementsEqual(email.utf8) else { continue }
            if try await sql.raw("SELECT 1 AS found FROM mail_suppressions WHERE email = \(bind: composed)").first() != nil {
                try await sql.raw("DELETE FROM mail_suppressions WHERE email = \(bind: email)").run()
            } else {
                try await sql.raw("UPDATE mail_suppressions SET email = \(bind: composed) WHERE email = \(bind: email)").run()
            }
        }
    }

    /// The composed form is the same address: nothing to undo.
    func revert(on database: any Database) async throws {}
}
