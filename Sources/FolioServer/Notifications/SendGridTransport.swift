import AsyncHTTPClient
import FolioDomain
import Foundation
import Logging
import NIOCore
import NIOSSL
import NIOHTTP1
import NIOFoundationCompat
import NIOPosix
import SQLKit

/// SendGrid's v3 Mail Send: `POST /v3/mail/send` with a bearer key, a text and
/// an HTML part, answered `202 Accepted` with the message's id in
/// `X-Message-Id`. Each message carries Folio's id in `custom_args`, which
/// the Event Webhook sends back.
struct SendGridTransport: MailTransport {
    let settings: AppConfiguration.SendGridSettings
    let httpClient: HTTPClient
    let clock: AppClock
    let logger: Logger
    let metrics: FolioMetrics?
    var timeout: TimeAmount = .seconds(15)

    var name: String { "sendgrid" }
    static let endpoint = "/v3/mail/send"

    struct Address: Encodable {
        var email: String
        var name: String?
    }

    struct Body: Encodable {
        struct Personalization: Encodable { var to: [Address] }
        struct Content: Encodable {
            var type: String
            var value: String
        }
        var personalizations: [Personalization]
        var from: Address
        var subject: String
        /// text/plain first, as SendGrid requires.
        var content: [Content]
        var categories: [String]
        var custom_args: [String: String]
        var mail_settings: MailSettings?
        /// A notification's `List-Unsubscribe` and `List-Unsubscribe-Post` (RFC 8058): mail apps offer one-click unsubscribe.
        var headers: [String: String]?
    }

    struct MailSettings: Encodable {
        struct Setting: Encodable { var enable: Bool }
        var bypass_list_management: Setting
    }

    static func body(_ mail: RenderedMail, from: Address) -> Body {
        Body(
            personalizations: [.init(to: [Address(email: mail.recipient)])], from: from, subject: mail.subject,
            content: [.init(type: "text/plain", value: mail.text), .init(type: "text/html", value: mail.html)],
            categories: [mail.template.rawValue], custom_args: ["folio_mail_id": mail.id.lowercasedString],
            // A way back into the account (verify, reset) passes Folio's suppressions, as it is how the person
            // gets back in; it passes SendGrid's lists (bounces, spam reports, unsubscribes) too, or SendGrid would drop it.
            mail_settings: mail.passesSuppressions ? MailSettings(bypass_list_management: .init(enable: true)) : nil,
            // RFC 8058 takes an HTTPS link only; a development server's http:// link stays in the message's footer.
            headers: mail.unsubscribeURL.flatMap { url in
                url.hasPrefix("https://") ? ["List-Unsubscribe": "<\(url)>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"] : nil
            })
    }

    func send(_ mail: RenderedMail, database: FolioDatabase, markSent: @escaping @Sendable (String?) -> SQLQueryString) async throws(MailSendError) {
        var request = HTTPClientRequest(url: settings.baseURL.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + Self.endpoint)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(settings.apiKey)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "Folio/\(FolioVersion.current)")
        let payload: Data
        do { payload = try JSONEncoder().encode(Self.body(mail, from: Address(email: settings.from, name: settings.fromName))) } catch {
            throw .refused(status: 0, detail: "the message could not be encoded")
        }
        request.body = .bytes(ByteBuffer(data: payload))
        let start = ContinuousClock.now
        let status: Int
        let headers: HTTPHeaders
        let response: HTTPClientResponse
        do {
            response = try await httpClient.execute(request, timeout: timeout)
            status = Int(response.status.code)
            headers = response.headers
        } catch {
            metrics?.vendorCall(vendor: "sendgrid", endpoint: Self.endpoint, result: "unreachable", duration: ContinuousClock.now - start)
            // Only a connection that was never made proves the message did not leave.
            if Self.neverConnected(error) { throw .unavailable("SendGrid could not be reached: \(type(of: error))") }
            throw .uncertain("no answer from SendGrid after sending: \(type(of: error))")
        }
        metrics?.vendorCall(vendor: "sendgrid", endpoint: Self.endpoint, result: status == 202 ? "ok" : "error", duration: ContinuousClock.now - start)
        // The status decides; a body that fails to arrive after a 202 does not make the message uncertain.
        let bytes = (try? await withinDeadline(timeout) { try await response.body.collect(upTo: 1 << 20) }) ?? ByteBuffer()
        if status == 202 || status == 200 {
            let vendorID = headers.first(name: "X-Message-Id")
            do { try await database.sql.execute(sql: markSent(vendorID)) { _ in } } catch {
                // SendGrid has it; only the record failed. Another attempt will find it `sending` and not send it again.
                throw .uncertain("sent, but could not be recorded: \(type(of: error))")
            }
            logger.info("mail sent", metadata: ["mail_id": .string(mail.id.lowercasedString), "kind": .string(mail.template.rawValue), "sendgrid_message_id": .string(vendorID ?? "")])
            return
        }
        let detail = Self.errors(in: bytes, status: status)
        // The log handler masks configured secrets and token-like text in what SendGrid wrote.
        logger.warning("SendGrid refused a message", metadata: [
            "mail_id": .string(mail.id.lowercasedString), "status": .stringConvertible(status), "errors": .string(detail)])
        switch status {
        case 429:
            throw .throttled(retryAt: Self.retryAt(headers, now: clock.now()), detail: detail)
        case 500...599:
            throw .unavailable("HTTP \(status): \(detail)")
        case 300...399:
            // Not followed (the vendors' client refuses redirects): the endpoint did not take the message. A proxy
            // or a base URL set wrongly is the operator's to fix, and the message waits for it.
            throw .unavailable("HTTP \(status): a redirect, not SendGrid's answer; check SENDGRID_BASE_URL")
        default:
            // 400 (the message), 401 and 403 (the key), 413 (too large): the same message would fail again.
            throw .refused(status: status, detail: detail)
        }
    }

    /// SendGrid's `errors` array, as `field: message` lines.
    static func errors(in bytes: ByteBuffer, status: Int) -> String {
        guard let json = try? bytes.withUnsafeReadableBytes({ try JSONValue.parse($0) }) else { return "HTTP \(status)" }
        let lines = json["errors"]?.elements.map { error in
            [error["field"]?.string, error["message"]?.string].compactMap { $0 }.joined(separator: ": ")
        } ?? []
        return lines.isEmpty ? "HTTP \(status)" : String(lines.joined(separator: "; ").prefix(1000))
    }

    /// When a 429 may be retried: `Retry-After` seconds, or `X-RateLimit-Reset` (Unix seconds).
    static func retryAt(_ headers: HTTPHeaders, now: Date) -> Date? {
        if let seconds = headers.first(name: "Retry-After").flatMap(Int.init), seconds >= 0 { return now.addingTimeInterval(TimeInterval(seconds)) }
        if let reset = headers.first(name: "X-RateLimit-Reset").flatMap(Int.init) { return Date(timeIntervalSince1970: TimeInterval(reset)) }
        return nil
    }

    static func neverConnected(_ error: any Error) -> Bool {
        if let error = error as? HTTPClientError, error == .connectTimeout { return true }
        if error is NIOConnectionError { return true }
        if let error = error as? IOError, [ECONNREFUSED, ENETUNREACH, EHOSTUNREACH].contains(error.errnoCode) { return true }
        if let error = error as? ChannelError, case .connectTimeout = error { return true }
        // TLS that failed to agree (a certificate refused, say): no byte of the request was written.
        if let error = error as? NIOSSLError, case .handshakeFailed = error { return true }
        return false
    }
}
