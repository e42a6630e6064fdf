import Foundation
import HTTPTypes
import Hummingbird

/// Liveness, readiness and a per-component report.
struct HealthController {
    let database: FolioDatabase
    let version: String
    let startedAt: ContinuousClock.Instant
    let opsToken: String?
    /// The market-data vendor's gate, when a vendor is configured.
    var marketData: VendorGate?
    /// Webhooks refused since start, by vendor and reason (the seed's alert on verification failures).
    var webhookRejections: WebhookRejections?

    struct Status: ResponseEncodable {
        var status: String
    }

    static var alive: Response {
        let body = ByteBuffer(string: #"{"status":"ok"}"#)
        return Response(
            status: .ok, headers: [.contentType: "application/json; charset=utf-8", .contentLength: String(body.readableBytes)],
            body: .init(byteBuffer: body))
    }

    struct Component: Encodable {
        var status: String
        var latencyMS: String?
        var applied: Int?
        var pending: Int?
        var version: String?
        var uptimeSeconds: Int?
        var kind: String?
        var error: String?
        /// The vendor gate: closed, held_off, open or half_open.
        var state: String?
        var retryAt: Date?
        var consecutiveFailures: Int?
        var rejected: [String: Int]?
        /// Where prices come from: `alpha_vantage`, or `simulated` (the built-in market).
        var source: String?

        enum CodingKeys: String, CodingKey {
            case status, applied, pending, version, kind, error, state, rejected, source
            case retryAt = "retry_at"
            case consecutiveFailures = "consecutive_failures"
            case latencyMS = "latency_ms"
            case uptimeSeconds = "uptime_seconds"
        }
    }

    struct Report: ResponseEncodable {
        var status: String
        var components: [String: Component]
    }

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        // Liveness is constant: the body is built once.
        router.get("/health") { _, _ in Self.alive }
        router.get("/api/health") { _, _ in Self.alive }
        router.get("/health/ready", use: ready)
        router.get("/health/detailed", use: detailed)
    }

    @Sendable func ready(_ request: Request, context: FolioRequestContext) async throws -> Status {
        let databaseCheck = await checkDatabase(context: context)
        let migrationCheck = await checkMigrations(context: context, databaseUp: databaseCheck.status == "ok")
        guard databaseCheck.status == "ok", migrationCheck.status == "ok" else {
            throw AppError(
                .serviceUnavailable, code: "not_ready", detail: "Folio is not ready to serve requests.",
                checks: ["database": databaseCheck.status, "migrations": migrationCheck.status])
        }
        return Status(status: "ready")
    }

    @Sendable func detailed(_ request: Request, context: FolioRequestContext) async throws -> Response {
        let databaseCheck = await checkDatabase(context: context)
        let migrationCheck = await checkMigrations(context: context, databaseUp: databaseCheck.status == "ok")
        let uptime = ContinuousClock.now - startedAt
        var components = [
            "database": databaseCheck,
            "migrations": migrationCheck,
            "application": Component(status: "ok", version: version, uptimeSeconds: Int(uptime.components.seconds)),
        ]
        if let gate = marketData {
            // A vendor in trouble degrades Folio (quotes go stale) but does not make it unavailable.
            let vendor = gate.report
            components["market_data"] = Component(
                status: vendor.state == "closed" ? "ok" : "degraded", error: vendor.reason, state: vendor.state, retryAt: vendor.retryAt,
                consecutiveFailures: vendor.consecutiveFailures, source: AlphaVantageProvider.name)
        }
        if !isOperator(request, context: context) {
            // Strangers learn whether each part works, nothing about versions or internals.
            components = components.mapValues { Component(status: $0.status) }
        } else {
            // Operators see where prices come from: simulated ones are no vendor's, and never degrade.
            if marketData == nil { components["market_data"] = Component(status: "ok", source: "simulated") }
            if let rejections = webhookRejections {
                // Operators see the webhooks refused since start; refusals are attacks or misconfiguration, not ill health.
                components["webhooks"] = Component(status: "ok", rejected: rejections.all)
            }
        }
        let healthy = components.values.allSatisfy { $0.status == "ok" || $0.status == "degraded" }
        let degraded = components.values.contains { $0.status == "degraded" }
        let report = Report(status: healthy ? (degraded ? "degraded" : "ok") : "unavailable", components: components)
        var response = try report.response(from: request, context: context)
        if !healthy { response.status = .serviceUnavailable }
        return response
    }

    /// An administrator's access token, or the operators' OPS_TOKEN as a bearer token.
    func isOperator(_ request: Request, context: FolioRequestContext) -> Bool {
        if context.identity?.role == .admin { return true }
        guard let opsToken else { return false }
        return AuthenticationMiddleware.presentsOpsToken(request, opsToken)
    }

    /// How long readiness waits for the database: a pool that gives out no connection is
    /// "down" within seconds (the balancer moves on), not after the pool's own minute.
    static let databaseCheckLimit: Duration = .seconds(5)

    func checkDatabase(context: FolioRequestContext) async -> Component {
        let start = ContinuousClock.now
        do {
            // Through every event loop's pool: one left without connections makes the instance not ready.
            let database = self.database
            guard let results = await resultWithin(Self.databaseCheckLimit, { await database.pingEachPool() }) else {
                context.logger.error("health: the database did not answer within \(Self.databaseCheckLimit)")
                return Component(status: "down", kind: database.kind.rawValue, error: "unreachable")
            }
            for case .failure(let error) in results { throw error }
            let elapsed = ContinuousClock.now - start
            let milliseconds = Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000
            return Component(status: "ok", latencyMS: String(format: "%.2f", milliseconds), kind: database.kind.rawValue)
        } catch {
            context.logger.error("health: database unreachable", metadata: ["error": .string(DatabaseErrorText.forLog(error))])
            return Component(status: "down", kind: database.kind.rawValue, error: "unreachable")
        }
    }

    /// Within the same limit as the database's check, and not asked of a database that is down: a database that
    /// stopped answering must make readiness a 503 in seconds, not after the pool's own minute (or never).
    func checkMigrations(context: FolioRequestContext, databaseUp: Bool) async -> Component {
        guard databaseUp else { return Component(status: "unknown", error: "could not read migrations") }
        let database = self.database
        let read = await resultWithin(Self.databaseCheckLimit) { () async -> Result<(pending: Int, applied: Int), any Error> in
            do {
                // Migrations of a newer Folio count as pending here: this build is not made for that schema.
                let status = try await database.migrationStatus()
                return .success((status.pending.count + status.newer.count, status.applied.count))
            } catch { return .failure(error) }
        }
        do {
            guard let read else {
                context.logger.error("health: the migrations could not be read within \(Self.databaseCheckLimit)")
                return Component(status: "unknown", error: "could not read migrations")
            }
            let (pending, applied) = try read.get()
            return Component(status: pending == 0 ? "ok" : "pending", applied: applied, pending: pending)
        } catch {
            // A check that cannot run denies.
            context.logger.error("health: migrations unknown", metadata: ["error": .string(DatabaseErrorText.forLog(error))])
            return Component(status: "unknown", error: "could not read migrations")
        }
    }
}
