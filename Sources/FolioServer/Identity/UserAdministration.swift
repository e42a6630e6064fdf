import FluentKit
import FolioDomain
import SQLKit
import Foundation

/// What the `folio users` and `folio outbox` commands do, kept here so it is
/// tested like the rest of the server. Every change is audited with no
/// request id and `cli` as the address.
public struct UserAdministration: Sendable {
    let identity: IdentityServices
    let ledger: Ledger
    let startingCash: Cash
    let origin: RequestOrigin
    let erasure: PersonalDataErasure
    let personalData: PersonalDataExport
    let mail: MailStore
    let orders: OrderService

    public struct Failure: CommandRefusal {
        public var description: String
    }

    public struct UserSummary: Sendable {
        public var id: UUID
        public var email: String
        public var role: String
        public var verified: Bool
        public var disabled: Bool
        /// Erased (GDPR): the row stays, pseudonymised and disabled for good.
        public var erased: Bool
        public var createdAt: Date
    }

    public struct OutboxEntry: Sendable {
        public var createdAt: Date
        public var recipient: String
        public var subject: String
        public var body: String
    }

    public struct SuppressionEntry: Sendable {
        public var email: String
        /// SendGrid's event: `bounce`, `dropped`, `spamreport`.
        public var reason: String
        public var since: Date
    }

    public init(services: FolioServices) {
        self.mail = services.mail
        self.identity = services.identity
        self.ledger = services.ledger
        self.startingCash = services.configuration.startingCash
        self.origin = .commandLine(logger: services.logger)
        self.erasure = services.erasure
        self.personalData = services.personalData
        self.orders = services.orders
    }

    /// A person's data as `GET /api/me/export` gives it to them, for an access request made some other
    /// way (someone who cannot sign in): written to `write` in pieces, audited as the operator's.
    public func export(email: String, to write: (ArraySlice<UInt8>) async throws -> Void) async throws -> UUID {
        let user = try await find(email)
        let userID = UserID(user.id!)
        // An erased person's row is a placeholder now: there is nothing of theirs to give.
        if try await identity.store.erased([user.id!], on: identity.database.db).contains(user.id!) {
            throw Failure(description: "\(email) was erased: Folio holds no personal data of theirs any more")
        }
        let snapshot = try await personalData.snapshot(of: userID)
        try await identity.audit.record(
            .init(action: "admin.personal_data_exported", subjectType: "user", subjectID: user.id?.lowercasedString, userID: user.id),
            origin: origin, on: identity.database)
        try await snapshot.copy(to: write)
        return user.id!
    }

    /// Creates an administrator whose address counts as verified.
    @discardableResult
    public func createAdmin(email: String, password: String) async throws -> UUID {
        let email = IdentityServices.normalizedEmail(email)
        guard IdentityServices.isPlausibleEmail(email) else { throw Failure(description: "\(email) is not a valid email address") }
        if let problem = identity.passwordPolicy.problems(password: password, email: email).first { throw Failure(description: problem.message) }
        let db = identity.database.db
        if try await identity.store.user(email: email, on: db) != nil {
            throw Failure(description: "a user with email \(email) already exists; use `folio users set-role \(email) admin`")
        }
        let now = identity.clock.now()
        let user = User(email: email, passwordHash: try await identity.hasher.hash(password), role: .admin, now: now)
        user.emailVerifiedAt = now
        try await identity.database.modelTransaction { db in
            try await identity.store.insert(user, on: db)
            try await identity.audit.record(
                .init(action: "admin.user_created", subjectType: "user", subjectID: user.id?.lowercasedString, userID: user.id, details: ["role": "admin"]),
                origin: origin, on: db)
            try await ledger.openPaperAccount(for: UserID(user.id!), startingCash: startingCash, context: origin.audit, on: db as! any SQLDatabase)
        }
        return user.id!
    }

    public func list() async throws -> [UserSummary] {
        let users = try await identity.store.allUsers(on: identity.database.db)
        let erased = try await identity.store.erased(users.compactMap(\.id), on: identity.database.db)
        return users.map {
            UserSummary(
                id: $0.id!, email: $0.email, role: $0.role, verified: $0.emailVerifiedAt != nil, disabled: $0.isDisabled,
                erased: erased.contains($0.id!), createdAt: $0.createdAt)
        }
    }

    /// The roles a user can have, as `set-role` spells them.
    public static let roles = User.Role.allCases.map(\.rawValue)

    /// False when they had the role already (nothing changes).
    @discardableResult
    public func setRole(email: String, role: String) async throws -> Bool {
        guard let role = User.Role(rawValue: role) else {
            throw Failure(description: "role must be one of \(User.Role.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let user = try await findLiving(email)
        var changed = false
        try await refusingLastAdministrator(user, "demote") { changed = try await identity.setRole(role, user: user, origin: origin) }
        return changed
    }

    /// Disables a user and ends their sessions. False when they were disabled already (nothing changes).
    @discardableResult
    public func disable(email: String) async throws -> Bool {
        let user = try await findLiving(email)
        guard !user.isDisabled else { return false }
        try await refusingLastAdministrator(user, "disable") { _ = try await identity.setDisabled(true, user: user, actor: nil, origin: origin) }
        return true
    }

    /// Enables a disabled user (`folio users enable`: the way back for an administrator disabled by mistake).
    /// False when they were enabled already.
    @discardableResult
    public func enable(email: String) async throws -> Bool {
        let user = try await findLiving(email)
        guard user.isDisabled else { return false }
        _ = try await identity.setDisabled(false, user: user, actor: nil, origin: origin)
        return true
    }

    /// The change, or the command's words when it would leave no enabled administrator.
    private func refusingLastAdministrator(_ user: User, _ verb: String, _ change: () async throws -> Void) async throws {
        do {
            try await change()
        } catch IdentityError.lastAdministrator {
            throw Failure(description: "\(user.email) is the only enabled administrator; make someone else an administrator before you \(verb) them")
        }
    }

    /// Erases a person at an operator's request (`folio users erase`): the same as `DELETE /api/me`, without the password.
    /// Returns the user's id and how many rows were removed.
    /// With `cancelingOpenOrders`, the person's open orders are canceled first (someone who cannot sign in to cancel
    /// them, or a re-erasure after a restore brought them back), the operator's doing recorded on the person's
    /// chain; an order a broker has yet to confirm canceled still holds the erasure back until it does.
    public func erase(email: String, cancelingOpenOrders: Bool = false) async throws -> (userID: UUID, removedRows: Int, linkedItemsRemoved: Int) {
        let user = try await find(email)
        if cancelingOpenOrders {
            let userID = UserID(user.id!)
            let open = try await orders.store.openOrders(of: userID, accountID: nil, symbol: nil)
            if !open.isEmpty {
                // Nothing is canceled for an erasure that something else refuses.
                do { try await erasure.checkBeforeCancelingOrders(userID) } catch let refusal as PersonalDataErasure.Refusal {
                    throw Self.failure(refusal, email: email, cancelingOpenOrders: true)
                }
                let outcomes = try await orders.cancelAll(userID: userID, accountID: nil, symbol: nil, context: origin.audit, byOperator: true)
                let failed = outcomes.filter { if case .failure = $0.outcome { true } else { false } }
                // The orders' own events name no actor; this one says whose doing it was.
                try await identity.audit.record(
                    .init(action: "admin.orders_canceled_for_erasure", subjectType: "user", subjectID: user.id!.lowercasedString, userID: user.id,
                          details: ["orders": String(open.count), "not_canceled": String(failed.count)]),
                    origin: origin, on: identity.database)
                if let first = failed.first, case .failure(let error) = first.outcome {
                    throw Failure(description: "\(failed.count) of \(email)'s open orders could not be canceled (\(error)); nothing was erased; try again")
                }
            }
        }
        do {
            let outcome = try await erasure.erase(UserID(user.id!), actor: nil, origin: origin)
            return (user.id!, outcome.removedRows, outcome.linkedItemsRemoved)
        } catch let refusal as PersonalDataErasure.Refusal {
            throw Self.failure(refusal, email: email, cancelingOpenOrders: cancelingOpenOrders)
        } catch let error as LinkError {
            throw Failure(description: "a linked bank could not be removed at Plaid (\(error)); nothing was erased; try again")
        }
    }

    /// `folio audit open-person-chain`: a new chain for a person whose chain `folio audit verify` found missing
    /// (removed outside Folio), after an operator has looked; until then nothing about them can be recorded, so
    /// they can be neither disabled nor erased. False when they have a chain.
    public func openPersonChain(email: String) async throws -> Bool {
        let user = try await find(email)
        let chain = AuditChain.ID.user(UserID(user.id!)).text
        guard try await identity.database.sql.raw("SELECT chain_id FROM audit_chains WHERE chain_id = \(bind: chain)").first() == nil else { return false }
        try await identity.audit.record(
            .init(action: AuditChain.personChainOpenedByOperator, subjectType: "user", subjectID: user.id!.lowercasedString, userID: user.id,
                  details: ["reason": "the person's audit chain was found missing; opened again by an operator"]),
            origin: origin, on: identity.database)
        return true
    }

    static func failure(_ refusal: PersonalDataErasure.Refusal, email: String, cancelingOpenOrders: Bool) -> Failure {
        switch refusal {
        case .openOrders(let count):
            if cancelingOpenOrders {
                // Orders placed while the cancels ran are open too: a person still signed in may go on trading.
                return Failure(description: "\(email) has \(ProblemMapping.openOrders(count)) still: placed after the cancels, or canceled at a broker that has yet to confirm it; nothing was erased; `folio users disable` them first (so that no new order comes), then run the command again")
            }
            return Failure(description: "\(email) has \(ProblemMapping.openOrders(count)); \(ProblemMapping.cancelOrWait(count)), or erase with --cancel-open-orders")
        case .lastAdministrator: return Failure(description: "\(email) is the only administrator; make someone else an administrator first")
        case .alreadyErased: return Failure(description: "\(email) was already erased")
        case .rebalanceRunning: return Failure(description: "\(email) has a rebalance running; let it finish first")
        case .linkedWhileErasing: return Failure(description: "a bank was linked for \(email) meanwhile; nothing was erased; run the command again")
        }
    }

    public func outbox(limit: Int) async throws -> [OutboxEntry] {
        try await identity.outboxMessages(recipient: nil, limit: limit).map {
            OutboxEntry(createdAt: $0.createdAt, recipient: $0.recipient, subject: $0.subject, body: $0.body)
        }
    }

    /// Addresses no mail goes to, as SendGrid reported them (a hard bounce, a spam report).
    public func suppressions() async throws -> [SuppressionEntry] {
        try await mail.suppressions().map { SuppressionEntry(email: $0.email, reason: $0.reason, since: $0.since) }
    }

    /// Whether `email` could be an address Folio mails (what registration accepts): an operator's typo is told as one.
    public static func isPlausibleEmail(_ email: String) -> Bool {
        IdentityServices.isPlausibleEmail(IdentityServices.normalizedEmail(email))
    }

    /// Lets mail go to an address again (its owner repaired the mailbox, or took back a spam report), audited
    /// as the operator's. False when no mail was stopped for it.
    public func unsuppress(email: String) async throws -> Bool {
        let user = try? await find(email)
        let audit = identity.audit, origin = self.origin, mail = self.mail
        return try await identity.database.transaction { db in
            guard try await mail.unsuppress(email, on: db) else { return false }
            try await audit.record(
                .init(action: "admin.mail_unsuppressed", subjectType: "user", subjectID: user?.id?.lowercasedString, userID: user?.id),
                ip: origin.ip, requestID: origin.requestID, inTransaction: db)
            return true
        }
    }

    /// The user by email address, or by id: after a restore, the `user.erased` audit events name by id the
    /// people erased since the backup, whose rows the restored copy still holds.
    private func find(_ emailOrID: String) async throws -> User {
        if let id = UUID(uuidString: emailOrID) {
            guard let user = try await identity.store.user(id: id, on: identity.database.db) else { throw Failure(description: "no user with id \(emailOrID)") }
            return user
        }
        guard let user = try await identity.findUser(email: emailOrID, on: identity.database.db) else {
            throw Failure(description: "no user with email \(emailOrID)")
        }
        return user
    }

    /// A user who was not erased: an erased person's row stays only to keep the books, and changes no more.
    private func findLiving(_ email: String) async throws -> User {
        let user = try await find(email)
        if try await !identity.store.erased([user.id!], on: identity.database.db).isEmpty {
            throw Failure(description: "\(email) was erased; an erased person's row changes no more")
        }
        return user
    }
}
