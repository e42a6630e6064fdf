import FluentKit
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

public enum FolioVersion {
    public static let current = "0.1.0"
}

/// The composition root: everything the server is made of is wired here.
public struct FolioServerBuilder {
    public let configuration: AppConfiguration
    public let logger: Logger
    public let database: FolioDatabase

    public init(configuration: AppConfiguration, logger: Logger, database: FolioDatabase) {
        self.configuration = configuration
        self.logger = logger
        self.database = database
    }

    /// The router with every route and middleware. `extraRoutes` lets tests add
    /// routes behind the same middleware stack.
    public func buildRouter(extraRoutes: (RecordingRouter<FolioRequestContext>) -> Void = { _ in }) -> Router<FolioRequestContext> {
        let router = Router(context: FolioRequestContext.self)
        let table = RouteTable()
        let routes = RecordingRouter(router: router, table: table)
        routes.add(middleware: RequestLoggingMiddleware())
        routes.add(middleware: ProblemMiddleware(routes: table))
        routes.add(middleware: RequestBodyMiddleware(maxBodySize: configuration.maxBodySize, logBodies: configuration.debug))

        HealthController(database: database, version: FolioVersion.current, startedAt: .now, opsToken: configuration.opsToken)
            .addRoutes(to: routes)
        extraRoutes(routes)
        return router
    }

    public func buildApplication(
        extraRoutes: (RecordingRouter<FolioRequestContext>) -> Void = { _ in }
    ) -> some ApplicationProtocol {
        var application = Application(
            router: buildRouter(extraRoutes: extraRoutes),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            logger: logger)
        application.addServices(DatabaseService(database: database))
        return application
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
