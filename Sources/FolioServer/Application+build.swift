import FolioDomain
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOSSL
import ServiceLifecycle
import Synchronization

public enum FolioVersion {
    public static let current = "0.1.0"
}

/// Everything Folio's parts are built from that comes from outside the code:
/// configuration, logger, database, clock, id source, and the vendors (market
/// data, broker, mailer). `live` gives the defaults the configuration names;
/// a test replaces what it needs (a fake broker, a fixed clock, counted ids)
/// and builds the same services. `serve`, `worker`, every command and the
/// tests start here.
public struct FolioDependencies: Sendable {
    public var configuration: AppConfiguration
    public var logger: Logger
    public var database: FolioDatabase
    public var clock: AppClock
    public var ids: IDSource
    /// This process, as its heartbeat and the work it holds name it.
    public var instance: String
    /// Nil: Alpha Vantage when a key is configured, else the simulated market.
    var marketData: (any MarketDataProvider)?
    /// Nil: the paper broker as configured (paper accounts; linked accounts trade at their broker).
    var broker: (@Sendable (QuoteService) -> any Broker)?
    /// Nil: SendGrid when configured, else the development outbox.
    var mailTransport: (any MailTransport)?

    public static func live(configuration: AppConfiguration, logger: Logger, database: FolioDatabase, clock: AppClock = .system) -> FolioDependencies {
        FolioDependencies(
            configuration: configuration, logger: logger, database: database, clock: clock, ids: .random,
            instance: "\(ProcessInfo.processInfo.hostName.prefix(40))-\(getpid())-\(UUID.random().uuidString.prefix(8).lowercased())")
    }
}

/// The services, built once from the dependencies: the composition root.
public struct FolioServices: Sendable {
    public let dependencies: FolioDependencies
    let identity: IdentityServices
    let rateLimiter: RateLimiter
    let sharedRateLimiter: SharedRateLimiter
    let anchor: AuditAnchor
    let store: TradingStore
    let ledger: Ledger
    let accounts: AccountService
    let quotes: QuoteService
    let brokers: Brokers
    /// The exchange's calendar and clock: the NYSE's rules, or Alpaca's once an account is linked.
    let calendar: ExchangeCalendar
    let brokerage: BrokerageLinks
    let reconciler: Reconciler
    let jobs: JobQueue
    let orders: OrderService
    /// One per process: placements on one account made at the same time share a transaction.
    let placements: PlacementQueue
    let snapshots: PortfolioSnapshots
    let rebalancing: RebalanceService
    let idempotency: Idempotency
    let instances: Instances
    let pauses: PausePoints
    /// The market-data vendor's back-off and circuit, when a vendor is configured.
    let marketDataGate: VendorGate?
    /// Open HTTP connections, under the connection limit.
    let connections: ConnectionRegistry
    /// Database constraint violations that reached a response.
    let constraintViolations: ConstraintViolations
    /// The Prometheus series `GET /metrics` serves.
    let metrics: FolioMetrics
    /// Submits orders, rechecks resting ones, runs schedules; a service of `serve` and `folio worker`.
    let worker: JobWorker
    /// Sends mail (`send_mail` jobs), one message per claim, apart from `worker`.
    let mailWorker: JobWorker
    /// Alpaca's trade streams, one per linked account; they run beside the worker.
    let tradeStreams: TradeStreams
    /// Banks and brokerages linked through Plaid, and the verifier of Plaid's webhooks.
    let plaid: PlaidLinks
    let plaidWebhooks: PlaidWebhookVerifier
    /// Webhooks refused, by vendor and reason.
    let webhookRejections = WebhookRejections()
    /// Error reports to Sentry, when `SENTRY_DSN` is set: every 500 and every dead job.
    let errorReports: SentryReporter?
    /// What users are told, and the mail that carries it.
    let notifications: Notifications
    /// The links in notifications' mail that stop a category's mail without signing in.
    let unsubscribeLinks: UnsubscribeLinks
    let mail: MailStore
    let mailDelivery: MailDelivery
    let sendGridWebhooks: SendGridWebhookVerifier
    /// Removes what the retention policies no longer keep; daily, and `folio retention run`.
    public let retention: Retention
    /// Reporting reads: the read replica (`READ_DATABASE_URL`) while it is current, the primary otherwise.
    public let reads: ReadRouting
    /// `GET /openapi.json` and the `/docs` page made from it.
    let apiDocumentation: APIDocumentation
    /// The web app's templates and hashed assets.
    let pages: PageRenderer
    /// `folio access-review`, and its monthly mail to the administrators.
    public let accessReview: AccessReview
    /// `folio backup`, its verification, and the daily job.
    public let backups: Backups
    /// GDPR: what Folio holds about a user, and their erasure.
    let personalData: PersonalDataExport
    let erasure: PersonalDataErasure

    public var configuration: AppConfiguration { dependencies.configuration }
    public var logger: Logger { dependencies.logger }
    public var database: FolioDatabase { dependencies.database }
    var clock: AppClock { dependencies.clock }

    public init(_ dependencies: FolioDependencies) async {
        self.dependencies = dependencies
        let configuration = dependencies.configuration, database = dependencies.database, clock = dependencies.clock
        let ids = dependencies.ids, logger = dependencies.logger
        // From here on no log line can carry a configured secret.
        ConfiguredSecrets.register(configuration.secretValues)
        let pauses = PausePoints(configuration.testPause)
        self.pauses = pauses
        let metrics = FolioMetrics()
        self.metrics = metrics
        self.constraintViolations = ConstraintViolations(metrics: metrics)
        let anchor = AuditAnchor(secretKey: configuration.secretKey, previousKeys: configuration.previousSecretKeys)
        self.anchor = anchor
        let store = TradingStore(database: database)
        self.store = store
        let errorReports = configuration.sentry.flatMap { settings -> SentryReporter? in
            guard let sentry = try? SentryConfiguration(dsn: settings.dsn, environment: settings.environment, release: settings.release) else { return nil }
            return SentryReporter(
                configuration: sentry, clock: clock, logger: logger, metrics: metrics,
                onDrop: { reason in metrics.sentryDropped(reason) })
        }
        self.errorReports = errorReports
        var jobs = JobQueue(database: database, clock: clock, ids: ids, instance: dependencies.instance)
        // Every job that dies says so in the log, whatever killed it (its last attempt failed, its worker stopped
        // during it, a payload this version cannot read), with the id and kind the runbook looks for; and to Sentry.
        jobs.onDead = { kind, id, error in
            logger.error("job dead", metadata: ["job_id": .string(id.description), "kind": .string(kind), "error": .string(JobQueue.storable(error))])
            if let errorReports {
                errorReports.report(.forDeadJob(kind: kind, jobID: id.description, error: error, configuration: errorReports.configuration))
            }
        }
        self.jobs = jobs
        let unsubscribeLinks = UnsubscribeLinks(
            publicURL: configuration.publicURL, secretKey: configuration.secretKey, previousKeys: configuration.previousSecretKeys)
        self.unsubscribeLinks = unsubscribeLinks
        let renderer: MailRenderer
        do {
            renderer = try await MailRenderer.bundled(publicURL: configuration.publicURL, unsubscribe: unsubscribeLinks)
            self.apiDocumentation = try APIDocumentation.bundled()
            self.pages = try await PageRenderer.bundled()
        } catch {
            fatalError("Folio cannot start: \(error)")
        }
        let mailStore = MailStore(database: database)
        self.mail = mailStore
        let mailQueue = MailQueue(store: mailStore, jobs: jobs, clock: clock, ids: ids)
        let notifications = Notifications(
            store: NotificationStore(database: database), mail: mailQueue, renderer: renderer, clock: clock, ids: ids)
        self.notifications = notifications
        let transport: any MailTransport = dependencies.mailTransport
            ?? configuration.sendGrid.map { SendGridTransport(settings: $0, httpClient: .vendors, clock: clock, logger: logger, metrics: metrics) }
            ?? OutboxTransport(clock: clock, logger: logger)
        let mailDelivery = MailDelivery(store: mailStore, preferences: notifications.store, renderer: renderer, transport: transport, clock: clock, logger: logger, metrics: metrics)
        self.mailDelivery = mailDelivery
        self.sendGridWebhooks = SendGridWebhookVerifier(publicKey: configuration.sendGrid?.webhookPublicKey, clock: clock)
        let ledger = Ledger(store: store, anchor: anchor, ids: ids, clock: clock, notifications: notifications, metrics: metrics)
        self.ledger = ledger
        self.accounts = AccountService(store: store, ledger: ledger, clock: clock, ids: ids)
        self.identity = await IdentityServices.make(
            configuration: configuration, database: database, clock: clock, ids: ids, anchor: anchor, ledger: ledger, mail: mailQueue,
            notifications: notifications, metrics: metrics)
        self.rateLimiter = RateLimiter(clock: clock)
        self.sharedRateLimiter = SharedRateLimiter(database: database, clock: clock)
        let (marketData, gate) = dependencies.marketData.map { ($0, nil) }
            ?? Self.marketDataProvider(configuration: configuration, database: database, clock: clock, logger: logger, metrics: metrics)
        self.marketDataGate = gate
        let calendar = ExchangeCalendar(logger: logger)
        self.calendar = calendar
        let quotes = QuoteService(
            provider: marketData, store: QuoteStore(database: database), clock: clock, timeToLive: configuration.quoteTimeToLive,
            calendar: { calendar.current })
        self.quotes = quotes
        let paper: any Broker = dependencies.broker?(quotes)
            ?? PaperBroker(
                quotes: quotes, clock: clock, slippageBasisPoints: configuration.paperSlippageBasisPoints, partialFills: configuration.paperPartialFills,
                marketHours: configuration.paperMarketHours, calendar: { calendar.current })
        let brokerageStore = BrokerageStore(database: database)
        let brokers = Brokers(
            paper: paper, store: brokerageStore, secretBox: identity.secretBox, logger: logger, pollInterval: .seconds(configuration.alpacaPollSeconds),
            metrics: metrics)
        self.brokers = brokers
        let reconciler = Reconciler(
            store: brokerageStore, trading: store, ledger: ledger, brokers: brokers, security: identity.security, ids: ids, logger: logger)
        self.reconciler = reconciler
        let brokerage = BrokerageLinks(
            store: brokerageStore, trading: store, ledger: ledger, brokers: brokers, reconciler: reconciler, calendar: calendar, secretBox: identity.secretBox,
            urls: configuration.alpacaURLs, deploymentKeys: configuration.alpaca, logger: logger)
        self.brokerage = brokerage
        let plaidClient = configuration.plaid.map { PlaidClient(settings: $0, logger: logger, metrics: metrics) }
        let plaid = PlaidLinks(
            store: PlaidStore(database: database), client: plaidClient, jobs: jobs, secretBox: identity.secretBox, identity: identity, clock: clock,
            logger: logger, instance: dependencies.instance, pauses: pauses)
        self.plaid = plaid
        self.personalData = PersonalDataExport(database: database, clock: clock)
        let erasure = PersonalDataErasure(identity: identity, plaid: plaid, trading: store, clock: clock)
        self.erasure = erasure
        self.plaidWebhooks = PlaidWebhookVerifier(
            keys: plaidClient.map { client in PlaidKeyCache(clock: clock, fetch: { kid in try await client.verificationKey(kid: kid) }) }, clock: clock)
        let pace = SubmissionPace()
        let queue = jobs
        let backlog = configuration.orderBacklogLimit > 0
            ? OrderBacklog(limit: configuration.orderBacklogLimit, metrics: metrics, count: { try await queue.waiting(.submitOrder) }) : nil
        let orders = OrderService(
            store: store, ledger: ledger, jobs: jobs, brokers: brokers, calendar: calendar, quotes: quotes, clock: clock, ids: ids,
            marketBuyMargin: configuration.marketBuyMargin, maximumOpenOrders: configuration.maximumOpenOrders, logger: logger, pauses: pauses, pace: pace,
            backlog: backlog)
        self.orders = orders
        self.placements = PlacementQueue(orders: orders)
        let snapshots = PortfolioSnapshots(store: store, quotes: quotes, clock: clock, logger: logger)
        self.snapshots = snapshots
        let rebalancing = RebalanceService(
            store: store, rebalances: RebalanceStore(database: database), ledger: ledger, orders: orders, quotes: quotes, jobs: jobs, clock: clock,
            ids: ids, marketBuyMargin: configuration.marketBuyMargin, logger: logger, pauses: pauses)
        self.rebalancing = rebalancing
        self.idempotency = Idempotency(database: database, clock: clock, ids: ids, instance: dependencies.instance, pauses: pauses)
        self.instances = Instances(
            database: database, clock: clock,
            keyFingerprints: Instances.fingerprints(secretKey: configuration.secretKey, previousKeys: configuration.previousSecretKeys))
        // The metrics listener's connections are counted apart from the reserve the database and files need.
        let metricsDescriptors = configuration.metricsPort == nil ? 0 : Self.metricsConnectionLimit
        self.connections = ConnectionRegistry(
            limit: FileDescriptorLimit.connections(
                configured: configuration.connections.maxConnections, fileLimit: FileDescriptorLimit.raise() - metricsDescriptors))
        let started = Mutex(false)
        let orphanSweep = Throttle(every: 60)
        self.tradeStreams = TradeStreams(store: brokerageStore, trading: store, brokers: brokers, orders: orders, pauses: pauses, logger: logger)
        self.reads = ReadRouting(
            primary: database, replicaURL: configuration.readDatabaseURL, maxLag: configuration.readReplicaMaxLag,
            poolSize: configuration.databasePoolSize, logger: logger, metrics: metrics)
        let retention = Retention(database: database, clock: clock, metrics: metrics)
        self.retention = retention
        let backups = Backups(configuration: configuration, database: database, clock: clock, logger: logger, metrics: metrics)
        self.backups = backups
        let accessReview = AccessReview(database: database, clock: clock)
        self.accessReview = accessReview
        let scheduler = JobScheduler(
            database: database, queue: jobs,
            schedules: [
                PortfolioSnapshots.schedule, AuditHeads.schedule, Reconciler.schedule, ExchangeCalendar.schedule, RebalanceService.digestSchedule,
                Retention.schedule,
            ]
                + [AccessReview.schedule]
                + (configuration.backup.scheduled ? [Backups.schedule] : [])
                + (configuration.alpaca == nil ? [] : [BrokerageLinks.defaultLinkSchedule])
                + (configuration.plaid == nil ? [] : [PlaidLinks.dailySync]))
        let workerName = "\(dependencies.instance)-worker"
        /// One item's sync or holdings import; another run's hold on the item puts this job back for a few seconds.
        func plaidWork(_ body: @escaping @Sendable (UUID) async throws -> PlaidLinks.WorkOutcome) -> JobWorker.Handler {
            { batch in
                var outcomes: [JobID: JobOutcome] = [:]
                for job in batch {
                    let item: UUID
                    switch job.payload {
                    case .syncPlaidItem(let id), .refreshPlaidHoldings(let id): item = id
                    default: outcomes[job.id] = .failed("not a Plaid item job"); continue
                    }
                    do {
                        outcomes[job.id] = try await body(item) == .busy ? .later(clock.now().addingTimeInterval(5)) : .done
                    } catch {
                        outcomes[job.id] = .failed(error)
                    }
                }
                return outcomes
            }
        }
        let heads = AuditHeads(database: database, logger: logger)
        self.worker = JobWorker(
            queue: jobs,
            handlers: [
                .submitOrder: { batch in await orders.submit(batch) },
                .cancelAtBroker: JobWorker.each { job in
                    guard case .cancelAtBroker(let id) = job.payload else { return }
                    try await orders.cancelRestAtBroker(id)
                },
                .snapshotPortfolios: JobWorker.each { job in
                    guard case .snapshotPortfolios(let due) = job.payload else { return }
                    try await snapshots.snapshotAll(day: TradingDay(Date(timeIntervalSince1970: TimeInterval(due))))
                },
                .logAuditHeads: JobWorker.each { _ in try await heads.log() },
                .linkDefaultBrokerage: JobWorker.each { _ in _ = try await brokerage.linkDeploymentDefault() },
                .reconcileBrokerage: JobWorker.each { _ in _ = try await reconciler.reconcileAll(dryRun: false) },
                .refreshMarketCalendar: JobWorker.each { _ in try await brokerage.refreshCalendar() },
                .syncPlaidItem: plaidWork { item in try await plaid.sync(item) },
                .refreshPlaidHoldings: plaidWork { item in try await plaid.refreshHoldings(item) },
                .plaidItemNeedsLogin: JobWorker.each { job in
                    guard case .plaidItemNeedsLogin(let item, _, let byWebhook) = job.payload else { return }
                    try await plaid.mailNeedsLogin(item, checkWithPlaid: byWebhook)
                },
                .syncAllPlaidItems: JobWorker.each { _ in try await plaid.enqueueSyncOfAll() },
                .backup: JobWorker.each { _ in try await backups.runScheduled() },
                .accessReview: JobWorker.each { _ in
                    let mailed = try await accessReview.mailAdministrators(notifications: notifications)
                    logger.info("access review mailed", metadata: ["administrators": .stringConvertible(mailed)])
                },
                .runRetention: JobWorker.each { _ in
                    let outcomes = try await retention.run(dryRun: false)
                    // "policy rows" strings, not keys: a policy named for its table (`email_tokens`) is not a secret's key.
                    logger.info("retention ran", metadata: ["removed": .array(outcomes.map { .string("\($0.policy) \($0.rows)") })])
                },
                .driftDigest: JobWorker.each { job in
                    guard case .driftDigest(let due) = job.payload else { return }
                    try await rebalancing.sendDriftDigests(day: TradingDay(Date(timeIntervalSince1970: TimeInterval(due))), notifications: notifications)
                },
                .advanceRebalance: { batch in
                    var outcomes: [JobID: JobOutcome] = [:]
                    for job in batch {
                        do { outcomes[job.id] = try await rebalancing.advance(job) } catch { outcomes[job.id] = .failed(error) }
                    }
                    return outcomes
                },
            ],
            name: workerName, pollInterval: .milliseconds(200), logger: logger,
            onIdle: {
                // Once per process: the deployment's Alpaca keys and Alpaca's calendar need not wait for their schedules' first turn.
                if started.withLock({ started in defer { started = true }; return !started }) {
                    do { _ = try await brokerage.linkDeploymentDefault() } catch { logger.warning("linking the deployment's Alpaca keys failed; retried every ten minutes", metadata: ["error": "\(error)"]) }
                    do { try await brokerage.refreshCalendar() } catch { logger.warning("reading Alpaca's market calendar failed; retried daily", metadata: ["error": "\(error)"]) }
                }
                do { try await brokerage.refreshClock() } catch { logger.debug("reading Alpaca's clock failed", metadata: ["error": "\(error)"]) }
                do { try await scheduler.enqueueDue() } catch { logger.error("job schedules failed", metadata: ["error": "\(error)"]) }
                do { try await orders.recheckRestingOrders() } catch { logger.warning("rechecking resting orders failed", metadata: ["error": "\(error)"]) }
                if orphanSweep.isDue(at: clock.now()) {
                    do { try await rebalancing.settleOrphanedRuns() } catch { logger.warning("ending rebalance runs whose job died failed", metadata: ["error": "\(error)"]) }
                    do { try await erasure.reopenAbandonedHolds() } catch { logger.warning("opening accounts an unfinished erasure held failed", metadata: ["error": "\(error)"]) }
                }
            },
            pace: pace, filter: .except([.sendMail]), violations: constraintViolations)
        let mailSweep = Throttle(every: 60)
        // One message per claim, each send within SendGrid's 15 s timeout: far inside a job's 60 s lease.
        self.mailWorker = JobWorker(
            queue: jobs,
            handlers: [
                .sendMail: { batch in
                    var outcomes: [JobID: JobOutcome] = [:]
                    for job in batch { outcomes[job.id] = await mailDelivery.run(job) }
                    return outcomes
                }
            ],
            name: "\(dependencies.instance)-mail", pollInterval: .milliseconds(500), logger: logger,
            onIdle: {
                if mailSweep.isDue(at: clock.now()) { await mailDelivery.sweep() }
            },
            concurrency: 2, batchSize: 1, filter: .only([.sendMail]), violations: constraintViolations)
    }

    /// Alpha Vantage behind its gate when a key is configured, the simulated market otherwise.
    static func marketDataProvider(
        configuration: AppConfiguration, database: FolioDatabase, clock: AppClock, logger: Logger, metrics: FolioMetrics? = nil
    ) -> (any MarketDataProvider, VendorGate?) {
        guard let settings = configuration.alphaVantage else { return (SimulatedMarketDataProvider(market: SimulatedMarket(), clock: clock), nil) }
        var vendor = AlphaVantageProvider(
            apiKey: settings.apiKey, baseURL: settings.baseURL,
            budget: CallBudget(database: database, provider: AlphaVantageProvider.name, perMinute: settings.callsPerMinute, perDay: settings.callsPerDay, clock: clock),
            clock: clock, httpClient: .vendors, logger: logger)
        vendor.metrics = metrics
        let gate = VendorGate(vendor: AlphaVantageProvider.name, clock: clock, logger: logger)
        return (GatedMarketDataProvider(base: vendor, gate: gate), gate)
    }

    /// The first run after the upgrade to per-account chains anchors the legacy chain's head and opens the older
    /// accounts' chains (`AuditChain.anchorLegacyTrail`). Commands that write run it too: an upgrade whose
    /// `folio migrate` stopped before it must not see a command's write first (the head would then never be anchored).
    public func anchorLegacyTrail() async throws {
        switch try await AuditChain.anchorLegacyTrail(anchor: anchor, ids: dependencies.ids, clock: clock, database: database) {
        case .nothingToDo: break
        case .anchored(let accounts):
            logger.info("anchored the head of the legacy audit chain, and opened audit chains for accounts from before per-account chains", metadata: [
                "accounts": .stringConvertible(accounts),
            ])
        case .headRemoved:
            logger.error("the legacy audit chain has lost its anchored head (it was removed outside Folio): it is not anchored again; see `folio audit verify`")
        }
    }

    /// `folio audit open-legacy-chains`: opens a chain for every account from before per-account chains that has
    /// none (an upgrade by an older build that stopped part-way), each opening saying so. An operator's decision
    /// after `folio audit verify` named them: it would open one whose chain was removed just the same.
    public func openLegacyAccountChains() async throws -> Int {
        try await anchorLegacyTrail()
        return try await database.transaction { db in
            try await AuditChain.openLegacyAccountChains(
                reason: "opened by an operator (folio audit open-legacy-chains): the account had no chain after the upgrade",
                anchor: anchor, ids: dependencies.ids, clock: clock, database: database, on: db)
        }
    }

    /// Work before serving, after an upgrade or a key rotation: the legacy audit
    /// chain's head is anchored, accounts opened before per-account chains get
    /// theirs, and heads signed under a previous key are signed under the current one.
    public func prepare() async throws {
        try await anchorLegacyTrail()
        // Heads signed again under this key would stop a running instance that does not know it (a rolling deploy of a
        // new key that skipped giving every instance the new key first): left as they are until none runs.
        let unaware = try await instances.aliveWithout(key: configuration.secretKey)
        if unaware.isEmpty {
            let resigned = try await AuditChain.resignHeads(anchor: anchor, database: database)
            if resigned > 0 { logger.info("signed audit chain heads again under the current key", metadata: ["heads": .stringConvertible(resigned)]) }
        } else {
            logger.warning("audit chain heads not signed again: running instances do not know this SECRET_KEY yet (see docs/SECURITY.md, rotating the key)", metadata: [
                "instances": .string(unaware.sorted().joined(separator: ", ")),
            ])
        }
        let (unsigned, heads) = try await AuditChain.headSignatures(anchor: anchor, database: database)
        // Every head under an unknown key is a wrong key, not tampering: serving would fail every write (and sign-in) with a 500.
        if heads > 1, unsigned.count == heads { throw AuditChain.SignedUnderAnotherKey(heads: heads) }
        if !unsigned.isEmpty {
            // Nothing more is appended to them (every write on those accounts fails) until the signing key is configured again.
            logger.error("audit chain heads signed under no configured key: nothing more can be recorded on those chains; put the key that signed them back in PREVIOUS_SECRET_KEYS, or see `folio audit verify`", metadata: [
                "chains": .stringConvertible(unsigned.count), "first": .string(unsigned.prefix(5).joined(separator: ", ")),
            ])
        }
        let chainless = try await database.sql.raw(AuditChain.accountsWithoutChain).all().count
        if chainless > 0 {
            logger.error("accounts without an audit chain (their events were removed outside Folio): nothing more can be recorded on them; see `folio audit verify`", metadata: [
                "accounts": .stringConvertible(chainless),
            ])
        }
        // The hash no password matches is made now, not on the first sign-in with an unknown address or the first
        // second sign-up: that one bcrypt would make one answer slower, a hint that the address has an account.
        _ = try await identity.hasher.unusableHash()
    }

    /// The router with every route and middleware. `extraRoutes` lets tests add
    /// routes behind the same middleware stack.
    public func buildRouter(table: RouteTable = RouteTable(), extraRoutes: (RecordingRouter<FolioRequestContext>) -> Void = { _ in }) -> Router<FolioRequestContext> {
        let router = Router(context: FolioRequestContext.self)
        let routes = RecordingRouter(router: router, table: table)
        let formSlot = FormBridge.Slot()
        // Outermost first; each sees what the ones inside it answer. One stack of
        // fixed type (Hummingbird's middleware builder), so each calls the next
        // directly rather than through an existential per middleware. A middleware
        // that is off (rate limits in development and benchmarks, the origin
        // guard without CSRF protection) costs one check.
        let limits = configuration.rateLimit.enabled ? rateLimiter : nil
        routes.addMiddleware {
            EdgeMiddleware(
                trustedProxies: TrustedProxies(configuration.trustedProxies) ?? .none, production: configuration.isProduction,
                metrics: configuration.requestMetrics ? metrics : nil)
            CORSMiddleware(configuration: configuration, security: identity.security)
            if let limits {
                RateLimitMiddleware(
                    scope: .client, settings: configuration.rateLimit, limiter: limits, shared: sharedRateLimiter, security: identity.security,
                    refusalPage: { [pages] problem, sentForm in pages.refusalPage(problem, viewer: nil, sentForm: sentForm) })
            }
            ProblemMiddleware(routes: table, violations: constraintViolations, errors: errorReports, missingPage: { [pages, identity] viewer in pages.missingPage(for: viewer, csrf: identity.csrf) },
                refusalPage: { [pages, identity] problem, viewer, sentForm in
                    pages.refusalPage(problem, viewer: viewer.map { PageRenderer.Viewer($0, csrf: identity.csrf) }, sentForm: sentForm)
                })
            RequestBodyMiddleware(maxBodySize: configuration.maxBodySize, logBodies: configuration.debug, queries: apiDocumentation.queries)
            if configuration.csrfProtectionEnabled {
                OriginGuardMiddleware(configuration: configuration, security: identity.security)
            }
            AuthenticationMiddleware(services: identity)
            if let limits {
                RateLimitMiddleware(scope: .user, settings: configuration.rateLimit, limiter: limits, shared: sharedRateLimiter, security: identity.security)
            }
        }

        HealthController(database: database, version: FolioVersion.current, startedAt: .now, opsToken: configuration.opsToken, marketData: marketDataGate,
                      webhookRejections: webhookRejections)
            .addRoutes(to: routes)
        AuthController(services: identity).addRoutes(to: routes)
        TwoFactorController(services: identity).addRoutes(to: routes)
        let adminController = AdminController(services: identity)
        adminController.addRoutes(to: routes)
        let accountsController = AccountsController(accounts: accounts, store: store, idempotency: idempotency, reads: reads)
        accountsController.addRoutes(to: routes)
        let brokerageController = BrokerageController(links: brokerage)
        brokerageController.addRoutes(to: routes)
        let linksController = LinksController(links: plaid)
        linksController.addRoutes(to: routes)
        PlaidWebhookController(links: plaid, verifier: plaidWebhooks, security: identity.security, rejections: webhookRejections, metrics: metrics)
            .addRoutes(to: routes)
        SendGridWebhookController(
            verifier: sendGridWebhooks, events: SendGridEvents(store: mail, clock: clock, logger: logger, metrics: metrics), security: identity.security,
            rejections: webhookRejections, metrics: metrics)
            .addRoutes(to: routes)
        let notificationsController = NotificationsController(store: notifications.store, clock: clock, unsubscribe: unsubscribeLinks, security: identity.security)
        notificationsController.addRoutes(to: routes)
        PrivacyController(export: personalData, erasure: erasure).addRoutes(to: routes)
        apiDocumentation.addRoutes(to: routes)
        MetricsController(
            metrics: metrics, jobs: jobs, clock: clock, opsToken: configuration.opsToken, production: configuration.isProduction,
            marketData: marketDataGate, backups: backups, trading: store, calendar: calendar)
            .addRoutes(to: routes)
        MarketDataController(quotes: quotes, calendar: calendar).addRoutes(to: routes)
        let portfolioController = PortfolioController(store: store, quotes: quotes, snapshots: snapshots, linked: plaid.store, brokerage: brokerage.store, reads: reads)
        portfolioController.addRoutes(to: routes)
        let performanceController = PerformanceController(store: store, quotes: quotes, snapshots: snapshots, reads: reads)
        performanceController.addRoutes(to: routes)
        let ordersController = OrdersController(orders: orders, placements: placements, store: store, idempotency: idempotency)
        ordersController.addRoutes(to: routes)
        let rebalanceController = RebalanceController(rebalancing: rebalancing, store: store, idempotency: idempotency)
        rebalanceController.addRoutes(to: routes)
        WebController(
            renderer: pages, identity: identity, portfolio: portfolioController, performance: performanceController, orders: ordersController, accounts: accountsController,
            admin: adminController, rebalance: rebalanceController, links: linksController, brokerage: brokerageController,
            plaidConfigured: configuration.plaid != nil, forms: FormBridge(slot: formSlot, renderer: pages, identity: identity, requireSameOrigin: configuration.csrfProtectionEnabled), notifications: notificationsController, accessReview: accessReview, quotes: quotes,
            marketBuyMargin: configuration.marketBuyMargin)
            .addRoutes(to: routes)
        extraRoutes(routes)
        formSlot.responder.withLock { $0 = router.buildResponder() }
        return router
    }

    public func buildApplication(
        extraRoutes: (RecordingRouter<FolioRequestContext>) -> Void = { _ in }
    ) throws -> some ApplicationProtocol {
        let logger = self.logger
        var application = Application(
            router: buildRouter(extraRoutes: extraRoutes),
            server: try serverBuilder(),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            // The address actually bound: with PORT=0 the kernel chose a free port, and this line says which.
            onServerRunning: { channel in
                logger.info("listening", metadata: [
                    "address": .string(channel.localAddress?.ipAddress ?? configuration.host),
                    "port": .stringConvertible(channel.localAddress?.port ?? configuration.port),
                ])
            },
            logger: logger)
        application.addServices(
            DatabaseService(database: database, quotes: quotes),
            HeartbeatService(instances: instances, id: dependencies.instance, kind: "serve", logger: logger),
            poolWatchdog())
        if let errorReports { application.addServices(errorReports) }
        if let metricsPort = configuration.metricsPort { application.addServices(metricsListener(port: metricsPort)) }
        if configuration.serveRunsWorker {
            application.addServices(worker, mailWorker)
            if configuration.alpacaStream { application.addServices(tradeStreams) }
        }
        return application
    }

    /// `/metrics` alone on 127.0.0.1:`METRICS_PORT`: a scraper on this machine
    /// needs no token, and nothing else can connect. Its answers carry the same
    /// headers as the main listener's, HEAD is answered where GET is, and an
    /// error is a problem like any other. Its connections have the main
    /// listener's deadlines and header limits, and a limit of their own
    /// (`metricsConnectionLimit`), so a local process holding sockets open to it
    /// cannot use up the descriptors the API needs.
    func metricsListener(port: Int) -> some Service {
        let router = Router(context: FolioRequestContext.self)
        let table = RouteTable()
        let routes = RecordingRouter(router: router, table: table)
        routes.addMiddleware {
            EdgeMiddleware(trustedProxies: .none, production: configuration.isProduction, metrics: nil)
            ProblemMiddleware(routes: table, violations: constraintViolations)
        }
        MetricsController(
            metrics: metrics, jobs: jobs, clock: clock, opsToken: nil, production: false, marketData: marketDataGate, backups: backups,
            trading: store, calendar: calendar)
            .addRoutes(to: routes)
        let logger = self.logger
        return Listener(setting: "METRICS_PORT", address: "127.0.0.1:\(port)", server: Application(
            router: router, server: http1(ConnectionRegistry(limit: Self.metricsConnectionLimit)),
            configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: nil),
            onServerRunning: { channel in
                logger.info("metrics listening", metadata: ["address": "127.0.0.1", "port": .stringConvertible(channel.localAddress?.port ?? port)])
            },
            logger: logger))
    }

    func poolWatchdog() -> PoolWatchdog {
        let database = self.database
        return PoolWatchdog(pingEachPool: { await database.pingEachPool() }, logger: logger)
    }

    /// Runs only the job worker (for `folio worker`), until SIGTERM or SIGINT.
    public func runWorker() async throws {
        try await Self.runUntilSignalled(workerServices(), logger: logger)
    }

    /// A graceful shutdown longer than this (a request or job waiting on a database that will never answer)
    /// is cut short by cancellation; a cancellation that does not end either stops the process with an error.
    /// So SIGTERM always ends it, and the supervisor can start a fresh one.
    static let gracefulShutdownLimit: Duration = .seconds(90)
    static let cancellationLimit: Duration = .seconds(30)

    /// The one service (`serve`'s application, which runs its own) until SIGTERM or SIGINT, within the limits above.
    public static func runUntilSignalled(_ service: any Service, logger: Logger) async throws {
        try await runUntilSignalled([.init(service: service)], logger: logger)
    }

    /// Runs the services until SIGTERM or SIGINT, within the limits above.
    public static func runUntilSignalled(_ services: [ServiceGroupConfiguration.ServiceConfiguration], logger: Logger) async throws {
        var configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        configuration.maximumGracefulShutdownDuration = gracefulShutdownLimit
        configuration.maximumCancellationDuration = cancellationLimit
        try await ServiceGroup(configuration: configuration).run()
    }

    /// What `folio worker` runs, in start order. Services stop in reverse order: the error reporter stops
    /// after the workers, so a job that dies while they drain is still sent to Sentry.
    func workerServices() -> [ServiceGroupConfiguration.ServiceConfiguration] {
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: DatabaseService(database: database, quotes: quotes))]
        if let errorReports { services.append(.init(service: errorReports)) }
        services.append(.init(service: HeartbeatService(instances: instances, id: dependencies.instance, kind: "worker", logger: logger)))
        services.append(.init(service: poolWatchdog()))
        services.append(.init(service: worker))
        services.append(.init(service: mailWorker))
        if configuration.alpacaStream { services.append(.init(service: tradeStreams)) }
        // Each process counts its own series: a separate worker serves them on its own METRICS_PORT.
        if let port = configuration.metricsPort { services.append(.init(service: metricsListener(port: port))) }
        return services
    }

    /// HTTP/1.1, over TLS when TLS_CERT_PATH and TLS_KEY_PATH are set.
    /// Each connection gets the connection guard (limits and deadlines) and
    /// problem+json answers to requests the HTTP decoder cannot read.
    func serverBuilder() throws -> HTTPServerBuilder {
        let limits = configuration.connections
        if connections.limit < limits.maxConnections {
            logger.warning("MAX_CONNECTIONS lowered to fit the open-file limit", metadata: [
                "configured": .stringConvertible(limits.maxConnections), "used": .stringConvertible(connections.limit),
                "open_file_limit": .stringConvertible(connections.limit + FileDescriptorLimit.reserve),
            ])
        }
        let http1 = http1(connections)
        guard let certificatePath = configuration.tlsCertificatePath, let keyPath = configuration.tlsKeyPath else { return http1 }
        let certificates = try NIOSSLCertificate.fromPEMFile(certificatePath).map { NIOSSLCertificateSource.certificate($0) }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: certificates, privateKey: .privateKey(try NIOSSLPrivateKey(file: keyPath, format: .pem)))
        tls.minimumTLSVersion = .tlsv12
        return try .tls(http1, tlsConfiguration: tls)
    }

    /// Connections the metrics listener keeps open at most: scrapers are few.
    static let metricsConnectionLimit = 64

    /// HTTP/1.1 with Folio's header limits, the framing rules Hummingbird leaves out (`HTTP1Framing`), its problem
    /// answers for requests the decoder cannot read, and `registry`'s connection limit and deadlines.
    func http1(_ registry: ConnectionRegistry) -> HTTPServerBuilder {
        let limits = configuration.connections, production = configuration.isProduction, logger = self.logger
        let channel = HTTP1Channel.Configuration(
            additionalChannelHandlers: [
                MalformedRequestProblems(production: production, logger: logger),
                ConnectionGuard(registry: registry, limits: limits, logger: logger),
            ],
            httpDecoderConfiguration: .init(maxHeaderFieldSize: 16 * 1024, maxHeaderListSize: 64 * 1024, maxHeaderFieldCount: 100))
        let maxBodySize = configuration.maxBodySize
        return HTTPServerBuilder { responder in
            FramedHTTP1Channel(base: HTTP1Channel(responder: responder, configuration: channel), maxBodySize: maxBodySize)
        }
    }
}

/// Closes the database pools when the service group shuts down, once the
/// quote refreshes in flight (which save what they fetch) have ended.
struct DatabaseService: Service {
    let database: FolioDatabase
    let quotes: QuoteService

    func run() async throws {
        let graceful = (try? await gracefulShutdown()) != nil
        // Quote refreshes left running in the background save what they fetch: at most 15 seconds, so a vendor
        // that does not answer does not hold shutdown. In a task of its own, which a cancelled group's
        // cancellation does not reach (a cancelled task's sleeps end at once).
        await Task { await quotes.settle() }.value
        // Cancelled, not shut down (another service failed, a listener's port was taken): the other services
        // stop at the same moment and may still use the database, so it is left to its owner to shut it
        // down after the whole group has stopped (`serve` and `worker` do).
        // Connections a dropped database left counted as lent out never come back: the close waits 10 s at most.
        if graceful, await resultWithin(.seconds(10), { await database.shutdown() }) == nil {
            database.logger.warning("the database pools did not close within 10 s; stopping without them")
        }
    }
}

extension Logger {
    /// The process logger: Folio's handler with the configured level and format.
    public static func folio(label: String = "folio", configuration: AppConfiguration, sink: @escaping FolioLogHandler.Sink = StandardOutput.writeLine) -> Logger {
        ConfiguredSecrets.register(configuration.secretValues)
        return Logger(label: label) { label in
            FolioLogHandler(label: label, level: configuration.logLevel, format: configuration.logFormat, sink: sink)
        }
    }
}
