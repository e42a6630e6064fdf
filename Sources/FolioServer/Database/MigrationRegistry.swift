import FluentKit

/// Every migration, in the order it runs. Append only: a migration that has
/// shipped is never edited or reordered; a change is a new migration.
enum MigrationRegistry {
    static let all: [any Migration] = [
        CreateUsers(),
        CreateIdentityTables(),
        CreateAccountsAndLedger(),
        CreateOrdersAndJobs(),
        ChainAuditEvents(),
        CreateIdempotencyKeys(),
        CreateQuotesAndCallBudget(),
        CreatePortfolioSnapshotsAndSchedules(),
        ChainsPerAccountAndInstances(),
        CreateSignInFailures(),
        CreateTargetsAndRebalances(),
        CreateBrokerageLinks(),
        CreatePlaidTables(),
        CreateNotificationsAndMail(),
        AddPrivacyColumns(),
        AddAccountClosedAt(),
        CreateRateLimitBuckets(),
        IndexMailByRecipient(),
        TrackPlaidSyncRuns(),
        IndexAuditEventsByActor(),
        AddOrderSentAt(),
        ComposeEmailAddresses(),
        AddOrderTriggeredAt(),
        AddOrderKeepCash(),
        AddInstanceKeys(),
    ]
}
