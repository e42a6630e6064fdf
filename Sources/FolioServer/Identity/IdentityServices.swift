import FluentKit
import FolioDomain
import Foundation
import SQLKit

/// Everything the identity routes and middleware share, built once.
struct IdentityServices: Sendable {
    let configuration: AppConfiguration
    let database: FolioDatabase
    let clock: AppClock
    let hasher: PasswordHasher
    let passwordPolicy: PasswordPolicy
    let tokens: TokenService
    let sessions: SessionStore
    let csrf: CSRFTokens
    let secretBox: SecretBox
    /// Account mail (verification, reset links), queued for the worker.
    let mailQueue: MailQueue
    /// Security notices, mailed whatever the user's preferences.
    let notifications: Notifications
    let audit: AuditLog
    let security: SecurityEvents
    let loginThrottle: LoginThrottle
    let store: IdentityStore
    let outbox: OutboxStore
    /// Opens each new user's paper account.
    let ledger: Ledger

    static let emailTokenLifetime: TimeInterval = 24 * 3600
    static let resetTokenLifetime: TimeInterval = 3600

    static func make(
        configuration: AppConfiguration, database: FolioDatabase, clock: AppClock, ids: IDSource, anchor: AuditAnchor, ledger: Ledger,
        mail: MailQueue, notifications: Notifications, metrics: FolioMetrics? = nil
    ) async -> IdentityServices {
        let audit = AuditLog(clock: clock, anchor: anchor, ids: ids)
        let store = IdentityStore()
        return IdentityServices(
            configuration: configuration,
            database: database,
            clock: clock,
            hasher: PasswordHasher(cost: configuration.bcryptCost),
            passwordPolicy: .standard,
            tokens: await TokenService.make(
                secretKey: configuration.secretKey, previousKeys: configuration.previousSecretKeys,
                lifetime: configuration.accessTokenLifetime, clock: clock),
            sessions: SessionStore(database: database, clock: clock, idleTimeout: configuration.sessionIdleTimeout, maxAge: configuration.sessionMaxAge),
            csrf: CSRFTokens(secretKey: configuration.secretKey, previousKeys: configuration.previousSecretKeys),
            secretBox: SecretBox(secretKey: configuration.secretKey, previousKeys: configuration.previousSecretKeys),
            mailQueue: mail,
            notifications: notifications,
            audit: audit,
            security: SecurityEvents(audit: audit, database: database, clock: clock, metrics: metrics),
            loginThrottle: LoginThrottle(clock: clock, store: store, secretKey: configuration.secretKey),
            store: store,
            outbox: OutboxStore(),
            ledger: ledger)
    }

    /// Runs the part of an anonymous request that depends on whether the address has an account, and answers no
    /// sooner than `anonymousAnswerTime` after it began, however it went: a known address's token, mail and
    /// writes take longer than an unknown one's single read, and the difference would tell.
    func answeringEvenly(_ work: () async throws -> Void) async throws {
        let deadline = ContinuousClock.now + .milliseconds(Int64(configuration.anonymousAnswerTime * 1000))
        do {
            try await work()
        } catch {
            try? await Task.sleep(until: deadline, clock: .continuous)
            throw error
        }
        try? await Task.sleep(until: deadline, clock: .continuous)
    }

    /// Email addresses are compared and stored trimmed, lower-cased and in Unicode's composed form (NFC):
    /// `é` typed as one letter or as `e` and an accent is one address, as it is to the person.
    static func normalizedEmail(_ email: String) -> String {
        email.trimmingCharacters(in: .whitespacesAndNewlines).lowercased().precomposedStringWithCanonicalMapping
    }

    /// An address mail can be delivered to as written: a dot-atom before the
    /// `@` (letters, digits and ``!#$%&'*+-/=?^_`{|}~``, dots between them) and
    /// a host name after it (labels of letters, digits and inner hyphens, the
    /// last not all digits). Quoted local parts, comments and address literals
    /// such as `x@[127.0.0.1]` or `x@127.0.0.1` are refused: no mailbox people
    /// use needs them, and each is a way round a check made on the domain. So is
    /// the reserved `.invalid` top-level domain, where erased people's addresses go.
    static func isPlausibleEmail(_ email: String) -> Bool {
        guard (3...254).contains(email.utf8.count) else { return false }
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].utf8.count <= 64 else { return false }
        let local = parts[0].split(separator: ".", omittingEmptySubsequences: false)
        let labels = parts[1].split(separator: ".", omittingEmptySubsequences: false)
        guard local.allSatisfy({ !$0.isEmpty && $0.unicodeScalars.allSatisfy(isAtomScalar) }),
              labels.count >= 2, labels.allSatisfy(isHostLabel), !labels.last!.allSatisfy(\.isNumber),
              // `.invalid` never receives mail (RFC 6761), and erasure's pseudonyms live there: one taken would block an erasure.
              labels.last!.lowercased() != "invalid"
        else { return false }
        return true
    }

    private static func isAtomScalar(_ scalar: Unicode.Scalar) -> Bool {
        isLetterOrDigit(scalar) || "!#$%&'*+-/=?^_`{|}~".unicodeScalars.contains(scalar)
    }

    private static func isHostLabel(_ label: Substring) -> Bool {
        (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
            && label.unicodeScalars.allSatisfy { isLetterOrDigit($0) || $0 == "-" }
    }

    /// ASCII letters and digits, and the letters, marks and digits of other scripts (internationalized
    /// addresses: हिन्दी's virama, Thai tone marks, an accent typed apart from its letter, Persian's ZWNJ).
    private static func isLetterOrDigit(_ scalar: Unicode.Scalar) -> Bool {
        if scalar.isASCII { return scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
             .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber:
            return true
        default:
            return scalar == "\u{200C}" || scalar == "\u{200D}"
        }
    }

    func findUser(email: String, on db: any Database) async throws -> User? {
        try await store.user(email: Self.normalizedEmail(email), on: db)
    }

    /// Queues mail to the user on `db` (the worker sends it): inside a
    /// transaction, a change that rolls back leaves no message behind. A
    /// security notice is also a notification in the app.
    func mail(_ user: User, _ template: MailTemplate, _ variables: MailVariables = MailVariables([:]), on db: any Database) async throws {
        let sql = db as! any SQLDatabase
        if template.category != nil {
            try await notifications.notify(user.id!, template, variables, on: sql)
        } else {
            try await mailQueue.enqueue(template, variables, to: user.email, userID: user.id, on: sql)
        }
    }

    /// Mail anyone can make Folio send to an address by naming it (a reset link, a verification link sent
    /// again, the notice of a sign-up with it) goes out at most this many times an hour per kind, so no one
    /// can fill an inbox with Folio's mail or spend its sender's reputation. The answer to the request is the same.
    static let strangerMailPerHour = 3

    /// Whether another message of `template` may go to the user now; logs when one is held back.
    /// On `db`, a transaction that took the user's row first (`IdentityStore.lockUnerasedUser`), the count and the mail
    /// queued after it are one step: requests at once cannot all count below the limit.
    func mayMail(_ user: User, _ template: MailTemplate, origin: RequestOrigin, on db: (any Database)? = nil) async throws -> Bool {
        let sent = try await mailQueue.store.count(of: template, userID: user.id!, since: clock.now().addingTimeInterval(-3600), on: db as? any SQLDatabase)
        if sent < Self.strangerMailPerHour { return true }
        origin.logger.info("mail held back: the address had enough of this kind this hour", metadata: ["template": .string(template.rawValue)])
        return false
    }

    /// Creates a single-use email token and returns the clear value to send.
    func createEmailToken(for user: User, purpose: EmailToken.Purpose, lifetime: TimeInterval, on db: any Database) async throws -> String {
        // A new token replaces any unused one of the same purpose.
        try await store.retireEmailTokens(userID: user.id!, purpose: purpose, at: clock.now(), on: db)
        let token = SecureToken.generate()
        try await store.insert(EmailToken(userID: user.id!, purpose: purpose, tokenHash: SecureToken.hash(token), now: clock.now(), lifetime: lifetime), on: db)
        return token
    }

    /// An unspent, unexpired email token and its user, without spending it.
    func findEmailToken(_ token: String, purpose: EmailToken.Purpose, on db: any Database) async throws -> (EmailToken, User)? {
        guard let stored = try await store.emailToken(hash: SecureToken.hash(token), purpose: purpose, on: db),
              stored.usedAt == nil, stored.expiresAt > clock.now(),
              let user = try await store.user(id: stored.userID, on: db)
        else { return nil }
        return (stored, user)
    }

    /// Marks the token used; false when another request spent it first.
    func spend(_ token: EmailToken, on db: any Database) async throws -> Bool {
        try await store.spendEmailToken(id: token.id!, at: clock.now(), on: db)
    }

    /// Spends an email token: the user it belongs to, or nil if it is unknown, used or expired.
    func consumeEmailToken(_ token: String, purpose: EmailToken.Purpose, on db: any Database) async throws -> User? {
        guard let (stored, user) = try await findEmailToken(token, purpose: purpose, on: db), try await spend(stored, on: db) else { return nil }
        return user
    }
}
