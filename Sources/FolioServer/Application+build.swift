import FluentKit
import FolioDomain
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOSSL
import ServiceLifecycle

public enum FolioVersion {
    public static let current = "0.1.0"
}

/// The composition root: everything the server is made of is wired here.
public struct FolioServerBuilder: Sendable {
    public let configuration: AppConfiguration
    public let logger: Logger
    public let database: FolioDatabase
    let identity: IdentityServices
    let rateLimiter: RateLimiter
    let marketData: any MarketDataProvider
    let quotes: QuoteService
    let orders: OrderService
    let snapshots: PortfolioSnapshots
    /// Submits orders and rechecks resting ones; runs as a service in `serve`.
    let worker: JobWorker

    public init(configuration: AppConfiguration, logger: Logger, database: FolioDatabase, clock: AppClock = .system) async {
        self.configuration = configuration
        self.logger = logger
        self.database = database
        self.identity = await IdentityServices.make(configuration: configuration, database: database, clock: clock)
        self.rateLimiter = RateLimiter(clock: clock)
        self.marketData = Self.marketDataProvider(configuration: configuration, database: database, clock: clock, logger: logger)
        self.quotes = QuoteService(provider: marketData, store: QuoteStore(database: database), clock: clock, timeToLive: configuration.quoteTimeToLive)
        let jobs = JobQueue(database: database, clock: clock)
        let orders = OrderService(
            database: database, clock: clock, audit: identity.audit, jobs: jobs,
            broker: PaperBroker(quotes: quotes, clock: clock, slippageBasisPoints: configuration.paperSlippageBasisPoints, partialFills: configuration.paperPartialFills),
            quotes: quotes, marketBuyMargin: configuration.marketBuyMargin)
        self.orders = orders
        let snapshots = PortfolioSnapshots(database: database, quotes: quotes, clock: clock, logger: logger)
        self.snapshots = snapshots
        let scheduler = JobScheduler(database: database, queue: jobs, schedules: [PortfolioSnapshots.schedule])
        self.worker = JobWorker(
            queue: jobs,
            handlers: [
                OrderService.submitJob: { job in
                    guard let id = job.payloadValue("order_id").flatMap(UUID.init(uuidString:)) else {
                        throw JobWorker.JobError.badPayload
                    }
                    try await orders.submit(orderID: id)
                },
                PortfolioSnapshots.job: { job in
                    guard let due = job.payloadValue("due").flatMap(TimeInterval.init) else {
                        throw JobWorker.JobError.badPayload
                    }
                    try await snapshots.snapshotAll(day: TradingDay(Date(timeIntervalSince1970: due)))
                },
            ],
            name: "worker-\(UUID().uuidString.prefix(8).lowercased())", pollInterval: .milliseconds(200), logger: logger,
            onIdle: {
                do { try await scheduler.enqueueDue() } catch { logger.error("job schedules failed", metadata: ["error": "\(error)"]) }
                try? await orders.recheckRestingOrders()
            })
    }

    /// Alpha Vantage when a key is configured, the simulated market otherwise.
    static func marketDataProvider(configuration: AppConfiguration, database: FolioDatabase, clock: AppClock, logger: Logger) -> any MarketDataProvider {
        guard let settings = configuration.alphaVantage else { return SimulatedMarketDataProvider(market: SimulatedMarket(), clock: clock) }
        return AlphaVantageProvider(
            apiKey: settings.apiKey, baseURL: settings.baseURL,
            budget: CallBudget(database: database, provider: AlphaVantageProvider.name, perMinute: settings.callsPerMinute, perDay: settings.callsPerDay, clock: clock),
            clock: clock, httpClient: .shared, logger: logger)
    }

    /// The router with every route and middleware. `extraRoutes` lets tests add
    /// routes behind the same middleware stack.
    public func buildRouter(extraRoutes: (RecordingRouter<FolioRequestContext>) -> Void = { _ in }) -> Router<FolioRequestContext> {
        let router = Router(context: FolioRequestContext.self)
        let table = RouteTable()
        let routes = RecordingRouter(router: router, table: table)
        // Outermost first; each sees what the ones inside it answer.
        routes.add(middleware: SecurityHeadersMiddleware(production: configuration.isProduction))
        routes.add(middleware: RequestLoggingMiddleware(trustedProxies: Set(configuration.trustedProxies)))
        routes.add(middleware: CORSMiddleware(configuration: configuration, security: identity.security))
        routes.add(middleware: RateLimitMiddleware(scope: .client, settings: configuration.rateLimit, limiter: rateLimiter, security: identity.security))
        routes.add(middleware: ProblemMiddleware(routes: table))
        routes.add(middleware: RequestBodyMiddleware(maxBodySize: configuration.maxBodySize, logBodies: configuration.debug))
        if configuration.csrfProtectionEnabled {
            routes.add(middleware: OriginGuardMiddleware(configuration: configuration, security: identity.security))
        }
        routes.add(middleware: AuthenticationMiddleware(services: identity))
        routes.add(middleware: RateLimitMiddleware(scope: .user, settings: configuration.rateLimit, limiter: rateLimiter, security: identity.security))

        HealthController(database: database, version: FolioVersion.current, startedAt: .now, opsToken: configuration.opsToken)
            .addRoutes(to: routes)
        AuthController(services: identity).addRoutes(to: routes)
        TwoFactorController(services: identity).addRoutes(to: routes)
        AdminController(services: identity).addRoutes(to: routes)
        let idempotency = Idempotency(database: database, clock: identity.clock)
        AccountsController(ledger: identity.ledger, database: database, idempotency: idempotency).addRoutes(to: routes)
        MarketDataController(quotes: quotes).addRoutes(to: routes)
        PortfolioController(database: database, quotes: quotes, snapshots: snapshots).addRoutes(to: routes)
        OrdersController(orders: orders, database: database, idempotency: idempotency).addRoutes(to: routes)
        extraRoutes(routes)
        return router
    }

    public func buildApplication(
        extraRoutes: (RecordingRouter<FolioRequestContext>) -> Void = { _ in }
    ) throws -> some ApplicationProtocol {
        var application = Application(
            router: buildRouter(extraRoutes: extraRoutes),
            server: try serverBuilder(),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            logger: logger)
        application.addServices(DatabaseService(database: database), worker)
        return application
    }

    /// Runs only the job worker (for `folio worker`), until SIGTERM or SIGINT.
    public func runWorker() async throws {
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: worker), .init(service: DatabaseService(database: database))],
                                 gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    /// HTTP/1.1, over TLS when TLS_CERT_PATH and TLS_KEY_PATH are set.
    func serverBuilder() throws -> HTTPServerBuilder {
        guard let certificatePath = configuration.tlsCertificatePath, let keyPath = configuration.tlsKeyPath else { return .http1() }
        let certificates = try NIOSSLCertificate.fromPEMFile(certificatePath).map { NIOSSLCertificateSource.certificate($0) }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: certificates, privateKey: .privateKey(try NIOSSLPrivateKey(file: keyPath, format: .pem)))
        tls.minimumTLSVersion = .tlsv12
        return try .tls(.http1(), tlsConfiguration: tls)
    }
}

/// Closes the database pools when the service group shuts down.
struct DatabaseService: Service {
    let database: FolioDatabase

    func run() async throws {
        try? await gracefulShutdown()
        await database.shutdown()
    }
}

extension Logger {
    /// The process logger: Folio's handler with the configured level and format.
    public static func folio(label: String = "folio", configuration: AppConfiguration, sink: @escaping FolioLogHandler.Sink = StandardOutput.writeLine) -> Logger {
        Logger(label: label) { label in
            FolioLogHandler(label: label, level: configuration.logLevel, format: configuration.logFormat, sink: sink)
        }
    }
}
