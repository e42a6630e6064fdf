import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import FolioServer

/// `GET /metrics` in Prometheus' text format after a scripted session: request
/// counts by route pattern, security events, webhook verifications, vendor
/// calls and the job queue; never public.
@Suite("Metrics")
struct MetricsTests {
    static let opsToken = String(repeating: "m", count: 40)

    func scrape(_ client: some TestClientProtocol, token: String? = opsToken) async throws -> TestResponse {
        var headers: HTTPFields = [:]
        if let token { headers[.authorization] = "Bearer \(token)" }
        return try await client.execute(uri: "/metrics", method: .get, headers: headers)
    }

    @Test("a form sent through the bridge is counted once under /form and once under the API route it reached")
    func formBridgeRoutes() async throws {
        try await withTestApp(.sqlite, configure: { $0.opsToken = Self.opsToken }) { client, env in
            try await signUp(client, env, email: "bridge@example.com")
            let answer = try await client.execute(
                uri: "/form", method: .post, headers: WebAppTests.browserForm,
                body: WebAppTests.form([("_api", "/api/auth/login"), ("email", "bridge@example.com"), ("password", "not the password at all")]))
            #expect(answer.status == .unauthorized, "the page carries the API's status")
            let text = String(buffer: try await scrape(client).body)
            #expect(text.contains(#"folio_http_requests_total{route="/form",method="POST",status="401"} 1"#), "the outer request keeps its route")
            #expect(text.contains(#"folio_http_requests_total{route="/api/auth/login",method="POST",status="401"} 1"#), "and the inner one is counted once")
        }
    }

    @Test("a request no route matches is counted under route=\"unmatched\", as the access log names it, whatever its path or method")
    func unmatchedRoutes() async throws {
        try await withTestApp(.sqlite, configure: { $0.opsToken = Self.opsToken }) { client, _ in
            #expect(try await client.execute(uri: "/nowhere/\(UUID())", method: .get).status == .notFound)
            _ = try await client.execute(uri: "/also/nowhere", method: .delete)
            let text = String(buffer: try await scrape(client).body)
            #expect(text.contains(#"folio_http_requests_total{route="unmatched",method="GET",status="404"} 1"#), "\(text)")
            #expect(!text.contains("NotFound") && !text.contains("nowhere"))
        }
    }

    @Test("a session shows in each series family, with route patterns for labels", arguments: TestDatabaseKind.all)
    func seriesAfterASession(kind: TestDatabaseKind) async throws {
        try await withFakePlaid { fake in
            try await withTestApp(kind, configure: { $0.opsToken = Self.opsToken; $0.plaid = fake.settings }) { client, env in
                let tokens = try await signUp(client, env, email: "metrics@example.com")
                let accounts = try json(try await client.execute(uri: "/api/accounts", method: .get, headers: bearer(tokens)))
                let accountID = try #require((accounts["data"] as? [[String: Any]])?.first?["id"] as? String)
                _ = try await client.execute(uri: "/api/accounts/\(accountID)", method: .get, headers: bearer(tokens))
                _ = try await post(client, "/api/auth/login", ["email": "metrics@example.com", "password": "wrong password entirely"])
                _ = try await post(client, "/api/orders", ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
                _ = try await client.execute(uri: "/webhooks/plaid", method: .post, headers: [.contentType: "application/json"], body: ByteBuffer(string: "{}"))
                _ = try await post(client, "/api/links/plaid/link-token", [:], headers: bearer(tokens))
                _ = try await client.execute(uri: "/webhooks/sendgrid", method: .post, headers: [.contentType: "application/json"], body: ByteBuffer(string: "[]"))

                let answer = try await scrape(client)
                #expect(answer.status == .ok)
                #expect(answer.headers[.contentType]?.hasPrefix("text/plain; version=0.0.4") == true)
                let text = String(buffer: answer.body)
                #expect(text.contains(#"folio_http_requests_total{route="/api/accounts/{id}",method="GET",status="200"} 1"#))
                #expect(!text.contains(accountID), "no raw path or id in a label")
                #expect(text.contains(#"folio_http_request_duration_seconds_bucket{route="/api/accounts",method="GET",le="#))
                #expect(text.contains(#"folio_security_events_total{event="login_failed"} 1"#))
                #expect(text.contains(#"folio_authentication_failures_total{reason="wrong_password"} 1"#))
                #expect(text.contains(#"folio_webhook_verifications_total{vendor="plaid",result="missing_header"} 1"#))
                #expect(text.contains(#"folio_vendor_calls_total{vendor="plaid",endpoint="/link/token/create",result="ok"} 1"#))
                #expect(text.contains(#"folio_jobs{kind="submit_order",status="queued"} 1"#))
                #expect(text.contains(#"folio_job_oldest_queued_age_seconds{kind="submit_order"}"#))
                #expect(text.contains("\nfolio_database_readable 1"), "the scrape read the database")
                #expect(text.contains("# HELP folio_http_requests_total"))
                #expect(text.contains(#"folio_webhook_verifications_total{vendor="sendgrid",result="not_configured"} 1"#))
                #expect(text.contains(#"folio_sentry_events_dropped_total{reason="queue_full"} 0"#))
                // The events the alerts count exist at zero before the first one: a first burst is a rise from zero.
                #expect(text.contains(#"folio_security_events_total{event="rate_limited"} 0"#))
                #expect(text.contains(#"folio_security_events_total{event="refresh_token_reuse"} 0"#))
                let rules = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../ops/prometheus/folio-alerts.yml").standardized, encoding: .utf8)
                for match in rules.matches(of: /folio_security_events_total\{event=~?"([^"]+)"\}/) {
                    for event in match.1.split(separator: "|") {
                        #expect(FolioMetrics.alertedSecurityEvents.contains(String(event)), "\(event), which an alert counts, is not made at zero")
                    }
                }
                #expect(text.contains("folio_db_pool_size "))
                if kind == .postgres { #expect(text.contains(#"folio_db_connections{state="active"}"#)) }

                // The worker fills the order and sends the mail: orders, fills, their latency and mail.
                env.clock.advance(by: 2)
                await env.worker.drain()
                await env.deliverMail()
                let after = String(buffer: try await scrape(client).body)
                #expect(after.contains(#"folio_orders_total{status="filled"} 1"#), "\(after)")
                #expect(after.contains(#"folio_orders_total{status="placed"} 1"#))
                #expect(after.contains("folio_fills_total 1"))
                #expect(after.contains(#"folio_fill_latency_seconds_bucket{le="5.0"} 1"#) || after.contains(#"folio_fill_latency_seconds_bucket{le="5"} 1"#), "\(after)")
                #expect(after.contains(#"folio_mails_total{template="order_filled",result="sent"} 1"#))
                #expect(after.contains(#"folio_mails_total{template="verify_email",result="sent"} 1"#))
            }
        }
    }

    @Test("a DAY order still open an hour after its session closed is overdue (its end was not applied); one placed after the close is not, and an expired one no longer counts", arguments: TestDatabaseKind.all)
    func overdueDayOrders(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.opsToken = Self.opsToken }) { client, env in
            let tokens = try await signUp(client, env, email: "overdue@example.com")
            let resting = ["symbol": "AAPL", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "DAY"]
            let placed = try await post(client, "/api/orders", resting, headers: bearer(tokens))
            #expect(placed.status == .created, "\(String(buffer: placed.body))")
            let id = try #require(try json(placed)["id"] as? String)
            await env.worker.drain()
            #expect(String(buffer: try await scrape(client).body).contains("folio_orders_overdue 0"))
            // Tuesday 17:31 in New York, 91 minutes after the close, and no worker has run since.
            env.clock.advance(by: TradingDay(year: 2026, month: 11, day: 24).at(hour: 17, minute: 31).timeIntervalSince(env.clock.now))
            #expect(String(buffer: try await scrape(client).body).contains("folio_orders_overdue 1"))
            let again = try json(try await post(client, "/api/auth/login", ["email": "overdue@example.com", "password": strongPassword]))
            let late = try await post(client, "/api/orders", resting, headers: bearer(again))
            #expect(late.status == .created || late.status == .accepted, "\(String(buffer: late.body))")
            #expect(String(buffer: try await scrape(client).body).contains("folio_orders_overdue 1"), "the order placed after the close waits for the next session")
            // The worker's look at resting orders expires it.
            try await env.orders.recheckRestingOrders()
            let shown = try json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(again)))
            #expect(shown["status"] as? String == "expired", "\(shown)")
            #expect(String(buffer: try await scrape(client).body).contains("folio_orders_overdue 0"))
        }
    }

    @Test("without the operators' token: 401; without OPS_TOKEN in production: not there at all")
    func neverPublic() async throws {
        try await withTestApp(.sqlite, configure: { $0.opsToken = Self.opsToken }) { client, _ in
            let anonymous = try await scrape(client, token: nil)
            let wrong = try await scrape(client, token: "wrong-token-wrong-token-wrong-token-0000")
            let withToken = try await scrape(client)
            #expect(anonymous.status == .unauthorized)
            #expect(wrong.status == .unauthorized)
            #expect(withToken.status == .ok)
            // The scheme is case-insensitive (RFC 9110), as on the API; the token is not.
            for header in ["bearer \(Self.opsToken)", "BEARER \(Self.opsToken)"] {
                #expect(try await client.execute(uri: "/metrics", method: .get, headers: [.authorization: header]).status == .ok, "\(header)")
            }
            #expect(try await client.execute(uri: "/metrics", method: .get, headers: [.authorization: "Bearer \(Self.opsToken.uppercased())"]).status == .unauthorized)
        }
        try await withTestApp(.sqlite, configure: { $0.opsToken = nil; $0.environment = .production }) { client, _ in
            let anonymous = try await scrape(client, token: nil)
            #expect(anonymous.status == .notFound)
        }
    }

    @Test("the last backup's time is the newest whole backup on disk, taken by the job or by hand, and only moves forward")
    func backupOnDisk() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("folio-metrics-backups-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withTestApp(.sqlite, configure: { $0.opsToken = Self.opsToken; $0.backup.directory = directory.path }) { client, _ in
            func lastSuccess() async throws -> String? {
                String(buffer: try await scrape(client).body).split(separator: "\n")
                    .first { $0.hasPrefix(#"folio_backup_last_success_timestamp_seconds{operation="backup"}"#) }
                    .map { String($0.split(separator: " ").last!) }
            }
            #expect(try await lastSuccess() == nil, "no backup yet: no series")
            let scheduled = String(buffer: try await scrape(client).body)
            #expect(scheduled.contains("\nfolio_backup_scheduled 1"), "FolioBackupNeverTaken reads that the daily backup is wanted")
            // One taken by hand (another process): a whole backup holds its manifest; a partial one does not count.
            // (The test clock is in November 2026; one stamped years ahead is not believed.)
            for name in ["folio-20261123T010000Z", "folio-20261124T020304Z", "folio-20261125T000000Z.partial-0123abcd", "folio-20300101T000000Z"] {
                try FileManager.default.createDirectory(at: directory.appendingPathComponent(name), withIntermediateDirectories: true)
                if !name.contains("partial") { try Data("{}".utf8).write(to: directory.appendingPathComponent(name).appendingPathComponent(BackupManifest.fileName)) }
            }
            let expected = try #require(Backups.date(ofStamp: "20261124T020304Z")).timeIntervalSince1970
            let seen = try #require(try await lastSuccess())
            #expect(Double(seen) == expected, "\(seen)")
            // Pruned or moved away: the gauge stays where it was.
            try FileManager.default.removeItem(at: directory.appendingPathComponent("folio-20261124T020304Z"))
            #expect(try await lastSuccess().flatMap(Double.init) == expected)
        }
    }

    @Test("a backup that cannot start (BACKUP_DIR is a file) is logged and counted as failed for the alert; a failed monthly restore test is too, and takes no second backup")
    func backupFailuresCounted() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("folio-metrics-failed-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let file = directory.appendingPathComponent("a-file")
        try Data("x".utf8).write(to: file)
        let logs = LogCapture()
        try await withTestApp(.sqlite, configure: { $0.opsToken = Self.opsToken; $0.backup.directory = file.path }, logs: logs) { client, env in
            await #expect(throws: Backups.Failure.self) { _ = try await env.services.backups.create() }
            let text = String(buffer: try await scrape(client).body)
            #expect(text.contains(#"folio_backups_total{operation="backup",outcome="failed"} 1"#), "\(text)")
            #expect(logs.lines.contains { $0.contains("backup failed") && $0.contains("is a file") }, "\(logs.lines)")
        }

        // The 1st of the month: the day's backup is tested by restoring it, and this one was changed after it was written.
        let backups = directory.appendingPathComponent("backups")
        let first = try #require(ISO8601DateFormatter().date(from: "2026-12-01T03:00:00Z"))
        let monthly = LogCapture()
        // Eight older days' backups, more than the days kept: a good day would prune the oldest.
        let older = (1...8).map { "folio-202501\(String(format: "%02d", $0))T000000Z" }
        for name in older {
            try FileManager.default.createDirectory(at: backups.appendingPathComponent(name), withIntermediateDirectories: true)
            try Data("{}".utf8).write(to: backups.appendingPathComponent(name).appendingPathComponent(BackupManifest.fileName))
        }
        try await withTestApp(.sqlite, clock: TestClock(start: first), configure: { $0.opsToken = Self.opsToken; $0.backup.directory = backups.path }, logs: monthly) { client, env in
            var scheduled = env.services.backups
            scheduled.progress = { step in
                guard step.hasPrefix("reading "), let name = try? FileManager.default.contentsOfDirectory(atPath: backups.path).first(where: { $0.hasPrefix("folio-2026") }),
                      let handle = try? FileHandle(forWritingTo: backups.appendingPathComponent(name).appendingPathComponent("database.sqlite"))
                else { return }
                _ = try? handle.seekToEnd()
                try? handle.write(contentsOf: Data("changed".utf8))
                try? handle.close()
            }
            try await scheduled.runScheduled()
            #expect(try FileManager.default.contentsOfDirectory(atPath: backups.path).count == 9, "one new backup, and none pruned on a day the newest does not restore")
            let text = String(buffer: try await scrape(client).body)
            #expect(text.contains(#"folio_backups_total{operation="verify",outcome="failed"} 1"#), "\(text)")
            #expect(monthly.lines.contains { $0.contains("monthly restore test FAILED") && $0.contains("it was changed") }, "\(monthly.lines)")
        }
    }

    @Test("METRICS_PORT: /metrics alone on a loopback listener, no token needed there; the main port still refuses without one")
    func separatePort() async throws {
        try await withTestDatabase(.sqlite) { _, location in
            let folio = try FolioProcess()
            defer { folio.cleanUp() }
            let port = try LoopbackPort.free()
            let server = try await RunningFolio.serve(folio, environment: [
                "ENVIRONMENT": "testing", "DATABASE_URL": location.databaseURL, "SECRET_KEY": ProcessCrashTests.secretKey, "METRICS_PORT": String(port),
                "OPS_TOKEN": Self.opsToken, "HTTP_HEADER_TIMEOUT_SECONDS": "1",
            ])
            defer { server.kill() }
            try await server.waitForLine(containing: "metrics listening")
            // The main listener's protections: a head that never ends is closed at its deadline, and a request the
            // decoder cannot read gets a problem.
            let partial = try RawConnection(port: port)
            try partial.send("GET /metrics HTTP/1.1\r\n")
            #expect(await partial.isClosedByServer(within: .seconds(10)), "a partial head is closed at the header deadline")
            let garbled = try RawConnection(port: port)
            try garbled.send("GET /metrics HTTP/1.1\r\nHost folio.test\r\n\r\n")
            let refused = try #require(RawResponse(await garbled.receiveAll(within: .seconds(10))))
            #expect(refused.status == 400 && refused.headers["content-type"] == "application/problem+json", "\(refused.headers) \(refused.body)")
            let local = try await HTTPCalls(baseURL: "http://127.0.0.1:\(port)").get("/metrics")
            #expect(local.status == 200 && local.text.contains("folio_db_pool_size"))
            let main = try await HTTPCalls(baseURL: server.baseURL).get("/metrics")
            #expect(main.status == 401)
            let other = try await HTTPCalls(baseURL: "http://127.0.0.1:\(port)").get("/api/accounts")
            #expect(other.status == 404, "only /metrics is on the metrics port")
            // Its answers are the main listener's kind: the same headers, HEAD where GET is, errors as problems.
            #expect(other.headers["content-type"] == "application/problem+json" && other.json["code"] as? String == "not_found", "\(other.headers) \(other.text)")
            for answer in [local, other] {
                #expect(answer.headers["x-content-type-options"] == "nosniff" && answer.headers["cache-control"] != nil && answer.headers["x-request-id"] != nil, "\(answer.headers)")
            }
            #expect(try await HTTPCalls(baseURL: "http://127.0.0.1:\(port)").send("HEAD", "/metrics").status == 200)
        }
    }

    @Test("METRICS_PORT or PORT taken by another process: serve and worker stop at once with a sentence naming the setting, and do not crash")
    func portTaken() async throws {
        try await withTestDatabase(.sqlite) { _, location in
            let folio = try FolioProcess()
            defer { folio.cleanUp() }
            let taken = try LoopbackPort()
            defer { taken.release() }
            let environment = ["ENVIRONMENT": "testing", "DATABASE_URL": location.databaseURL, "SECRET_KEY": ProcessCrashTests.secretKey]
            let runs: [(arguments: [String], environment: [String: String], setting: String)] = [
                (["serve", "--port", "0"], ["METRICS_PORT": String(taken.number)], "METRICS_PORT"),
                (["serve", "--port", String(taken.number)], [:], "PORT"),
                (["worker"], ["METRICS_PORT": String(taken.number)], "METRICS_PORT"),
            ]
            for run in runs {
                let folioRun = try RunningFolio(folio, run.arguments, environment: environment.merging(run.environment) { $1 })
                let termination = await folioRun.exited()
                #expect(termination == .init(status: 1, reason: .exit), "\(run.arguments): \(folioRun.stderr.lines.suffix(20))")
                #expect(folioRun.stderr.lines.contains("Folio stopped: \(run.setting): 127.0.0.1:\(taken.number) is in use by another process; stop it or choose another port"),
                        "\(run.arguments): \(folioRun.stderr.lines.suffix(20))")
                #expect(!folioRun.stderr.lines.contains { $0.contains("Fatal error") || $0.contains("crashed") })
            }
        }
    }

    @Test("Alpaca paths become bounded endpoint labels: ids and symbols folded, no query")
    func alpacaEndpoints() {
        #expect(AlpacaBroker.endpoint("/v2/orders/61e69015-8549-4bfd-b9c3-01e75843f47d") == "/v2/orders/{id}")
        #expect(AlpacaBroker.endpoint("/v2/orders:by_client_order_id?client_order_id=abc") == "/v2/orders:by_client_order_id")
        #expect(AlpacaBroker.endpoint("/v2/positions/AAPL") == "/v2/positions/{symbol}")
        #expect(AlpacaBroker.endpoint("/v2/orders?status=open&limit=500") == "/v2/orders")
        #expect(AlpacaBroker.endpoint("/v2/account") == "/v2/account")
    }

    static let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test("the alert rules pass promtool check and their unit tests, and name only series Folio serves", .enabled(if: promtool != nil, "needs promtool (Debian's prometheus package; .ci/run installs it)"))
    func alertRules() async throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../ops/prometheus").standardized
        for arguments in [["check", "rules", "folio-alerts.yml"], ["test", "rules", "folio-alerts.test.yml"]] {
            let (status, text) = try await runTool(try #require(Self.promtool), arguments, in: folder)
            #expect(status == 0, "promtool \(arguments.joined(separator: " ")): \(text)")
        }
        let rules = try String(contentsOf: folder.appendingPathComponent("folio-alerts.yml"), encoding: .utf8)
        let served: Set<String> = [
            FolioMetrics.requestsTotal.name, FolioMetrics.securityEvents.name, FolioMetrics.webhookVerifications.name,
            FolioMetrics.constraintViolations.name, FolioMetrics.vendorCalls.name, FolioMetrics.jobs.name, FolioMetrics.jobAge.name,
            FolioMetrics.mails.name, FolioMetrics.sentryDropped.name, FolioMetrics.backups.name, FolioMetrics.backupLastSuccess.name,
            FolioMetrics.ordersRefused.name, FolioMetrics.backupScheduled.name, FolioMetrics.ordersOverdue.name, FolioMetrics.databaseReadable.name,
        ]
        let named = Set(rules.matches(of: /folio_[a-z_]+/).map { String($0.output) })
        #expect(named.subtracting(served).isEmpty, "rules name series Folio does not serve: \(named.subtracting(served))")
        // Every alert has its runbook entry, for the operator it wakes.
        let runbook = try String(contentsOf: folder.appendingPathComponent("../../docs/OPERATIONS.md").standardized, encoding: .utf8)
        let alerts = rules.matches(of: /- alert: (\w+)/).map { String($0.output.1) }
        #expect(alerts.count > 10)
        for alert in alerts { #expect(runbook.contains("### \(alert)\n"), "docs/OPERATIONS.md has no section for \(alert)") }
    }
}
