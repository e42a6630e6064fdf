import Crypto
import Foundation
import Logging
import SQLKit
import Testing

@testable import FolioServer

@Suite("Configuration")
struct ConfigurationTests {
    let strongKey = "3f9c2b7e8a1d4c6f0b5e9a2d7c4f1e8b6a3d0c9f5e2b8a7d4c1f6e3b0a9d5c2e"

    func problems(_ values: [String: String]) -> [String] {
        do {
            _ = try ConfigurationLoader.make(from: values)
            return []
        } catch let error as ConfigurationError {
            return error.problems
        } catch {
            Issue.record("unexpected error \(error)")
            return []
        }
    }

    @Test("production with nothing set names the secret key, the origins, the database, the public URL, the backup key and the mail at once")
    func productionWithNothing() {
        let found = problems(["ENVIRONMENT": "production"])
        #expect(found.contains { $0.hasPrefix("SECRET_KEY is not set") })
        #expect(found.contains { $0.hasPrefix("ALLOWED_ORIGINS is empty") })
        #expect(found.contains { $0.hasPrefix("DATABASE_URL does not name PostgreSQL") })
        #expect(found.contains("PUBLIC_URL is not set: links in mail would point at http://127.0.0.1:8080; set the address users reach Folio at, e.g. https://folio.example.com"))
        #expect(found.contains { $0.hasPrefix("BACKUP_ENCRYPTION_KEY is not set: the daily backups would hold every user's data in the clear") })
        #expect(found.count == 7)
        #expect(found.contains { $0.contains("MAIL_BACKEND=outbox") })
        #expect(found.contains { $0.hasPrefix("no market data is configured") && $0.contains("MARKET_DATA=simulated") })
    }

    @Test("market data: production needs Alpha Vantage's key or MARKET_DATA=simulated on purpose; the two together, or another value, are refused")
    func marketData() throws {
        let production = [
            "ENVIRONMENT": "production", "BACKUP_ENCRYPTION_KEY": "Qm9yLXRoaXMtaXMtYS10ZXN0LWJhY2t1cC1rZXktb2YtNDgtYnl0ZXMh", "PUBLIC_URL": "https://folio.example.com",
            "MAIL_BACKEND": "outbox", "SECRET_KEY": strongKey, "ALLOWED_ORIGINS": "https://app.example.com", "DATABASE_URL": "postgres://u:p@db/folio",
        ]
        func with(_ extra: [String: String], base: [String: String]) -> [String: String] { base.merging(extra) { _, new in new } }
        let missing = problems(production)
        #expect(missing == [
            "no market data is configured: set ALPHA_VANTAGE_API_KEY for real prices, or MARKET_DATA=simulated to price orders with the built-in simulated market on purpose",
        ])
        #expect(problems(with(["MARKET_DATA": "simulated"], base: production)).isEmpty)
        #expect(problems(with(["ALPHA_VANTAGE_API_KEY": "AVKEY123"], base: production)).isEmpty)
        #expect(problems(with(["ALPHA_VANTAGE_API_KEY": "AVKEY123", "MARKET_DATA": "Alpha_Vantage"], base: production)).isEmpty)
        #expect(problems(with(["ALPHA_VANTAGE_API_KEY": "AVKEY123", "MARKET_DATA": "simulated"], base: production))
            == ["MARKET_DATA=simulated and ALPHA_VANTAGE_API_KEY are both set: choose one"])
        #expect(problems(with(["MARKET_DATA": "yahoo"], base: production)) == ["MARKET_DATA must be alpha_vantage or simulated, not \"yahoo\""])
        // Outside production the simulated market is the default; asking for Alpha Vantage without its key is still refused.
        let development = ["SECRET_KEY": strongKey]
        let simulated = try ConfigurationLoader.make(from: development)
        #expect(simulated.alphaVantage == nil)
        #expect(problems(with(["MARKET_DATA": "alpha_vantage"], base: development)).first?.hasPrefix("no market data is configured") == true)
        let vendor = try ConfigurationLoader.make(from: with(["ALPHA_VANTAGE_API_KEY": "AVKEY123"], base: development))
        #expect(vendor.alphaVantage?.apiKey == "AVKEY123")
    }

    @Test("paper slippage past the market-buy margin stops start-up: a market buy reserved at its quote plus the margin could not pay its fill")
    func slippagePastTheMargin() {
        #expect(problems(["SECRET_KEY": strongKey, "PAPER_SLIPPAGE_BPS": "800"]) == [
            "PAPER_SLIPPAGE_BPS (800) is more than MARKET_BUY_MARGIN (0.05, 500 basis points): a market buy reserved at its quote plus the margin could not pay its slipped fill; raise MARKET_BUY_MARGIN or lower the slippage",
        ])
        #expect(problems(["SECRET_KEY": strongKey, "PAPER_SLIPPAGE_BPS": "100", "MARKET_BUY_MARGIN": "0"]).count == 1)
        #expect(problems(["SECRET_KEY": strongKey, "PAPER_SLIPPAGE_BPS": "800", "MARKET_BUY_MARGIN": "0.08"]).isEmpty)
        #expect(problems(["SECRET_KEY": strongKey, "MARKET_BUY_MARGIN": "0"]).isEmpty, "no slippage needs no margin")
    }

    @Test("a wildcard origin is refused in development too, not dropped in silence")
    func wildcardOutsideProduction() {
        #expect(problems(["SECRET_KEY": strongKey, "ALLOWED_ORIGINS": "*"]) == ["ALLOWED_ORIGINS contains \"*\": list each allowed origin explicitly"])
        #expect(problems(["SECRET_KEY": strongKey, "ALLOWED_ORIGINS": "http://localhost:3000"]).isEmpty)
        // A wildcard inside a host never matches an origin either; a port must be one.
        for bad in ["https://*.example.com", "https://app.example.com:99999", "https://app.example.com:0"] {
            #expect(problems(["SECRET_KEY": strongKey, "ALLOWED_ORIGINS": bad]) == ["ALLOWED_ORIGINS entry \"\(bad)\" is not an origin like https://app.example.com"], "\(bad)")
        }
        #expect(problems(["SECRET_KEY": strongKey, "ALLOWED_ORIGINS": "http://[::1]:8080,https://app.example.com:8443"]).isEmpty)
    }

    @Test("a SendGrid webhook key without mail sent through SendGrid stops start-up instead of being ignored")
    func sendGridWebhookKeyWithoutSendGrid() {
        let key = P256.Signing.PrivateKey().publicKey.derRepresentation.base64EncodedString()
        let without = "SENDGRID_WEBHOOK_PUBLIC_KEY is set but mail is not sent with SendGrid, so no event is about Folio's mail: set SENDGRID_API_KEY and MAIL_FROM, or unset it"
        #expect(problems(["SECRET_KEY": strongKey, "SENDGRID_WEBHOOK_PUBLIC_KEY": key]) == [without])
        #expect(problems(["SECRET_KEY": strongKey, "SENDGRID_WEBHOOK_PUBLIC_KEY": "garbage"]) == [without])
        #expect(problems(["SECRET_KEY": strongKey, "SENDGRID_WEBHOOK_PUBLIC_KEY": key, "MAIL_BACKEND": "outbox", "SENDGRID_API_KEY": "SG.x", "MAIL_FROM": "folio@example.com"])
            == [without + " (MAIL_BACKEND is outbox)"])
        #expect(problems(["SECRET_KEY": strongKey, "SENDGRID_WEBHOOK_PUBLIC_KEY": key, "SENDGRID_API_KEY": "SG.x", "MAIL_FROM": "folio@example.com"]).isEmpty)
    }

    @Test("TRUSTED_PROXIES takes addresses and CIDR ranges; anything else stops start-up instead of never matching")
    func trustedProxies() throws {
        #expect(problems(["SECRET_KEY": strongKey, "TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8,fd00::/8 ,::1"]).isEmpty)
        for bad in ["proxy.internal", "10.0.0.0/33", "10.0.0/8", "10.0.0.0/", "::1/129", "10.0.0.1:80"] {
            #expect(problems(["SECRET_KEY": strongKey, "TRUSTED_PROXIES": "127.0.0.1,\(bad)"])
                == ["TRUSTED_PROXIES entry \"\(bad)\" is not an IP address or a CIDR range like 10.0.0.0/8"], "\(bad)")
        }
    }

    @Test("PLAID_WEBHOOK_SECRET, the earlier system's shared secret, is refused with what verifies Plaid's webhooks instead")
    func plaidWebhookSecret() {
        let found = problems(["SECRET_KEY": strongKey, "PLAID_WEBHOOK_SECRET": "whsec_123"])
        #expect(found.count == 1)
        #expect(found.first?.hasPrefix("PLAID_WEBHOOK_SECRET is not read: Plaid signs every webhook") == true)
    }

    @Test("a 16-byte production key is refused with its length")
    func shortKey() {
        let found = problems(["ENVIRONMENT": "production", "BACKUP_ENCRYPTION_KEY": "Qm9yLXRoaXMtaXMtYS10ZXN0LWJhY2t1cC1rZXktb2YtNDgtYnl0ZXMh", "PUBLIC_URL": "https://folio.example.com", "MAIL_BACKEND": "outbox", "MARKET_DATA": "simulated", "SECRET_KEY": "0123456789abcdef", "ALLOWED_ORIGINS": "https://app.example.com", "DATABASE_URL": "postgres://u:p@db/folio"])
        #expect(found == ["SECRET_KEY is 16 bytes; it must be at least 32 bytes (generate one with `openssl rand -hex 32`)"])
    }

    @Test("known defaults, the .env.example value and low-variety keys are refused in production", arguments: [
        "replace-with-output-of-openssl-rand-hex-32", "your-secret-key-here", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        // Made-up keys of full length: a placeholder word anywhere, a repeated piece, a run of characters in order.
        "changeme-changeme-changeme-changeme", "password1234password1234password1234", "0123456789abcdef0123456789abcdef",
        "your-secret-key-here-change-this-in-production-please", "replace-with-output-of-openssl-rand-hex-32-xxxxxxx",
        "abcdefghijklmnopqrstuvwxyz0123456789", "Kz9#Qw2!Kz9#Qw2!Kz9#Qw2!Kz9#Qw2!Kz9#", "Kz9#Qw2!Kz9#Qw2!Kz9#Qw2!Kz9#Qw2!X",
        "myfolio2024myfolio2024myfolio2024!", "development-key-for-folio-local-use-1", "this-is-a-test-key-for-local-development-only",
    ])
    func weakKeys(key: String) {
        let found = problems(["ENVIRONMENT": "production", "BACKUP_ENCRYPTION_KEY": "Qm9yLXRoaXMtaXMtYS10ZXN0LWJhY2t1cC1rZXktb2YtNDgtYnl0ZXMh", "PUBLIC_URL": "https://folio.example.com", "MAIL_BACKEND": "outbox", "MARKET_DATA": "simulated", "SECRET_KEY": key, "ALLOWED_ORIGINS": "https://app.example.com", "DATABASE_URL": "postgres://u:p@db/folio"])
        #expect(found.contains { $0.hasPrefix("SECRET_KEY") })
    }

    @Test("keys drawn at random pass the guessability rules: hex and base64 of 32 to 64 characters, ten thousand of each")
    func randomKeysPass() {
        // A run of eight like characters turns up in about one random hex key in some hundred thousand (this test once drew one).
        #expect(ConfigurationLoader.guessable("3f9c2b7e8a1d4c6f0b5eaaaaaaaa7c4f1e8b6a3d0c9f5e2b8a7d4c1f6e3b0a9d") == nil)
        #expect(ConfigurationLoader.guessable("xK3p9Qw2xK3p9Qw2xK3p9Qw2") != nil, "a piece said three times apart is still refused")
        // One random piece typed twice (openssl rand -hex 8, doubled): 64 bits, whatever its length says.
        #expect(ConfigurationLoader.guessable("k3J9xQ2mP7vR4tL8k3J9xQ2mP7vR4tL8") != nil)
        #expect(ConfigurationLoader.guessable("q1w2e3r4t5y6u7i8o9p0q1w2e3r4t5y6u7i8o9p0") != nil)
        #expect(ConfigurationLoader.guessable("P@ssw0rd-P@ssw0rd-1234567890-abcdefgh") != nil)
        var generator = SystemRandomNumberGenerator()
        let alphabets = [Array("0123456789abcdef"), Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")]
        for alphabet in alphabets {
            for length in [32, 43, 64] {
                for _ in 0..<10_000 {
                    let key = String((0..<length).map { _ in alphabet.randomElement(using: &generator)! })
                    // A drawn key that spells a placeholder word ("d++iwUh7SecretWcgpu…", drawn once) is refused by design: about
                    // one key in ten million, so an operator draws again; over these 60,000 draws, a run in a few hundred.
                    if ConfigurationLoader.placeholderWords.contains(where: { key.lowercased().contains($0) }) { continue }
                    #expect(ConfigurationLoader.guessable(key) == nil, "\(key)")
                }
            }
        }
        #expect(ConfigurationLoader.weaknesses(ofSecretKey: strongKey).isEmpty)
    }

    @Test("in production a guessable previous key is refused too: it would still verify tokens")
    func weakPreviousKey() {
        let settings = [
            "ENVIRONMENT": "production", "BACKUP_ENCRYPTION_KEY": "Qm9yLXRoaXMtaXMtYS10ZXN0LWJhY2t1cC1rZXktb2YtNDgtYnl0ZXMh", "PUBLIC_URL": "https://folio.example.com",
            "MAIL_BACKEND": "outbox", "MARKET_DATA": "simulated", "SECRET_KEY": strongKey, "ALLOWED_ORIGINS": "https://app.example.com", "DATABASE_URL": "postgres://u:p@db/folio",
        ]
        let weak = problems(settings.merging(["PREVIOUS_SECRET_KEYS": "9c41e0b7d2f85a36c1e9047bd38f2a65e0c7b914d6a2f3853e1b0c7d9a4f6e21, aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]) { $1 })
        #expect(weak.count == 1 && weak.first?.hasPrefix("PREVIOUS_SECRET_KEYS entry 2 repeats too few distinct characters") == true, "\(weak)")
        #expect(problems(settings.merging(["PREVIOUS_SECRET_KEYS": "9c41e0b7d2f85a36c1e9047bd38f2a65e0c7b914d6a2f3853e1b0c7d9a4f6e21"]) { $1 }).isEmpty)
        // Outside production the previous keys are held to their length only, as the current one is.
        #expect(problems(["SECRET_KEY": strongKey, "PREVIOUS_SECRET_KEYS": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]).isEmpty)
    }

    @Test("production refuses a made-up OPS_TOKEN or one equal to SECRET_KEY, SendGrid without its webhook key, and Plaid without PLAID_ENV")
    func productionVendorSecrets() {
        let base = [
            "ENVIRONMENT": "production", "BACKUP_ENCRYPTION_KEY": "Qm9yLXRoaXMtaXMtYS10ZXN0LWJhY2t1cC1rZXktb2YtNDgtYnl0ZXMh", "PUBLIC_URL": "https://folio.example.com",
            "MAIL_BACKEND": "outbox", "MARKET_DATA": "simulated", "SECRET_KEY": strongKey, "ALLOWED_ORIGINS": "https://app.example.com", "DATABASE_URL": "postgres://u:p@db/folio",
        ]
        func with(_ extra: [String: String]) -> [String: String] { base.merging(extra) { _, new in new } }
        #expect(problems(with(["OPS_TOKEN": "8d2f6a1c9e4b7053f1a8c6e2d9b4f7a0c3e6b1d8"])).isEmpty)
        #expect(problems(with(["OPS_TOKEN": String(repeating: "o", count: 40)])) == ["OPS_TOKEN repeats too few distinct characters to be random: draw it at random, e.g. `openssl rand -hex 32`"])
        #expect(problems(with(["OPS_TOKEN": "ops-token-changeme-0000000000000000000000"])).first?.hasPrefix("OPS_TOKEN is a known default or example value") == true)
        #expect(problems(with(["OPS_TOKEN": strongKey])) == ["OPS_TOKEN is the same as SECRET_KEY: give each its own random value"])
        #expect(problems(["SECRET_KEY": strongKey, "OPS_TOKEN": String(repeating: "o", count: 40)]).isEmpty, "development keeps the length rule only")

        var sendGrid = base
        sendGrid["MAIL_BACKEND"] = nil
        sendGrid["SENDGRID_API_KEY"] = "SG.live-key"
        sendGrid["MAIL_FROM"] = "alerts@folio.example.com"
        #expect(problems(sendGrid) == ["SENDGRID_WEBHOOK_PUBLIC_KEY is required in production: turn on SendGrid's signed Event Webhook and set its verification key"])

        let plaid = with(["PLAID_CLIENT_ID": "client-abc", "PLAID_SECRET": "secret-0123456789"])
        #expect(problems(plaid) == ["PLAID_ENV is required in production: production to link real accounts, or sandbox on purpose"])
        #expect(problems(plaid.merging(["PLAID_ENV": "sandbox"]) { $1 }).isEmpty)
        #expect(problems(["SECRET_KEY": strongKey, "PLAID_CLIENT_ID": "client-abc", "PLAID_SECRET": "secret-0123456789"]).isEmpty, "development defaults to the sandbox")
    }

    @Test("DEBUG, TESTING and a wildcard origin are refused in production, all reported together")
    func productionFlags() {
        let found = problems([
            "ENVIRONMENT": "production", "BACKUP_ENCRYPTION_KEY": "Qm9yLXRoaXMtaXMtYS10ZXN0LWJhY2t1cC1rZXktb2YtNDgtYnl0ZXMh", "PUBLIC_URL": "https://folio.example.com", "MAIL_BACKEND": "outbox", "MARKET_DATA": "simulated", "SECRET_KEY": strongKey, "DEBUG": "true", "TESTING": "1",
            "ALLOWED_ORIGINS": "https://app.example.com,*", "DATABASE_URL": "postgresql://u:p@db/folio?sslmode=require",
        ])
        #expect(found.count == 3)
        #expect(found.contains("DEBUG=true is not allowed in production"))
        #expect(found.contains("TESTING=true is not allowed in production"))
        #expect(found.contains { $0.contains("contains \"*\"") })
    }

    @Test("production refuses a database URL the driver cannot use, a secret serving two purposes, and proxies that trust every address; no message quotes a password")
    func failClosedWithoutEchoingSecrets() {
        let base = [
            "ENVIRONMENT": "production", "BACKUP_ENCRYPTION_KEY": "Qm9yLXRoaXMtaXMtYS10ZXN0LWJhY2t1cC1rZXktb2YtNDgtYnl0ZXMh", "PUBLIC_URL": "https://folio.example.com",
            "MAIL_BACKEND": "outbox", "MARKET_DATA": "simulated", "SECRET_KEY": strongKey, "DATABASE_URL": "postgres://u:p@db/folio", "ALLOWED_ORIGINS": "https://app.example.com",
        ]
        #expect(problems(base).isEmpty)
        let password = "S3cr3tPassw0rdXYZ"
        for url in ["postgres://u:\(password)@db:5432/folio?sslmode=bogus", "postgres://u:\(password)@db:abc/folio", "postgres://u:\(password)@/folio"] {
            let found = problems(base.merging(["DATABASE_URL": url]) { $1 })
            #expect(found.contains { $0.hasPrefix("DATABASE_URL must be postgres://") }, "\(found)")
            let replica = problems(base.merging(["READ_DATABASE_URL": url]) { $1 })
            #expect(replica.count == 1 && replica[0].hasPrefix("READ_DATABASE_URL must be a postgres:// URL"), "\(replica)")
            #expect(!(found + replica).joined().contains(password))
        }
        #expect(problems(base.merging(["DATABASE_URL": "postgres://u:p@db/folio?sslmode=require"]) { $1 }).isEmpty)
        for (key, value) in [("PUBLIC_URL", "https://user:\(password)@folio.example.com"), ("ALLOWED_ORIGINS", "https://user:\(password)@app.example.com"),
                             ("PLAID_BASE_URL", "ftp://u:\(password)@plaid.example.com")] {
            let found = problems(base.merging([key: value]) { $1 })
            #expect(!found.isEmpty && !found.joined().contains(password), "\(key): \(found)")
        }
        #expect(problems(base.merging(["BACKUP_ENCRYPTION_KEY": strongKey]) { $1 }) == [
            "BACKUP_ENCRYPTION_KEY holds the same value as SECRET_KEY: give each purpose its own random value",
        ])
        let other = "9d5c2e3f9c2b7e8a1d4c6f0b5e9a2d7c4f1e8b6a3d0c9f5e2b8a7d4c1f6e3b0a"
        #expect(problems(base.merging(["PREVIOUS_SECRET_KEYS": other, "OPS_TOKEN": other]) { $1 }) == [
            "OPS_TOKEN holds the same value as PREVIOUS_SECRET_KEYS: give each purpose its own random value",
        ])
        #expect(problems(base.merging(["TRUSTED_PROXIES": "10.0.0.0/8, 0.0.0.0/0"]) { $1 }) == [
            "TRUSTED_PROXIES entry \"0.0.0.0/0\" trusts every address: list your proxies' own addresses or ranges",
        ])
        #expect(problems(base.merging(["TRUSTED_PROXIES": "10.0.0.0/8"]) { $1 }).isEmpty)
        // However the whole space is written: IPv4 under its IPv6 form, IPv6's own, halves of it.
        #expect(problems(base.merging(["TRUSTED_PROXIES": "::ffff:0.0.0.0/0, ::/0, ::/8"]) { $1 }) == [
            "TRUSTED_PROXIES entry \"::ffff:0.0.0.0/0\" trusts every address: list your proxies' own addresses or ranges",
            "TRUSTED_PROXIES entry \"::/0\" trusts every address: list your proxies' own addresses or ranges",
            "TRUSTED_PROXIES entry \"::/8\" trusts every address: list your proxies' own addresses or ranges",
        ])
        #expect(problems(base.merging(["TRUSTED_PROXIES": "0.0.0.0/1, 128.0.0.0/1, 2000::/3, fc00::/7, 172.16.0.0/12, 2001:db8::/32"]) { $1 }) == [
            "TRUSTED_PROXIES entry \"0.0.0.0/1\" is wider than any private network (10.0.0.0/8, fc00::/7): list your proxies' own addresses or ranges",
            "TRUSTED_PROXIES entry \"128.0.0.0/1\" is wider than any private network (10.0.0.0/8, fc00::/7): list your proxies' own addresses or ranges",
            "TRUSTED_PROXIES entry \"2000::/3\" is wider than any private network (10.0.0.0/8, fc00::/7): list your proxies' own addresses or ranges",
        ])
        #expect(problems(base.merging(["SENDGRID_API_KEY": "SG.example-key-0123456789", "MAIL_FROM": "alerts@example.com"]) { $1 }) == [
            "MAIL_BACKEND=outbox and SENDGRID_API_KEY are both set: choose one",
        ])
    }

    @Test("production refuses an http:// origin unless it is loopback")
    func plainHTTPOrigins() {
        let base = ["ENVIRONMENT": "production", "BACKUP_ENCRYPTION_KEY": "Qm9yLXRoaXMtaXMtYS10ZXN0LWJhY2t1cC1rZXktb2YtNDgtYnl0ZXMh", "PUBLIC_URL": "https://folio.example.com", "MAIL_BACKEND": "outbox", "MARKET_DATA": "simulated", "SECRET_KEY": strongKey, "DATABASE_URL": "postgres://u:p@db/folio"]
        let found = problems(base.merging(["ALLOWED_ORIGINS": "https://app.example.com, http://app.example.com, http://evil.test:8080"]) { $1 })
        #expect(found == [
            "ALLOWED_ORIGINS entry \"http://app.example.com\" is not HTTPS: production allows only https:// origins (or loopback)",
            "ALLOWED_ORIGINS entry \"http://evil.test:8080\" is not HTTPS: production allows only https:// origins (or loopback)",
        ])
        #expect(problems(base.merging(["ALLOWED_ORIGINS": "https://app.example.com, http://localhost:3000, http://127.0.0.1:8080, http://[::1]:5173"]) { $1 }).isEmpty)
        #expect(problems(["ALLOWED_ORIGINS": "http://app.example.com"]).isEmpty, "development may use plain HTTP")
    }

    @Test("a sound production configuration loads")
    func soundProduction() throws {
        let configuration = try ConfigurationLoader.make(from: [
            "ENVIRONMENT": "production", "BACKUP_ENCRYPTION_KEY": "Qm9yLXRoaXMtaXMtYS10ZXN0LWJhY2t1cC1rZXktb2YtNDgtYnl0ZXMh", "PUBLIC_URL": "https://folio.example.com", "MAIL_BACKEND": "outbox", "MARKET_DATA": "simulated", "SECRET_KEY": strongKey, "ALLOWED_ORIGINS": "https://app.example.com, https://admin.example.com:8443",
            "DATABASE_URL": "postgres://folio:pw@db.internal:5432/folio?sslmode=verify-full", "DATABASE_POOL_SIZE": "20", "PORT": "9000",
        ])
        #expect(configuration.isProduction)
        #expect(configuration.allowedOrigins == ["https://app.example.com", "https://admin.example.com:8443"])
        #expect(configuration.database == .postgres(url: "postgres://folio:pw@db.internal:5432/folio?sslmode=verify-full"))
        #expect(configuration.databasePoolSize == 20)
        #expect(configuration.databasePreparedStatements)
        let unprepared = try ConfigurationLoader.make(from: ["SECRET_KEY": strongKey, "DATABASE_PREPARED_STATEMENTS": "false"])
        #expect(!unprepared.databasePreparedStatements)
        #expect(configuration.port == 9000)
        #expect(configuration.secretKeySource == .environment)
    }

    @Test("PUBLIC_URL: the base of mail links, checked in any environment; production needs it, over https unless loopback")
    func publicURL() throws {
        let production = [
            "ENVIRONMENT": "production", "BACKUP_ENCRYPTION_KEY": "Qm9yLXRoaXMtaXMtYS10ZXN0LWJhY2t1cC1rZXktb2YtNDgtYnl0ZXMh", "MAIL_BACKEND": "outbox", "MARKET_DATA": "simulated", "SECRET_KEY": strongKey, "ALLOWED_ORIGINS": "https://app.example.com", "DATABASE_URL": "postgres://u:p@db/folio",
        ]
        #expect(try ConfigurationLoader.make(from: production.merging(["PUBLIC_URL": "https://folio.example.com/"]) { $1 }).publicURL == "https://folio.example.com")
        #expect(problems(production.merging(["PUBLIC_URL": "http://127.attacker.example.com"]) { $1 }).count == 1, "only a numeric 127.x.y.z is loopback")
        #expect(try ConfigurationLoader.make(from: production.merging(["PUBLIC_URL": "http://127.0.0.1:8080"]) { $1 }).publicURL == "http://127.0.0.1:8080")
        #expect(problems(production.merging(["PUBLIC_URL": "http://folio.example.com"]) { $1 }) == [
            "PUBLIC_URL \"http://folio.example.com\" is not HTTPS: production mails links with tokens in them, which must not travel in the clear",
        ])
        for bad in [
            "folio.example.com", "ftp://folio.example.com", "https://folio.example.com/?a=1", "https://folio.example.com/#x", "https://me@folio.example.com", "https://",
            "https://example.com/folio", "https://folio.example.com:99999", "https://folio.example.com:0", "https://*.example.com",
        ] {
            let found = problems(["SECRET_KEY": strongKey, "PUBLIC_URL": bad])
            #expect(found == ["PUBLIC_URL must be the address users reach Folio at, such as https://folio.example.com (no path, query, fragment or user name), not \"\(bad)\""])
        }
        // Outside production the address the server listens on is the default.
        #expect(try ConfigurationLoader.make(from: ["SECRET_KEY": strongKey, "PORT": "9000"]).publicURL == "http://127.0.0.1:9000")
    }

    @Test("production's daily backups need BACKUP_ENCRYPTION_KEY; with BACKUP_SCHEDULE=off they do not, and development never does")
    func backupKeyInProduction() throws {
        let production = [
            "ENVIRONMENT": "production", "PUBLIC_URL": "https://folio.example.com", "MAIL_BACKEND": "outbox", "MARKET_DATA": "simulated", "SECRET_KEY": strongKey,
            "ALLOWED_ORIGINS": "https://app.example.com", "DATABASE_URL": "postgres://u:p@db/folio",
        ]
        let found = problems(production)
        #expect(found.count == 1 && found.first?.hasPrefix("BACKUP_ENCRYPTION_KEY is not set") == true, "\(found)")
        #expect(problems(production.merging(["BACKUP_SCHEDULE": "daily"]) { $1 }) == found)
        let off = try ConfigurationLoader.make(from: production.merging(["BACKUP_SCHEDULE": "off"]) { $1 })
        #expect(!off.backup.scheduled && off.backup.encryptionKey == nil)
        // A made-up key is refused in production, as a made-up SECRET_KEY is; one drawn at random is taken.
        let madeUp = problems(production.merging(["BACKUP_ENCRYPTION_KEY": String(repeating: "k7", count: 24)]) { $1 })
        #expect(madeUp.count == 1 && madeUp[0].hasPrefix("BACKUP_ENCRYPTION_KEY repeats"), "\(madeUp)")
        let movingOff = production.merging(["BACKUP_ENCRYPTION_KEY": "u3Zq9Lr2WfX8cKpT1vBn6YhJd4MgE7sA0oQiRl5xCyNb", "PREVIOUS_BACKUP_ENCRYPTION_KEYS": String(repeating: "k7", count: 24)]) { $1 }
        #expect(problems(movingOff).isEmpty, "a weak previous key is listed to move off it")
        let sealed = try ConfigurationLoader.make(from: production.merging(["BACKUP_ENCRYPTION_KEY": "u3Zq9Lr2WfX8cKpT1vBn6YhJd4MgE7sA0oQiRl5xCyNb"]) { $1 })
        #expect(sealed.backup.scheduled && sealed.backup.encryptionKey != nil)
        #expect(problems(["SECRET_KEY": strongKey]).isEmpty)
    }

    @Test("Alpaca: the seed's key names link the first admin; production refuses a plain-http Alpaca URL; a half-set pair, ALPACA_BASE_URL without keys and the retired BROKER switch are named")
    func alpaca() throws {
        let production = [
            "ENVIRONMENT": "production", "BACKUP_ENCRYPTION_KEY": "Qm9yLXRoaXMtaXMtYS10ZXN0LWJhY2t1cC1rZXktb2YtNDgtYnl0ZXMh", "PUBLIC_URL": "https://folio.example.com", "MAIL_BACKEND": "outbox", "MARKET_DATA": "simulated", "SECRET_KEY": strongKey, "ALLOWED_ORIGINS": "https://app.example.com", "DATABASE_URL": "postgres://u:p@db/folio",
        ]
        let loaded = try ConfigurationLoader.make(from: production.merging([
            "ALPACA_API_KEY": "AKLIVEKEY123", "ALPACA_SECRET_KEY": "live-secret-0123456789", "ALPACA_BASE_URL": "https://api.alpaca.markets",
        ]) { _, new in new })
        #expect(loaded.alpaca == .init(keyID: "AKLIVEKEY123", secretKey: "live-secret-0123456789", baseURL: "https://api.alpaca.markets"))
        #expect(loaded.alpacaURLs == .init())
        #expect(loaded.secretValues.contains("live-secret-0123456789"))
        for key in ["ALPACA_BASE_URL", "ALPACA_LIVE_URL", "ALPACA_PAPER_URL"] {
            let found = problems(production.merging(["ALPACA_API_KEY": "AKLIVEKEY123", "ALPACA_SECRET_KEY": "live-secret-0123456789", key: "http://api.alpaca.markets"]) { _, new in new })
            #expect(found == ["\(key) must use https in production"])
        }
        #expect(problems(["SECRET_KEY": strongKey, "ALPACA_API_KEY": "AKLIVEKEY123"]) == ["ALPACA_API_KEY is set without ALPACA_SECRET_KEY"])
        #expect(problems(["SECRET_KEY": strongKey, "ALPACA_BASE_URL": "https://api.alpaca.markets"]).first?.hasPrefix("ALPACA_BASE_URL is set without ALPACA_API_KEY and ALPACA_SECRET_KEY") == true)
        #expect(problems(["SECRET_KEY": strongKey, "BROKER": "alpaca"]).first?.hasPrefix("BROKER is no longer read") == true)
        // Development may point Alpaca at a local fake over http.
        #expect(problems(["SECRET_KEY": strongKey, "ALPACA_PAPER_URL": "http://127.0.0.1:9999"]).isEmpty)
        // Error reports travel encrypted in production too, except to a relay on this machine.
        #expect(problems(production.merging(["SENTRY_DSN": "http://0123456789abcdef@sentry.example.com/42"]) { $1 }) == [
            "SENTRY_DSN must use https in production (http only to a loopback relay)",
        ])
        #expect(problems(production.merging(["SENTRY_DSN": "http://0123456789abcdef@127.0.0.1:9000/42"]) { $1 }).isEmpty)
        #expect(problems(production.merging(["SENTRY_DSN": "https://0123456789abcdef@sentry.example.com/42"]) { $1 }).isEmpty)
    }

    @Test("SENTRY_DSN: a key part that a URL parser reads as a host and port is refused (events would go over http to the host after @); an old secret key is masked in logs")
    func sentryKeyParts() throws {
        let production = [
            "ENVIRONMENT": "production", "BACKUP_ENCRYPTION_KEY": "Qm9yLXRoaXMtaXMtYS10ZXN0LWJhY2t1cC1rZXktb2YtNDgtYnl0ZXMh", "PUBLIC_URL": "https://folio.example.com", "MAIL_BACKEND": "outbox", "MARKET_DATA": "simulated", "SECRET_KEY": strongKey, "ALLOWED_ORIGINS": "https://app.example.com", "DATABASE_URL": "postgres://u:p@db/folio",
        ]
        for dsn in ["http://localhost:1/@evil.example/1", "http://127.0.0.1:9/x@evil.example/1", "https://public1:@sentry.example.com/7", "https://public1:se cret@sentry.example.com/7"] {
            let found = problems(production.merging(["SENTRY_DSN": dsn]) { $1 })
            #expect(found.count == 1 && found.first?.hasPrefix("SENTRY_DSN must look like https://KEY@HOST/PROJECT_ID") == true, "\(dsn): \(found)")
        }
        let loaded = try ConfigurationLoader.make(from: production.merging(["SENTRY_DSN": " https://public1:secret1@sentry.example.com/7\n"]) { $1 })
        #expect(loaded.secretValues.contains("public1") && loaded.secretValues.contains("secret1"))
    }

    @Test("malformed values are named in any environment", arguments: [
        ("PORT", "eighty"), ("DATABASE_POOL_SIZE", "0"), ("LOG_LEVEL", "loud"), ("LOG_FORMAT", "xml"),
        ("ALLOWED_ORIGINS", "app.example.com"), ("DATABASE_URL", "mysql://x"), ("DEBUG", "maybe"), ("ENVIRONMENT", "staging"),
        ("DATABASE_PREPARED_STATEMENTS", "sometimes"),
    ])
    func malformed(key: String, value: String) {
        let found = problems([key: value, "SECRET_KEY": strongKey])
        #expect(found.count == 1)
        #expect(found.first?.hasPrefix(key) == true, "\(found)")
    }

    @Test("the SQLite file and its -wal and -shm are the owner's alone, in a directory made readable by all and under a loose umask")
    func sqliteFilePrivate() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("folio-perm-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let old = umask(0o022)
        defer { umask(old) }
        let path = directory + "/folio.sqlite"
        let database = try FolioDatabase(location: .sqlite(path: path), poolSize: 1, preparedStatements: false, logger: Logger(label: "perm"))
        try await database.sql.raw("PRAGMA journal_mode=WAL").run()
        try await database.sql.raw("CREATE TABLE t (x INTEGER)").run()
        try await database.sql.raw("INSERT INTO t VALUES (1)").run()
        for file in [path, path + "-wal", path + "-shm"] {
            let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
            #expect(mode == 0o600, "\(file): \(String(mode ?? 0, radix: 8))")
        }
        await database.shutdown()
        // A file made readable by all before (an older version, a copy) is not on the next start; a group the operator chose stays.
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        let again = try FolioDatabase(location: .sqlite(path: path), poolSize: 1, preparedStatements: false, logger: Logger(label: "perm"))
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o640)
        await again.shutdown()
    }

    @Test("development without SECRET_KEY generates a key once, keeps it private, and reuses it")
    func developmentKey() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("folio-key-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try ConfigurationLoader.make(from: ["DATA_DIR": directory])
        let second = try ConfigurationLoader.make(from: ["DATA_DIR": directory])
        #expect(first.secretKey.utf8.count == 64)
        #expect(first.secretKey == second.secretKey)
        #expect(first.secretKeySource == .generated(path: directory + "/secret_key"))
        let permissions = try FileManager.default.attributesOfItem(atPath: directory + "/secret_key")[.posixPermissions] as? Int
        #expect(permissions == 0o600)
        #expect(first.database == .sqlite(path: directory + "/folio.sqlite"))
    }

    @Test(".env values apply, the process environment wins over them")
    func dotEnv() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("folio-env-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = directory + "/.env"
        try """
        # comment
        export PORT=9100
        HOST="0.0.0.0"
        SECRET_KEY='\(strongKey)'
        LOG_FORMAT=text   # for humans
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let configuration = try ConfigurationLoader.load(processEnvironment: ["PORT": "9200"], envFile: file)
        #expect(configuration.port == 9200)
        #expect(configuration.host == "0.0.0.0")
        #expect(configuration.secretKey == strongKey)
        #expect(configuration.logFormat == .text)

        // Command-line options (folio serve --port) win over both, and the links sent by email follow them.
        let overridden = try ConfigurationLoader.load(processEnvironment: ["PORT": "9200"], envFile: file, overrides: ["PORT": "9300"])
        #expect(overridden.port == 9300)
        #expect(overridden.publicURL == "http://0.0.0.0:9300")
    }

    @Test(".env lines that are not KEY=value are refused with their line number")
    func dotEnvMalformed() {
        #expect(throws: DotEnv.ParseError.self) { try DotEnv.parse("PORT=1\nthis is not a setting\n") }
    }

    @Test("the shipped .env.example loads in development and its secret is refused in production")
    func envExample() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let example = try DotEnv.load(path: root.appendingPathComponent(".env.example").path)
        #expect(example["SECRET_KEY"] != nil)
        var production = example
        production["ENVIRONMENT"] = "production"
        production["DATABASE_URL"] = "postgres://u:p@db/folio"
        production["ALLOWED_ORIGINS"] = "https://app.example.com"
        production["DEBUG"] = "false"
        production["TESTING"] = "false"
        #expect(problems(production).contains { $0.hasPrefix("SECRET_KEY is a known default") })
    }
}
