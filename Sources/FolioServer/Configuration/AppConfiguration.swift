import Foundation
import Logging

/// Everything Folio reads from its environment, read once at start and handed down.
/// Nothing else in the server reads environment variables.
public struct AppConfiguration: Sendable {
    public enum Environment: String, Sendable, CaseIterable {
        case development, testing, production
    }

    public enum LogFormat: String, Sendable, CaseIterable {
        case json, text
    }

    public enum DatabaseLocation: Sendable, Equatable {
        case sqlite(path: String)
        case postgres(url: String)

        public var isPostgres: Bool {
            if case .postgres = self { return true }
            return false
        }
    }

    public enum SecretKeySource: Sendable, Equatable {
        case environment
        /// Development only: generated once and kept under the data directory.
        case generated(path: String)
    }

    public var environment: Environment
    public var debug: Bool
    public var testing: Bool
    public var secretKey: String
    public var secretKeySource: SecretKeySource
    public var allowedOrigins: [String]
    public var database: DatabaseLocation
    public var databasePoolSize: Int
    public var host: String
    public var port: Int
    public var logLevel: Logger.Level
    public var logFormat: LogFormat
    /// Largest request body accepted, in bytes.
    public var maxBodySize: Int
    /// Where the SQLite file and the development key live.
    public var dataDirectory: String
    /// Bearer token that unlocks operator detail on `/health/detailed` (optional).
    public var opsToken: String?

    public var isProduction: Bool { environment == .production }

    /// Development defaults; used by tests as a starting point.
    public init(
        environment: Environment = .development,
        secretKey: String = String(repeating: "k", count: 64),
        database: DatabaseLocation = .sqlite(path: "var/folio.sqlite")
    ) {
        self.environment = environment
        self.debug = false
        self.testing = environment == .testing
        self.secretKey = secretKey
        self.secretKeySource = .environment
        self.allowedOrigins = []
        self.database = database
        self.databasePoolSize = 10
        self.host = "127.0.0.1"
        self.port = 8080
        self.logLevel = .info
        self.logFormat = .json
        self.maxBodySize = 1_048_576
        self.dataDirectory = "var"
        self.opsToken = nil
    }
}

/// The reasons Folio refuses to start, all of them at once.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public var problems: [String]
    public var description: String {
        "Folio cannot start with this configuration:\n" + problems.map { "  - \($0)" }.joined(separator: "\n")
    }
}
