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

    public init(configuration: AppConfiguration, logger: Logger, database: FolioDatabase, clock: AppClock = .system) async {
        self.configuration = configuration
        self.logger = logger
        self.database = database
        self.identity = await IdentityServices.make(configuration: configuration, database: database, clock: clock)
        self.rateLimiter = RateLimiter(clock: clock)
        self.marketData = SimulatedMarketDataProvider(market: SimulatedMarket(), clock: clock)
        self.quotes = QuoteService(provider: marketData, clock: clock)
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
        AccountsController(ledger: identity.ledger, database: database).addRoutes(to: routes)
        MarketDataController(quotes: quotes, provider: marketData).addRoutes(to: routes)
        PortfolioController(database: database, quotes: quotes).addRoutes(to: routes)
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
        application.addServices(DatabaseService(database: database))
        return application
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
