import Crypto
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import SQLKit

/// Verifies SendGrid's signed Event Webhook and refuses everything else:
/// `X-Twilio-Email-Event-Webhook-Signature` is a base64 DER ECDSA P-256
/// signature over the SHA-256 of `X-Twilio-Email-Event-Webhook-Timestamp`
/// followed by the raw body, under the verification key SendGrid shows
/// (base64 DER). Without a key every event is refused.
struct SendGridWebhookVerifier: Sendable {
    enum Failure: String, Error, Sendable {
        case notConfigured = "not_configured"
        case missingHeader = "missing_header"
        case malformed
        case badSignature = "bad_signature"
        case stale
    }

    let key: P256.Signing.PublicKey?
    let clock: AppClock

    /// How far the signed timestamp may be from Folio's clock either way.
    static let window: TimeInterval = 600
    static let signatureHeader = HTTPField.Name("X-Twilio-Email-Event-Webhook-Signature")!
    static let timestampHeader = HTTPField.Name("X-Twilio-Email-Event-Webhook-Timestamp")!

    init(publicKey: String?, clock: AppClock) {
        self.key = publicKey.flatMap(Self.publicKey)
        self.clock = clock
    }

    /// The key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo (a PEM block is accepted too).
    static func publicKey(_ text: String) -> P256.Signing.PublicKey? {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("-----BEGIN") { return try? P256.Signing.PublicKey(pemRepresentation: trimmed) }
        guard let der = Data(base64Encoded: trimmed) else { return nil }
        return try? P256.Signing.PublicKey(derRepresentation: der)
    }

    func verify(signature: String?, timestamp: String?, body: [UInt8]) throws(Failure) {
        guard let key else { throw .notConfigured }
        guard let signature, !signature.isEmpty, let timestamp, !timestamp.isEmpty else { throw .missingHeader }
        guard signature.utf8.count <= 200, timestamp.utf8.count <= 20, let seconds = Int64(timestamp),
              let der = Data(base64Encoded: signature), let parsed = try? P256.Signing.ECDSASignature(derRepresentation: der)
        else { throw .malformed }
        guard key.isValidSignature(parsed, for: Data(timestamp.utf8) + Data(body)) else { throw .badSignature }
        guard abs(clock.now().timeIntervalSince1970 - Double(seconds)) <= Self.window else { throw .stale }
    }
}

/// What SendGrid's events change: a bounce or spam report stops mail to the
/// address; a delivery confirms a message whose sending was uncertain.
struct SendGridEvents: Sendable {
    let store: MailStore
    let clock: AppClock
    let logger: Logger
    let metrics: FolioMetrics?

    struct Outcome: Sendable, Equatable {
        var events = 0
        var duplicates = 0
        var suppressed = 0
    }

    func apply(_ events: [JSONValue]) async throws -> Outcome {
        let store = self.store, now = clock.now()
        return try await store.database.transaction { db in
            let sql = db
            var outcome = Outcome()
            for event in events {
                guard let name = event["event"]?.string else { continue }
                outcome.events += 1
                if let id = event["sg_event_id"]?.string, !id.isEmpty {
                    guard try await store.recordEvent(String(id.prefix(200)), event: name, now: now, on: sql) else {
                        outcome.duplicates += 1
                        continue
                    }
                }
                metrics?.mailEvent(Self.metricName(name))
                let email = event["email"]?.string.map(IdentityServices.normalizedEmail)
                switch name {
                // A hard bounce (not a `blocked` one, which is temporary) or a spam report: no more mail to the address.
                case "bounce" where event["type"]?.string != "blocked", "spamreport":
                    guard let email, !email.isEmpty else { continue }
                    let detail = event["reason"]?.string ?? event["status"]?.string
                    try await store.suppress(email, reason: name, detail: detail, now: now, on: sql)
                    outcome.suppressed += 1
                    logger.info("mail to an address stopped", metadata: ["reason": .string(name)])
                // SendGrid took the message and will not send it (an address on its lists, content it refused): not sent,
                // and a `processed` for it (before or after) does not make it sent.
                case "dropped":
                    if let id = event["folio_mail_id"]?.string.flatMap(UUID.init(uuidString:)) {
                        let reason = event["reason"]?.string.map { String($0.prefix(300)) } ?? "no reason given"
                        if try await store.markDropped(id, reason: reason, now: now, on: sql) {
                            logger.warning("SendGrid dropped a message", metadata: ["mail_id": .string(id.lowercasedString), "reason": .string(reason)])
                        }
                    }
                case "delivered", "processed":
                    if let id = event["folio_mail_id"]?.string.flatMap(UUID.init(uuidString:)) {
                        let vendorID = event["sg_message_id"]?.string.map { String($0.prefix { $0 != "." }.prefix(100)) }
                        try await store.confirm(id, vendorMessageID: vendorID, now: now, on: sql)
                    }
                default:
                    break
                }
            }
            return outcome
        }
    }

    /// Event names as metric labels: SendGrid's own, anything else `other`.
    static func metricName(_ name: String) -> String {
        ["processed", "dropped", "delivered", "deferred", "bounce", "open", "click", "spamreport", "unsubscribe", "group_unsubscribe", "group_resubscribe"]
            .contains(name) ? name : "other"
    }
}

/// `POST /webhooks/sendgrid`: SendGrid's Event Webhook, verified first.
struct SendGridWebhookController: Sendable {
    let verifier: SendGridWebhookVerifier
    let events: SendGridEvents
    let security: SecurityEvents
    let rejections: WebhookRejections
    let metrics: FolioMetrics

    static let path = "/webhooks/sendgrid"
    /// SendGrid batches up to a few hundred events in one post.
    static let bodyLimit = 1 << 20

    /// Whether a request's path is this route's: the router takes it with
    /// trailing slashes too, so its body allowance must.
    static func isPath(_ path: String) -> Bool {
        path.hasPrefix(Self.path) && path.utf8.dropFirst(Self.path.utf8.count).allSatisfy { $0 == UInt8(ascii: "/") }
    }

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        router.post(RouterPath(Self.path), use: receive)
    }

    struct Received: ResponseEncodable {
        var received: Int
        var duplicates: Int
        var suppressed: Int
    }

    @Sendable func receive(_ request: Request, context: FolioRequestContext) async throws -> Received {
        var request = request
        let buffer: ByteBuffer
        do { buffer = try await request.collectBody(upTo: Self.bodyLimit) } catch {
            await rejections.refuse(vendor: "sendgrid", reason: "too_large", metrics: metrics, security: security, origin: context.origin)
            throw ProblemMiddleware.payloadTooLarge()
        }
        let body = Array(buffer: buffer)
        do {
            try verifier.verify(
                signature: request.headers[SendGridWebhookVerifier.signatureHeader], timestamp: request.headers[SendGridWebhookVerifier.timestampHeader],
                body: body)
        } catch {
            await rejections.refuse(vendor: "sendgrid", reason: error.rawValue, metrics: metrics, security: security, origin: context.origin)
            throw AppError(
                .unauthorized, code: "webhook_unverified", detail: "The event webhook's signature did not verify; nothing was processed.",
                headers: [.wwwAuthenticate: SendGridWebhookVerifier.signatureHeader.rawName])
        }
        metrics.webhookVerification(vendor: "sendgrid", result: "verified")
        guard let json = try? JSONValue.parse(body), case .array(let list) = json else {
            throw AppError(.badRequest, code: "malformed_webhook", detail: "The event webhook's body is not a JSON array of events.")
        }
        let outcome = try await events.apply(list)
        context.logger.info("SendGrid events received", metadata: [
            "events": .stringConvertible(outcome.events), "duplicates": .stringConvertible(outcome.duplicates), "suppressed": .stringConvertible(outcome.suppressed)])
        return Received(received: outcome.events, duplicates: outcome.duplicates, suppressed: outcome.suppressed)
    }
}
