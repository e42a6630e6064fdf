import FolioDomain
import Foundation
import Logging
import SQLKit

/// Queues mail: a row in `mail_messages` and a `send_mail` job, both in the
/// caller's transaction, so a change that rolls back leaves no message
/// behind, and nothing is sent on the request path.
struct MailQueue: Sendable {
    let store: MailStore
    let jobs: JobQueue
    let clock: AppClock
    let ids: IDSource

    @discardableResult
    func enqueue(
        _ template: MailTemplate, _ variables: MailVariables, to recipient: String, userID: UUID?, notificationID: UUID? = nil,
        on db: any SQLDatabase
    ) async throws -> UUID {
        let id = ids.uuid()
        try await store.insert(
            id: id, userID: userID, notificationID: notificationID, recipient: recipient, template: template, variables: variables,
            now: clock.now(), on: db)
        try await jobs.enqueue(.sendMail(id), maxAttempts: MailDelivery.maxAttempts, on: db)
        return id
    }

    /// A notification's message, queued with others of one commit.
    struct Message: Sendable {
        var template: MailTemplate
        var variables: MailVariables
        /// Never nil: PostgreSQL could not tell the type of a VALUES column of nulls alone.
        var notificationID: UUID
    }

    /// Adds to `writes` the messages to the address `recipient` selects (as
    /// `email`) and their jobs, both written only if it selects one.
    func enqueue(_ messages: [Message], toWhoeverOf recipient: SQLQueryString, userID: UUID?, into writes: inout WriteBatch) {
        let queued = messages.map { (id: ids.uuid(), message: $0) }
        store.insert(queued, userID: userID, recipientFrom: recipient, now: clock.now(), into: &writes)
        jobs.enqueue(queued.map { .sendMail($0.id) }, maxAttempts: MailDelivery.maxAttempts, onlyIf: recipient, into: &writes)
    }
}

/// Why a transport did not send a message, which decides what happens next.
enum MailSendError: Error, Sendable, CustomStringConvertible {
    /// The vendor refused it for good (400, 401, 403, 413): sending again cannot help.
    case refused(status: Int, detail: String)
    /// The vendor asked Folio to slow down (429): try again after `retryAt`.
    case throttled(retryAt: Date?, detail: String)
    /// The vendor failed or could not be reached before the message left (5xx, a refused connection): try again later.
    case unavailable(String)
    /// The message may have reached the vendor (a timeout after sending): never sent again.
    case uncertain(String)

    var description: String {
        switch self {
        case .refused(let status, let detail): "refused (HTTP \(status)): \(detail)"
        case .throttled(_, let detail): "throttled: \(detail)"
        case .unavailable(let detail): "unavailable: \(detail)"
        case .uncertain(let detail): "uncertain: \(detail)"
        }
    }
}

/// Hands a rendered message over. `markSent` is the statement that records
/// it as sent (given the vendor's id for it); a transport that writes to the
/// database itself (the outbox) writes it with its own row, in one go, so the
/// message is kept exactly once.
protocol MailTransport: Sendable {
    var name: String { get }
    func send(_ mail: RenderedMail, database: FolioDatabase, markSent: @escaping @Sendable (String?) -> SQLQueryString) async throws(MailSendError)
}

/// The development mailer: keeps messages in `outbox_messages` (readable with
/// `folio users outbox` and, outside production, `GET /api/admin/outbox`).
struct OutboxTransport: MailTransport {
    let clock: AppClock
    let logger: Logger
    var name: String { "outbox" }

    func send(_ mail: RenderedMail, database: FolioDatabase, markSent: @escaping @Sendable (String?) -> SQLQueryString) async throws(MailSendError) {
        let kept: Bool
        do {
            kept = try await database.transaction { db in
                // The message is marked sent first, which holds its row: an erasure that removed it meanwhile (or
                // waits on it) leaves nothing here, or finds the copy kept and removes it too. Kept after an
                // erasure, the copy would outlive the person, and show in the export of whoever takes the address next.
                guard try await !db.raw(markSent(nil) + " RETURNING id").all().isEmpty else { return false }
                try await OutboxStore().insert(
                    MailMessage(userID: mail.userID, recipient: mail.recipient, subject: mail.subject, body: mail.text, html: mail.html, kind: mail.template.rawValue),
                    at: clock.now(), on: db)
                return true
            }
        } catch {
            throw .unavailable("the outbox could not be written: \(type(of: error))")
        }
        guard kept else {
            logger.info("mail no longer being sent (its row removed by an erasure, or settled meanwhile); not kept", metadata: ["mail_id": .string(mail.id.lowercasedString)])
            return
        }
        var metadata: Logger.Metadata = ["recipient": .string(mail.recipient), "subject": .string(mail.subject), "kind": .string(mail.template.rawValue)]
        // Account mail is rare and its body (the token masked) shows what the person was asked to do;
        // a notice's body (one per fill) is in the outbox and the app, and redacting it costs a millisecond.
        if mail.template.category == nil { metadata["body"] = .string(mail.text) }
        logger.info("mail kept in outbox", metadata: metadata)
    }
}

/// Sends queued messages from the `send_mail` job. A message goes out at most
/// once: it is marked `sending` before it is handed over, and a message found
/// `sending` by a later attempt (its sender stopped mid-way) is marked
/// `uncertain` and not sent again. SendGrid's Event Webhook, which carries the
/// message's id back, turns an uncertain message that was delivered into `sent`.
struct MailDelivery: Sendable {
    let store: MailStore
    /// The person's choice of mail, asked again when a notice is sent: one queued before they turned its kind off
    /// (and held back by a retry since) is not sent after.
    let preferences: NotificationStore
    let renderer: MailRenderer
    let transport: any MailTransport
    let clock: AppClock
    let logger: Logger
    let metrics: FolioMetrics?

    static let maxAttempts = 8
    /// Throttled sends are not failures, but a message is given up after this many tries in all.
    static let maxHandovers = 25

    func run(_ job: ClaimedJob) async -> JobOutcome {
        guard case .sendMail(let id) = job.payload else { return .failed("not a send_mail job") }
        do {
            return try await deliver(id, finalAttempt: job.attempts >= job.maxAttempts)
        } catch {
            return .failed(error)
        }
    }

    func deliver(_ id: UUID, finalAttempt: Bool) async throws -> JobOutcome {
        let now = clock.now()
        guard let claimed = try await store.claim(id, now: now) else {
            if let found = try await store.status(of: id), found.status == .sending {
                // The last attempt stopped between handing the message over and recording it: it may have gone out.
                try await store.settle(id, as: .uncertain, error: MailStore.abandonedMidSend, now: now, on: store.database.sql)
                metrics?.mail(template: MailTemplate(rawValue: found.template)?.rawValue ?? "unknown", result: "uncertain")
                logger.warning("mail may have been sent by a stopped sender; not sent again", metadata: ["mail_id": .string(id.lowercasedString)])
            }
            return .done
        }
        do {
            return try await send(claimed)
        } catch let error as AfterHandover {
            // The message may have left, and not even that could be recorded: the row stays `sending`, so the next
            // attempt (or the sweep) settles it as uncertain. Queued again, it would be sent twice.
            logger.error("mail handed over, but its outcome could not be recorded", metadata: [
                "mail_id": .string(id.lowercasedString), "error": .string(DatabaseErrorText.forLog(error.underlying))])
            return .failed(error)
        } catch {
            // Folio's own failure (the database), before anything left: back in the queue, not uncertain (failed after the job's last attempt).
            let reason = "Folio could not send it: \(type(of: error))"
            if finalAttempt {
                _ = try? await store.settle(id, as: .failed, error: reason, now: clock.now(), on: store.database.sql)
            } else {
                try? await store.requeue(id, error: reason, now: clock.now())
            }
            return .failed(error)
        }
    }

    /// A failure to record what became of a message that was handed over (or may have been).
    struct AfterHandover: Error, CustomStringConvertible {
        var underlying: any Error
        var description: String { "the outcome of a message handed over could not be recorded" }
    }

    /// Sends a claimed message and records what became of it.
    private func send(_ claimed: MailStore.Claimed) async throws -> JobOutcome {
        let id = claimed.id, now = clock.now()
        let template = MailTemplate(rawValue: claimed.template)
        let label = template?.rawValue ?? "unknown"
        // A way back into the account (a verification or reset link the person asked for) is not held back.
        let variables = Result { try MailVariables(json: claimed.variables) }
        if template?.passesSuppressions(try? variables.get()) != true, try await claimed.suppressed(store) {
            try await store.settle(id, as: .suppressed, error: "the address bounced or reported spam", now: now, on: store.database.sql)
            metrics?.mail(template: label, result: "suppressed")
            logger.info("mail not sent to a suppressed address", metadata: ["mail_id": .string(id.lowercasedString), "kind": .string(label)])
            return .done
        }
        if let category = template?.category, let userID = claimed.userID, !category.alwaysMailed,
           try await !preferences.wantsMail(userID, category: category) {
            try await store.settle(id, as: .suppressed, error: "\(category.rawValue) mail was turned off after it was queued", now: now, on: store.database.sql)
            metrics?.mail(template: label, result: "suppressed")
            logger.info("mail not sent: its kind was turned off", metadata: ["mail_id": .string(id.lowercasedString), "kind": .string(label)])
            return .done
        }
        let mail: RenderedMail
        do {
            guard let template else { throw MailRenderer.Failure(description: "unknown template \(claimed.template)") }
            mail = try renderer.render(
                template, try variables.get(), id: id, userID: claimed.userID, recipient: claimed.recipient)
        } catch {
            try await store.settle(id, as: .failed, error: "could not be rendered: \(error)", now: now, on: store.database.sql)
            metrics?.mail(template: label, result: "failed")
            logger.error("mail could not be rendered", metadata: ["mail_id": .string(id.lowercasedString), "error": .string(String(describing: error))])
            return .done
        }
        let store = self.store, clock = self.clock
        do {
            try await transport.send(mail, database: store.database) { vendorID in
                store.settling(id, as: .sent, vendorMessageID: vendorID, now: clock.now())
            }
            metrics?.mail(template: label, result: "sent")
            return .done
        } catch {
            let after = clock.now()
            switch error {
            case .refused:
                try await store.settle(id, as: .failed, error: error.description, now: after, on: store.database.sql)
                metrics?.mail(template: label, result: "failed")
                logger.error("mail refused by \(transport.name)", metadata: ["mail_id": .string(id.lowercasedString), "error": .string(error.description)])
                return .done
            case .uncertain:
                do { try await store.settle(id, as: .uncertain, error: error.description, now: after, on: store.database.sql) } catch {
                    throw AfterHandover(underlying: error)
                }
                metrics?.mail(template: label, result: "uncertain")
                logger.warning("mail may or may not have reached \(transport.name); not sent again", metadata: [
                    "mail_id": .string(id.lowercasedString), "error": .string(error.description)])
                return .done
            case .throttled, .unavailable:
                guard claimed.attempts < Self.maxHandovers else {
                    try await store.settle(id, as: .failed, error: error.description, now: after, on: store.database.sql)
                    metrics?.mail(template: label, result: "failed")
                    logger.error("mail given up after \(claimed.attempts) tries", metadata: ["mail_id": .string(id.lowercasedString), "error": .string(error.description)])
                    return .done
                }
                try await store.requeue(id, error: error.description, now: after)
                // Not counted against the job's attempts: a vendor that asked Folio to wait, or is down, is not this message's fault.
                // A 429 waits as long as SendGrid said, and at least the back-off of its tries (a wait of 0, or a reset time
                // already past, would spend every handover in seconds); a 5xx or no connection at least 30 s, so the Event Webhook's
                // `processed` for a message SendGrid took despite its 5xx can arrive (and mark it sent) first.
                let wait: TimeInterval
                if case .throttled(let retryAt, _) = error {
                    metrics?.mail(template: label, result: "throttled")
                    wait = max(retryAt?.timeIntervalSince(after) ?? 0, JobQueue.backoff(attempt: claimed.attempts))
                } else {
                    metrics?.mail(template: label, result: "retried")
                    wait = max(30, JobQueue.backoff(attempt: claimed.attempts))
                }
                return .later(after.addingTimeInterval(min(max(wait, 1), 3600)))
            }
        }
    }

    /// Housekeeping, about once a minute: messages stuck in `sending` (their
    /// job died with its worker) become `uncertain`. (Old Event Webhook ids go with retention.)
    func sweep() async {
        let now = clock.now()
        do {
            let abandoned = try await store.settleAbandoned(before: now.addingTimeInterval(-2 * JobQueue.lease), now: now)
            // Counted as every other uncertain message is: FolioMailFailing is how an operator hears of them.
            for template in abandoned { metrics?.mail(template: MailTemplate(rawValue: template)?.rawValue ?? "unknown", result: "uncertain") }
            if !abandoned.isEmpty { logger.warning("mail left mid-send by a stopped sender marked uncertain", metadata: ["messages": .stringConvertible(abandoned.count)]) }
        } catch {
            logger.warning("mail housekeeping failed", metadata: ["error": .string(DatabaseErrorText.forLog(error))])
        }
    }
}
