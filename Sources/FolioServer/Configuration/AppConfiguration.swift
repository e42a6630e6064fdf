import FolioDomain
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

        public var postgresURL: String? {
            if case .postgres(let url) = self { return url }
            return nil
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
    /// Test only (`FOLIO_TEST_PAUSE_AT`, with `TESTING`): a named point where
    /// the process stops and waits to be killed, so a crash test's kill lands
    /// exactly there. `FOLIO_TEST_PAUSE_SKIP` lets that many passes go by first.
    public var testPause: PausePoints.Setting?
    public var secretKey: String
    public var secretKeySource: SecretKeySource
    public var allowedOrigins: [String]
    public var database: DatabaseLocation
    public var databasePoolSize: Int
    /// PostgreSQL: send frequent statements as named prepared statements (off behind a pooler that cannot keep them).
    public var databasePreparedStatements: Bool
    public var host: String
    public var port: Int
    public var logLevel: Logger.Level
    public var logFormat: LogFormat
    /// Largest request body accepted, in bytes.
    public var maxBodySize: Int
    /// How many connections are held open at once and how long each may take.
    public var connections: ConnectionLimits
    /// Where the SQLite file and the development key live.
    public var dataDirectory: String
    /// Bearer token that unlocks operator detail on `/health/detailed` (optional).
    public var opsToken: String?

    // Identity and web security.
    /// Keys that still verify tokens during a rotation; `secretKey` signs.
    public var previousSecretKeys: [String]
    public var accessTokenLifetime: TimeInterval
    public var sessionIdleTimeout: TimeInterval
    public var sessionMaxAge: TimeInterval
    public var bcryptCost: Int
    /// The least time a sign-up, a reset request or a resend is answered in, known address or not, so that
    /// how long it took tells nothing of whether the address has an account (none in tests, which set their own).
    public var anonymousAnswerTime: TimeInterval
    public var csrfProtectionEnabled: Bool
    public var requireEmailVerification: Bool
    public var rateLimit: RateLimitSettings
    /// Peers whose `X-Forwarded-For` is believed (exact addresses).
    public var trustedProxies: [String]
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?
    /// Base URL used in links sent by email.
    public var publicURL: String
    /// Cash each new paper account starts with (100,000.00 by default, 0 in production).
    public var startingCash: Cash
    /// Adverse slippage on paper market fills, in basis points.
    public var paperSlippageBasisPoints: Ratio
    /// The paper broker fills half of what remains at each match instead of all of it.
    public var paperPartialFills: Bool
    /// The paper broker keeps the exchange's hours (`PAPER_MARKET_HOURS`, on
    /// except in tests): orders placed while the market is closed wait for the open.
    public var paperMarketHours: Bool
    /// Whether `folio serve` runs the job worker itself (`SERVE_WORKER`, default
    /// true); false when separate `folio worker` processes do the work.
    public var serveRunsWorker: Bool
    /// Submit jobs that may wait for a worker before placements are refused
    /// (`ORDER_BACKLOG_LIMIT`, default 2000; 0 turns the cap off). See `OrderBacklog`.
    public var orderBacklogLimit: Int
    /// Open orders one account may have (`MAX_OPEN_ORDERS`, default 1000); past it a placement is 409 `too_many_open_orders`.
    public var maximumOpenOrders: Int
    /// Extra cash a market buy reserves above the current price (0.05 is 5 %).
    public var marketBuyMargin: Ratio
    /// Alpha Vantage, when `ALPHA_VANTAGE_API_KEY` is set; the simulated market otherwise.
    public var alphaVantage: AlphaVantageSettings?
    /// How long a quote is served from the cache before it is refreshed.
    public var quoteTimeToLive: TimeInterval
    /// The deployment's own Alpaca keys (`ALPACA_API_KEY`, `ALPACA_SECRET_KEY`,
    /// `ALPACA_BASE_URL`): linked to the first admin's account. Every other
    /// user links their own keys through the API.
    public var alpaca: AlpacaSettings?
    /// Where Alpaca's paper and live Trading APIs are; a user's link names one of the two.
    public var alpacaURLs: AlpacaURLs
    /// How often each linked account's open orders are polled at Alpaca, in
    /// seconds (the trade stream brings fills in between); 0 in tests.
    public var alpacaPollSeconds: Int
    /// Listen to Alpaca's trade stream (`ALPACA_STREAM`, on by default); off, fills come by polling alone.
    public var alpacaStream: Bool

    /// Plaid, when `PLAID_CLIENT_ID` and `PLAID_SECRET` are set: linking
    /// banks and brokerages for balances, transactions and holdings. Without
    /// it, linking answers 503 `plaid_not_configured` and every webhook is refused.
    public var plaid: PlaidSettings?
    /// Count each request by route, method and status (`METRICS_ENABLED`, on by default); off, the
    /// request series stay empty and the middleware frame is gone (the benchmark compares the two).
    public var requestMetrics: Bool
    /// `METRICS_PORT`: `/metrics` also on its own listener bound to 127.0.0.1
    /// (no token there: only this machine can reach it, a local Prometheus or agent).
    public var metricsPort: Int?

    /// SendGrid, when `SENDGRID_API_KEY` and `MAIL_FROM` are set; otherwise mail
    /// stays in the development outbox (production refuses that unless
    /// `MAIL_BACKEND=outbox` says it is meant).
    public var sendGrid: SendGridSettings?
    /// Sentry, when `SENTRY_DSN` is set: every 500 and every dead job is reported.
    public var sentry: SentrySettings?
    /// Backups: where, how many are kept, the encryption key, and the PostgreSQL tools.
    public var backup: BackupSettings
    /// `READ_DATABASE_URL`: a streaming standby that reporting reads go to (PostgreSQL only).
    public var readDatabaseURL: String?
    /// `READ_REPLICA_MAX_LAG`: seconds behind the primary beyond which reads go back to the primary.
    public var readReplicaMaxLag: TimeInterval

    public struct BackupSettings: Sendable, Equatable, CustomStringConvertible {
        /// `BACKUP_DIR`: where `folio backup` and the daily job write (default `DATA_DIR/backups`).
        public var directory: String
        /// `BACKUP_ENCRYPTION_KEY`: when set, every backup file is sealed with AES-GCM under a key derived from it.
        public var encryptionKey: String?
        /// `PREVIOUS_BACKUP_ENCRYPTION_KEYS`: older keys, so backups taken before a rotation still open.
        public var previousEncryptionKeys: [String]
        /// `BACKUP_SCHEDULE`: the daily job (`daily`, the default) or none (`off`).
        public var scheduled: Bool
        /// Every backup of the `BACKUP_KEEP_DAILY` newest days with one, plus the newest of each of `BACKUP_KEEP_MONTHLY` months.
        public var keepDaily: Int
        public var keepMonthly: Int
        /// `PG_DUMP` and `PG_RESTORE`: the client tools, when not on the PATH or in /usr/lib/postgresql/*/bin.
        public var pgDump: String?
        public var pgRestore: String?

        public init(directory: String) {
            self.directory = directory
            self.encryptionKey = nil
            self.previousEncryptionKeys = []
            self.scheduled = true
            self.keepDaily = 7
            self.keepMonthly = 12
            self.pgDump = nil
            self.pgRestore = nil
        }

        public var description: String {
            "BackupSettings(directory: \(directory), encrypted: \(encryptionKey != nil), keep: \(keepDaily) daily, \(keepMonthly) monthly)"
        }
    }

    public struct SendGridSettings: Sendable, Equatable, CustomStringConvertible {
        public var apiKey: String
        /// The sender, a verified SendGrid sender identity (`MAIL_FROM`, `MAIL_FROM_NAME`).
        public var from: String
        public var fromName: String?
        /// `SENDGRID_BASE_URL`: https://api.sendgrid.com unless a test names its fake.
        public var baseURL: String
        /// The Event Webhook's verification key (`SENDGRID_WEBHOOK_PUBLIC_KEY`,
        /// base64 DER as SendGrid shows it); without it every event is refused.
        public var webhookPublicKey: String?

        public init(apiKey: String, from: String, fromName: String? = "Folio", baseURL: String = "https://api.sendgrid.com", webhookPublicKey: String? = nil) {
            self.apiKey = apiKey
            self.from = from
            self.fromName = fromName
            self.baseURL = baseURL
            self.webhookPublicKey = webhookPublicKey
        }

        /// Never the key.
        public var description: String { "SendGridSettings(from: \(from), baseURL: \(baseURL))" }
    }

    public struct SentrySettings: Sendable, Equatable, CustomStringConvertible {
        public var dsn: String
        /// `SENTRY_ENVIRONMENT`, by default `ENVIRONMENT`.
        public var environment: String
        /// `SENTRY_RELEASE`, by default `folio@<version>`.
        public var release: String

        public init(dsn: String, environment: String, release: String = "folio@\(FolioVersion.current)") {
            self.dsn = dsn
            self.environment = environment
            self.release = release
        }

        /// Never the DSN's key.
        public var description: String { "SentrySettings(environment: \(environment), release: \(release))" }
    }

    public struct PlaidSettings: Sendable, Equatable, CustomStringConvertible {
        public enum Environment: String, Sendable, Equatable {
            case sandbox, production
        }

        public var clientID: String
        public var secret: String
        public var environment: Environment
        /// Plaid's API: https://sandbox.plaid.com or https://production.plaid.com unless `PLAID_BASE_URL` names another (tests).
        public var baseURL: String
        /// Where Plaid sends webhooks: Folio's `/webhooks/plaid` as the internet reaches it.
        public var webhookURL: String?

        public init(clientID: String, secret: String, environment: Environment = .sandbox, baseURL: String? = nil, webhookURL: String? = nil) {
            self.clientID = clientID
            self.secret = secret
            self.environment = environment
            self.baseURL = baseURL ?? Self.defaultURL(of: environment)
            self.webhookURL = webhookURL
        }

        public static func defaultURL(of environment: Environment) -> String {
            environment == .production ? "https://production.plaid.com" : "https://sandbox.plaid.com"
        }

        /// Never the client id or secret.
        public var description: String { "PlaidSettings(environment: \(environment.rawValue), baseURL: \(baseURL))" }
    }

    public struct AlpacaURLs: Sendable, Equatable {
        public var paper: String
        public var live: String

        public init(paper: String = "https://paper-api.alpaca.markets", live: String = "https://api.alpaca.markets") {
            self.paper = paper
            self.live = live
        }
    }

    public struct AlpacaSettings: Sendable, Equatable, CustomStringConvertible {
        public var keyID: String
        public var secretKey: String
        /// Paper trading unless told otherwise.
        public var baseURL: String

        public init(keyID: String, secretKey: String, baseURL: String = "https://paper-api.alpaca.markets") {
            self.keyID = keyID
            self.secretKey = secretKey
            self.baseURL = baseURL
        }

        /// Never the keys: a value that reaches a log or an error names the URL only.
        public var description: String { "AlpacaSettings(baseURL: \(baseURL))" }
    }

    public struct AlphaVantageSettings: Sendable, Equatable {
        public var apiKey: String
        public var baseURL: String
        public var callsPerMinute: Int
        public var callsPerDay: Int

        public init(apiKey: String, baseURL: String = "https://www.alphavantage.co", callsPerMinute: Int = 5, callsPerDay: Int = 25) {
            self.apiKey = apiKey
            self.baseURL = baseURL
            self.callsPerMinute = callsPerMinute
            self.callsPerDay = callsPerDay
        }
    }

    /// Limits that keep slow or idle clients from holding the server's
    /// connections (and file descriptors): see docs/SECURITY.md.
    public struct ConnectionLimits: Sendable, Equatable {
        /// Open connections at most; past it, connections still waiting for a
        /// request are closed, oldest first, to make room.
        public var maxConnections: Int
        /// From connecting to a complete request head (slowloris).
        public var headerTimeout: TimeInterval
        /// From the request head to the end of its body.
        public var bodyTimeout: TimeInterval
        /// A kept-alive connection with no request in flight.
        public var idleTimeout: TimeInterval

        public init(maxConnections: Int = 1_000, headerTimeout: TimeInterval = 10, bodyTimeout: TimeInterval = 30, idleTimeout: TimeInterval = 30) {
            self.maxConnections = maxConnections
            self.headerTimeout = headerTimeout
            self.bodyTimeout = bodyTimeout
            self.idleTimeout = idleTimeout
        }
    }

    public struct RateLimitSettings: Sendable, Equatable {
        public var enabled: Bool
        /// Requests per minute for one client address, and for one signed-in user.
        public var requestsPerMinute: Int
        /// Requests per minute for one client address on /api/auth/*.
        public var authRequestsPerMinute: Int
        /// Requests per minute for one client address on /webhooks/*.
        public var webhookRequestsPerMinute: Int

        public init(enabled: Bool = true, requestsPerMinute: Int = 300, authRequestsPerMinute: Int = 20, webhookRequestsPerMinute: Int = 600) {
            self.enabled = enabled
            self.requestsPerMinute = requestsPerMinute
            self.authRequestsPerMinute = authRequestsPerMinute
            self.webhookRequestsPerMinute = webhookRequestsPerMinute
        }
    }

    public var isProduction: Bool { environment == .production }

    /// Every secret value in this configuration, for the log redactor to mask
    /// as literals: signing keys current and previous, the operator token, each
    /// vendor's key and secret, and the database password.
    public var secretValues: [String] {
        var values = [secretKey] + previousSecretKeys
        if let opsToken { values.append(opsToken) }
        if let alphaVantage { values.append(alphaVantage.apiKey) }
        if let alpaca { values += [alpaca.keyID, alpaca.secretKey] }
        if let plaid { values += [plaid.clientID, plaid.secret] }
        if let sendGrid { values.append(sendGrid.apiKey) }
        values += [backup.encryptionKey].compactMap { $0 } + backup.previousEncryptionKeys
        if let sentry, let dsn = try? SentryDSN(parsing: sentry.dsn) { values += [dsn.publicKey, dsn.legacySecretKey].compactMap { $0 } }
        // The database password as it is (decoded) and as the URL writes it (percent-encoded).
        for url in [database.postgresURL, readDatabaseURL].compactMap({ $0 }) {
            guard let components = URLComponents(string: url) else { continue }
            values += [components.password, components.percentEncodedPassword].compactMap { $0 }
        }
        return values.filter { !$0.isEmpty }
    }

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
        self.databasePreparedStatements = true
        self.host = "127.0.0.1"
        self.port = 8080
        self.logLevel = .info
        self.logFormat = .json
        self.maxBodySize = 1_048_576
        self.connections = ConnectionLimits()
        self.dataDirectory = "var"
        self.opsToken = nil
        self.previousSecretKeys = []
        self.accessTokenLifetime = 900
        self.sessionIdleTimeout = 1800
        self.sessionMaxAge = 43_200
        self.bcryptCost = 12
        self.anonymousAnswerTime = environment == .testing ? 0 : 0.25
        self.csrfProtectionEnabled = environment != .testing
        self.requireEmailVerification = true
        self.rateLimit = RateLimitSettings()
        self.trustedProxies = []
        self.tlsCertificatePath = nil
        self.tlsKeyPath = nil
        self.publicURL = "http://127.0.0.1:8080"
        self.startingCash = environment == .production ? 0 : 100_000
        self.paperSlippageBasisPoints = 0
        self.paperPartialFills = false
        self.paperMarketHours = environment != .testing
        self.serveRunsWorker = true
        self.orderBacklogLimit = 2000
        self.maximumOpenOrders = TradingRules.maximumOpenOrders
        self.marketBuyMargin = Ratio(uncheckedUnits: 50_000)  // 0.05
        self.alphaVantage = nil
        self.alpaca = nil
        self.plaid = nil
        self.sendGrid = nil
        self.sentry = nil
        self.backup = BackupSettings(directory: "var/backups")
        self.readDatabaseURL = nil
        self.readReplicaMaxLag = 10
        self.requestMetrics = true
        self.metricsPort = nil
        self.alpacaURLs = AlpacaURLs()
        self.alpacaPollSeconds = environment == .testing ? 0 : 15
        self.alpacaStream = true
        self.quoteTimeToLive = 15
    }
}

/// The reasons Folio refuses to start, all of them at once.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public var problems: [String]
    public var description: String {
        "Folio cannot start with this configuration:\n" + problems.map { "  - \($0)" }.joined(separator: "\n")
    }
}
