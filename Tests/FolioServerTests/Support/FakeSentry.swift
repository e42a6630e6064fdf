import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers

@testable import FolioServer

/// A local Sentry on loopback taking envelopes as
/// https://develop.sentry.dev/sdk/envelopes/ describes them: `POST
/// /api/<project>/envelope/`, `X-Sentry-Auth` with `sentry_version=7` and the
/// project's public key, a body of three lines (envelope header, item header
/// with the payload's byte length, the event). A request that breaks any of
/// that is answered 4xx and noted in `problems`. Tests switch it to answer
/// 429 (with `Retry-After` and/or `X-Sentry-Rate-Limits`), 500, or slowly.
final class FakeSentry: Sendable {
    static let publicKey = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    static let projectID = "4505"

    enum Mode: Sendable, Equatable {
        /// 200 `{"id": …}`.
        case accept
        /// 200, with this `X-Sentry-Rate-Limits` header.
        case acceptLimiting(rateLimits: String)
        /// 429, with whichever headers are given.
        case tooManyRequests(retryAfter: String?, rateLimits: String?)
        /// 500.
        case serverError
        /// 200 after this long.
        case slow(Duration)
    }

    /// One envelope as it arrived.
    struct Envelope: Sendable {
        var header: JSONValue
        var item: JSONValue
        var event: JSONValue
        /// The whole body as sent, for searching for what must not be there.
        var raw: String

        /// The exception's message.
        var message: String? { event["exception"]?["values"]?.elements.first?["value"]?.string }
    }

    private struct State {
        var mode: Mode = .accept
        var requests = 0
        var received: [Envelope] = []
        var accepted: [Envelope] = []
        var problems: [String] = []
    }

    private let state = NIOLockedValueBox(State())
    let port: Int

    init(port: Int) {
        self.port = port
    }

    var dsn: SentryDSN {
        try! SentryDSN(parsing: "http://\(Self.publicKey)@127.0.0.1:\(port)/\(Self.projectID)")
    }

    var configuration: SentryConfiguration {
        SentryConfiguration(dsn: dsn, environment: "test", release: "folio@test")
    }

    // MARK: - What tests arrange and read

    var mode: Mode {
        get { state.withLockedValue { $0.mode } }
        set { state.withLockedValue { $0.mode = newValue } }
    }

    /// Every request that reached the fake, well-formed or not.
    var requestCount: Int { state.withLockedValue { $0.requests } }
    /// Well-formed envelopes, whatever the answer.
    var received: [Envelope] { state.withLockedValue { $0.received } }
    /// Envelopes answered 200.
    var accepted: [Envelope] { state.withLockedValue { $0.accepted } }
    /// What was wrong with the requests refused as malformed.
    var problems: [String] { state.withLockedValue { $0.problems } }

    // MARK: - Serving

    func answer(_ request: Request) async throws -> Response {
        state.withLockedValue { $0.requests += 1 }
        var request = request
        let bytes = try await request.collectBody(upTo: 1 << 20)
        let raw = String(buffer: bytes)

        guard request.uri.path == "/api/\(Self.projectID)/envelope/" else {
            return refuse(404, "path \(request.uri.path)")
        }
        guard request.headers[.contentType] == "application/x-sentry-envelope" else {
            return refuse(415, "content type \(request.headers[.contentType] ?? "none")")
        }
        guard let auth = request.headers[HTTPField.Name("X-Sentry-Auth")!], let fields = Self.authFields(auth) else {
            return refuse(401, "no readable X-Sentry-Auth")
        }
        guard fields["sentry_version"] == "7", fields["sentry_key"] == Self.publicKey, fields["sentry_client"]?.hasPrefix("folio/") == true else {
            return refuse(401, "X-Sentry-Auth \(fields)")
        }
        let envelope: Envelope
        switch Self.parse(raw) {
        case .success(let parsed): envelope = parsed
        case .failure(let problem): return refuse(400, problem.reason)
        }

        let mode = state.withLockedValue { state in
            state.received.append(envelope)
            return state.mode
        }
        var headers: HTTPFields = [.contentType: "application/json"]
        switch mode {
        case .accept:
            break
        case .acceptLimiting(let rateLimits):
            headers[HTTPField.Name("X-Sentry-Rate-Limits")!] = rateLimits
        case .tooManyRequests(let retryAfter, let rateLimits):
            if let retryAfter { headers[HTTPField.Name("Retry-After")!] = retryAfter }
            if let rateLimits { headers[HTTPField.Name("X-Sentry-Rate-Limits")!] = rateLimits }
            return respond(#"{"detail":"Too many requests"}"#, status: .init(code: 429), headers: headers)
        case .serverError:
            return respond(#"{"detail":"Internal error"}"#, status: .init(code: 500), headers: headers)
        case .slow(let delay):
            try await Task.sleep(for: delay)
        }
        state.withLockedValue { $0.accepted.append(envelope) }
        return respond(#"{"id":"\#(envelope.header["event_id"]?.string ?? "")"}"#, status: .ok, headers: headers)
    }

    struct Problem: Error {
        var reason: String
    }

    /// Three lines, each ending in a newline; the item's `length` is the payload's UTF-8 byte count;
    /// the header's event id is the event's, 32 lower-case hex digits.
    static func parse(_ raw: String) -> Result<Envelope, Problem> {
        guard raw.hasSuffix("\n") else { return .failure(Problem(reason: "the body does not end in a newline")) }
        let lines = raw.dropLast().split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count == 3 else { return .failure(Problem(reason: "\(lines.count) lines, not 3")) }
        guard let header = try? JSONValue.parse(lines[0].utf8), let item = try? JSONValue.parse(lines[1].utf8),
              let event = try? JSONValue.parse(lines[2].utf8)
        else { return .failure(Problem(reason: "a line is not JSON")) }
        guard item["type"]?.string == "event", item["content_type"]?.string == "application/json" else {
            return .failure(Problem(reason: "item header \(item.text)"))
        }
        guard item["length"]?.numberText == String(lines[2].utf8.count) else {
            return .failure(Problem(reason: "length \(item["length"]?.text ?? "none") for a payload of \(lines[2].utf8.count) bytes"))
        }
        guard let id = header["event_id"]?.string, id.utf8.count == 32, id.allSatisfy({ $0.isHexDigit && !$0.isUppercase }),
              event["event_id"]?.string == id
        else { return .failure(Problem(reason: "event ids \(header["event_id"]?.text ?? "none") and \(event["event_id"]?.text ?? "none")")) }
        guard header["sent_at"]?.string != nil, header["dsn"]?.string?.contains("@") == true else {
            return .failure(Problem(reason: "envelope header \(header.text)"))
        }
        guard event["level"]?.string == "error", event["platform"]?.string == "other" else {
            return .failure(Problem(reason: "level \(event["level"]?.text ?? "none"), platform \(event["platform"]?.text ?? "none")"))
        }
        return .success(Envelope(header: header, item: item, event: event, raw: raw))
    }

    /// `Sentry sentry_version=7, sentry_client=folio/0.1.0, sentry_key=…` as a dictionary.
    static func authFields(_ header: String) -> [String: String]? {
        guard header.hasPrefix("Sentry ") else { return nil }
        var fields: [String: String] = [:]
        for part in header.dropFirst("Sentry ".count).split(separator: ",") {
            let pair = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            guard pair.count == 2 else { return nil }
            fields[String(pair[0])] = String(pair[1])
        }
        return fields
    }

    private func refuse(_ status: Int, _ problem: String) -> Response {
        state.withLockedValue { $0.problems.append(problem) }
        return respond(#"{"detail":\#(JSONText.quote(problem))}"#, status: .init(code: status), headers: [.contentType: "application/json"])
    }

    private func respond(_ body: String, status: HTTPResponse.Status, headers: HTTPFields) -> Response {
        Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// Runs a fake Sentry on a free loopback port for the length of `body`.
func withFakeSentry<T: Sendable>(_ body: @escaping @Sendable (FakeSentry) async throws -> T) async throws -> T {
    // The fake's credentials are configured secrets of whatever talks to it, masked in every log line from
    // now on, as the composition root registers the configuration's before it builds a client: a test that
    // builds a client without an app must not depend on another test's app having registered them first.
    ConfiguredSecrets.register([FakeSentry.publicKey])
    return try await withLoopbackFake("fake-sentry", make: { FakeSentry(port: $0) }, answer: { fake, request in try await fake.answer(request) }, body)
}
