import AsyncHTTPClient
import FolioDomain
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization

// Error reporting to Sentry (https://develop.sentry.dev/sdk/): the DSN, the
// event Folio sends for a 500 or a dead job, and the reporter that queues
// events in memory and sends them one at a time from a background service.
// The envelope and the rate-limit headers are in SentryEnvelope.swift.

/// What the reporter needs from `SENTRY_DSN`, `SENTRY_ENVIRONMENT` and `SENTRY_RELEASE`.
public struct SentryConfiguration: Sendable, Equatable {
    public var dsn: SentryDSN
    public var environment: String
    public var release: String

    public init(dsn: SentryDSN, environment: String, release: String) {
        self.dsn = dsn
        self.environment = environment
        self.release = release
    }

    /// The same from the DSN's text, refused with a `SentryDSNError` that says what is wrong.
    public init(dsn: String, environment: String, release: String) throws(SentryDSNError) {
        try self.init(dsn: SentryDSN(parsing: dsn), environment: environment, release: release)
    }
}

/// Why a DSN was refused. The message never repeats the DSN, which holds the project's key.
public struct SentryDSNError: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: String

    public init(_ reason: String) {
        self.reason = reason
    }

    public var description: String { "SENTRY_DSN must look like https://PUBLIC_KEY@HOST[:PORT]/PROJECT_ID: \(reason)" }
}

/// A Sentry DSN: `https://PUBLIC_KEY@HOST[:PORT]/PROJECT_ID` (`http` too, for a
/// test server on loopback). Parsed by hand rather than through `URL`, so that
/// what is accepted does not depend on the platform's URL parser.
public struct SentryDSN: Sendable, Equatable, CustomStringConvertible {
    /// `https` or `http`.
    public let scheme: String
    public let publicKey: String
    /// An old DSN's secret key: never sent, kept only so logs can mask it.
    public let legacySecretKey: String?
    /// A host name, an IPv4 address, or an IPv6 address in brackets.
    public let host: String
    public let port: Int?
    /// Digits only.
    public let projectID: String

    public init(parsing raw: String) throws(SentryDSNError) {
        let text = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { throw SentryDSNError("it is empty") }
        let lowered = text.lowercased()
        let scheme: String
        if lowered.hasPrefix("https://") {
            scheme = "https"
        } else if lowered.hasPrefix("http://") {
            scheme = "http"
        } else {
            throw SentryDSNError("it must start with https:// (http:// only for a local test server)")
        }
        let rest = text.dropFirst(scheme.count + 3)
        guard !rest.contains(where: { $0 == "?" || $0 == "#" }) else { throw SentryDSNError("it must not have a query or a fragment") }
        guard let at = rest.firstIndex(of: "@") else { throw SentryDSNError("the public key before @ is missing") }

        // Old DSNs carry PUBLIC_KEY:SECRET_KEY; Sentry no longer uses the secret, so it is left out. It is still
        // checked: "http://localhost:1/@evil.example/1" is a host and port to a URL parser, and a key here.
        let keys = rest[..<at].split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        let key = keys.first ?? ""
        guard !key.isEmpty, key.allSatisfy(Self.isASCIIAlphanumeric) else {
            throw SentryDSNError("the public key before @ must be letters and digits")
        }
        if keys.count == 2, keys[1].isEmpty || !keys[1].allSatisfy(Self.isASCIIAlphanumeric) {
            throw SentryDSNError("the secret key after PUBLIC_KEY: must be letters and digits")
        }

        let afterAt = rest[rest.index(after: at)...]
        guard let slash = afterAt.firstIndex(of: "/") else { throw SentryDSNError("the project id after the host is missing") }
        let authority = afterAt[..<slash]
        var path = afterAt[afterAt.index(after: slash)...]
        if path.hasSuffix("/") { path = path.dropLast() }
        guard !path.isEmpty, path.allSatisfy(Self.isASCIIDigit) else {
            throw SentryDSNError("the path must be the project id alone, in digits")
        }

        var hostPart = authority
        var portPart: Substring?
        if authority.hasPrefix("[") {
            // [IPv6]:port
            guard let close = authority.firstIndex(of: "]") else { throw SentryDSNError("the IPv6 host has no closing ]") }
            hostPart = authority[...close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw SentryDSNError("only :PORT may follow the host") }
                portPart = after.dropFirst()
            }
            let inside = hostPart.dropFirst().dropLast()
            guard !inside.isEmpty, inside.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else {
                throw SentryDSNError("the IPv6 host is not an address")
            }
        } else {
            if let colon = authority.firstIndex(of: ":") {
                hostPart = authority[..<colon]
                portPart = authority[authority.index(after: colon)...]
            }
            guard !hostPart.isEmpty, hostPart.allSatisfy({ Self.isASCIIAlphanumeric($0) || $0 == "." || $0 == "-" }),
                  hostPart.first != ".", hostPart.first != "-"
            else { throw SentryDSNError("the host is missing or is not a host name") }
        }

        var port: Int?
        if let portPart {
            guard !portPart.isEmpty, portPart.count <= 5, portPart.allSatisfy(Self.isASCIIDigit), let value = Int(portPart), (1...65535).contains(value)
            else { throw SentryDSNError("the port must be a number from 1 to 65535") }
            port = value
        }

        self.scheme = scheme
        self.publicKey = String(key)
        self.legacySecretKey = keys.count == 2 ? String(keys[1]) : nil
        self.host = String(hostPart)
        self.port = port
        self.projectID = String(path)
    }

    static func isASCIIDigit(_ character: Character) -> Bool {
        character.isASCII && character.isNumber
    }

    static func isASCIIAlphanumeric(_ character: Character) -> Bool {
        character.isASCII && (character.isLetter || character.isNumber)
    }

    /// `scheme://host[:port]`
    public var origin: String {
        "\(scheme)://\(host)" + (port.map { ":\($0)" } ?? "")
    }

    /// Where events are posted: `scheme://host[:port]/api/PROJECT_ID/envelope/`.
    public var envelopeURL: String {
        origin + "/api/\(projectID)/envelope/"
    }

    /// The DSN as the envelope header names it (without an old secret key).
    public var text: String {
        "\(scheme)://\(publicKey)@\(host)" + (port.map { ":\($0)" } ?? "") + "/\(projectID)"
    }

    /// The `X-Sentry-Auth` header: protocol version 7, this client, the public key.
    public var authHeader: String {
        "Sentry sentry_version=7, sentry_client=folio/\(FolioVersion.current), sentry_key=\(publicKey)"
    }

    /// Never the key.
    public var description: String { "SentryDSN(\(origin), project \(projectID))" }
}

// MARK: - Events

/// One error as Sentry receives it. The fields hold what the caller gave,
/// unredacted; the envelope encoder passes every string that came from a
/// request, an error or a job through the reporter's `LogRedactor` and cuts
/// it to length (`SentryEnvelope.payload`), so no path can forget it.
struct SentryEvent: Sendable, Equatable {
    /// 32 lower-case hex digits.
    var eventID: String
    /// When it happened; nil: the reporter stamps it with its clock when it is reported.
    var timestamp: Date?
    var release: String
    var environment: String
    /// The error's type name (`String(describing: type(of: error))`).
    var exceptionType: String
    /// The error's text.
    var message: String
    /// `request_id`, `route` (the pattern, never a raw path), `method`; `job_kind`, `job_id` for a job.
    var tags: [String: String]
    /// The user's id only: Sentry never gets an email address or a name.
    var userID: String?
    /// What Sentry groups by besides the error: `POST /api/orders`, `job submit_order`.
    var transaction: String?

    static let level = "error"
    static let platform = "other"

    /// A new event id: a random UUID's 32 hex digits in lower case.
    static func newID(_ uuid: UUID = .random()) -> String {
        uuid.lowercasedString.replacingOccurrences(of: "-", with: "")
    }

    /// An error that became a generic 500 at the HTTP edge. `route` is the
    /// matched route pattern (`/api/accounts/{id}`), never the request's path.
    static func forServerError(
        error: any Error, requestID: String, route: String, method: String, userID: String?, configuration: SentryConfiguration, id: UUID = .random()
    ) -> SentryEvent {
        SentryEvent(
            eventID: newID(id), timestamp: nil, release: configuration.release, environment: configuration.environment,
            exceptionType: String(describing: type(of: error)), message: String(describing: error),
            tags: ["request_id": requestID, "route": route.isEmpty ? "unmatched" : route, "method": method],
            userID: userID, transaction: "\(method) \(route.isEmpty ? "unmatched" : route)")
    }

    /// A job that failed its last attempt and is now `dead`, with its last error.
    static func forDeadJob(kind: String, jobID: String, error: String, configuration: SentryConfiguration, id: UUID = .random()) -> SentryEvent {
        SentryEvent(
            eventID: newID(id), timestamp: nil, release: configuration.release, environment: configuration.environment,
            exceptionType: "DeadJob", message: error, tags: ["job_kind": kind, "job_id": jobID], userID: nil, transaction: "job \(kind)")
    }
}

// MARK: - Reporter

/// Why an event never reached Sentry: the `reason` label of `folio_sentry_events_dropped_total`.
enum SentryDropReason: String, Sendable, CaseIterable {
    /// The in-memory queue was full when the event was reported.
    case queueFull = "queue_full"
    /// Sentry had asked for a pause (429, `Retry-After`, `X-Sentry-Rate-Limits`).
    case rateLimited = "rate_limited"
    /// Sentry answered an error other than 429, or could not be reached. Not retried.
    case sendFailed = "send_failed"
    /// Still waiting when the time a graceful shutdown gives for sending ran out.
    case shutdown = "shutdown"
}

/// Sends error events to Sentry without ever slowing a request down:
/// `report` only appends to a bounded queue (or drops and counts the event)
/// and never waits or throws; `run`, a service beside the server, sends the
/// queue one envelope at a time. A failed send drops that one event: errors
/// come in bursts, and retrying them against a Sentry that is down would only
/// make a storm. While Sentry says we are rate limited, events are dropped
/// here without a request.
final class SentryReporter: Service, Sendable {
    let configuration: SentryConfiguration
    let redactor: LogRedactor
    let clock: AppClock
    let httpClient: HTTPClient
    let logger: Logger
    let metrics: FolioMetrics?
    let capacity: Int
    let timeout: Duration
    /// How long a graceful shutdown waits for the queue to be sent: a Sentry
    /// that is down must not hold the process past its stop timeout.
    let shutdownBudget: Duration
    /// Told the reason of every dropped event (for `folio_sentry_events_dropped_total{reason}`).
    let onDrop: (@Sendable (String) -> Void)?

    static let endpoint = "/api/{project}/envelope/"

    private struct State: Sendable {
        var queue: [SentryEvent] = []
        var limits = SentryRateLimits()
        var dropped: [SentryDropReason: Int] = [:]
        var sent = 0
        /// True while one caller is sending the queue; the others wait for it (one request at a time).
        var draining = false
        var waiters: [CheckedContinuation<Bool, Never>] = []
        /// Wakes `run` when an event is queued.
        var wake: AsyncStream<Void>.Continuation?
        /// Set at graceful shutdown: what is not sent by then is dropped (`shutdown`).
        var sendBy: ContinuousClock.Instant?
    }

    private enum Step: Sendable {
        case send(SentryEvent)
        case done([CheckedContinuation<Bool, Never>])
    }

    private let state = Mutex(State())

    /// - Parameters:
    ///   - redactor: every string taken from a request, an error or a job passes through it before it is sent.
    ///   - httpClient: by default the client that refuses redirects, so the auth header never follows one to another host.
    ///   - capacity: events waiting to be sent; past it new events are dropped (`queue_full`).
    ///   - timeout: one send's limit; past it the event is dropped (`send_failed`).
    ///   - shutdownBudget: how long a graceful shutdown goes on sending; what is left then is dropped (`shutdown`).
    init(
        configuration: SentryConfiguration, redactor: LogRedactor = .standard, clock: AppClock = .system, httpClient: HTTPClient = .vendors,
        logger: Logger, metrics: FolioMetrics? = nil, capacity: Int = 100, timeout: Duration = .seconds(5), shutdownBudget: Duration = .seconds(5),
        onDrop: (@Sendable (String) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.redactor = redactor
        self.clock = clock
        self.httpClient = httpClient
        self.logger = logger
        self.metrics = metrics
        self.capacity = max(1, capacity)
        self.timeout = timeout
        self.shutdownBudget = shutdownBudget
        self.onDrop = onDrop
    }

    // MARK: What callers use

    /// Queues the event for sending. Never blocks on the network, never throws.
    func report(_ event: SentryEvent) {
        let now = clock.now()
        var event = event
        if event.timestamp == nil { event.timestamp = now }
        let capacity = self.capacity
        let (refused, wake) = state.withLock { state -> (SentryDropReason?, AsyncStream<Void>.Continuation?) in
            if state.limits.isLimited(at: now) { return (.rateLimited, nil) }
            if state.queue.count >= capacity { return (.queueFull, nil) }
            state.queue.append(event)
            return (nil, state.wake)
        }
        if let refused {
            drop(refused)
        } else {
            wake?.yield()
        }
    }

    /// Events dropped for any reason since start.
    var droppedCount: Int { state.withLock { $0.dropped.values.reduce(0, +) } }

    /// Events dropped for this reason since start.
    func dropped(_ reason: SentryDropReason) -> Int { state.withLock { $0.dropped[reason] ?? 0 } }

    /// Events Sentry accepted (2xx).
    var sentCount: Int { state.withLock { $0.sent } }

    var queuedCount: Int { state.withLock { $0.queue.count } }

    /// Until when Sentry has asked us to stop sending errors; nil when it has not.
    var limitedUntil: Date? {
        let now = clock.now()
        return state.withLock { $0.limits.isLimited(at: now) ? $0.limits.until : nil }
    }

    // MARK: Sending

    /// Sends the queue in the background until graceful shutdown, then sends
    /// what is still queued once (skipped when the task is cancelled outright),
    /// for at most `shutdownBudget` from the moment the shutdown began.
    func run() async throws {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        state.withLock { $0.wake = continuation }
        // Events reported before the service started.
        continuation.yield()
        await withGracefulShutdownHandler {
            for await _ in stream {
                await flush()
            }
        } onGracefulShutdown: { [shutdownBudget] in
            self.state.withLock { $0.sendBy = ContinuousClock.now + shutdownBudget }
            continuation.finish()
        }
        state.withLock { $0.wake = nil }
        if !Task.isCancelled { await flush() }
    }

    /// Sends everything queued and returns when it is done (each event sent,
    /// or dropped and counted). When another caller is already sending, waits
    /// for it to empty the queue instead: one request at a time. Tests call it
    /// without `run`.
    func flush() async {
        let claimed = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let claim = state.withLock { state -> Bool in
                if state.draining {
                    state.waiters.append(continuation)
                    return false
                }
                state.draining = true
                return true
            }
            if claim { continuation.resume(returning: true) }
        }
        guard claimed else { return }
        while true {
            // Taking the next event, or finding none and handing over, is one step under the lock,
            // so an event queued meanwhile is either sent by this loop or wakes the next one.
            let (step, sendBy) = state.withLock { state -> (Step, ContinuousClock.Instant?) in
                if state.queue.isEmpty {
                    state.draining = false
                    let waiters = state.waiters
                    state.waiters = []
                    return (.done(waiters), state.sendBy)
                }
                return (.send(state.queue.removeFirst()), state.sendBy)
            }
            switch step {
            case .send(let event):
                // Shutting down: a send may take only what is left of the budget, and none is started after it.
                var timeout = self.timeout
                if let sendBy {
                    let left = sendBy - ContinuousClock.now
                    guard left > .milliseconds(1) else {
                        drop(.shutdown)
                        continue
                    }
                    timeout = min(timeout, left)
                }
                await deliver(event, timeout: timeout)
            case .done(let waiters):
                for waiter in waiters { waiter.resume(returning: false) }
                return
            }
        }
    }

    /// One event, one request; its answer decides the rate limits.
    private func deliver(_ event: SentryEvent, timeout: Duration) async {
        let now = clock.now()
        // The limit may have begun after the event was queued.
        if state.withLock({ $0.limits.isLimited(at: now) }) {
            drop(.rateLimited)
            return
        }
        let body = SentryEnvelope.body(for: event, dsn: configuration.dsn, sentAt: now, redactor: redactor)
        var request = HTTPClientRequest(url: configuration.dsn.envelopeURL)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: SentryEnvelope.contentType)
        request.headers.add(name: "X-Sentry-Auth", value: configuration.dsn.authHeader)
        request.headers.add(name: "User-Agent", value: "folio/\(FolioVersion.current)")
        request.body = .bytes(ByteBuffer(string: body))

        let start = ContinuousClock.now
        let status: Int
        let headers: HTTPHeaders
        do {
            let (seconds, attoseconds) = timeout.components
            let deadline = TimeAmount.nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
            let response = try await httpClient.execute(request, timeout: deadline)
            status = Int(response.status.code)
            headers = response.headers
            // Sentry answers {"id": …}; read it so the connection can be reused (within the deadline: the status decides).
            _ = try? await withinDeadline(deadline) { try await response.body.collect(upTo: 64 << 10) }
        } catch {
            // The error's type only: the URL holds the project and the request the event.
            metrics?.vendorCall(vendor: "sentry", endpoint: Self.endpoint, result: "unreachable", duration: ContinuousClock.now - start)
            logger.warning("Sentry could not be reached; the event is dropped", metadata: ["error": "\(type(of: error))"])
            drop(.sendFailed)
            return
        }
        let ok = (200..<300).contains(status)
        metrics?.vendorCall(vendor: "sentry", endpoint: Self.endpoint, result: ok ? "ok" : "error", duration: ContinuousClock.now - start)
        if ok { metrics?.sentrySent() }

        // X-Sentry-Rate-Limits counts on every answer, 200 included.
        let answeredAt = clock.now()
        let until = state.withLock { state -> Date? in
            state.limits.update(
                status: status, retryAfter: headers.first(name: "Retry-After"), rateLimits: headers.first(name: "X-Sentry-Rate-Limits"), now: answeredAt)
            if ok { state.sent += 1 }
            return state.limits.isLimited(at: answeredAt) ? state.limits.until : nil
        }
        if ok { return }
        if status == 429 {
            logger.warning("Sentry asked for a pause; events are dropped until it ends", metadata: [
                "until": "\(until.map { SentryEnvelope.timestamp($0) } ?? "now")"])
            drop(.rateLimited)
        } else {
            logger.warning("Sentry refused an event; it is dropped", metadata: ["status": "\(status)"])
            drop(.sendFailed)
        }
    }

    private func drop(_ reason: SentryDropReason) {
        state.withLock { $0.dropped[reason, default: 0] += 1 }
        onDrop?(reason.rawValue)
    }
}
