import FolioDomain
import Foundation
import HTTPTypes
import SQLKit
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import Testing

@testable import FolioServer

/// The Sentry reporter against a fake Sentry on loopback (no app, no
/// internet): the DSN, the envelope, redaction of what is sent, Sentry's rate
/// limits on a clock the test moves, and what is dropped and why. Nothing here
/// asserts how long anything took.
@Suite("Sentry")
struct SentryTests {
    static let logger: Logger = {
        var logger = Logger(label: "sentry-tests")
        logger.logLevel = .critical
        return logger
    }()

    static func reporter(
        _ configuration: SentryConfiguration, clock: TestClock, capacity: Int = 100, timeout: Duration = .seconds(5), drops: DropLog = DropLog()
    ) -> SentryReporter {
        SentryReporter(
            configuration: configuration, clock: clock.clock, logger: logger, capacity: capacity, timeout: timeout,
            onDrop: { reason in drops.record(reason) })
    }

    /// A dead job's event whose message tells the events apart.
    static func failure(_ message: String, _ fake: FakeSentry) -> SentryEvent {
        SentryEvent.forDeadJob(kind: "submit_order", jobID: "3f6c1c52-7d1e-4a55-9a8e-0b7f4f5d2a10", error: message, configuration: fake.configuration)
    }

    // MARK: - DSN

    @Test("a DSN gives the envelope URL and X-Sentry-Auth; a port, IPv6, surrounding space and an old secret key are handled")
    func goodDSNs() throws {
        let dsn = try SentryDSN(parsing: "https://0123abcd@o12345.ingest.us.sentry.io/4505")
        #expect(dsn.scheme == "https")
        #expect(dsn.publicKey == "0123abcd")
        #expect(dsn.host == "o12345.ingest.us.sentry.io")
        #expect(dsn.port == nil)
        #expect(dsn.projectID == "4505")
        #expect(dsn.envelopeURL == "https://o12345.ingest.us.sentry.io/api/4505/envelope/")
        #expect(dsn.authHeader == "Sentry sentry_version=7, sentry_client=folio/\(FolioVersion.current), sentry_key=0123abcd")
        #expect(dsn.text == "https://0123abcd@o12345.ingest.us.sentry.io/4505")
        #expect(!String(describing: dsn).contains("0123abcd"), "the description leaves the key out")

        let local = try SentryDSN(parsing: "  http://key1@127.0.0.1:9000/42/\n")
        #expect(local.envelopeURL == "http://127.0.0.1:9000/api/42/envelope/")
        #expect(local.port == 9000)

        let legacy = try SentryDSN(parsing: "https://public1:secret1@sentry.example.com/7")
        #expect(legacy.publicKey == "public1")
        #expect(legacy.text == "https://public1@sentry.example.com/7")
        #expect(!legacy.envelopeURL.contains("secret1") && !legacy.authHeader.contains("secret1"))

        let v6 = try SentryDSN(parsing: "http://k@[::1]:8080/3")
        #expect(v6.envelopeURL == "http://[::1]:8080/api/3/envelope/")

        let configuration = try SentryConfiguration(dsn: "https://0123abcd@sentry.example.com/1", environment: "production", release: "folio@1.0.0")
        #expect(configuration.dsn.projectID == "1")
    }

    @Test(
        "a malformed DSN is refused with a reason that never repeats the key",
        arguments: [
            "", "   ", "leakykey@sentry.example.com/1", "ftp://leakykey@sentry.example.com/1", "https://sentry.example.com/1",
            "https://@sentry.example.com/1", "https://leaky key@sentry.example.com/1", "https://leakykey@/1", "https://leakykey@sentry.example.com",
            "https://leakykey@sentry.example.com/", "https://leakykey@sentry.example.com/project", "https://leakykey@sentry.example.com/prefix/1",
            "https://leakykey@sentry.example.com:/1", "https://leakykey@sentry.example.com:0/1", "https://leakykey@sentry.example.com:99999/1",
            "https://leakykey@sentry.example.com:80a/1", "https://leakykey@sentry.example.com/1?x=1", "https://leakykey@sentry.example.com/1#top",
            "https://leakykey@sentry example.com/1", "https://leakykey@[::1/1", "https://leakykey@-sentry.example.com/1",
        ])
    func badDSNs(_ text: String) {
        #expect(throws: SentryDSNError.self) { try SentryDSN(parsing: text) }
        do {
            _ = try SentryDSN(parsing: text)
        } catch {
            let message = String(describing: error)
            #expect(message.hasPrefix("SENTRY_DSN must look like https://PUBLIC_KEY@HOST[:PORT]/PROJECT_ID: "))
            #expect(!message.contains("leakykey"))
        }
    }

    // MARK: - The event and its envelope

    @Test("a request id of 32 hex digits (nginx's $request_id, a W3C trace id) is kept in the event's tags as the log writes it; another shape still goes through the redactor")
    func hexRequestIDKept() throws {
        let configuration = try SentryConfiguration(dsn: "https://abc123@sentry.example.com/9", environment: "production", release: "folio@1.2.0")
        func tag(_ requestID: String) throws -> String? {
            let event = SentryEvent.forServerError(
                error: SentryTestError(description: "failed"), requestID: requestID, route: "/api/orders", method: "POST", userID: nil,
                configuration: configuration, id: UUID())
            let body = SentryEnvelope.body(for: event, dsn: configuration.dsn, sentAt: TestClock.tuesdayMorning, redactor: .standard)
            let payload = try JSONValue.parse(try #require(body.split(separator: "\n").last).utf8)
            return payload["tags"]?["request_id"]?.string
        }
        #expect(try tag("4bf92f3577b34da6a3ce929d0e0e4736") == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(try tag("token=4bf92f3577b34da6a3ce929d0e0e4736") != "token=4bf92f3577b34da6a3ce929d0e0e4736")
    }

    @Test("the envelope is three lines: event_id, sent_at and dsn; the item's type and byte length; the event with level, platform, tags and user id")
    func envelopeShape() throws {
        let configuration = try SentryConfiguration(dsn: "https://abc123@sentry.example.com/9", environment: "production", release: "folio@1.2.0")
        var event = SentryEvent.forServerError(
            error: SentryTestError(description: "naïve café ☕ could not be saved"), requestID: "4b0c56b6-3a49-4cbe-9cb0-2f5d1c4d8d11",
            route: "/api/accounts/{id}", method: "POST", userID: "7d4f0a9e-2f7b-4a8e-b7a4-5b1c3c2d9e01", configuration: configuration,
            id: UUID(uuidString: "E621E1F8-C36C-495A-93FC-0C247A3E6E5F")!)
        event.timestamp = TestClock.tuesdayMorning
        #expect(event.eventID == "e621e1f8c36c495a93fc0c247a3e6e5f")

        let body = SentryEnvelope.body(for: event, dsn: configuration.dsn, sentAt: TestClock.tuesdayMorning.addingTimeInterval(2), redactor: .standard)
        #expect(body.hasSuffix("\n"))
        let lines = body.dropLast().split(separator: "\n", omittingEmptySubsequences: false)
        try #require(lines.count == 3)
        let header = try JSONValue.parse(lines[0].utf8)
        let item = try JSONValue.parse(lines[1].utf8)
        let payload = try JSONValue.parse(lines[2].utf8)
        #expect(header["event_id"]?.string == "e621e1f8c36c495a93fc0c247a3e6e5f")
        #expect(header["sent_at"]?.string == "2026-11-24T15:30:02Z")
        #expect(header["dsn"]?.string == "https://abc123@sentry.example.com/9")
        #expect(item["type"]?.string == "event")
        #expect(item["content_type"]?.string == "application/json")
        #expect(item["length"]?.numberText == String(lines[2].utf8.count), "bytes, not characters")
        #expect(lines[2].utf8.count != lines[2].count, "the message is not ASCII, so the two counts differ")

        #expect(payload["event_id"]?.string == "e621e1f8c36c495a93fc0c247a3e6e5f")
        #expect(payload["timestamp"]?.string == "2026-11-24T15:30:00Z")
        #expect(payload["level"]?.string == "error")
        #expect(payload["platform"]?.string == "other")
        #expect(payload["release"]?.string == "folio@1.2.0")
        #expect(payload["environment"]?.string == "production")
        let exception = payload["exception"]?["values"]?.elements.first
        #expect(exception?["type"]?.string == "SentryTestError")
        #expect(exception?["value"]?.string == "naïve café ☕ could not be saved")
        #expect(payload["tags"] == JSONValue.object([
            "request_id": .string("4b0c56b6-3a49-4cbe-9cb0-2f5d1c4d8d11"), "route": .string("/api/accounts/{id}"), "method": .string("POST"),
        ]))
        #expect(payload["user"] == JSONValue.object(["id": .string("7d4f0a9e-2f7b-4a8e-b7a4-5b1c3c2d9e01")]), "the id and nothing else")
        #expect(payload["transaction"]?.string == "POST /api/accounts/{id}")
    }

    @Test("a dead job's event has job_kind and job_id tags and no user; a long message is cut to 2000 characters")
    func deadJobEvent() throws {
        let configuration = try SentryConfiguration(dsn: "https://abc123@sentry.example.com/9", environment: "staging", release: "folio@1.2.0")
        let event = SentryEvent.forDeadJob(
            kind: "sync_plaid_item", jobID: "0b7f4f5d-2a10-4a55-9a8e-3f6c1c52d7e1", error: "the broker said no " + String(repeating: "x", count: 5000),
            configuration: configuration)
        #expect(event.eventID.utf8.count == 32 && event.eventID.allSatisfy { $0.isHexDigit && !$0.isUppercase })
        let payload = SentryEnvelope.payload(event, sentAt: TestClock.tuesdayMorning, redactor: .standard)
        #expect(payload["tags"]?["job_kind"]?.string == "sync_plaid_item")
        #expect(payload["tags"]?["job_id"]?.string == "0b7f4f5d-2a10-4a55-9a8e-3f6c1c52d7e1")
        #expect(payload["tags"]?["route"] == nil)
        #expect(payload["user"] == nil)
        let message = payload["exception"]?["values"]?.elements.first?["value"]?.string
        #expect(message?.count == SentryEnvelope.maximumLength)
        #expect(message?.hasPrefix("the broker said no xxx") == true)
        #expect(payload["timestamp"]?.string == "2026-11-24T15:30:00Z", "an event not stamped yet takes the time it is sent")
    }

    @Test("planted secrets (a bearer token, password=…, configured secret literals, an email address) never reach Sentry")
    func secretsAreRedacted() async throws {
        let literal = "tulip-harbor-\(UUID().uuidString.prefix(8))"
        ConfiguredSecrets.register([literal])
        #expect(LogRedactor.standard.redact("key \(literal)") == "key \(LogRedactor.mask)")
        try await withFakeSentry { fake in
            let reporter = Self.reporter(fake.configuration, clock: TestClock())
            let error = SentryTestError(
                description: "could not save order for jane.doe@example.com; upstream echoed Bearer q8Zt2.Lm-3_xyzzy; "
                    + "form had password=hunter2-swordfish; vendor key \(literal) was refused")
            reporter.report(SentryEvent.forServerError(
                error: error, requestID: "req-\(literal)", route: "/api/orders", method: "POST", userID: "user-\(literal)",
                configuration: fake.configuration))
            await reporter.flush()

            #expect(fake.problems.isEmpty, "\(fake.problems)")
            let envelope = try #require(fake.accepted.first)
            for secret in ["q8Zt2", "hunter2", "swordfish", literal, "jane.doe@"] {
                #expect(!envelope.raw.contains(secret), "\(secret) reached Sentry")
            }
            #expect(envelope.message?.hasPrefix("could not save order for j***@example.com; upstream echoed Bearer [REDACTED]") == true, "\(envelope.message ?? "")")
            #expect(envelope.raw.contains("password=[REDACTED]"))
            #expect(envelope.event["user"] == JSONValue.object(["id": .string("user-[REDACTED]")]))
            #expect(envelope.event["tags"]?["request_id"]?.string == "req-[REDACTED]")
        }
    }

    // MARK: - Rate limits

    @Test("a 429 with Retry-After: later events are dropped without a request until the clock passes it, then sending resumes")
    func retryAfter() async throws {
        try await withFakeSentry { fake in
            let clock = TestClock()
            let drops = DropLog()
            let reporter = Self.reporter(fake.configuration, clock: clock, drops: drops)
            fake.mode = .tooManyRequests(retryAfter: "30", rateLimits: nil)
            reporter.report(Self.failure("refused", fake))
            await reporter.flush()
            #expect(fake.requestCount == 1)
            #expect(drops.reasons == ["rate_limited"])
            #expect(reporter.limitedUntil == clock.now.addingTimeInterval(30))

            fake.mode = .accept
            reporter.report(Self.failure("held back 1", fake))
            reporter.report(Self.failure("held back 2", fake))
            await reporter.flush()
            clock.advance(by: 29)
            reporter.report(Self.failure("held back 3", fake))
            await reporter.flush()
            #expect(fake.requestCount == 1, "no request while limited")
            #expect(reporter.dropped(.rateLimited) == 4)

            clock.advance(by: 2)
            reporter.report(Self.failure("after the pause", fake))
            await reporter.flush()
            #expect(fake.requestCount == 2)
            #expect(fake.accepted.compactMap(\.message) == ["after the pause"])
            #expect(drops.reasons == Array(repeating: "rate_limited", count: 4))
            #expect(fake.problems.isEmpty, "\(fake.problems)")
        }
    }

    @Test("X-Sentry-Rate-Limits naming the error category, on a 200, holds the next events back for its seconds")
    func rateLimitsOnSuccess() async throws {
        try await withFakeSentry { fake in
            let clock = TestClock()
            let drops = DropLog()
            let reporter = Self.reporter(fake.configuration, clock: clock, drops: drops)
            fake.mode = .acceptLimiting(rateLimits: "60:error;transaction:key")
            reporter.report(Self.failure("accepted, then limited", fake))
            await reporter.flush()
            fake.mode = .accept
            reporter.report(Self.failure("held back", fake))
            await reporter.flush()
            #expect(fake.requestCount == 1)
            #expect(drops.reasons == ["rate_limited"])

            clock.advance(by: 61)
            reporter.report(Self.failure("after the limit", fake))
            await reporter.flush()
            #expect(fake.accepted.compactMap(\.message) == ["accepted, then limited", "after the limit"])
            #expect(reporter.sentCount == 2)
        }
    }

    @Test("X-Sentry-Rate-Limits with no categories limits everything, and on a 429 it wins over Retry-After")
    func rateLimitsForAllCategories() async throws {
        try await withFakeSentry { fake in
            let clock = TestClock()
            let drops = DropLog()
            let reporter = Self.reporter(fake.configuration, clock: clock, drops: drops)
            fake.mode = .tooManyRequests(retryAfter: "5", rateLimits: "120::organization:usage_exceeded")
            reporter.report(Self.failure("refused", fake))
            await reporter.flush()
            fake.mode = .accept

            clock.advance(by: 6)
            reporter.report(Self.failure("still held back", fake))
            await reporter.flush()
            #expect(fake.requestCount == 1, "the header's 120 s, not Retry-After's 5 s")

            clock.advance(by: 115)
            reporter.report(Self.failure("resumed", fake))
            await reporter.flush()
            #expect(fake.requestCount == 2)
            #expect(fake.accepted.compactMap(\.message) == ["resumed"])
            #expect(drops.reasons == ["rate_limited", "rate_limited"])
        }
    }

    @Test("limits on other categories do not hold errors back")
    func otherCategories() async throws {
        try await withFakeSentry { fake in
            let drops = DropLog()
            let reporter = Self.reporter(fake.configuration, clock: TestClock(), drops: drops)
            fake.mode = .acceptLimiting(rateLimits: "600:transaction;session:project, 600:attachment:key")
            reporter.report(Self.failure("one", fake))
            await reporter.flush()
            reporter.report(Self.failure("two", fake))
            await reporter.flush()
            #expect(fake.accepted.compactMap(\.message) == ["one", "two"])
            #expect(drops.reasons.isEmpty)
            #expect(reporter.limitedUntil == nil)
        }
    }

    @Test("reading the headers: error and all-category groups count, others and unreadable groups are skipped, fractions round up, a bare 429 waits a minute")
    func rateLimitHeaders() {
        let now = TestClock.tuesdayMorning
        var limits = SentryRateLimits()
        limits.update(status: 200, retryAfter: nil, rateLimits: "60:error;transaction:key, 2700::organization", now: now)
        #expect(limits.errorUntil == now.addingTimeInterval(60))
        #expect(limits.allUntil == now.addingTimeInterval(2700))
        #expect(limits.isLimited(at: now.addingTimeInterval(2699)))
        #expect(!limits.isLimited(at: now.addingTimeInterval(2700)))

        var mixed = SentryRateLimits()
        mixed.update(status: 200, retryAfter: nil, rateLimits: "60:transaction:key, nonsense, :error:key, 1.5:default;ERROR:project", now: now)
        #expect(mixed.allUntil == nil)
        #expect(mixed.errorUntil == now.addingTimeInterval(2))

        var bare = SentryRateLimits()
        bare.update(status: 429, retryAfter: nil, rateLimits: nil, now: now)
        #expect(bare.allUntil == now.addingTimeInterval(60))

        var dated = SentryRateLimits()
        dated.update(status: 429, retryAfter: "Wed, 21 Oct 2026 07:28:00 GMT", rateLimits: nil, now: now)
        #expect(dated.allUntil == now.addingTimeInterval(60))

        var huge = SentryRateLimits()
        huge.update(status: 200, retryAfter: nil, rateLimits: "99999999999:error:key", now: now)
        #expect(huge.errorUntil == now.addingTimeInterval(86_400))

        var success = SentryRateLimits()
        success.update(status: 200, retryAfter: "30", rateLimits: nil, now: now)
        #expect(!success.isLimited(at: now), "Retry-After counts only on a 429")

        #expect(SentryRateLimits.seconds("60") == 60)
        #expect(SentryRateLimits.seconds(" 7 ") == 7)
        #expect(SentryRateLimits.seconds("0.0") == 0)
        #expect(SentryRateLimits.seconds("-5") == nil)
        #expect(SentryRateLimits.seconds("1e3") == nil)
        #expect(SentryRateLimits.seconds("") == nil)
    }

    @Test("a 429 whose X-Sentry-Rate-Limits sets no limit on errors that Folio can read still pauses: Retry-After, or a minute")
    func unreadableLimitsOn429() {
        let now = TestClock.tuesdayMorning
        var garbled = SentryRateLimits()
        garbled.update(status: 429, retryAfter: "30", rateLimits: "soon, maybe", now: now)
        #expect(garbled.isLimited(at: now.addingTimeInterval(29)) && !garbled.isLimited(at: now.addingTimeInterval(30)))
        var otherCategory = SentryRateLimits()
        otherCategory.update(status: 429, retryAfter: nil, rateLimits: "600:transaction:key", now: now)
        #expect(otherCategory.allUntil == now.addingTimeInterval(60))
        // A readable limit on errors is taken as it is, shorter than Retry-After or not.
        var readable = SentryRateLimits()
        readable.update(status: 429, retryAfter: "300", rateLimits: "5:error:key", now: now)
        #expect(readable.until == now.addingTimeInterval(5))
    }

    @Test("folio worker starts its error reporter before the workers and the database first, so on shutdown the reporter outlives the jobs that drain", arguments: [TestDatabaseKind.sqlite])
    func workerStopsReporterLast(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.sentry = .init(dsn: "http://key1@127.0.0.1:9/1", environment: "test") }) { _, env in
            let order = env.services.workerServices().map { "\(type(of: $0.service))" }
            let reporter = try #require(order.firstIndex(of: "SentryReporter"), "\(order)")
            let firstWorker = try #require(order.firstIndex(of: "JobWorker"), "\(order)")
            #expect(order.first == "DatabaseService" && reporter < firstWorker, "\(order)")
            #expect(order.filter { $0 == "JobWorker" }.count == 2, "the job worker and the mail worker")
        }
    }

    // MARK: - Dropping

    @Test("past the queue's capacity events are dropped and counted as queue_full; the queued ones are sent in order")
    func queueFull() async throws {
        try await withFakeSentry { fake in
            let drops = DropLog()
            let reporter = Self.reporter(fake.configuration, clock: TestClock(), capacity: 3, drops: drops)
            for n in 1...5 { reporter.report(Self.failure("failure \(n)", fake)) }
            #expect(reporter.queuedCount == 3)
            #expect(reporter.dropped(.queueFull) == 2)
            #expect(reporter.droppedCount == 2)
            #expect(drops.reasons == ["queue_full", "queue_full"])
            #expect(fake.requestCount == 0, "report() sends nothing itself")

            await reporter.flush()
            #expect(fake.accepted.compactMap(\.message) == ["failure 1", "failure 2", "failure 3"])
            #expect(reporter.queuedCount == 0)
            #expect(reporter.sentCount == 3)
        }
    }

    @Test("a 500 drops that event as send_failed, one request per event and no retries; the next event goes through")
    func serverError() async throws {
        try await withFakeSentry { fake in
            let drops = DropLog()
            let reporter = Self.reporter(fake.configuration, clock: TestClock(), drops: drops)
            fake.mode = .serverError
            reporter.report(Self.failure("lost 1", fake))
            reporter.report(Self.failure("lost 2", fake))
            await reporter.flush()
            #expect(fake.requestCount == 2)
            #expect(drops.reasons == ["send_failed", "send_failed"])
            #expect(reporter.limitedUntil == nil, "a 500 is not a rate limit")

            fake.mode = .accept
            reporter.report(Self.failure("delivered", fake))
            await reporter.flush()
            #expect(fake.requestCount == 3)
            #expect(fake.accepted.compactMap(\.message) == ["delivered"])
        }
    }

    @Test("Sentry unreachable (nothing listening) or too slow: the event is dropped as send_failed")
    func unreachableOrSlow() async throws {
        let nowhere = try SentryConfiguration(dsn: "http://\(FakeSentry.publicKey)@127.0.0.1:1/4505", environment: "test", release: "folio@test")
        let drops = DropLog()
        let unreachable = Self.reporter(nowhere, clock: TestClock(), timeout: .seconds(2), drops: drops)
        unreachable.report(SentryEvent.forDeadJob(kind: "submit_order", jobID: "j-1", error: "lost", configuration: nowhere))
        await unreachable.flush()
        #expect(drops.reasons == ["send_failed"])

        try await withFakeSentry { fake in
            let drops = DropLog()
            // Generous against a loaded machine: the next event must not miss its window too.
            let reporter = Self.reporter(fake.configuration, clock: TestClock(), timeout: .seconds(4), drops: drops)
            fake.mode = .slow(.seconds(12))
            reporter.report(Self.failure("too slow", fake))
            await reporter.flush()
            #expect(drops.reasons == ["send_failed"])

            fake.mode = .accept
            reporter.report(Self.failure("after the slow one", fake))
            await reporter.flush()
            #expect(fake.accepted.compactMap(\.message).contains("after the slow one"))
            #expect(drops.reasons == ["send_failed"])
        }
    }

    // MARK: - As a service

    @Test("run() sends what is reported in the background, without a flush")
    func runsAsAService() async throws {
        try await withFakeSentry { fake in
            let reporter = Self.reporter(fake.configuration, clock: TestClock())
            reporter.report(Self.failure("before the start", fake))
            let service = Task { try await reporter.run() }
            reporter.report(Self.failure("while running", fake))
            // Waits for the background sends (bounded); how long they took is not asserted.
            for _ in 0..<1000 where fake.accepted.count < 2 {
                try await Task.sleep(for: .milliseconds(10))
            }
            service.cancel()
            _ = try? await service.value
            #expect(fake.accepted.compactMap(\.message) == ["before the start", "while running"])
        }
    }

    @Test("a graceful shutdown sends for at most its budget: with Sentry slow, what is still queued then is dropped as shutdown, not waited for")
    func shutdownBudget() async throws {
        try await withFakeSentry { fake in
            let drops = DropLog()
            // Slow enough that the budget has long run out when the send in flight ends, however loaded the
            // machine, and within the send's 10 s timeout, so that send succeeds.
            fake.mode = .slow(.seconds(6))
            let reporter = SentryReporter(
                configuration: fake.configuration, clock: TestClock().clock, logger: Self.logger, timeout: .seconds(10), shutdownBudget: .milliseconds(500),
                onDrop: { drops.record($0) })
            let group = ServiceGroup(configuration: .init(services: [reporter], logger: Self.logger))
            let running = Task { try await group.run() }
            for index in 1...10 { reporter.report(Self.failure("event \(index)", fake)) }
            try await eventually("the first send started") { fake.received.count == 1 }
            await group.triggerGracefulShutdown()
            try await running.value
            // The send in flight finished; the budget was spent by then, so no other was started.
            #expect(fake.received.count == 1 && fake.accepted.count == 1)
            #expect(drops.reasons == Array(repeating: "shutdown", count: 9))
            #expect(reporter.dropped(.shutdown) == 9 && reporter.queuedCount == 0)
        }
    }

    // MARK: - Wired into the server

    @Test("a forced 500 reaches Sentry with its request id, route pattern and user id, and no secret; a dead job is reported too", arguments: TestDatabaseKind.all)
    func serverErrorsAndDeadJobs(kind: TestDatabaseKind) async throws {
        try await withFakeSentry { sentry in
            let secret = "sk-live-PLANTED-0123456789abcdefghij"
            try await withTestApp(kind, configure: { configuration in
                configuration.sentry = .init(dsn: sentry.dsn.text, environment: "staging", release: "folio@9.9.9")
                configuration.opsToken = secret + "-ops-token-long-enough-000000"
            }, routes: { routes, _ in
                routes.get("/api/test/secret-boom/:id") { _, _ -> String in
                    throw SentryTestError(description: "failed with Authorization: Bearer \(secret) and password=hunter2hunter2 for ops \(secret)-ops-token-long-enough-000000")
                }
            }) { client, env in
                let tokens = try await signUp(client, env, email: "reporter@example.com")
                let response = try await client.execute(uri: "/api/test/secret-boom/42", method: .get, headers: bearer(tokens))
                #expect(response.status == .internalServerError)
                let requestID = try #require(response.headers[HTTPField.Name("X-Request-ID")!])
                let reporter = try #require(env.services.errorReports)
                await reporter.flush()
                let event = try #require(sentry.received.last)
                #expect(event.event["tags"]?["request_id"]?.string == requestID)
                #expect(event.event["tags"]?["route"]?.string == "/api/test/secret-boom/{id}", "\(event.raw)")
                #expect(event.event["release"]?.string == "folio@9.9.9" && event.event["environment"]?.string == "staging")
                let user = try #require(event.event["user"]?["id"]?.string)
                #expect(user == (tokens["user"] as? [String: Any])?["id"] as? String || !user.isEmpty)
                #expect(!event.raw.contains("reporter@example.com"), "never the email")
                #expect(!event.raw.contains(secret) && !event.raw.contains("hunter2hunter2"), "\(event.raw)")
                #expect(event.event["exception"]?["values"]?.elements.first?["type"]?.string == "SentryTestError")

                // A job that cannot run is dead at once: reported with its kind.
                let now = env.clock.now
                try await env.database.sql.raw("""
                    INSERT INTO jobs (id, kind, payload, order_id, status, attempts, max_attempts, run_at, created_at, updated_at)
                    VALUES (\(bind: UUID()), 'submit_order', '{"v":1}', NULL, 'queued', 0, 1, \(bind: now), \(bind: now), \(bind: now))
                    """).run()
                await env.worker.drain()
                await reporter.flush()
                let dead = sentry.received.filter { $0.event["tags"]?["job_kind"]?.string != nil }
                #expect(dead.count == 1 && dead.first?.event["tags"]?["job_kind"]?.string == "submit_order", "\(sentry.received.map(\.raw))")
            }
        }
    }

}

struct SentryTestError: Error, CustomStringConvertible {
    var description: String
}

/// The reasons passed to `onDrop`, in order.
final class DropLog: Sendable {
    private let box = NIOLockedValueBox<[String]>([])

    func record(_ reason: String) {
        box.withLockedValue { $0.append(reason) }
    }

    var reasons: [String] { box.withLockedValue { $0 } }
}
