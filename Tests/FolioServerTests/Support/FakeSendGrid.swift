import Crypto
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers

@testable import FolioServer

/// A local SendGrid on loopback checking what Folio sends as the v3 Mail Send
/// docs describe (https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send):
/// `POST /v3/mail/send`, `Authorization: Bearer <key>`, a JSON body with
/// personalizations, from, subject and content (text/plain first, then
/// text/html), answered `202 Accepted` with an `X-Message-Id`. Errors are
/// `{"errors":[{"message","field","help"}]}`. Failures can be queued: a 429
/// with `X-RateLimit-Reset`, a 5xx, a 400, or an answer slower than Folio waits.
/// It also signs Event Webhook posts with its own P-256 key.
final class FakeSendGrid: Sendable {
    static let apiKey = "SG.fake-sendgrid-key.0123456789abcdefghijklmnop"

    struct Received: Sendable {
        var to: String
        var from: String
        var subject: String
        var text: String
        var html: String
        var category: String?
        var mailID: String?
        var messageID: String
        /// `mail_settings.bypass_list_management.enable`: SendGrid's suppression lists are passed.
        var bypassesLists = false
        /// The message's own `headers` (`List-Unsubscribe`…).
        var headers: [String: String] = [:]
    }

    enum Failure: Sendable {
        case throttled(resetAt: Int)
        case serverError
        case badRequest(field: String, message: String)
        /// Waits this long before answering 202 (longer than Folio's timeout: the message may have gone through).
        case slow(seconds: Int)
        /// 307 to another path of the fake (a proxy's, a base URL set wrongly): followed, it would be posted again.
        case redirect
    }

    private struct State {
        var received: [Received] = []
        var failures: [Failure] = []
        var refusedAuth = 0
        var malformed: [String] = []
        var calls = 0
    }

    private let state = NIOLockedValueBox(State())
    let baseURL: String
    let signingKey = P256.Signing.PrivateKey()

    init(baseURL: String) {
        self.baseURL = baseURL
    }

    var received: [Received] { state.withLockedValue { $0.received } }
    var calls: Int { state.withLockedValue { $0.calls } }
    var refusedAuth: Int { state.withLockedValue { $0.refusedAuth } }
    var malformed: [String] { state.withLockedValue { $0.malformed } }

    /// The next calls fail in this order, then calls succeed again.
    func fail(_ failures: Failure...) {
        state.withLockedValue { $0.failures += failures }
    }

    /// The Event Webhook's verification key, as SendGrid's settings page shows it.
    var publicKeyBase64: String { signingKey.publicKey.derRepresentation.base64EncodedString() }

    /// Headers for an Event Webhook post of `body`, signed now (or at `timestamp`).
    func signedHeaders(for body: String, timestamp: Int, key: P256.Signing.PrivateKey? = nil) -> HTTPFields {
        let payload = Data(String(timestamp).utf8) + Data(body.utf8)
        let signature = try! (key ?? signingKey).signature(for: payload).derRepresentation.base64EncodedString()
        return [
            HTTPField.Name("X-Twilio-Email-Event-Webhook-Signature")!: signature,
            HTTPField.Name("X-Twilio-Email-Event-Webhook-Timestamp")!: String(timestamp),
            .contentType: "application/json",
        ]
    }

    func settings(webhookKey: Bool = true) -> AppConfiguration.SendGridSettings {
        AppConfiguration.SendGridSettings(
            apiKey: Self.apiKey, from: "alerts@folio.example.com", baseURL: baseURL, webhookPublicKey: webhookKey ? publicKeyBase64 : nil)
    }

    func answer(_ request: Request) async throws -> Response {
        guard request.uri.path == "/v3/mail/send" else { return errors(.notFound, field: nil, message: "not found") }
        guard request.headers[.authorization] == "Bearer \(Self.apiKey)" else {
            state.withLockedValue { $0.refusedAuth += 1 }
            return errors(.unauthorized, field: nil, message: "The provided authorization grant is invalid, expired, or revoked")
        }
        let failure = state.withLockedValue { state -> Failure? in
            state.calls += 1
            return state.failures.isEmpty ? nil : state.failures.removeFirst()
        }
        switch failure {
        case .throttled(let reset):
            return Response(
                status: .tooManyRequests,
                headers: [.contentType: "application/json", HTTPField.Name("X-RateLimit-Reset")!: String(reset), HTTPField.Name("X-RateLimit-Limit")!: "600"],
                body: .init(byteBuffer: ByteBuffer(string: #"{"errors":[{"field":null,"message":"too many requests"}]}"#)))
        case .serverError:
            return errors(.internalServerError, field: nil, message: "internal error")
        case .redirect:
            return Response(status: .temporaryRedirect, headers: [.location: baseURL + "/elsewhere/v3/mail/send"])
        case .badRequest(let field, let message):
            return errors(.badRequest, field: field, message: message)
        case .slow(let seconds):
            try await Task.sleep(for: .seconds(seconds))
        case nil:
            break
        }
        let body = try await request.body.collect(upTo: 1 << 20)
        guard let json = try? JSONValue.parse(Array(buffer: body)),
              let to = json["personalizations"]?.elements.first?["to"]?.elements.first?["email"]?.string,
              let from = json["from"]?["email"]?.string, let subject = json["subject"]?.string,
              json["content"]?.elements.count == 2,
              json["content"]?.elements[0]["type"]?.string == "text/plain", json["content"]?.elements[1]["type"]?.string == "text/html",
              let text = json["content"]?.elements[0]["value"]?.string, let html = json["content"]?.elements[1]["value"]?.string
        else {
            state.withLockedValue { $0.malformed.append(String(buffer: body)) }
            return errors(.badRequest, field: "content", message: "The content value must be a string at least one character in length.")
        }
        let messageID = "fake-\(UUID().uuidString.prefix(12))"
        state.withLockedValue {
            $0.received.append(Received(
                to: to, from: from, subject: subject, text: text, html: html, category: json["categories"]?.elements.first?.string,
                mailID: json["custom_args"]?["folio_mail_id"]?.string, messageID: messageID,
                bypassesLists: json["mail_settings"]?["bypass_list_management"]?["enable"] == .bool(true),
                headers: { if case .object(let headers)? = json["headers"] { headers.compactMapValues(\.string) } else { [:] } }()))
        }
        return Response(status: .accepted, headers: [HTTPField.Name("X-Message-Id")!: messageID], body: .init())
    }

    private func errors(_ status: HTTPResponse.Status, field: String?, message: String) -> Response {
        let fieldText = field.map { "\"\($0)\"" } ?? "null"
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: #"{"errors":[{"field":\#(fieldText),"message":"\#(message)","help":null}]}"#)))
    }
}

/// Runs a fake SendGrid on a free loopback port for the length of `body`.
func withFakeSendGrid<T: Sendable>(_ body: @escaping @Sendable (FakeSendGrid) async throws -> T) async throws -> T {
    // The fake's credentials are configured secrets of whatever talks to it, masked in every log line from
    // now on, as the composition root registers the configuration's before it builds a client: a test that
    // builds a client without an app must not depend on another test's app having registered them first.
    ConfiguredSecrets.register([FakeSendGrid.apiKey])
    return try await withLoopbackFake(
        "fake-sendgrid", make: { FakeSendGrid(baseURL: "http://127.0.0.1:\($0)") }, answer: { fake, request in try await fake.answer(request) }, body)
}
