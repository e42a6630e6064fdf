import FolioDomain
import Foundation
import Logging
import FluentPostgresDriver

/// Builds an `AppConfiguration` from the process environment and an optional
/// `.env` file (the environment wins), and refuses insecure production settings.
public enum ConfigurationLoader {
    /// Values that must never sign tokens: framework defaults, tutorial values and
    /// the value shipped in `.env.example`.
    static let knownWeakSecrets: Set<String> = [
        "secret", "changeme", "change-me", "changethis", "password", "dev", "development", "test", "testing",
        "your-secret-key", "your_secret_key", "your-secret-key-here", "yoursecretkey", "supersecret",
        "super-secret-key", "secret-key", "secret_key", "mysecret", "default", "insecure", "jwt-secret",
        "replace-with-output-of-openssl-rand-hex-32",
    ]
    public static let minimumSecretKeyBytes = 32

    public static func load(
        processEnvironment: [String: String] = ProcessInfo.processInfo.environment,
        envFile: String? = ".env",
        envFileRequired: Bool = false,
        environmentOverride: AppConfiguration.Environment? = nil,
        overrides: [String: String] = [:]
    ) throws -> AppConfiguration {
        var values: [String: String] = [:]
        if let envFile {
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: envFile, isDirectory: &isDirectory)
            if exists, isDirectory.boolValue { throw ConfigurationError(problems: ["\(envFile): is a directory, not a settings file"]) }
            if !exists, envFileRequired { throw ConfigurationError(problems: ["\(envFile): no such file"]) }
            do {
                values = try DotEnv.load(path: envFile)
            } catch {
                throw ConfigurationError(problems: ["\(envFile): \(error)"])
            }
        }
        values.merge(processEnvironment) { _, environment in environment }
        // Command-line options win, and values derived from them (PUBLIC_URL from HOST and PORT) follow.
        values.merge(overrides) { _, override in override }
        return try make(from: values, environmentOverride: environmentOverride)
    }

    public static func make(
        from values: [String: String],
        environmentOverride: AppConfiguration.Environment? = nil
    ) throws -> AppConfiguration {
        var problems: [String] = []
        func value(_ key: String) -> String? {
            guard let raw = values[key]?.trimmingCharacters(in: .whitespaces), !raw.isEmpty else { return nil }
            return raw
        }
        func flag(_ key: String) -> Bool {
            guard let raw = value(key) else { return false }
            switch raw.lowercased() {
            case "1", "true", "yes", "on": return true
            case "0", "false", "no", "off": return false
            default:
                problems.append("\(key) must be true or false, not \"\(raw)\"")
                return false
            }
        }
        func integer(_ key: String, default fallback: Int, range: ClosedRange<Int>) -> Int {
            guard let raw = value(key) else { return fallback }
            guard let number = Int(raw), range.contains(number) else {
                problems.append("\(key) must be a whole number from \(range.lowerBound) to \(range.upperBound), not \"\(raw)\"")
                return fallback
            }
            return number
        }

        var configuration = AppConfiguration()
        if let environment = environmentOverride {
            configuration.environment = environment
        } else if let raw = value("ENVIRONMENT") {
            if let environment = AppConfiguration.Environment(rawValue: raw.lowercased()) {
                configuration.environment = environment
            } else {
                problems.append("ENVIRONMENT must be one of development, testing, production, not \"\(raw)\"")
            }
        }
        let production = configuration.environment == .production
        configuration.debug = flag("DEBUG")
        configuration.testing = value("TESTING") == nil ? configuration.environment == .testing : flag("TESTING")
        if let raw = value("FOLIO_TEST_PAUSE_AT") {
            if let point = PausePoints.Point(rawValue: raw), configuration.testing {
                configuration.testPause = .init(point: point, skip: integer("FOLIO_TEST_PAUSE_SKIP", default: 0, range: 0...1_000_000))
            } else if !configuration.testing {
                problems.append("FOLIO_TEST_PAUSE_AT is for tests only: it needs TESTING=true (ENVIRONMENT=testing)")
            } else {
                problems.append("FOLIO_TEST_PAUSE_AT must be one of \(PausePoints.Point.allCases.map(\.rawValue).joined(separator: ", ")), not \"\(raw)\"")
            }
        }
        configuration.dataDirectory = value("DATA_DIR") ?? "var"
        configuration.host = value("HOST") ?? "127.0.0.1"
        configuration.port = integer("PORT", default: 8080, range: 0...65535)
        configuration.databasePoolSize = integer("DATABASE_POOL_SIZE", default: 10, range: 1...200)
        configuration.databasePreparedStatements = value("DATABASE_PREPARED_STATEMENTS") == nil || flag("DATABASE_PREPARED_STATEMENTS")
        configuration.maxBodySize = integer("MAX_BODY_SIZE", default: 1_048_576, range: 1024...104_857_600)
        configuration.connections = .init(
            maxConnections: integer("MAX_CONNECTIONS", default: 1_000, range: 1...100_000),
            headerTimeout: TimeInterval(integer("HTTP_HEADER_TIMEOUT_SECONDS", default: 10, range: 1...300)),
            bodyTimeout: TimeInterval(integer("HTTP_BODY_TIMEOUT_SECONDS", default: 30, range: 1...3_600)),
            idleTimeout: TimeInterval(integer("HTTP_IDLE_TIMEOUT_SECONDS", default: 30, range: 1...3_600)))
        if let raw = value("LOG_LEVEL") {
            if let level = Logger.Level(rawValue: raw.lowercased()) {
                configuration.logLevel = level
            } else {
                problems.append("LOG_LEVEL must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), not \"\(raw)\"")
            }
        }
        if let raw = value("LOG_FORMAT") {
            if let format = AppConfiguration.LogFormat(rawValue: raw.lowercased()) {
                configuration.logFormat = format
            } else {
                problems.append("LOG_FORMAT must be json or text, not \"\(raw)\"")
            }
        }

        // Origins: exact scheme://host[:port], never a wildcard.
        let origins = (value("ALLOWED_ORIGINS") ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        for origin in origins where origin != "*" && !isOrigin(origin) {
            problems.append("ALLOWED_ORIGINS entry \"\(Self.withoutCredentials(origin))\" is not an origin like https://app.example.com")
        }
        configuration.allowedOrigins = origins.filter { $0 != "*" }
        // In every environment: a wildcard dropped in silence would leave a developer puzzling over refused requests.
        if origins.contains("*") {
            problems.append("ALLOWED_ORIGINS contains \"*\": list each allowed origin explicitly")
        }
        if production {
            if origins.isEmpty {
                problems.append("ALLOWED_ORIGINS is empty: list the origins of your web clients, e.g. https://app.example.com")
            }
            // A page served over plain HTTP can be changed on the way; only a browser on this machine is exempt.
            for origin in origins where isOrigin(origin) && origin.lowercased().hasPrefix("http://") && !isLoopbackOrigin(origin) {
                problems.append("ALLOWED_ORIGINS entry \"\(Self.withoutCredentials(origin))\" is not HTTPS: production allows only https:// origins (or loopback)")
            }
        }

        // Database.
        if let url = value("DATABASE_URL") {
            if let location = databaseLocation(from: url) {
                configuration.database = location
            } else {
                problems.append("DATABASE_URL must be postgres://USER:PASSWORD@HOST:PORT/NAME (with sslmode disable, prefer or require, if any), postgresql://… or sqlite:PATH; the value given is not (not shown: it may hold a password)")
            }
        } else {
            configuration.database = .sqlite(path: configuration.dataDirectory + "/folio.sqlite")
        }
        if let url = value("READ_DATABASE_URL") {
            if !url.lowercased().hasPrefix("postgres://") && !url.lowercased().hasPrefix("postgresql://") || !isUsablePostgresURL(url) {
                problems.append("READ_DATABASE_URL must be a postgres:// URL of a streaming standby that the driver can use (a host, a numeric port, sslmode disable, prefer or require); the value given is not (not shown: it may hold a password)")
            } else if !configuration.database.isPostgres {
                problems.append("READ_DATABASE_URL needs DATABASE_URL to be PostgreSQL too (a replica of it)")
            } else {
                configuration.readDatabaseURL = url
            }
        }
        configuration.readReplicaMaxLag = TimeInterval(integer("READ_REPLICA_MAX_LAG", default: 10, range: 0...3600))
        // A DATABASE_URL refused above is said once.
        if production, !configuration.database.isPostgres, value("DATABASE_URL").map({ databaseLocation(from: $0) != nil }) ?? true {
            problems.append("DATABASE_URL does not name PostgreSQL: production needs postgres://user:password@host:5432/folio (SQLite is for development)")
        }

        // Secret key.
        let secret = value("SECRET_KEY")
        if production {
            if let secret {
                problems += weaknesses(ofSecretKey: secret)
            } else {
                problems.append("SECRET_KEY is not set: generate one with `openssl rand -hex 32`")
            }
            if configuration.debug { problems.append("DEBUG=true is not allowed in production") }
            if configuration.testing { problems.append("TESTING=true is not allowed in production") }
        } else if let secret {
            // Outside production a short key is still refused: the JWT library needs 32 bytes.
            if secret.utf8.count < minimumSecretKeyBytes {
                problems.append("SECRET_KEY is \(secret.utf8.count) bytes; it must be at least \(minimumSecretKeyBytes) bytes (generate one with `openssl rand -hex 32`)")
            }
        }
        if let raw = value("OPS_TOKEN") {
            if raw.utf8.count < minimumSecretKeyBytes {
                problems.append("OPS_TOKEN is \(raw.utf8.count) bytes; it must be at least \(minimumSecretKeyBytes) bytes")
            } else if production, let why = guessable(raw) {
                problems.append("OPS_TOKEN \(why): draw it at random, e.g. `openssl rand -hex 32`")
            }
            // The token is handed to monitoring; the key signs every session. One leaking must not give the other.
            if production, raw == secret { problems.append("OPS_TOKEN is the same as SECRET_KEY: give each its own random value") }
            configuration.opsToken = raw
        }

        // Identity and web security.
        let previousKeys = (value("PREVIOUS_SECRET_KEYS") ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        for (index, key) in previousKeys.enumerated() {
            if key.utf8.count < minimumSecretKeyBytes {
                problems.append("PREVIOUS_SECRET_KEYS entry \(index + 1) is \(key.utf8.count) bytes; each key must be at least \(minimumSecretKeyBytes) bytes")
            } else if production, let reason = guessable(key) {
                // A previous key still verifies tokens and CSRF tokens: a guessable one would let anyone sign what Folio accepts.
                problems.append(
                    "PREVIOUS_SECRET_KEYS entry \(index + 1) \(reason): it would still verify sign-in tokens. Seal what it protects again with "
                        + "`folio secrets rotate --env development` (same DATABASE_URL and keys), then remove it")
            }
        }
        configuration.previousSecretKeys = previousKeys
        configuration.accessTokenLifetime = TimeInterval(integer("ACCESS_TOKEN_TTL", default: 900, range: 60...86_400))
        configuration.sessionIdleTimeout = TimeInterval(integer("SESSION_IDLE_TIMEOUT", default: 1800, range: 60...2_592_000))
        configuration.sessionMaxAge = TimeInterval(integer("SESSION_MAX_AGE", default: 43_200, range: 300...31_536_000))
        configuration.bcryptCost = integer("BCRYPT_COST", default: 12, range: 10...16)
        configuration.csrfProtectionEnabled = value("CSRF_PROTECTION_ENABLED") == nil ? !configuration.testing : flag("CSRF_PROTECTION_ENABLED")
        if production, value("CSRF_PROTECTION_ENABLED") != nil, !configuration.csrfProtectionEnabled {
            problems.append("CSRF_PROTECTION_ENABLED=false is not allowed in production")
        }
        configuration.requireEmailVerification = value("REQUIRE_EMAIL_VERIFICATION") == nil ? true : flag("REQUIRE_EMAIL_VERIFICATION")
        configuration.rateLimit = .init(
            enabled: value("RATE_LIMIT_ENABLED") == nil ? true : flag("RATE_LIMIT_ENABLED"),
            requestsPerMinute: integer("RATE_LIMIT_PER_MINUTE", default: 300, range: 1...1_000_000),
            authRequestsPerMinute: integer("AUTH_RATE_LIMIT_PER_MINUTE", default: 20, range: 1...1_000_000),
            webhookRequestsPerMinute: integer("WEBHOOK_RATE_LIMIT_PER_MINUTE", default: 600, range: 1...1_000_000))
        if production, value("RATE_LIMIT_ENABLED") != nil, !configuration.rateLimit.enabled {
            problems.append("RATE_LIMIT_ENABLED=false is not allowed in production")
        }
        configuration.trustedProxies = (value("TRUSTED_PROXIES") ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        for entry in TrustedProxies.invalidEntries(configuration.trustedProxies) {
            problems.append("TRUSTED_PROXIES entry \"\(entry)\" is not an IP address or a CIDR range like 10.0.0.0/8")
        }
        // Trusting every address lets any client name its own address in X-Forwarded-For, and so step around
        // every per-address limit (sign-in attempts included), as RATE_LIMIT_ENABLED=false would.
        if production {
            for entry in configuration.trustedProxies {
                switch TrustedProxies.reach(of: entry) {
                case .everyAddress:
                    problems.append("TRUSTED_PROXIES entry \"\(entry)\" trusts every address: list your proxies' own addresses or ranges")
                case .widerThanAPrivateNetwork:
                    problems.append("TRUSTED_PROXIES entry \"\(entry)\" is wider than any private network (10.0.0.0/8, fc00::/7): list your proxies' own addresses or ranges")
                case .network, nil: break
                }
            }
        }
        configuration.tlsCertificatePath = value("TLS_CERT_PATH")
        configuration.tlsKeyPath = value("TLS_KEY_PATH")
        if (configuration.tlsCertificatePath == nil) != (configuration.tlsKeyPath == nil) {
            problems.append("TLS_CERT_PATH and TLS_KEY_PATH must be set together")
        }
        for path in [configuration.tlsCertificatePath, configuration.tlsKeyPath].compactMap({ $0 }) where !FileManager.default.isReadableFile(atPath: path) {
            problems.append("TLS file \(path) cannot be read")
        }
        let scheme = configuration.tlsCertificatePath == nil ? "http" : "https"
        configuration.publicURL = "\(scheme)://\(configuration.host):\(configuration.port)"
        // Mail links are built on PUBLIC_URL: a wrong one sends every user a link that leads nowhere.
        if let raw = value("PUBLIC_URL") {
            if let url = publicURL(raw) {
                configuration.publicURL = url
                if production, url.lowercased().hasPrefix("http://"), !isLoopbackOrigin(url) {
                    problems.append("PUBLIC_URL \"\(Self.withoutCredentials(raw))\" is not HTTPS: production mails links with tokens in them, which must not travel in the clear")
                }
            } else {
                problems.append("PUBLIC_URL must be the address users reach Folio at, such as https://folio.example.com (no path, query, fragment or user name), not \"\(Self.withoutCredentials(raw))\"")
            }
        } else if production {
            problems.append("PUBLIC_URL is not set: links in mail would point at \(configuration.publicURL); set the address users reach Folio at, e.g. https://folio.example.com")
        }
        if let raw = value("STARTING_CASH") {
            if let amount = try? Cash(parsing: raw), !amount.isNegative, amount.places <= Cash.centPlaces, amount <= TradingRules.maximumMovement {
                configuration.startingCash = amount
            } else {
                problems.append("STARTING_CASH must be an amount such as 100000.00, not \"\(raw)\"")
            }
        } else {
            configuration.startingCash = production ? 0 : 100_000
        }
        if let raw = value("PAPER_SLIPPAGE_BPS") {
            if let bps = try? Ratio(parsing: raw), !bps.isNegative, bps <= 1000 { configuration.paperSlippageBasisPoints = bps } else {
                problems.append("PAPER_SLIPPAGE_BPS must be from 0 to 1000 basis points, not \"\(raw)\"")
            }
        }
        configuration.paperPartialFills = flag("PAPER_PARTIAL_FILLS")
        configuration.paperMarketHours = value("PAPER_MARKET_HOURS") == nil ? !configuration.testing : flag("PAPER_MARKET_HOURS")
        configuration.serveRunsWorker = value("SERVE_WORKER") == nil || flag("SERVE_WORKER")
        configuration.orderBacklogLimit = integer("ORDER_BACKLOG_LIMIT", default: 2000, range: 0...10_000_000)
        configuration.maximumOpenOrders = integer("MAX_OPEN_ORDERS", default: TradingRules.maximumOpenOrders, range: 1...100_000)
        if let raw = value("MARKET_BUY_MARGIN") {
            if let margin = try? Ratio(parsing: raw), !margin.isNegative, margin <= 1 { configuration.marketBuyMargin = margin } else {
                problems.append("MARKET_BUY_MARGIN must be a fraction from 0 to 1 (0.05 is 5 %), not \"\(raw)\"")
            }
        }
        // A market buy reserves its quote plus the margin; the paper broker fills it at the quote plus the slippage.
        // Slippage past the margin makes an order placed with all of the cash it covers rejected at its fill.
        if configuration.paperSlippageBasisPoints.units > configuration.marketBuyMargin.units * 10_000 {
            let marginPoints = configuration.marketBuyMargin.units * 10_000 / Int128(Ratio.one)
            problems.append(
                "PAPER_SLIPPAGE_BPS (\(configuration.paperSlippageBasisPoints)) is more than MARKET_BUY_MARGIN (\(configuration.marketBuyMargin), \(marginPoints) basis points): "
                    + "a market buy reserved at its quote plus the margin could not pay its slipped fill; raise MARKET_BUY_MARGIN or lower the slippage")
        }
        if let apiKey = value("ALPHA_VANTAGE_API_KEY") {
            var settings = AppConfiguration.AlphaVantageSettings(apiKey: apiKey)
            if let raw = value("ALPHA_VANTAGE_BASE_URL") {
                if let url = URL(string: raw), ["http", "https"].contains(url.scheme ?? ""), url.host != nil { settings.baseURL = raw } else {
                    problems.append("ALPHA_VANTAGE_BASE_URL must be an http(s) URL such as https://www.alphavantage.co, not \"\(Self.withoutCredentials(raw))\"")
                }
                if production, !raw.hasPrefix("https://") { problems.append("ALPHA_VANTAGE_BASE_URL must use https in production") }
            }
            settings.callsPerMinute = integer("ALPHA_VANTAGE_CALLS_PER_MINUTE", default: 5, range: 1...10_000)
            settings.callsPerDay = integer("ALPHA_VANTAGE_CALLS_PER_DAY", default: 25, range: 1...10_000_000)
            configuration.alphaVantage = settings
        }
        // Orders are priced, reserved and rebalanced at these prices: in production the simulated market must be chosen on purpose.
        let marketData = value("MARKET_DATA")?.lowercased()
        switch marketData {
        case "simulated":
            if configuration.alphaVantage != nil { problems.append("MARKET_DATA=simulated and ALPHA_VANTAGE_API_KEY are both set: choose one") }
            configuration.alphaVantage = nil
        case "alpha_vantage", nil:
            if configuration.alphaVantage == nil, marketData != nil || production {
                problems.append(
                    "no market data is configured: set ALPHA_VANTAGE_API_KEY for real prices, or MARKET_DATA=simulated to price orders with the built-in simulated market on purpose")
            }
        case let other?:
            problems.append("MARKET_DATA must be alpha_vantage or simulated, not \"\(other)\"")
        }
        // Alpaca's two Trading APIs (overridable for tests and proxies), and the deployment's own keys.
        func alpacaURL(_ key: String, default fallback: String) -> String {
            guard let raw = value(key) else { return fallback }
            guard let url = URL(string: raw), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
                problems.append("\(key) must be an http(s) URL such as \(fallback), not \"\(Self.withoutCredentials(raw))\"")
                return fallback
            }
            if production, url.scheme != "https" { problems.append("\(key) must use https in production") }
            return raw
        }
        configuration.alpacaURLs = .init(
            paper: alpacaURL("ALPACA_PAPER_URL", default: "https://paper-api.alpaca.markets"),
            live: alpacaURL("ALPACA_LIVE_URL", default: "https://api.alpaca.markets"))
        // The seed's names, and the *_ID spellings Alpaca's own tools use.
        let keyID = value("ALPACA_API_KEY") ?? value("ALPACA_API_KEY_ID"), secretKey = value("ALPACA_SECRET_KEY") ?? value("ALPACA_API_SECRET_KEY")
        if keyID != nil || secretKey != nil {
            if keyID == nil { problems.append("ALPACA_SECRET_KEY is set without ALPACA_API_KEY") }
            if secretKey == nil { problems.append("ALPACA_API_KEY is set without ALPACA_SECRET_KEY") }
            configuration.alpaca = .init(
                keyID: keyID ?? "", secretKey: secretKey ?? "", baseURL: alpacaURL("ALPACA_BASE_URL", default: configuration.alpacaURLs.paper))
        } else if value("ALPACA_BASE_URL") != nil {
            // Read only with the deployment's keys: alone it would change nothing, silently.
            problems.append("ALPACA_BASE_URL is set without ALPACA_API_KEY and ALPACA_SECRET_KEY: it names where those keys trade; the Alpaca accounts users link use ALPACA_PAPER_URL and ALPACA_LIVE_URL")
        }
        configuration.requestMetrics = value("METRICS_ENABLED") == nil ? true : flag("METRICS_ENABLED")
        if let raw = value("METRICS_PORT") {
            if let port = Int(raw), (1...65_535).contains(port), port != configuration.port { configuration.metricsPort = port } else {
                problems.append("METRICS_PORT must be a port from 1 to 65535 other than PORT, not \"\(raw)\"")
            }
        }
        configuration.plaid = plaidSettings(value: value, production: production, problems: &problems)
        configuration.sendGrid = sendGridSettings(value: value, production: production, problems: &problems)
        configuration.sentry = sentrySettings(value: value, environment: configuration.environment.rawValue, production: production, problems: &problems)
        var backup = AppConfiguration.BackupSettings(directory: value("BACKUP_DIR") ?? configuration.dataDirectory + "/backups")
        backup.encryptionKey = value("BACKUP_ENCRYPTION_KEY")
        backup.previousEncryptionKeys = (value("PREVIOUS_BACKUP_ENCRYPTION_KEYS") ?? "").split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        for key in [backup.encryptionKey].compactMap({ $0 }) + backup.previousEncryptionKeys where key.utf8.count < minimumSecretKeyBytes {
            problems.append("BACKUP_ENCRYPTION_KEY and PREVIOUS_BACKUP_ENCRYPTION_KEYS entries must be at least \(minimumSecretKeyBytes) bytes (one is \(key.utf8.count)); make one with `openssl rand -base64 48`")
        }
        // The backups hold every user's data: in production their key is drawn at random, as SECRET_KEY is.
        // A previous key only opens backups it sealed, and moving off a weak one needs it listed: not judged.
        if production, let key = backup.encryptionKey, key.utf8.count >= minimumSecretKeyBytes, let why = guessable(key) {
            problems.append("BACKUP_ENCRYPTION_KEY \(why); make one with `openssl rand -base64 48`")
        }
        switch value("BACKUP_SCHEDULE")?.lowercased() {
        case nil, "daily": backup.scheduled = true
        case "off": backup.scheduled = false
        case let other?: problems.append("BACKUP_SCHEDULE must be daily or off, not \"\(other)\"")
        }
        // Each secret has one purpose: one that leaks (a monitoring token, a backup key kept beside the backups)
        // must not also sign sessions or open backups.
        if production {
            let purposes: [(name: String, purpose: String, values: [String])] = [
                ("SECRET_KEY", "signing", [secret].compactMap { $0 }), ("PREVIOUS_SECRET_KEYS", "signing", previousKeys),
                ("OPS_TOKEN", "ops", [configuration.opsToken].compactMap { $0 }),
                ("BACKUP_ENCRYPTION_KEY", "backup", [backup.encryptionKey].compactMap { $0 }),
                ("PREVIOUS_BACKUP_ENCRYPTION_KEYS", "backup", backup.previousEncryptionKeys),
            ]
            for (index, first) in purposes.enumerated() {
                for second in purposes[(index + 1)...] where first.purpose != second.purpose {
                    // Reported once already, in its own words.
                    if first.name == "SECRET_KEY", second.name == "OPS_TOKEN" { continue }
                    if first.values.contains(where: { second.values.contains($0) }) {
                        problems.append("\(second.name) holds the same value as \(first.name): give each purpose its own random value")
                    }
                }
            }
        }
        if production, backup.scheduled, backup.encryptionKey == nil {
            problems.append("BACKUP_ENCRYPTION_KEY is not set: the daily backups would hold every user's data in the clear; set it (openssl rand -base64 48) and keep it apart from the backups, or BACKUP_SCHEDULE=off if you back up another way")
        }
        backup.keepDaily = integer("BACKUP_KEEP_DAILY", default: 7, range: 1...365)
        backup.keepMonthly = integer("BACKUP_KEEP_MONTHLY", default: 12, range: 0...120)
        backup.pgDump = value("PG_DUMP")
        backup.pgRestore = value("PG_RESTORE")
        configuration.backup = backup
        configuration.alpacaStream = value("ALPACA_STREAM") == nil ? true : flag("ALPACA_STREAM")
        configuration.alpacaPollSeconds = integer("ALPACA_POLL_SECONDS", default: configuration.testing ? 0 : 15, range: 0...3600)
        if let broker = value("BROKER"), broker.lowercased() != "paper" {
            problems.append("BROKER is no longer read: every user has a paper account, and Alpaca accounts are linked (ALPACA_API_KEY and ALPACA_SECRET_KEY link the first admin's)")
        }
        // The earlier system's shared webhook secret: an operator who sets it must learn it protects nothing here.
        if value("PLAID_WEBHOOK_SECRET") != nil {
            problems.append(
                "PLAID_WEBHOOK_SECRET is not read: Plaid signs every webhook (the Plaid-Verification header) and Folio checks that signature with Plaid's keys, fetched with PLAID_CLIENT_ID and PLAID_SECRET; remove the variable")
        }
        // A vendor's quote is kept longer by default: a free key has 25 calls a day.
        configuration.quoteTimeToLive = TimeInterval(integer("QUOTE_TTL_SECONDS", default: configuration.alphaVantage == nil ? 15 : 900, range: 1...86_400))

        guard problems.isEmpty else { throw ConfigurationError(problems: problems) }

        if let secret {
            configuration.secretKey = secret
            configuration.secretKeySource = .environment
        } else {
            let path = configuration.dataDirectory + "/secret_key"
            do {
                configuration.secretKey = try DevelopmentSecret.loadOrCreate(at: path)
            } catch {
                throw ConfigurationError(problems: ["SECRET_KEY is not set and \(path) could not be written: \(error)"])
            }
            configuration.secretKeySource = .generated(path: path)
        }
        return configuration
    }

    /// Every reason a production secret key is unfit.
    /// `PLAID_CLIENT_ID`, `PLAID_SECRET`, `PLAID_ENV`, `PLAID_WEBHOOK_URL`,
    /// `PLAID_BASE_URL`: all or nothing. In production Plaid is reached over
    /// HTTPS and needs a public HTTPS webhook URL (without webhooks, items
    /// would only be synced by the daily backstop and errors would go unseen).
    static func plaidSettings(value: (String) -> String?, production: Bool, problems: inout [String]) -> AppConfiguration.PlaidSettings? {
        let clientID = value("PLAID_CLIENT_ID"), secret = value("PLAID_SECRET")
        guard clientID != nil || secret != nil else {
            for key in ["PLAID_ENV", "PLAID_WEBHOOK_URL", "PLAID_BASE_URL"] where value(key) != nil {
                problems.append("\(key) is set without PLAID_CLIENT_ID and PLAID_SECRET")
            }
            return nil
        }
        guard let clientID, let secret else {
            problems.append(clientID == nil ? "PLAID_SECRET is set without PLAID_CLIENT_ID" : "PLAID_CLIENT_ID is set without PLAID_SECRET")
            return nil
        }
        var environment = AppConfiguration.PlaidSettings.Environment.sandbox
        if let raw = value("PLAID_ENV") {
            if let named = AppConfiguration.PlaidSettings.Environment(rawValue: raw.lowercased()) { environment = named } else {
                problems.append("PLAID_ENV must be sandbox or production, not \"\(raw)\"")
            }
        } else if production {
            // A production server linking people's banks to Plaid's sandbox by default would link nothing real, quietly.
            problems.append("PLAID_ENV is required in production: production to link real accounts, or sandbox on purpose")
        }
        var settings = AppConfiguration.PlaidSettings(clientID: clientID, secret: secret, environment: environment)
        if let raw = value("PLAID_BASE_URL") {
            if let url = URL(string: raw), ["http", "https"].contains(url.scheme ?? ""), url.host != nil { settings.baseURL = raw } else {
                problems.append("PLAID_BASE_URL must be an http(s) URL such as https://sandbox.plaid.com, not \"\(Self.withoutCredentials(raw))\"")
            }
        }
        if let raw = value("PLAID_WEBHOOK_URL") {
            if let url = URL(string: raw), ["http", "https"].contains(url.scheme ?? ""), url.host != nil { settings.webhookURL = raw } else {
                problems.append("PLAID_WEBHOOK_URL must be an http(s) URL such as https://folio.example.com/webhooks/plaid, not \"\(Self.withoutCredentials(raw))\"")
            }
        }
        if production || environment == .production {
            if !settings.baseURL.lowercased().hasPrefix("https://") { problems.append("PLAID_BASE_URL must use https in production") }
            if environment == .production, settings.baseURL.lowercased().contains("sandbox") {
                problems.append("PLAID_ENV is production but PLAID_BASE_URL names the sandbox")
            }
            if let webhook = settings.webhookURL {
                if !webhook.lowercased().hasPrefix("https://") { problems.append("PLAID_WEBHOOK_URL must use https in production") }
            } else if environment == .production {
                problems.append("PLAID_WEBHOOK_URL is required with PLAID_ENV=production: Plaid tells Folio of new transactions and broken logins by webhook")
            }
        }
        return settings
    }

    /// `SENDGRID_API_KEY` and `MAIL_FROM` select SendGrid; `MAIL_BACKEND`
    /// (`sendgrid` or `outbox`) says which is meant. Production mail must
    /// reach people: the outbox there needs `MAIL_BACKEND=outbox` on purpose.
    static func sendGridSettings(value: (String) -> String?, production: Bool, problems: inout [String]) -> AppConfiguration.SendGridSettings? {
        let backend = value("MAIL_BACKEND")?.lowercased()
        if let backend, !["sendgrid", "outbox"].contains(backend) { problems.append("MAIL_BACKEND must be sendgrid or outbox, not \"\(backend)\"") }
        let key = value("SENDGRID_API_KEY"), from = value("MAIL_FROM")
        // A verification key with no mail sent through SendGrid would be ignored in silence: its events are about no message of Folio's.
        let keyWithoutSendGrid = "SENDGRID_WEBHOOK_PUBLIC_KEY is set but mail is not sent with SendGrid, so no event is about Folio's mail: set SENDGRID_API_KEY and MAIL_FROM, or unset it"
        if backend == "outbox" {
            if value("SENDGRID_WEBHOOK_PUBLIC_KEY") != nil { problems.append(keyWithoutSendGrid + " (MAIL_BACKEND is outbox)") }
            // As MARKET_DATA=simulated beside a vendor key: which was meant is not for Folio to guess.
            if production, key != nil { problems.append("MAIL_BACKEND=outbox and SENDGRID_API_KEY are both set: choose one") }
            return nil
        }
        guard key != nil || from != nil || backend == "sendgrid" else {
            if production {
                problems.append("no mail is configured: set SENDGRID_API_KEY and MAIL_FROM, or MAIL_BACKEND=outbox to keep mail in the database on purpose")
            }
            if value("SENDGRID_WEBHOOK_PUBLIC_KEY") != nil { problems.append(keyWithoutSendGrid) }
            return nil
        }
        guard let key, let from else {
            problems.append(key == nil ? "SENDGRID_API_KEY is required to send mail with SendGrid" : "MAIL_FROM is required to send mail with SendGrid")
            return nil
        }
        if !IdentityServices.isPlausibleEmail(from.lowercased()) { problems.append("MAIL_FROM must be an email address, not \"\(from)\"") }
        var settings = AppConfiguration.SendGridSettings(apiKey: key, from: from, fromName: value("MAIL_FROM_NAME") ?? "Folio")
        if let raw = value("SENDGRID_BASE_URL") {
            if let url = URL(string: raw), ["http", "https"].contains(url.scheme ?? ""), url.host != nil { settings.baseURL = raw } else {
                problems.append("SENDGRID_BASE_URL must be an http(s) URL such as https://api.sendgrid.com, not \"\(raw)\"")
            }
        }
        if production, !settings.baseURL.lowercased().hasPrefix("https://") { problems.append("SENDGRID_BASE_URL must use https in production") }
        if let raw = value("SENDGRID_WEBHOOK_PUBLIC_KEY") {
            if SendGridWebhookVerifier.publicKey(raw) == nil {
                problems.append("SENDGRID_WEBHOOK_PUBLIC_KEY must be the Event Webhook's verification key as SendGrid shows it (base64 DER of a P-256 key)")
            } else {
                settings.webhookPublicKey = raw
            }
        } else if production {
            // Without it every bounce and spam report is refused, and Folio goes on mailing addresses that bounce.
            problems.append("SENDGRID_WEBHOOK_PUBLIC_KEY is required in production: turn on SendGrid's signed Event Webhook and set its verification key")
        }
        return settings
    }

    /// `SENTRY_DSN`, with `SENTRY_ENVIRONMENT` and `SENTRY_RELEASE`.
    static func sentrySettings(
        value: (String) -> String?, environment: String, production: Bool = false, problems: inout [String]
    ) -> AppConfiguration.SentrySettings? {
        guard let dsn = value("SENTRY_DSN") else {
            for key in ["SENTRY_ENVIRONMENT", "SENTRY_RELEASE"] where value(key) != nil { problems.append("\(key) is set without SENTRY_DSN") }
            return nil
        }
        let parsed: SentryDSN
        do { parsed = try SentryDSN(parsing: dsn) } catch {
            // The error names the variable and its shape itself; said once.
            problems.append("SENTRY_DSN must look like https://KEY@HOST/PROJECT_ID: \(error.reason)")
            return nil
        }
        // Error reports carry stack traces and request facts: in production they travel encrypted, as every vendor call does.
        // The host checked is the one events are sent to (the parsed DSN's), not a URL parser's reading of the text.
        if production, parsed.scheme == "http", !isLoopbackOrigin(parsed.origin) {
            problems.append("SENTRY_DSN must use https in production (http only to a loopback relay)")
        }
        var settings = AppConfiguration.SentrySettings(dsn: dsn, environment: value("SENTRY_ENVIRONMENT") ?? environment)
        if let release = value("SENTRY_RELEASE") { settings.release = release }
        return settings
    }

    public static func weaknesses(ofSecretKey secret: String) -> [String] {
        var problems: [String] = []
        let bytes = secret.utf8.count
        if bytes < minimumSecretKeyBytes {
            problems.append("SECRET_KEY is \(bytes) bytes; it must be at least \(minimumSecretKeyBytes) bytes (generate one with `openssl rand -hex 32`)")
        } else if let reason = guessable(secret) {
            problems.append("SECRET_KEY \(reason): generate one with `openssl rand -hex 32`")
        }
        return problems
    }

    /// Words of placeholders and made-up keys: a key that contains one was typed by a person, not drawn at
    /// random (a random key of hex or base64 holds a six-letter word with a chance of about one in a million).
    static let placeholderWords = [
        "changeme", "change-me", "change_me", "changethis", "password", "passw0rd", "p@ssw0rd", "p@ssword", "secret", "example", "replace", "placeholder",
        "insecure", "default", "qwerty", "letmein", "your-", "your_", "xxxxxx", "development", "testing",
    ]

    /// Why a key could be guessed (said after its name), or nil when nothing shows it was not drawn at random.
    /// Each rule is far from what a random key of 32 or more characters does: see ConfigurationTests.
    static func guessable(_ secret: String) -> String? {
        let lowered = secret.lowercased()
        if knownWeakSecrets.contains(lowered) || placeholderWords.contains(where: { lowered.contains($0) }) {
            return "is a known default or example value"
        }
        let scalars = Array(secret.unicodeScalars)
        if Set(scalars).count < 8 { return "repeats too few distinct characters to be random" }
        // One piece said again and again ("password1234password1234…", "0123456789abcdef0123456789abcdef"):
        // six characters in a row that come back three times, apart (in a random key, about never; counted
        // overlapping, a run of eight like characters would be three, and one random hex key in some
        // hundred thousand has one).
        var pieces: [ArraySlice<Unicode.Scalar>: (count: Int, end: Int)] = [:]
        if scalars.count >= 6, (0...(scalars.count - 6)).contains(where: { start in
            let piece = scalars[start..<(start + 6)]
            let seen = pieces[piece] ?? (0, 0)
            guard seen.count == 0 || start >= seen.end else { return false }
            pieces[piece] = (seen.count + 1, start + 6)
            return seen.count + 1 >= 3
        }) {
            return "repeats the same characters over and over"
        }
        // One random piece typed twice (or more): as guessable as the piece, half the key's length.
        if scalars.count >= 2, (1...(scalars.count / 2)).contains(where: { period in (period..<scalars.count).allSatisfy { scalars[$0] == scalars[$0 - period] } }) {
            return "is one shorter piece typed more than once"
        }
        // Runs such as "abcdefgh…" or "9876…": a random key steps by one between neighbours about one time in eight (hex).
        let steps = zip(scalars, scalars.dropFirst()).filter { abs(Int($0.value) - Int($1.value)) == 1 }.count
        if steps * 2 >= scalars.count { return "runs through characters in order (abcd…, 0123…) too often to be random" }
        return nil
    }

    public static func databaseLocation(from url: String) -> AppConfiguration.DatabaseLocation? {
        let lowered = url.lowercased()
        if lowered.hasPrefix("postgres://") || lowered.hasPrefix("postgresql://") {
            // Read as the driver reads it, now: its own refusal quotes the whole URL, password and all.
            return isUsablePostgresURL(url) ? .postgres(url: url) : nil
        }
        if lowered.hasPrefix("sqlite:") {
            var path = String(url.dropFirst("sqlite:".count))
            if path.hasPrefix("//") { path.removeFirst(2) }
            return path.isEmpty ? nil : .sqlite(path: path)
        }
        return nil
    }

    /// A URL as a message may show it: a password before the host is left out (`https://user:…@host`).
    static func withoutCredentials(_ text: String) -> String {
        guard let scheme = text.range(of: "://"), let at = text[scheme.upperBound...].firstIndex(of: "@"),
              !text[scheme.upperBound..<at].contains("/"), let colon = text[scheme.upperBound..<at].firstIndex(of: ":") else { return text }
        return text[...colon] + "…" + text[at...]
    }

    /// Whether the PostgreSQL driver can connect with this URL (a host, a port that is a number, an `sslmode`
    /// it knows): checked at start-up, so that a mistake stops it with a message naming the variable, never the URL.
    static func isUsablePostgresURL(_ url: String) -> Bool {
        (try? SQLPostgresConfiguration(url: url)) != nil
    }

    /// http://localhost, http://127.0.0.1 (any of 127/8) or http://[::1], with any port.
    static func isLoopbackOrigin(_ text: String) -> Bool {
        guard let host = URLComponents(string: text)?.host?.lowercased() else { return false }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        let ipv4Loopback = parts.count == 4 && parts[0] == "127"
            && parts.allSatisfy { part in !part.isEmpty && part.count <= 3 && part.allSatisfy { ("0"..."9").contains($0) } && Int(part)! <= 255 }
        return host == "localhost" || host == "::1" || host == "[::1]" || ipv4Loopback
    }

    /// `PUBLIC_URL` without a trailing slash, or nil unless it is an http(s)
    /// origin: Folio's pages and the links in its mail are served from the root.
    static func publicURL(_ text: String) -> String? {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              scheme == "https" || scheme == "http", isHostAndPort(components), components.path.allSatisfy({ $0 == "/" }),
              components.query == nil, components.fragment == nil, components.user == nil, components.password == nil
        else { return nil }
        var url = text
        while url.hasSuffix("/") { url.removeLast() }
        return url
    }

    static func isOrigin(_ text: String) -> Bool {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              scheme == "https" || scheme == "http", isHostAndPort(components)
        else { return false }
        return components.path.isEmpty && components.query == nil && components.fragment == nil && components.user == nil
    }

    /// A host a browser can name (letters, digits, `-`, `_` and `.`, or an IPv6 address in brackets: no `*`, which
    /// would never match an origin) and, when given, a port from 1 to 65535.
    static func isHostAndPort(_ components: URLComponents) -> Bool {
        guard let host = components.host, !host.isEmpty,
              host.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-._:[]".unicodeScalars.contains($0)) })
        else { return false }
        if let port = components.port { return (1...65535).contains(port) }
        return true
    }
}

/// The development signing key: generated once from the system's CSPRNG and kept
/// under the data directory, so tokens survive restarts.
enum DevelopmentSecret {
    static func loadOrCreate(at path: String) throws -> String {
        if let existing = try? String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
           existing.utf8.count >= ConfigurationLoader.minimumSecretKeyBytes {
            return existing
        }
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        // SystemRandomNumberGenerator reads the kernel's CSPRNG (getrandom).
        var generator = SystemRandomNumberGenerator()
        let key = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        guard FileManager.default.createFile(atPath: path, contents: Data((key + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw CocoaError(.fileWriteUnknown)
        }
        return key
    }
}
