import FluentKit
import FluentPostgresDriver
import FluentSQLiteDriver
import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import SQLKit
import SQLiteNIO

/// The one database Folio talks to, SQLite or PostgreSQL, with its migrations.
///
/// Owns the FluentKit `Databases` (connection pools) and must be shut down.
public final class FolioDatabase: Sendable {
    public enum Kind: String, Sendable {
        case sqlite, postgres
    }

    public let kind: Kind
    public let databases: Databases
    public let migrations: Migrations
    let logger: Logger
    let eventLoopGroup: any EventLoopGroup
    /// SQLite work all goes through one event loop, and so one connection:
    /// SQLite has a single writer anyway, and a second connection would turn
    /// concurrent read-then-write transactions into SQLITE_BUSY errors.
    let sqliteLoop: (any EventLoop)?
    /// The connections this process may open: one for SQLite, the pool over every event loop for PostgreSQL.
    public let poolSize: Int
    /// On PostgreSQL, the statements hand-written SQL sends prepared (nil: every statement unnamed).
    let preparedStatements: PreparedStatements?

    public init(
        location: AppConfiguration.DatabaseLocation,
        poolSize: Int,
        preparedStatements: Bool,
        logger: Logger,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws {
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
        self.databases = Databases(threadPool: NIOThreadPool.singleton, on: eventLoopGroup)
        switch location {
        case .sqlite(let path):
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty {
                // The file holds every user's data: only the server's account may read it.
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            }
            // The file itself too, whatever the umask or a directory made by hand (Docker's, a plain mkdir) allows:
            // an empty file is an empty database, and SQLite gives its -wal and -shm files the database's mode.
            Self.restrictToOwner(path)
            self.kind = .sqlite
            self.poolSize = 1
            // SQL is logged at trace: statements carry bound values only as placeholders, but stay quiet by default.
            // One connection serves every query in turn; under a burst (or a busy machine) the queue for it
            // can pass the driver's default 10 s wait, which turned a slow moment into errors. Wait longer.
            databases.use(.sqlite(.file(path), connectionPoolTimeout: .seconds(60), sqlLogLevel: .trace), as: .sqlite)
        case .postgres(let url):
            self.kind = .postgres
            // The pool is spread over the event loops; round up so the total is at least the configured size.
            let loops = max(1, Array(eventLoopGroup.makeIterator()).count)
            let perLoop = max(1, (poolSize + loops - 1) / loops)
            self.poolSize = perLoop * loops
            // As on SQLite: a burst that queues for a connection longer than the driver's 10 s default waits, not fails.
            databases.use(
                try .postgres(url: url, maxConnectionsPerEventLoop: perLoop, connectionPoolTimeout: .seconds(60), sqlLogLevel: .trace),
                as: .psql)
        }
        self.preparedStatements = kind == .postgres && preparedStatements ? PreparedStatements() : nil
        self.sqliteLoop = kind == .sqlite ? eventLoopGroup.next() : nil
        self.migrations = Migrations()
        migrations.add(MigrationRegistry.all)
    }

    /// Creates the SQLite file (empty) readable by its owner only, and takes away what an existing one and
    /// its -wal and -shm allow to others (a group the operator chose, a backup reader's, stays).
    static func restrictToOwner(_ path: String) {
        let files = FileManager.default
        if !files.fileExists(atPath: path) { files.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) }
        for file in [path, path + "-wal", path + "-shm"] {
            guard let mode = (try? files.attributesOfItem(atPath: file)[.posixPermissions]) as? Int, mode & 0o007 != 0 else { continue }
            try? files.setAttributes([.posixPermissions: mode & ~0o007], ofItemAtPath: file)
        }
    }

    /// PostgreSQL's client connections to this database by state (`active`,
    /// `idle`, `idle in transaction`…), every instance's together, as the
    /// server sees them; empty on SQLite (one connection, always this process's).
    public func connectionStates() async throws -> [String: Int] {
        guard kind == .postgres else { return [:] }
        var states: [String: Int] = [:]
        for row in try await sql.raw("""
            SELECT COALESCE(state, 'unknown') AS state, COUNT(*) AS n FROM pg_stat_activity
            WHERE datname = current_database() AND backend_type = 'client backend' GROUP BY state
            """).all() {
            states[try row.decode(column: "state", as: String.self)] = try row.decode(column: "n", as: Int.self)
        }
        return states
    }

    /// A database handle for one unit of work.
    public var db: any Database {
        databases.database(logger: logger, on: sqliteLoop ?? eventLoopGroup.any())!
    }

    /// A handle (a transaction's, say) for hand-written SQL.
    func sqlDatabase(_ db: any Database) -> any SQLDatabase {
        if let preparedStatements, let postgres = db as? any SQLDatabase & PostgresDatabase {
            return PreparingSQLDatabase(base: postgres, statements: preparedStatements)
        }
        return db as! any SQLDatabase
    }

    /// The same handle for hand-written SQL.
    public var sql: any SQLDatabase {
        sqlDatabase(db)
    }

    /// Runs `body` in one transaction and commits it, or rolls it back when
    /// `body` throws. On SQLite, a transaction that another process's writer
    /// made busy (a `folio worker` or command beside the server) rolled back
    /// whole and is run again, after a short, growing pause.
    public func transaction<T: Sendable>(_ body: @escaping @Sendable (any SQLDatabase) async throws -> T) async throws -> T {
        try await retryingBusy { try await withTransaction(db) { try await body(self.sqlDatabase($0)) } }
    }

    /// A transaction that only reads (one consistent snapshot), run as `transaction` but without SQLite's write
    /// lock: a long read (a verification walking the whole trail) beside a server then holds none of its writes
    /// back. A read-only transaction never meets a busy snapshot, as it never writes.
    public func readTransaction<T: Sendable>(_ body: @escaping @Sendable (any SQLDatabase) async throws -> T) async throws -> T {
        guard kind == .sqlite else { return try await transaction(body) }
        return try await retryingBusy { try await db.transaction { try await body(self.sqlDatabase($0)) } }
    }

    /// The same with Fluent's handle, for models. A try that rolled back may leave a model it inserted
    /// believing it is saved: `body` only saves models that existed before it (or makes them itself).
    func modelTransaction<T: Sendable>(_ body: @escaping @Sendable (any Database) async throws -> T) async throws -> T {
        try await retryingBusy { try await withTransaction(db, body) }
    }

    /// How long BEGIN, ROLLBACK and COMMIT may go unanswered on PostgreSQL before the connection is given up.
    static let transactionControlLimit: Duration = .seconds(10)
    static let commitLimit: Duration = .seconds(30)

    /// FluentKit's transaction, except on PostgreSQL. There, when the server ends a connection in the middle
    /// of a transaction (a restart, a failover, `pg_terminate_backend`), the ROLLBACK or COMMIT that follows
    /// can go unanswered for ever: PostgresNIO never completes a query written to a channel that has just
    /// closed. That held the request, the account's placement line (every later order of the account
    /// waited) and the pool's connection, for good. Here each of BEGIN, ROLLBACK and COMMIT has a limit;
    /// past it the connection is closed, so the pool lends it no more, and the transaction ends with an error
    /// (after a COMMIT, one whose outcome is unknown, as any failure at the commit is).
    private func withTransaction<T: Sendable>(_ db: any Database, _ body: @escaping @Sendable (any Database) async throws -> T) async throws -> T {
        guard kind == .postgres else {
            return try await db.transaction { db in
                try await Self.takeSQLiteWriteLock(db as! any SQLDatabase)
                return try await body(db)
            }
        }
        return try await db.withConnection { connection in
            guard let control = connection as? any TransactionControlDatabase, let postgres = connection as? any PostgresDatabase else {
                return try await db.transaction(body)
            }
            try await Self.answered(control.beginTransaction(), on: postgres, within: Self.transactionControlLimit, what: "BEGIN")
            let result: T
            do {
                result = try await body(connection)
            } catch {
                // A connection that is gone was rolled back by the server already: the body's error is the answer.
                // One whose ROLLBACK failed otherwise may still be in the transaction: closed, never lent again so.
                do {
                    try await Self.answered(control.rollbackTransaction(), on: postgres, within: Self.transactionControlLimit, what: "ROLLBACK")
                } catch {
                    _ = try? await postgres.withConnection { $0.close() }.get()
                }
                throw error
            }
            try await Self.answered(control.commitTransaction(), on: postgres, within: Self.commitLimit, what: "COMMIT")
            return result
        }
    }

    /// SQLite's write lock, taken by the transaction's first statement (a write that changes nothing), as
    /// `BEGIN IMMEDIATE` would (Fluent begins deferred). While another process (a `folio worker`, a command)
    /// writes, `busy_timeout` waits for the lock here. A deferred transaction that read first failed at its
    /// first write at once instead ("database is locked", SQLITE_BUSY_SNAPSHOT: busy_timeout does not wait
    /// on a snapshot another process has written past), and its retries could all fail the same way. Every
    /// transaction of a process runs on its one connection, so nothing within the process waits longer.
    /// Before the first migration there is no table to write: nothing is locked then.
    static func takeSQLiteWriteLock(_ sql: any SQLDatabase) async throws {
        do {
            try await sql.raw("UPDATE _fluent_migrations SET batch = batch WHERE 0 = 1").run()
        } catch let error as SQLiteError where error.message.contains("no such table") {
            return
        }
    }

    /// A statement that went unanswered past its limit; the connection was closed.
    struct Unanswered: Error, CustomStringConvertible {
        let statement: String
        var description: String { "PostgreSQL did not answer \(statement) in time; the connection was closed" }
    }

    /// Waits for the statement's answer, at most `limit`; past it, closes the connection and throws `Unanswered`.
    static func answered(_ statement: EventLoopFuture<Void>, on connection: any PostgresDatabase, within limit: Duration, what: String) async throws {
        let outcome = await resultWithin(limit) { () async -> Result<Void, any Error> in
            do { return .success(try await statement.get()) } catch { return .failure(error) }
        }
        guard let outcome else {
            _ = try? await connection.withConnection { $0.close() }.get()
            throw Unanswered(statement: what)
        }
        try outcome.get()
    }

    /// Runs `attempt` (one whole transaction) again while SQLite says another
    /// process's writer made it busy, or PostgreSQL chose it as a deadlock's
    /// victim (rolled back whole), after a short, growing pause.
    func retryingBusy<T>(_ attempt: () async throws -> T) async throws -> T {
        var tries = 0
        while true {
            do {
                return try await attempt()
            } catch where (kind == .sqlite ? Self.isBusy(error) : Self.isDeadlock(error)) && tries < Self.busyRetries {
                tries += 1
                try await Task.sleep(for: .milliseconds(Int.random(in: 5...20) << min(tries, 6)))
            }
        }
    }

    /// PostgreSQL's `deadlock_detected` (SQLSTATE 40P01): two transactions waited on each other and this
    /// one was rolled back so the other could go on (an erasure's cascade against a mail being sent, say).
    static func isDeadlock(_ error: any Error) -> Bool {
        (error as? PSQLError)?.serverInfo?[.sqlState] == "40P01"
    }

    static let busyRetries = 8

    /// SQLite's "database is locked": another connection holds the write lock; or PostgreSQL's
    /// `lock_not_available` (SQLSTATE 55P03): a wait for a row another process holds passed
    /// `lock_timeout` (`TradingStore.waitLimits`), and the transaction was rolled back.
    static func isBusy(_ error: any Error) -> Bool {
        if let error = error as? PSQLError { return error.serverInfo?[.sqlState] == "55P03" }
        guard let error = error as? SQLiteError else { return false }
        switch error.reason {
        case .busy, .busyTimeout, .busyInRecovery, .busyInSnapshot, .locked, .lockedBySharedCache: return true
        default: return false
        }
    }

    /// One trivial statement through each event loop's pool (PostgreSQL's pools are one per loop; SQLite's one
    /// connection lives on one loop), all at once: one pool left without connections shows here.
    func pingEachPool() async -> [Result<Void, any Error>] {
        let loops = sqliteLoop.map { [$0] } ?? Array(eventLoopGroup.makeIterator())
        return await withTaskGroup(of: (Int, Result<Void, any Error>).self) { group in
            for (index, loop) in loops.enumerated() {
                group.addTask {
                    let db = self.sqlDatabase(self.databases.database(logger: self.logger, on: loop)!)
                    do { return (index, .success(try await db.raw("SELECT 1").run())) } catch { return (index, .failure(error)) }
                }
            }
            var results = [Result<Void, any Error>](repeating: .success(()), count: loops.count)
            for await (index, result) in group { results[index] = result }
            return results
        }
    }

    public func shutdown() async {
        await databases.shutdownAsync()
    }

    // MARK: - Migrations

    var migrator: Migrator {
        Migrator(databases: databases, migrations: migrations, logger: logger, on: sqliteLoop ?? eventLoopGroup.any())
    }

    /// Prepares the SQLite file for concurrent readers; a no-op on PostgreSQL.
    public func prepareConnectionSettings() async throws {
        guard kind == .sqlite else { return }
        try await sql.raw("PRAGMA journal_mode=WAL").run()
        // Wait for a lock held by another process (a `folio worker` or command) instead of failing at once;
        // a transaction that would deadlock on it fails at once and `transaction` runs it again.
        try await sql.raw("PRAGMA busy_timeout=5000").run()
        // Deleted rows are overwritten with zeros, not left in free pages: an erased person's address or an
        // expired session does not linger in the file (PostgreSQL's VACUUM does the same for dead rows).
        try await sql.raw("PRAGMA secure_delete=ON").run()
    }

    /// Every migration this build knows, in the order they run.
    public static var migrationNames: [String] { MigrationRegistry.all.map(\.name) }

    /// Names of migrations not yet applied, in the order they would run. Reads only: the migration log is
    /// not created here (`migrate --list` or a probe of an empty database would leave a table behind, and a
    /// restore or a copy then refuses the database as not empty).
    public func pendingMigrations() async throws -> [String] {
        try await migrationStatus().pending
    }

    /// The migration log read once: what is applied (oldest first, with batches), what this build would still
    /// apply, and what it does not know (a newer Folio's). Reads only, as `pendingMigrations`.
    public struct MigrationStatus: Sendable {
        public var applied: [(name: String, batch: Int)]
        public var pending: [String]
        public var newer: [String]
    }

    public func migrationStatus() async throws -> MigrationStatus {
        try await migrationStatus(known: MigrationRegistry.all)
    }

    func migrationStatus(known: [any Migration]) async throws -> MigrationStatus {
        let names = known.map(\.name)
        guard try await hasMigrationLog() else { return MigrationStatus(applied: [], pending: names, newer: []) }
        let logged = try await MigrationLog.query(on: db).sort(\.$batch).sort(\.$createdAt).all()
        let applied = Set(logged.map(\.name)), knownNames = Set(names)
        return MigrationStatus(
            applied: logged.map { ($0.name, $0.batch) }, pending: names.filter { !applied.contains($0) },
            newer: logged.map(\.name).filter { !knownNames.contains($0) })
    }

    /// Whether Fluent's table of applied migrations exists.
    private func hasMigrationLog() async throws -> Bool {
        let query: SQLQueryString = kind == .sqlite
            ? "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '_fluent_migrations'"
            : "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '_fluent_migrations'"
        return try await sql.raw(query).first()?.decode(column: "n", as: Int.self) != 0
    }

    /// No table at all (SQLite's own aside): what a restore or a copy may write into. On SQLite no view, trigger
    /// or index either, and SQLite's own are told by their exact prefix (`LIKE 'sqlite_%'` would pass over a table
    /// named "sqlitedata", and a restore would then delete it with the file). On PostgreSQL, in no schema
    /// (a table of another application's in a schema of its own is somebody's data too), and no view, sequence or
    /// foreign table either (an extension's own, as a template database may hold, aside); read from the catalog,
    /// which shows what the role may not read as well.
    public func isEmpty() async throws -> Bool {
        let query: SQLQueryString = kind == .sqlite
            ? "SELECT COUNT(*) AS n FROM sqlite_master WHERE substr(name, 1, 7) <> 'sqlite_'"
            : """
                SELECT COUNT(*) AS n FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
                  AND NOT EXISTS (
                    SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
                """
        return try await sql.raw(query).first()?.decode(column: "n", as: Int.self) == 0
    }

    /// Applied migrations with their batch numbers, oldest first.
    public func appliedMigrations() async throws -> [(name: String, batch: Int)] {
        try await migrationStatus().applied
    }

    /// Applies every pending migration as one batch, in one transaction (`apply`); returns their names.
    /// An upgrade stopped halfway (killed, a service manager's timeout, a lost connection) leaves nothing of
    /// itself, and the next run starts it again. (Run one statement after another, a migration's first
    /// statements stayed without its row in the log, and every later run failed on them.)
    @discardableResult
    public func migrate() async throws -> [String] {
        try await apply(MigrationRegistry.all)
    }

    /// Migrations the log has that this build does not know: a newer Folio migrated the database. This build
    /// would read and write a schema it was not made for, so it neither migrates nor serves it.
    public func newerMigrations() async throws -> [String] {
        try await migrationStatus().newer
    }

    /// The refusal to migrate a database that holds tables of something else.
    public struct NotFolios: CommandRefusal {
        public init() {}
        public var description: String {
            "the database holds tables but no record of Folio's migrations: it is not Folio's (is DATABASE_URL or DATA_DIR set to another application's?). Folio migrates only its own database or an empty one; nothing was changed"
        }
    }

    /// The refusal of a database a newer Folio migrated.
    public struct NewerSchema: Error, CustomStringConvertible {
        public let migrations: [String]
        public var description: String {
            "the database was migrated by a newer Folio (\(migrations.joined(separator: ", "))): run that version, or revert those migrations with it (`folio migrate --revert`), or restore a backup taken before them"
        }
    }

    /// Throws `NewerSchema` when a newer Folio migrated the database.
    public func refuseNewerSchema() async throws {
        let newer = try await newerMigrations()
        if !newer.isEmpty { throw NewerSchema(migrations: newer) }
    }

    /// Applies, in their order, those of `migrations` the log does not have yet (tests give their own), as one
    /// batch in one transaction: an upgrade is applied whole or not at all. Under the lock (PostgreSQL's
    /// advisory lock, SQLite's write lock) the log is read again, so of runs started together (several hosts)
    /// one applies the batch and the others find nothing left: the batch is never split between them, and
    /// `--revert` undoes it whole.
    func apply(_ migrations: [any Migration]) async throws -> [String] {
        let status = try await migrationStatus(known: MigrationRegistry.all + migrations)
        guard status.newer.isEmpty else { throw NewerSchema(migrations: status.newer) }
        guard status.pending.contains(where: { name in migrations.contains { $0.name == name } }) else { return [] }
        // Tables but no migration log: another application's database (DATABASE_URL or DATA_DIR set wrongly), which
        // Folio's forty tables would be written into. Folio migrates its own database, or an empty one.
        if try await !hasMigrationLog(), try await !isEmpty() { throw NotFolios() }
        let postgres = kind == .postgres
        return try await modelTransaction { db in
            if postgres { try await (db as! any SQLDatabase).raw("SELECT pg_advisory_xact_lock(\(bind: Self.migrationLock))").run() }
            // The log itself, made under the lock too (`CREATE TABLE IF NOT EXISTS` at once on two hosts can collide).
            try await MigrationLog.migration.prepare(on: db).get()
            let logged = try await MigrationLog.query(on: db).all()
            let done = Set(logged.map(\.name))
            let batch = (logged.map(\.batch).max() ?? 0) + 1
            var applied: [String] = []
            for migration in migrations where !done.contains(migration.name) {
                try await migration.prepare(on: db).get()
                try await MigrationLog(name: migration.name, batch: batch).create(on: db)
                applied.append(migration.name)
            }
            return applied
        }
    }

    /// The advisory lock a migration holds on PostgreSQL ("folio-migrate" as a number).
    static let migrationLock: Int64 = 0x666F_6C69_6F6D_6967

    /// Applies only the first `count` migrations of the registry, as one batch:
    /// how a test builds the schema of an older Folio to upgrade from.
    func migrate(first count: Int) async throws {
        let earlier = Migrations()
        earlier.add(Array(MigrationRegistry.all.prefix(count)))
        let migrator = Migrator(databases: databases, migrations: earlier, logger: logger, on: sqliteLoop ?? eventLoopGroup.any())
        try await migrator.setupIfNeeded().get()
        try await migrator.prepareBatch().get()
    }

    /// Reverts the most recent batch; returns the names reverted.
    @discardableResult
    public func revertLastBatch() async throws -> [String] {
        guard try await hasMigrationLog() else { return [] }
        // This build cannot revert what it does not know, and would revert its own under a newer batch.
        try await refuseNewerSchema()
        let batch = try await migrator.previewRevertLastBatch().get().map(\.0)
        // Each migration reverts on its own: one that would refuse must do so before any other is undone.
        for migration in batch {
            if let refusal = try await (migration as? any RevertCheck)?.revertRefusal(on: sql) { throw RevertRefused(description: refusal) }
        }
        if !batch.isEmpty { try await migrator.revertLastBatch().get() }
        return batch.map(\.name)
    }
}

/// A migration whose revert can be refused (it would lose data), checked for the whole batch before anything is reverted.
protocol RevertCheck {
    /// Why the revert cannot be done now, or nil.
    func revertRefusal(on database: any SQLDatabase) async throws -> String?
}

public struct RevertRefused: Error, CustomStringConvertible {
    public var description: String
}
