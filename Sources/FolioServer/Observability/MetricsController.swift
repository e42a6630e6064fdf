import Foundation
import Hummingbird
import Logging

/// `GET /metrics`: the Prometheus text format. With `OPS_TOKEN` set it needs
/// that token as a bearer token; without one it answers only loopback clients,
/// and in production not at all (404): it is never public.
struct MetricsController: Sendable {
    let metrics: FolioMetrics
    let jobs: JobQueue
    let clock: AppClock
    let opsToken: String?
    let production: Bool
    /// The market-data vendor's gate, when a vendor is configured.
    var marketData: VendorGate?
    /// The backups, whose newest on disk is the last success (taken by the worker's job or by hand).
    var backups: Backups?
    /// The orders and the exchange's calendar, for the DAY orders still open past their close.
    var trading: TradingStore?
    var calendar: ExchangeCalendar?

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        router.get("/metrics", use: scrape)
    }

    @Sendable func scrape(_ request: Request, context: FolioRequestContext) async throws -> Response {
        if let opsToken {
            guard AuthenticationMiddleware.presentsOpsToken(request, opsToken) else {
                throw AppError(.unauthorized, code: "unauthorized", detail: "Metrics need the operators' OPS_TOKEN as a bearer token.", headers: [.wwwAuthenticate: "Bearer"])
            }
        } else if production || !Self.isLoopback(context.clientIP) {
            throw AppError.notFound("page")
        }
        if let marketData { metrics.refreshGate(marketData) }
        if let backups {
            metrics.backupScheduled(backups.settings.scheduled)
            if let newest = backups.newestOnDisk() { metrics.backupOnDisk(at: newest) }
        }
        // Within a limit: a database that stopped answering must not hang the scrape (Prometheus would see the
        // process as down, and no alert could read the request series meanwhile).
        let metrics = self.metrics, jobs = self.jobs, clock = self.clock, trading = self.trading, calendar = self.calendar
        let refreshed = await resultWithin(Self.databaseReadLimit) { () async -> (any Error)? in
            do {
                try await metrics.refreshJobs(jobs, now: clock.now())
                try await metrics.refreshDatabase(jobs.database)
                if let trading, let calendar {
                    let close = calendar.current.lastClose(atOrBefore: clock.now().addingTimeInterval(-FolioMetrics.overdueGrace))
                    metrics.refreshOverdueOrders(try await trading.openDayOrders(placedBefore: close))
                }
                return nil
            } catch {
                return error
            }
        }
        // The request series still answer; the queue's are as last read.
        metrics.databaseRead(refreshed.map { $0 == nil } ?? false)
        switch refreshed {
        case .none:
            context.logger.warning("reading the job queue for metrics took longer than \(Self.databaseReadLimit); its series are as last read")
        case .some(.some(let error)):
            context.logger.warning("reading the job queue for metrics failed", metadata: ["error": .string(DatabaseErrorText.forLog(error))])
        case .some(.none):
            break
        }
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: metrics.exposition())))
    }

    /// How long a scrape waits for the database's figures (a scrape's own timeout is 10 s by default).
    static let databaseReadLimit: Duration = .seconds(3)

    static func isLoopback(_ address: String?) -> Bool {
        guard let address else { return false }
        return address == "::1" || address.hasPrefix("127.") || address == "localhost"
    }
}
