import Foundation
import Prometheus
import Synchronization

/// Folio's Prometheus series, in one registry per process (each test's
/// services get their own). Names follow Prometheus' conventions (`folio_`
/// prefix, `_total` counters, `_seconds` durations), and every label takes
/// values from a bounded set: route patterns (never raw paths), methods,
/// status codes, event names, vendors and results; never a user id.
/// `GET /metrics` serves them (see `MetricsController`).
final class FolioMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()

    init() {
        // Series an alert reads exist from the start, at zero, so `rate()` and `increase()` see their first rise.
        for reason in SentryDropReason.allCases {
            registry.makeCounter(descriptor: Self.sentryDropped, labels: [("reason", reason.rawValue)]).increment(by: Int64(0))
        }
        registry.makeCounter(descriptor: Self.ordersRefused, labels: [("reason", "backlog")]).increment(by: Int64(0))
        for event in Self.alertedSecurityEvents {
            registry.makeCounter(descriptor: Self.securityEvents, labels: [("event", event)]).increment(by: Int64(0))
        }
        for reason in ["unknown_email", "wrong_password", "wrong_second_factor", "other"] {
            registry.makeCounter(descriptor: Self.authenticationFailures, labels: [("reason", reason)]).increment(by: Int64(0))
        }
    }

    /// The security events the alert rules count (FolioFailedAuthenticationBurst, FolioUnusualUsage).
    static let alertedSecurityEvents = [
        "login_failed", "login_refused", "login_locked", "reauthentication_locked", "second_factor_blocked", "token_rejected",
        "refresh_token_rejected", "refresh_token_reuse", "rate_limited",
    ]

    /// Request durations from 1 ms to 10 s.
    static let durationBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
    ]

    private struct RequestKey: Hashable {
        var route: String
        var method: String
        var status: Int
    }

    /// Series made once and kept: a request's counting is one dictionary lookup under a lock.
    private let requests = Mutex<[RequestKey: (Counter, DurationHistogram)]>([:])
    /// The last backup's time as the gauge says it, so that a backup read on disk never moves it back.
    private let lastBackup = Mutex<Date?>(nil)

    static let methods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    func recordRequest(route: String?, method: String, status: Int, duration: Duration) {
        let key = RequestKey(route: EdgeMiddleware.routePattern(route), method: Self.methods.contains(method) ? method : "OTHER", status: status)
        let (counter, histogram) = requests.withLock { series in
            if let made = series[key] { return made }
            let labels = [("route", key.route), ("method", key.method), ("status", String(key.status))]
            let made = (
                registry.makeCounter(descriptor: Self.requestsTotal, labels: labels),
                registry.makeDurationHistogram(
                    descriptor: Self.requestDuration, labels: [("route", key.route), ("method", key.method)], buckets: Self.durationBuckets)
            )
            series[key] = made
            return made
        }
        counter.increment()
        histogram.record(duration)
    }

    /// A security event by name: login_failed, account_locked, rate_limited, csrf_failed, cors_refused, token_rejected, token_expired, webhook_verification_failed…
    func securityEvent(_ event: String) {
        registry.makeCounter(descriptor: Self.securityEvents, labels: [("event", event)]).increment()
    }

    /// A failed sign-in or re-authentication by reason (`unknown_email`, `wrong_password`, `wrong_second_factor`).
    func authenticationFailure(reason: String) {
        let bounded = ["unknown_email", "wrong_password", "wrong_second_factor"].contains(reason) ? reason : "other"
        registry.makeCounter(descriptor: Self.authenticationFailures, labels: [("reason", bounded)]).increment()
    }

    /// A webhook's verification: `verified`, or the reason it was refused.
    func webhookVerification(vendor: String, result: String) {
        registry.makeCounter(descriptor: Self.webhookVerifications, labels: [("vendor", vendor), ("result", result)]).increment()
    }

    /// A write a database constraint refused, by table (when the database names it) and kind.
    func constraintViolation(table: String?, kind: String) {
        registry.makeCounter(descriptor: Self.constraintViolations, labels: [("table", table ?? "unknown"), ("kind", kind)]).increment()
    }

    /// A call to a vendor's API: by vendor, endpoint (a fixed route name) and result (`ok`, `error`, `unreachable`).
    func vendorCall(vendor: String, endpoint: String, result: String, duration: Duration) {
        registry.makeCounter(descriptor: Self.vendorCalls, labels: [("vendor", vendor), ("endpoint", endpoint), ("result", result)]).increment()
        registry.makeDurationHistogram(
            descriptor: Self.vendorCallDuration, labels: [("vendor", vendor), ("endpoint", endpoint)], buckets: Self.durationBuckets
        ).record(duration)
    }

    /// A message's fate: `sent`, `failed`, `retried`, `throttled`, `suppressed` or `uncertain`.
    func mail(template: String, result: String) {
        registry.makeCounter(descriptor: Self.mails, labels: [("template", template), ("result", result)]).increment()
    }

    /// An event SendGrid reported (delivered, bounce, spamreport…).
    func mailEvent(_ event: String) {
        registry.makeCounter(descriptor: Self.mailEvents, labels: [("event", event)]).increment()
    }

    /// An error report Sentry did not get: `queue_full`, `rate_limited`, `send_failed` or `shutdown`.
    func sentryDropped(_ reason: String) {
        registry.makeCounter(descriptor: Self.sentryDropped, labels: [("reason", reason)]).increment()
    }

    /// A reporting read, by the database it went to.
    func replicaRead(target: String) {
        registry.makeCounter(descriptor: Self.replicaReads, labels: [("target", target)]).increment()
    }

    /// A reporting read sent to the primary because the replica could not take it: `lagging`, `unavailable`, `not_a_standby`.
    func replicaFallback(reason: String) {
        registry.makeCounter(descriptor: Self.replicaFallbacks, labels: [("reason", reason)]).increment()
    }

    /// Rows a retention policy removed (or cleared).
    func retentionRemoved(policy: String, rows: Int) {
        registry.makeCounter(descriptor: Self.retentionRemoved, labels: [("policy", policy)]).increment(by: Int64(rows))
    }

    /// A backup taken or verified: its outcome, and when the last good one finished.
    func backup(_ operation: String, succeeded: Bool, at time: Date, bytes: Int64 = 0) {
        registry.makeCounter(descriptor: Self.backups, labels: [("operation", operation), ("outcome", succeeded ? "ok" : "failed")]).increment()
        guard succeeded else { return }
        if operation == "backup" {
            backupOnDisk(at: time)
            registry.makeGauge(descriptor: Self.backupBytes, labels: []).set(to: Double(bytes))
        } else {
            registry.makeGauge(descriptor: Self.backupLastSuccess, labels: [("operation", operation)]).set(to: time.timeIntervalSince1970)
        }
    }

    /// A backup that succeeded at `time`: this process's, or the newest in the backup directory when scraped
    /// (one taken by hand, or before a restart). The gauge only moves forward.
    func backupOnDisk(at time: Date) {
        let gauge = registry.makeGauge(descriptor: Self.backupLastSuccess, labels: [("operation", "backup")])
        lastBackup.withLock { seen in
            guard time > (seen ?? .distantPast) else { return }
            seen = time
            gauge.set(to: time.timeIntervalSince1970)
        }
    }

    /// Whether this process's configuration schedules the daily backup: with no backup on disk at all there is no
    /// last success to age, and the alerts read this to tell "none yet" from "not wanted" (`BACKUP_SCHEDULE=off`).
    func backupScheduled(_ scheduled: Bool) {
        registry.makeGauge(descriptor: Self.backupScheduled, labels: []).set(to: scheduled ? 1 : 0)
    }

    /// Whether this scrape could read the database (the job queue's figures): 0 when it failed or took too long, so an
    /// outage is seen with no traffic at all, while the queue's series stay as last read.
    func databaseRead(_ succeeded: Bool) {
        registry.makeGauge(descriptor: Self.databaseReadable, labels: []).set(to: succeeded ? 1 : 0)
    }

    /// An error report Sentry accepted.
    func sentrySent() {
        registry.makeCounter(descriptor: Self.sentrySent, labels: []).increment()
    }

    /// An order reaching a status (`filled`, `partially_filled`, `rejected`, `expired`, `canceled`, `accepted`…).
    func order(status: String) {
        registry.makeCounter(descriptor: Self.orders, labels: [("status", status)]).increment()
    }

    /// A fill applied, and how long after its order was placed.
    /// A placement refused before anything was written, by why (`backlog`: too many orders wait for a worker).
    func orderRefused(reason: String) {
        registry.makeCounter(descriptor: Self.ordersRefused, labels: [("reason", reason)]).increment()
    }

    func fill(latency: TimeInterval) {
        registry.makeCounter(descriptor: Self.fills, labels: []).increment()
        registry.makeDurationHistogram(descriptor: Self.fillLatency, labels: [], buckets: Self.fillLatencyBuckets)
            .record(.milliseconds(Int64(max(0, latency) * 1000)))
    }

    static let fillLatencyBuckets: [Duration] = [
        .milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5), .seconds(30),
        .seconds(60), .seconds(300), .seconds(3600), .seconds(86_400),
    ]

    /// The database's connections, read when scraped: this process's pool size, and on PostgreSQL
    /// the server's client connections by state (`active` ones are in use; every instance counts).
    func refreshDatabase(_ database: FolioDatabase) async throws {
        registry.makeGauge(descriptor: Self.poolSize, labels: []).set(to: Double(database.poolSize))
        let states = try await database.connectionStates()
        for state in Set(["active", "idle", "idle in transaction"]).union(states.keys) {
            registry.makeGauge(descriptor: Self.poolConnections, labels: [("state", state.replacingOccurrences(of: " ", with: "_"))])
                .set(to: Double(states[state] ?? 0))
        }
    }

    /// The job queue as the database holds it, read when scraped: jobs by kind and status, and the oldest due job's wait.
    func refreshJobs(_ queue: JobQueue, now: Date) async throws {
        var seen: Set<[String]> = []
        for (kind, status, count, oldest) in try await queue.statusCounts() {
            seen.insert([kind, status])
            registry.makeGauge(descriptor: Self.jobs, labels: [("kind", kind), ("status", status)]).set(to: Double(count))
            if status == "queued", let oldest {
                registry.makeGauge(descriptor: Self.jobAge, labels: [("kind", kind)]).set(to: max(0, now.timeIntervalSince(oldest)))
            }
        }
        // Kinds with nothing waiting read zero, not their last value.
        for kind in JobPayload.Kind.allCases {
            for status in ["queued", "running", "dead"] where !seen.contains([kind.rawValue, status]) {
                registry.makeGauge(descriptor: Self.jobs, labels: [("kind", kind.rawValue), ("status", status)]).set(to: 0)
            }
            if !seen.contains([kind.rawValue, "queued"]) { registry.makeGauge(descriptor: Self.jobAge, labels: [("kind", kind.rawValue)]).set(to: 0) }
        }
    }

    /// Open DAY orders whose session closed over an hour ago, read when scraped: their end at the broker
    /// was not applied (the worker is stopped, or the broker's record of their fills cannot be read).
    func refreshOverdueOrders(_ count: Int) {
        registry.makeGauge(descriptor: Self.ordersOverdue, labels: []).set(to: Double(count))
    }

    /// How long after its session's close an open DAY order counts as overdue.
    static let overdueGrace: TimeInterval = 3600

    /// The market-data vendor's gate, read when scraped: 1 for its current state, 0 for the others, and its run of failures.
    func refreshGate(_ gate: VendorGate) {
        let report = gate.report
        for state in ["closed", "held_off", "open", "half_open"] {
            registry.makeGauge(descriptor: Self.vendorGate, labels: [("vendor", gate.vendor), ("state", state)]).set(to: report.state == state ? 1 : 0)
        }
        registry.makeGauge(descriptor: Self.vendorGateFailures, labels: [("vendor", gate.vendor)]).set(to: Double(report.consecutiveFailures))
    }

    func exposition() -> String {
        registry.emitToString()
    }

    // MARK: - Names

    static var requestsTotal: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "http_requests", unitName: "total", helpText: "HTTP requests by route pattern, method and status.")
    }

    static var requestDuration: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "http_request_duration", unitName: "seconds", helpText: "HTTP request durations by route pattern and method.")
    }

    static var securityEvents: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "security_events", unitName: "total",
            helpText: "Security events: failed logins, lockouts, rate limits, CSRF and CORS refusals, rejected tokens and webhooks.")
    }

    static var webhookVerifications: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "webhook_verifications", unitName: "total", helpText: "Webhook verifications by vendor and result.")
    }

    static var constraintViolations: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "constraint_violations", unitName: "total", helpText: "Writes refused by a database constraint.")
    }

    static var vendorCalls: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "vendor_calls", unitName: "total", helpText: "Calls to vendors' APIs by vendor, endpoint and result.")
    }

    static var vendorCallDuration: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "vendor_call_duration", unitName: "seconds", helpText: "Vendor call durations.")
    }

    static var vendorGate: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "vendor_gate_state", unitName: "",
            helpText: "A vendor's back-off and circuit: 1 for its current state (closed, held_off, open, half_open).")
    }

    static var vendorGateFailures: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "vendor_gate_consecutive_failures", unitName: "", helpText: "A vendor's failures in a row.")
    }

    static var authenticationFailures: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "authentication_failures", unitName: "total", helpText: "Failed sign-ins and re-authentications by reason.")
    }

    static var mails: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "mails", unitName: "total", helpText: "Mail by template and result (sent, failed, retried, throttled, suppressed, uncertain).")
    }

    static var mailEvents: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "mail_events", unitName: "total", helpText: "Events SendGrid reported about Folio's mail, by event.")
    }

    static var sentryDropped: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "sentry_events_dropped", unitName: "total", helpText: "Error reports not sent to Sentry, by reason.")
    }

    static var replicaReads: MetricNameDescriptor {
        MetricNameDescriptor(namespace: "folio", metricName: "read_replica_reads", unitName: "total", helpText: "Reporting reads, by the database that served them.")
    }

    static var replicaFallbacks: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "read_replica_fallbacks", unitName: "total",
            helpText: "Reporting reads sent to the primary because the read replica lagged or did not answer, by reason.")
    }

    static var retentionRemoved: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "retention_removed_rows", unitName: "total", helpText: "Rows removed or cleared by each retention policy.")
    }

    static var backups: MetricNameDescriptor {
        MetricNameDescriptor(namespace: "folio", metricName: "backups", unitName: "total", helpText: "Backups taken and verified, by outcome.")
    }

    static var backupLastSuccess: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "backup_last_success", unitName: "timestamp_seconds",
            helpText: "When the last backup (or verification) succeeded, Unix seconds.")
    }

    static var backupScheduled: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "backup_scheduled", unitName: "",
            helpText: "1 when BACKUP_SCHEDULE runs the daily backup, 0 when it is off.")
    }

    static var databaseReadable: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "database_readable", unitName: "",
            helpText: "1 when the last scrape read the database, 0 when it failed or took longer than 3 s.")
    }

    static var backupBytes: MetricNameDescriptor {
        MetricNameDescriptor(namespace: "folio", metricName: "backup_size", unitName: "bytes", helpText: "The size of the newest backup.")
    }

    static var sentrySent: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "sentry_events_sent", unitName: "total", helpText: "Error reports Sentry accepted.")
    }

    static var orders: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "orders", unitName: "total", helpText: "Orders reaching a status, by status.")
    }

    static var ordersRefused: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "orders_refused", unitName: "total",
            helpText: "Placements refused before anything was written, by reason (backlog: too many orders wait for a worker).")
    }

    static var fills: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "fills", unitName: "total", helpText: "Fills applied to the books.")
    }

    static var fillLatency: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "fill_latency", unitName: "seconds", helpText: "Time from an order's placement to each of its fills.")
    }

    static var poolConnections: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "db_connections", unitName: "",
            helpText: "PostgreSQL's client connections to Folio's database by state (active: in use), all instances together.")
    }

    static var poolSize: MetricNameDescriptor {
        MetricNameDescriptor(namespace: "folio", metricName: "db_pool_size", unitName: "", helpText: "The connections this process's pool may open.")
    }

    static var jobs: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "jobs", unitName: "", helpText: "Jobs in the queue by kind and status.")
    }

    static var ordersOverdue: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "orders_overdue", unitName: "",
            helpText: "Open DAY orders whose session closed over an hour ago: their end at the broker was not applied.")
    }

    static var jobAge: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "folio", metricName: "job_oldest_queued_age", unitName: "seconds", helpText: "How long the oldest queued job of a kind has been waiting.")
    }
}
