import FolioDomain
import Foundation

/// Sentry's envelope (https://develop.sentry.dev/sdk/envelopes/), with one
/// event item: three lines, each ending in a newline:
///
///     {"dsn":…,"event_id":…,"sent_at":…}
///     {"content_type":"application/json","length":N,"type":"event"}
///     {…the event…}
///
/// `N` is the payload's length in UTF-8 bytes. Written with Folio's own
/// `JSONValue` (keys sorted, strings escaped, so none of the three holds a raw
/// newline); the only number is the length, written from an `Int`: nothing
/// goes through `Double`.
enum SentryEnvelope {
    static let contentType = "application/x-sentry-envelope"
    /// Longest text sent for a message or a transaction; the rest is cut.
    static let maximumLength = 2000
    /// Sentry drops tag values longer than 200 characters.
    static let maximumTagLength = 200

    static func body(for event: SentryEvent, dsn: SentryDSN, sentAt: Date, redactor: LogRedactor) -> String {
        let payload = self.payload(event, sentAt: sentAt, redactor: redactor).text
        let header = JSONValue.object([
            "event_id": .string(event.eventID), "sent_at": .string(timestamp(sentAt)), "dsn": .string(dsn.text),
        ]).text
        let item = JSONValue.object([
            "type": .string("event"), "length": .number(String(payload.utf8.count)), "content_type": .string("application/json"),
        ]).text
        return header + "\n" + item + "\n" + payload + "\n"
    }

    /// The event as Sentry's JSON. Every string that came from a request, an
    /// error or a job (exception, transaction, tags, user id) is redacted, then
    /// cut; redacting first, so a cut never leaves half a secret the redactor
    /// would no longer recognise. Not redacted: the ids and constants Folio
    /// makes itself, and the operator's release and environment (the redactor
    /// reads `folio@1.2.0` as an email address and would mangle it).
    static func payload(_ event: SentryEvent, sentAt: Date, redactor: LogRedactor) -> JSONValue {
        var fields: [String: JSONValue] = [
            "event_id": .string(event.eventID),
            "timestamp": .string(timestamp(event.timestamp ?? sentAt)),
            "level": .string(SentryEvent.level),
            "platform": .string(SentryEvent.platform),
            "release": .string(event.release),
            "environment": .string(event.environment),
            "exception": .object([
                "values": .array([.object(["type": clean(event.exceptionType, redactor), "value": clean(event.message, redactor)])])
            ]),
            "sdk": .object(["name": .string("folio"), "version": .string(FolioVersion.current)]),
        ]
        if !event.tags.isEmpty {
            // A request id in a shape the edge accepts is kept as the log wrote it (a 32-digit hex id, nginx's or
            // a W3C trace id, would otherwise read as a secret), so an event can be matched with its log lines.
            fields["tags"] = .object(Dictionary(uniqueKeysWithValues: event.tags.map { key, value in
                (key, key == "request_id" && EdgeMiddleware.acceptable(value) != nil ? .string(value) : clean(value, redactor, limit: maximumTagLength))
            }))
        }
        // The id and nothing else: no email, no name, no address.
        if let userID = event.userID {
            fields["user"] = .object(["id": clean(userID, redactor)])
        }
        if let transaction = event.transaction {
            fields["transaction"] = clean(transaction, redactor)
        }
        return .object(fields)
    }

    /// Redacted first, then cut to `limit` characters.
    private static func clean(_ text: String, _ redactor: LogRedactor, limit: Int = maximumLength) -> JSONValue {
        .string(String(redactor.redact(text).prefix(limit)))
    }

    /// RFC 3339 in UTC, whole seconds.
    static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601)
    }
}

/// What Sentry has asked us to hold back, from a 429's `Retry-After` and from
/// `X-Sentry-Rate-Limits` on any answer
/// (https://develop.sentry.dev/sdk/rate-limiting/). Folio only sends events
/// of the `error` category, so only two limits matter: the one for `error`
/// and the one for every category (an empty category list).
struct SentryRateLimits: Sendable, Equatable {
    /// Every category is limited until then.
    private(set) var allUntil: Date?
    /// The `error` category is limited until then.
    private(set) var errorUntil: Date?

    static let category = "error"
    /// A 429 without a readable header: wait a minute, as Sentry's SDKs do.
    static let defaultSeconds = 60
    /// A longer limit is cut to a day: a wrong header cannot silence error
    /// reporting for good, and while the quota really is spent Sentry answers
    /// the next try with a new limit.
    static let longestSeconds = 86_400

    init() {}

    func isLimited(at now: Date) -> Bool {
        guard let until else { return false }
        return until > now
    }

    /// When the later of the two limits ends.
    var until: Date? {
        [allUntil, errorUntil].compactMap { $0 }.max()
    }

    /// Reads an answer's headers. `X-Sentry-Rate-Limits`, when present, is
    /// all there is to know (it takes precedence over `Retry-After`); a 429
    /// without it, or with none of its groups limiting errors, limits
    /// everything for `Retry-After` seconds, or a minute.
    mutating func update(status: Int, retryAfter: String?, rateLimits: String?, now: Date) {
        if let rateLimits, !rateLimits.trimmingCharacters(in: .whitespaces).isEmpty {
            apply(rateLimits, now: now)
        }
        // A 429 refused this error event: when the header (if any) sets no limit on errors that Folio
        // can read, the event's refusal still counts, or the next event would be sent at once.
        if status == 429, !isLimited(at: now) {
            // Sentry sends seconds; an HTTP date or anything else gets the default.
            let seconds = retryAfter.flatMap { Self.seconds($0) } ?? Self.defaultSeconds
            allUntil = Self.later(allUntil, now.addingTimeInterval(TimeInterval(seconds)))
        }
    }

    /// `X-Sentry-Rate-Limits`: groups separated by commas, each
    /// `SECONDS:CATEGORIES:SCOPE[:REASON…]`, categories separated by `;`.
    /// E.g. `60:error;transaction:key, 2700::organization`. An empty
    /// category list means every category; a group Folio cannot read is skipped.
    mutating func apply(_ header: String, now: Date) {
        for group in header.split(separator: ",") {
            let fields = group.split(separator: ":", omittingEmptySubsequences: false)
            guard fields.count >= 2, let seconds = Self.seconds(fields[0]) else { continue }
            let until = now.addingTimeInterval(TimeInterval(seconds))
            let categories = fields[1].split(separator: ";")
                .map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
                .filter { !$0.isEmpty }
            if categories.isEmpty {
                allUntil = Self.later(allUntil, until)
            } else if categories.contains(Self.category) {
                errorUntil = Self.later(errorUntil, until)
            }
        }
    }

    /// Whole seconds from `60` or `60.5` (a fraction rounds up), read from the
    /// digits without `Double`, at most `longestSeconds`; nil for anything else.
    static func seconds(_ text: some StringProtocol) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let parts = trimmed.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty, whole.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        var fractionUp = false
        if parts.count == 2 {
            let fraction = parts[1]
            guard fraction.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            fractionUp = fraction.contains { $0 != "0" }
        }
        // More digits than a day's seconds can have: a day.
        guard whole.count <= 9, let value = Int(whole) else { return longestSeconds }
        return min(value + (fractionUp ? 1 : 0), longestSeconds)
    }

    private static func later(_ current: Date?, _ new: Date) -> Date {
        guard let current else { return new }
        return max(current, new)
    }
}
