import Crypto
import FolioDomain
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOPosix
import SQLKit
import SQLiteNIO

/// `folio backup`, `folio backup verify`, `folio restore` and the daily job.
///
/// A backup is a directory `folio-<UTC time>` holding the database
/// (`pg_dump` custom format, or SQLite's `VACUUM INTO` copy), sealed with
/// AES-GCM when `BACKUP_ENCRYPTION_KEY` is set, and `manifest.json`: the
/// SHA-256 of each file and the figures (row counts, balances, audit heads)
/// read in the same snapshot as the dump. A backup is written under a
/// `.partial` name and renamed when whole, so a crash never leaves one that looks finished.
public struct Backups: Sendable {
    let configuration: AppConfiguration
    let database: FolioDatabase
    let clock: AppClock
    public var logger: Logger
    let metrics: FolioMetrics?
    /// Each step of long work, for the command to print.
    public var progress: @Sendable (String) -> Void = { _ in }

    var settings: AppConfiguration.BackupSettings { configuration.backup }
    var cipher: BackupCipher { BackupCipher(key: settings.encryptionKey, previousKeys: settings.previousEncryptionKeys) }

    public struct Failure: CommandRefusal {
        public var description: String
    }

    /// A backup that lost the race to its name to another of the same second.
    struct SameSecond: Error, CustomStringConvertible {
        var backup: URL
        var description: String { "\(backup.path) was written meanwhile by another backup taken in the same second; this one was dropped (run it again in a second for one of your own)" }
    }

    static let prefix = "folio-"

    /// A file-system error in a few words ("Permission denied"), not Foundation's dump of its user info.
    static func reason(_ error: any Error) -> String {
        let error = error as NSError
        if let posix = error.userInfo[NSUnderlyingErrorKey] as? NSError, posix.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(posix.code)))
        }
        return error.localizedDescription
    }

    // MARK: - Taking a backup

    /// Takes a backup into `parent` (the configured directory by default) and returns its directory.
    public func create(into parent: URL? = nil) async throws -> URL {
        let parent = parent ?? URL(fileURLWithPath: settings.directory)
        // Every failure, a directory that cannot be made included, goes through the one ending below: logged as
        // `backup failed` and counted for FolioBackupFailed.
        var partial: URL?
        var isDirectory: ObjCBool = false
        let parentExisted = FileManager.default.fileExists(atPath: parent.path, isDirectory: &isDirectory)
        let made = Self.missingDirectories(down: parent)
        do {
            if parentExisted, !isDirectory.boolValue {
                throw Failure(description: "\(parent.path) is a file; backups are written into a directory")
            }
            do {
                try FileManager.default.createDirectory(at: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw Failure(description: "the backup directory \(parent.path) cannot be made (\(Self.whyNotMade(parent, error)))")
            }
            let name = Self.prefix + Self.stamp(clock.now())
            let final = parent.appendingPathComponent(name)
            guard !FileManager.default.fileExists(atPath: final.path) else { throw Failure(description: "\(final.path) already exists") }
            // A name of its own, so a backup taken in the same second (the command and the job) never touches this one.
            let working = parent.appendingPathComponent("\(name).partial-\(UUID().uuidString.prefix(8).lowercased())")
            try FileManager.default.createDirectory(at: working, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
            partial = working
            let (stored, fileID, figures) = database.kind == .sqlite ? try await copySQLite(into: working) : try await dumpPostgres(into: working)
            progress("hashing \(stored.lastPathComponent)")
            let (hash, bytes) = try await Self.blocking { try BackupFiles.sha256(of: stored) }
            var manifest = BackupManifest(
                format: BackupManifest.currentFormat, createdAt: clock.now(), folioVersion: FolioVersion.current, database: database.kind.rawValue,
                encrypted: cipher.encrypts, keyID: cipher.current?.id, fileID: nil, files: [.init(name: stored.lastPathComponent, bytes: bytes, sha256: hash)],
                figures: figures, sealedFigures: nil, mac: nil)
            if let key = cipher.current, let fileID { try manifest.seal(with: key, fileID: fileID) }
            try manifest.write(to: working)
            do {
                try FileManager.default.moveItem(at: working, to: final)
            } catch where FileManager.default.fileExists(atPath: final.path) {
                // Another backup started in the same second (the command and the daily job) finished first: that one
                // stands, so this is no failed backup for the metrics (nor an alert).
                try? FileManager.default.removeItem(at: working)
                throw SameSecond(backup: final)
            }
            metrics?.backup("backup", succeeded: true, at: clock.now(), bytes: bytes)
            logger.info("backup taken", metadata: [
                "backup": .string(final.path), "bytes": .stringConvertible(bytes), "encrypted": .stringConvertible(cipher.encrypts),
                "tables": .stringConvertible(figures.rowCounts.count), "accounts": .stringConvertible(figures.accounts.count),
            ])
            return final
        } catch let error as SameSecond {
            logger.notice("backup dropped: another of the same second stands", metadata: ["backup": .string(error.backup.path)])
            throw Failure(description: error.description)
        } catch {
            if let partial { try? FileManager.default.removeItem(at: partial) }
            // The directories this backup made (a mistyped --output, say) go too, while they are empty.
            for directory in made.reversed() where rmdir(directory.path) != 0 { break }
            let failure = Self.failure(error, writingInto: parent)
            metrics?.backup("backup", succeeded: false, at: clock.now())
            logger.error("backup failed", metadata: ["error": .string(String(describing: failure))])
            throw failure
        }
    }

    /// The directories down to `url` that do not exist yet, outermost first.
    static func missingDirectories(down url: URL) -> [URL] {
        var missing: [URL] = []
        var current = url.standardizedFileURL
        while current.path != "/", !FileManager.default.fileExists(atPath: current.path) {
            missing.insert(current, at: 0)
            current = current.deletingLastPathComponent()
        }
        return missing
    }

    /// Why a directory cannot be made, in a few words: Foundation on Linux often gives only "error 512". The nearest
    /// existing directory above it is a file, or cannot be written (read-only, permission).
    static func whyNotMade(_ url: URL, _ error: any Error) -> String {
        var above = url.standardizedFileURL.deletingLastPathComponent()
        while above.path != "/", !FileManager.default.fileExists(atPath: above.path) { above = above.deletingLastPathComponent() }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: above.path, isDirectory: &isDirectory), !isDirectory.boolValue {
            return "\(above.path) is a file"
        }
        if access(above.path, W_OK) != 0 { return "\(above.path): \(String(cString: strerror(errno)))" }
        return reason(error)
    }

    /// A file-system error in the operator's words ("No space left on device", "Read-only file system") and
    /// where, not Foundation's dump of its user info; any other error as it is.
    static func failure(_ error: any Error, writingInto parent: URL) -> any Error {
        if let sqlite = error as? SQLiteError {
            return Failure(description: "the copy of the SQLite database into \(parent.path) failed (\(sqlite.message))")
        }
        guard !(error is Failure), (error as NSError).domain == NSCocoaErrorDomain else { return error }
        return Failure(description: "the backup could not be written into \(parent.path) (\(reason(error)))")
    }

    /// SQLite: `VACUUM INTO` writes a consistent, compacted copy while the
    /// server runs; the figures are read from the copy. When sealing, the copy
    /// is made in a private temporary directory, never in the backup directory.
    private func copySQLite(into directory: URL) async throws -> (URL, String?, BackupFigures) {
        let scratch = try BackupFiles.privateDirectory()
        defer { try? FileManager.default.removeItem(at: scratch) }
        let file = (cipher.encrypts ? scratch : directory).appendingPathComponent("database.sqlite")
        progress("copying the database (VACUUM INTO)")
        try await database.sql.raw("VACUUM INTO \(bind: file.path)").run()
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file.path)
        progress("reading the copy's figures")
        let figures = try await Self.withDatabase(.sqlite(path: file.path), logger: logger) { copy in
            try await BackupFigures.read(on: copy.sql, kind: .sqlite)
        }
        guard let key = cipher.current else { return (file, nil, figures) }
        progress("sealing the copy with AES-GCM (key \(key.id))")
        let sealed = directory.appendingPathComponent("database.sqlite.enc")
        let cipher = self.cipher
        let fileID = try await Self.blocking { try cipher.seal(file, into: sealed) }
        return (sealed, fileID, figures)
    }

    /// PostgreSQL: the figures are read in a repeatable-read transaction whose
    /// snapshot `pg_dump --snapshot` dumps, so both see the same moment however
    /// busy the server is. When sealing, `pg_dump` writes to a pipe that is
    /// sealed as it comes: the plaintext dump never reaches the disk.
    private func dumpPostgres(into directory: URL) async throws -> (URL, String?, BackupFigures) {
        guard case .postgres(let url) = configuration.database else { throw Failure(description: "not a PostgreSQL database") }
        let pgDump = try PostgresTools.find("pg_dump", configured: settings.pgDump)
        let progress = self.progress, cipher = self.cipher
        let file = directory.appendingPathComponent(cipher.encrypts ? "database.dump.enc" : "database.dump")
        let (figures, fileID) = try await database.transaction { db -> (BackupFigures, String?) in
            try await db.raw("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").run()
            let snapshot = try await db.raw("SELECT pg_export_snapshot() AS snapshot").first()?.decode(column: "snapshot", as: String.self) ?? ""
            progress("reading figures in snapshot \(snapshot)")
            let figures = try await BackupFigures.read(on: db, kind: .postgres)
            let arguments = ["--format=custom", "--no-owner", "--no-privileges", "--snapshot=\(snapshot)"]
            guard cipher.encrypts else {
                progress("dumping with \(pgDump) (custom format)")
                try await PostgresTools.run(pgDump, arguments + ["--file=\(file.path)"], url: url)
                return (figures, nil)
            }
            progress("dumping with \(pgDump) (custom format), sealed with AES-GCM as it is written")
            let fileID = FileIDBox()
            try await PostgresTools.run(pgDump, arguments, url: url) { output in fileID.value = try cipher.seal(reading: output, into: file) }
            return (figures, fileID.value)
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file.path)
        return (file, fileID, figures)
    }

    // MARK: - Verifying a backup

    /// The restore drill: checks each file's SHA-256, restores into a scratch
    /// database, runs the ledger and audit checks there, and compares every
    /// figure of the manifest. Returns every problem found; none means the backup is good.
    /// A plaintext backup while a key is configured is a problem, as restore refuses it (it may have been
    /// swapped in: only a sealed manifest has a MAC), unless `allowUnencrypted` (one taken before encryption).
    public func verify(_ backup: URL, allowUnencrypted: Bool = false) async throws -> [String] {
        _ = Self.sweepTemporaryCopies(olderThan: clock.now().addingTimeInterval(-86_400))
        do {
            let problems = try await verifyOnce(backup, allowUnencrypted: allowUnencrypted)
            metrics?.backup("verify", succeeded: problems.isEmpty, at: clock.now())
            return problems
        } catch {
            metrics?.backup("verify", succeeded: false, at: clock.now())
            throw error
        }
    }

    private func verifyOnce(_ backup: URL, allowUnencrypted: Bool) async throws -> [String] {
        progress("reading \(backup.lastPathComponent)/\(BackupManifest.fileName)")
        let manifest: BackupManifest
        do { manifest = try BackupManifest.read(from: backup) } catch {
            return ["the manifest is missing or unreadable: \(error)"]
        }
        let figures: BackupFigures
        do { figures = try manifest.opened(with: cipher, allowUnencrypted: allowUnencrypted) } catch {
            return ["\(error)"]
        }
        var problems = try await Self.checkFiles(of: manifest, in: backup, progress: progress)
        guard problems.isEmpty else { return problems }
        let scratch = try await ScratchDatabase.make(for: manifest, configuration: configuration, logger: logger)
        do {
            progress("restoring into a scratch database")
            try await Self.load(manifest, from: backup, into: scratch.location, configuration: configuration, progress: progress)
            problems += try await Self.withDatabase(scratch.location, logger: logger) { copy in
                try await Self.check(copy, against: figures, configuration: configuration, clock: clock, progress: progress)
            }
        } catch {
            await scratch.drop(logger)
            // Files that match their manifest but that the database refuses (a copy corrupt when it was taken): the
            // test failed, said as its other findings are. A fault of this machine (a tool missing, a full disk, a
            // lost connection, a shutdown) is an error as before, not a finding against the backup.
            guard DatabaseErrorText.isRefusalByDatabase(error) else { throw error }
            return problems + ["the backup does not restore: \(DatabaseErrorText.describe(error))"]
        }
        await scratch.drop(logger)
        return problems
    }

    /// Each file's size and SHA-256 against the manifest: one changed byte is found here, before anything is restored.
    static func checkFiles(of manifest: BackupManifest, in backup: URL, progress: @Sendable (String) -> Void) async throws -> [String] {
        guard manifest.format == BackupManifest.currentFormat else { return ["the manifest's format is \(manifest.format), not \(BackupManifest.currentFormat)"] }
        guard !manifest.files.isEmpty else { return ["the manifest lists no files"] }
        var problems: [String] = []
        for file in manifest.files {
            let url = backup.appendingPathComponent(file.name)
            guard FileManager.default.fileExists(atPath: url.path) else {
                problems.append("file \(file.name): missing")
                continue
            }
            progress("checking the SHA-256 of \(file.name)")
            let (hash, bytes) = try await blocking { try BackupFiles.sha256(of: url) }
            if bytes != file.bytes || hash != file.sha256 {
                problems.append("file \(file.name): its SHA-256 is \(hash) (\(bytes) bytes), the manifest says \(file.sha256) (\(file.bytes) bytes): it was changed")
            } else if manifest.encrypted {
                // The sealed file must be the one this manifest was signed for, not another backup's.
                let header = try? BackupCipher.header(of: url)
                if header?.keyID != manifest.keyID || header?.fileID != manifest.fileID {
                    problems.append("file \(file.name): it is not the sealed file this manifest was signed for")
                }
            }
        }
        return problems
    }

    // MARK: - Restoring

    /// `folio restore`: into an empty database only. Refused if the target has
    /// any table, or if a file does not match the manifest.
    /// Returns the problems `ledger verify` and `audit verify` find in the restored copy (none: it is sound).
    @discardableResult
    public static func restore(
        _ backup: URL, into target: AppConfiguration.DatabaseLocation, configuration: AppConfiguration, logger: Logger,
        allowUnencrypted: Bool = false, progress: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> [String] {
        // A restore from the command line sweeps the temporary directory it runs in (a service's may be private to it).
        _ = sweepTemporaryCopies(olderThan: Date().addingTimeInterval(-86_400))
        let manifest = try BackupManifest.read(from: backup)
        let cipher = BackupCipher(key: configuration.backup.encryptionKey, previousKeys: configuration.backup.previousEncryptionKeys)
        let figures = try manifest.opened(with: cipher, allowUnencrypted: allowUnencrypted)
        // A backup of a newer Folio's schema would load, then stop every `serve` and `migrate` of this build: refused first.
        if !figures.schemaVersion.isEmpty, !FolioDatabase.migrationNames.contains(figures.schemaVersion) {
            throw Failure(description: "this backup was made by a newer Folio (its schema goes up to \(figures.schemaVersion), which this build does not know): restore it with that version or later (nothing was changed)")
        }
        let problems = try await checkFiles(of: manifest, in: backup, progress: progress)
        guard problems.isEmpty else { throw Failure(description: problems.joined(separator: "; ")) }
        guard (manifest.database == "postgres") == target.isPostgres else {
            throw Failure(description: "this is a \(manifest.database) backup; restore it into a \(manifest.database) database")
        }
        // One restore into a SQLite file at a time: two at once could both check it empty, then each copy over the
        // other, and one report a backup restored that is not the one there. (PostgreSQL's single transaction refuses the second.)
        var restoreLock: Int32 = -1
        if case .sqlite(let path) = target {
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) }
            restoreLock = open(path + ".restore-lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
            if restoreLock < 0 {
                let reason = String(cString: strerror(errno))
                throw Failure(description: "the restore's lock file \(path).restore-lock cannot be opened (\(reason)); if another user's restore left it, remove it (nothing was changed)")
            }
            // Held, and still the file at that name (one that finished removes its own: a lock taken on that is no lock).
            var held = stat(), named = stat()
            guard restoreLock >= 0, flock(restoreLock, LOCK_EX | LOCK_NB) == 0, fstat(restoreLock, &held) == 0,
                  stat(path + ".restore-lock", &named) == 0, held.st_ino == named.st_ino
            else {
                if restoreLock >= 0 { close(restoreLock) }
                throw Failure(description: "another restore into \(path) is running (nothing was changed)")
            }
        }
        defer {
            if restoreLock >= 0, case .sqlite(let path) = target {
                unlink(path + ".restore-lock")
                close(restoreLock)
            }
        }
        // An empty SQLite file the operator made for the restore stays (emptied) if the restore fails.
        let existed: Bool = if case .sqlite(let path) = target { FileManager.default.fileExists(atPath: path) } else { true }
        let empty = try await withDatabase(target, logger: logger) { try await $0.isEmpty() }
        guard empty else { throw Failure(description: "the target database is not empty: restore only into an empty database (nothing was changed)") }
        do {
            try await load(manifest, from: backup, into: target, configuration: configuration, progress: progress)
            return try await withDatabase(target, logger: logger) { copy in
                try await check(copy, against: figures, configuration: configuration, progress: progress)
            }
        } catch {
            // The target was empty: a copy that cannot be opened or read goes, so a second attempt starts clean
            // (one the restore made, removed; one the operator made, emptied).
            if case .sqlite(let path) = target {
                for file in [path + "-wal", path + "-shm"] { try? FileManager.default.removeItem(atPath: file) }
                if existed { try? FileHandle(forWritingTo: URL(fileURLWithPath: path)).truncate(atOffset: 0) } else { try? FileManager.default.removeItem(atPath: path) }
            }
            throw error
        }
    }

    /// What a restored copy must pass before it is trusted, for the drill and for a restore alike: the
    /// database's own check of its pages (SQLite), `ledger verify`, `audit verify`, and every figure the
    /// manifest recorded when the backup was taken. Returns the problems found (none: it is sound).
    static func check(
        _ copy: FolioDatabase, against figures: BackupFigures, configuration: AppConfiguration, clock: AppClock = .system,
        progress: @escaping @Sendable (String) -> Void
    ) async throws -> [String] {
        var found: [String] = []
        switch copy.kind {
        case .postgres:
            // pg_restore brings no planner statistics: without them the first queries are planned blind.
            progress("analyze")
            try await copy.sql.raw("ANALYZE").run()
        case .sqlite:
            // A file whose pages are damaged can still answer the queries below; the database's own check reads every page.
            progress("integrity check")
            let rows = try await copy.sql.raw("PRAGMA integrity_check").all()
            let messages = try rows.map { try $0.decode(column: "integrity_check", as: String.self) }
            if messages != ["ok"] { found += messages.prefix(20).map { "integrity check: \($0)" } }
        }
        progress("ledger verify")
        found += try await LedgerVerifier(store: TradingStore(database: copy)).verify().differences.map { "ledger verify: \($0)" }
        progress("audit verify")
        let anchor = AuditAnchor(secretKey: configuration.secretKey, previousKeys: configuration.previousSecretKeys)
        if let broken = try await AuditVerifier(database: copy, anchor: anchor, clock: clock).verify().firstBreak { found.append("audit verify: \(broken)") }
        progress("comparing the manifest's figures")
        let restored = try await copy.transaction { db in try await BackupFigures.read(on: db, kind: copy.kind) }
        found += figures.differences(from: restored)
        return found
    }

    /// Puts a backup's database into `target` (checked empty by the caller).
    static func load(
        _ manifest: BackupManifest, from backup: URL, into target: AppConfiguration.DatabaseLocation, configuration: AppConfiguration,
        progress: @escaping @Sendable (String) -> Void
    ) async throws {
        guard let file = manifest.files.first else { throw Failure(description: "the manifest lists no files") }
        var source = backup.appendingPathComponent(file.name)
        let temporary = try BackupFiles.privateDirectory()
        defer { try? FileManager.default.removeItem(at: temporary) }
        if manifest.encrypted {
            progress("opening \(file.name)")
            let cipher = BackupCipher(key: configuration.backup.encryptionKey, previousKeys: configuration.backup.previousEncryptionKeys)
            let opened = temporary.appendingPathComponent(String(file.name.dropLast(".enc".count)))
            let sealed = source
            try await blocking { try cipher.open(sealed, into: opened) }
            source = opened
        }
        switch target {
        case .sqlite(let path):
            progress("copying into \(path)")
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) }
            try? FileManager.default.removeItem(atPath: path)
            try FileManager.default.copyItem(at: source, to: URL(fileURLWithPath: path))
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        case .postgres(let url):
            let pgRestore = try PostgresTools.find("pg_restore", configured: configuration.backup.pgRestore)
            progress("restoring with \(pgRestore)")
            try await PostgresTools.run(pgRestore, ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", source.path], url: url, database: true)
        }
    }

    // MARK: - The daily job

    /// Takes today's backup, verifies the newest each month (on the 1st), and prunes to the configured counts.
    func runScheduled() async throws {
        // First: copies filling the temporary directory may be why the backup would fail.
        for removed in Self.sweepTemporaryCopies(olderThan: clock.now().addingTimeInterval(-86_400)) {
            logger.notice("a working copy left by a backup, drill or restore that was stopped part-way removed", metadata: ["copy": .string(removed.path)])
        }
        let taken = try await create()
        let day = Calendar(identifier: .gregorian).dateComponents(in: TimeZone(identifier: "UTC")!, from: clock.now()).day
        if day == 1 {
            // A failed test (or one that could not run) is counted by `verify` for FolioBackupFailed and logged; it
            // does not fail the job, whose retries would each take another full backup.
            var problems: [String]
            do { problems = try await verify(taken) } catch { problems = ["the test could not run: \(DatabaseErrorText.describe(error))"] }
            if problems.isEmpty {
                logger.info("monthly restore test passed", metadata: ["backup": .string(taken.path)])
            } else {
                // Nothing is pruned on such a day: the older backups may be the ones that restore.
                logger.error("monthly restore test FAILED; no backup was removed", metadata: ["backup": .string(taken.path), "problems": .array(problems.map { .string($0) })])
                return
            }
        }
        for removed in try prune() { logger.info("old backup removed", metadata: ["backup": .string(removed.path)]) }
        for name in futureStamped() {
            logger.warning("a backup is named as if taken in the future: kept, and not counted among the days kept; check the clock", metadata: ["backup": .string(name)])
        }
    }

    /// Keeps every backup of the newest `keepDaily` days that have one and the newest of each of the last `keepMonthly` calendar months
    /// (this one included, UTC); removes the rest. Months are counted on the calendar, not among the months
    /// that have a backup: after a gap in backups an old one is not kept for years (an erasure reaches
    /// backups as they expire, docs/PRIVACY.md).
    func prune() throws -> [URL] {
        let parent = URL(fileURLWithPath: settings.directory)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: parent.path)) ?? []
        // A name stamped in the future (a clock set wrong, a copy) would take one of the kept days until that
        // day came, pushing out a real day's backup: it is kept (it may be someone's only copy) and counted apart.
        let (backups, future) = Self.wholeBackupsByDate(among: names, in: parent, latest: futureAfter)
        var kept = Set(future)
        // Every backup of the newest `keepDaily` days that have one (UTC): backups taken by hand on a day (before a
        // migration, say) push out no older day's.
        var days: [Substring] = []
        for name in backups where days.last != Self.day(of: name) { days.append(Self.day(of: name)) }
        let keptDays = Set(days.prefix(settings.keepDaily))
        kept.formUnion(backups.filter { keptDays.contains(Self.day(of: $0)) })
        let window = Set(Self.lastMonths(settings.keepMonthly, before: clock.now()))
        var months = Set<String>()
        for name in backups {
            let month = String(name.dropFirst(Self.prefix.count).prefix(6))
            if window.contains(month), months.insert(month).inserted { kept.insert(name) }
        }
        var removed: [URL] = []
        // A backup left half-written by a crash (it may hold a plaintext copy) goes after a day.
        for name in names where name.wholeMatch(of: /folio-\d{8}T\d{6}Z\.partial-[0-9a-f]{8}/) != nil {
            let url = parent.appendingPathComponent(name)
            let modified = (try? FileManager.default.attributesOfItem(atPath: url.path)[.modificationDate] as? Date) ?? .distantFuture
            if clock.now().timeIntervalSince(modified) > 86_400 {
                try FileManager.default.removeItem(at: url)
                removed.append(url)
            }
        }
        for name in backups where !kept.contains(name) {
            let url = parent.appendingPathComponent(name)
            try FileManager.default.removeItem(at: url)
            removed.append(url)
        }
        return removed
    }

    /// Working copies a backup, drill or restore left in the temporary directory when it was killed part-way (an
    /// opened or unsealed copy of the whole database, in plaintext): removed once a day old, which none still running is.
    static func sweepTemporaryCopies(olderThan cutoff: Date) -> [URL] {
        let temporary = FileManager.default.temporaryDirectory
        let names = (try? FileManager.default.contentsOfDirectory(atPath: temporary.path)) ?? []
        var removed: [URL] = []
        for name in names where name.hasPrefix("folio-backup-") || (name.hasPrefix("folio-verify-") && name.contains(".sqlite")) {
            let url = temporary.appendingPathComponent(name)
            guard let modified = try? FileManager.default.attributesOfItem(atPath: url.path)[.modificationDate] as? Date, modified < cutoff else { continue }
            if (try? FileManager.default.removeItem(at: url)) != nil { removed.append(url) }
        }
        return removed
    }

    static let schedule = RecurringJob(name: "backup", kind: .backup, cadence: .every(86_400), payload: { _ in .backup })

    // MARK: - Helpers

    /// Only Folio's own, whole backups: `folio-<stamp>` holding a manifest, newest first (the stamp sorts as the time does).
    static func wholeBackups(among names: [String], in parent: URL) -> [String] {
        names.filter { name in
            name.wholeMatch(of: /folio-\d{8}T\d{6}Z/) != nil
                && FileManager.default.fileExists(atPath: parent.appendingPathComponent(name).appendingPathComponent(BackupManifest.fileName).path)
        }.sorted(by: >)
    }

    /// When the newest whole backup in the backup directory was taken, by whichever process (the worker's job,
    /// `folio backup` by hand): what the metrics say as the last success, so a backup taken by hand counts and
    /// a restarted worker does not forget the last one. Nil when there is none (or the directory cannot be read).
    /// Whole backups, newest first, apart from those whose names are stamped after `latest`.
    static func wholeBackupsByDate(among names: [String], in parent: URL, latest: Date) -> (dated: [String], future: [String]) {
        var dated: [String] = [], future: [String] = []
        for name in wholeBackups(among: names, in: parent) {
            if let date = date(ofStamp: String(name.dropFirst(prefix.count))), date > latest { future.append(name) } else { dated.append(name) }
        }
        return (dated, future)
    }

    /// Backups named as if taken after now (a clock set wrong, a copy from elsewhere): kept, and said.
    func futureStamped() -> [String] {
        let parent = URL(fileURLWithPath: settings.directory)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: parent.path)) ?? []
        return Self.wholeBackupsByDate(among: names, in: parent, latest: futureAfter).future
    }

    /// Past this, a backup's name is stamped in the future (an hour's slack for clocks a little apart).
    private var futureAfter: Date { clock.now().addingTimeInterval(3600) }

    func newestOnDisk() -> Date? {
        let parent = URL(fileURLWithPath: settings.directory)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: parent.path) else { return nil }
        // A name stamped in the future (a clock set wrong, a copy) would hold the alert off for good: not counted.
        return Self.wholeBackupsByDate(among: names, in: parent, latest: futureAfter).dated.lazy
            .compactMap { Self.date(ofStamp: String($0.dropFirst(Self.prefix.count))) }.first
    }

    static func date(ofStamp stamp: String) -> Date? {
        stampFormatter().date(from: stamp)
    }

    /// A backup's UTC day, `yyyyMMdd`, from its name.
    static func day(of name: String) -> Substring {
        name.dropFirst(prefix.count).prefix(8)
    }

    /// The last `count` calendar months up to the one holding `date` (UTC), as `yyyyMM` as backup names begin.
    static func lastMonths(_ count: Int, before date: Date) -> [String] {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let now = calendar.dateComponents([.year, .month], from: date)
        let index = now.year! * 12 + now.month! - 1
        return (0..<max(count, 0)).map { back in
            let month = index - back
            return String(format: "%04d%02d", month / 12, month % 12 + 1)
        }
    }

    /// `20261130T081500Z`: sortable, and safe in a file name.
    static func stamp(_ date: Date) -> String {
        stampFormatter().string(from: date)
    }

    /// A backup's name's time, `20261130T081500Z` (UTC); made per use, as a DateFormatter is not Sendable.
    private static func stampFormatter() -> DateFormatter {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return formatter
    }

    /// File work off the concurrency pool: reads and writes of large files block.
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(body)
    }

    static func withDatabase<T: Sendable>(
        _ location: AppConfiguration.DatabaseLocation, logger: Logger, _ body: (FolioDatabase) async throws -> T
    ) async throws -> T {
        var quiet = logger
        quiet.logLevel = .warning
        // One short-lived connection: nothing to gain from preparing.
        let database = try FolioDatabase(location: location, poolSize: 1, preparedStatements: false, logger: quiet)
        do {
            let result = try await body(database)
            await database.shutdown()
            return result
        } catch {
            await database.shutdown()
            throw error
        }
    }
}

/// A database a verification restores into and drops afterwards: a
/// temporary SQLite file, or a new database on the configured PostgreSQL server.
struct ScratchDatabase: Sendable {
    let location: AppConfiguration.DatabaseLocation
    let dropping: @Sendable () async throws -> Void

    /// Drops the scratch copy; a failure is logged (a full copy of the data would be left behind).
    func drop(_ logger: Logger) async {
        do { try await dropping() } catch {
            logger.error("the restore test's scratch database could not be dropped; drop it by hand", metadata: ["error": .string(DatabaseErrorText.forLog(error))])
        }
    }

    static func make(for manifest: BackupManifest, configuration: AppConfiguration, logger: Logger) async throws -> ScratchDatabase {
        if manifest.database == "sqlite" {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("folio-verify-\(UUID().uuidString).sqlite").path
            return ScratchDatabase(location: .sqlite(path: path), dropping: {
                for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
                    try FileManager.default.removeItem(atPath: path + suffix)
                }
            })
        }
        guard case .postgres(let url) = configuration.database, var components = URLComponents(string: url) else {
            throw Backups.Failure(description: "a PostgreSQL backup is verified on a PostgreSQL server: set DATABASE_URL to one (a scratch database is made there and dropped)")
        }
        var quiet = logger
        quiet.logLevel = .warning
        let admin = try FolioDatabase(location: .postgres(url: url), poolSize: 1, preparedStatements: false, logger: quiet)
        let name = "folio_verify_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased())"
        do {
            try await admin.sql.raw("CREATE DATABASE \(unsafeRaw: name)").run()
        } catch {
            await admin.shutdown()
            throw Backups.Failure(description: "could not make a scratch database for the restore test (the database user needs CREATEDB): \(DatabaseErrorText.forLog(error))")
        }
        components.path = "/" + name
        return ScratchDatabase(location: .postgres(url: components.string!), dropping: {
            defer { Task { await admin.shutdown() } }
            try await admin.sql.raw("DROP DATABASE IF EXISTS \(unsafeRaw: name) WITH (FORCE)").run()
        })
    }
}

/// `pg_dump` and `pg_restore`: found by `PG_DUMP`/`PG_RESTORE`, on the PATH,
/// or in Debian's /usr/lib/postgresql/<version>/bin (the newest), and run with
/// the connection in libpq's environment variables, never on the command line
/// where `ps` would show the password.
enum PostgresTools {
    static func find(_ tool: String, configured: String?) throws -> String {
        if let configured {
            guard FileManager.default.isExecutableFile(atPath: configured) else {
                throw Backups.Failure(description: "\(configured) (from \(tool == "pg_dump" ? "PG_DUMP" : "PG_RESTORE")) is not an executable")
            }
            return configured
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(directory)/\(tool)") {
            return "\(directory)/\(tool)"
        }
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []).compactMap(Int.init).sorted(by: >)
        for version in versions where FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/\(version)/bin/\(tool)") {
            return "/usr/lib/postgresql/\(version)/bin/\(tool)"
        }
        throw Backups.Failure(description: "\(tool) was not found: install PostgreSQL's client tools (Debian: postgresql-client) or set \(tool == "pg_dump" ? "PG_DUMP" : "PG_RESTORE")")
    }

    /// libpq's variables for a `postgres://user:password@host:port/database?sslmode=…` URL.
    /// Inherited `PG*` variables are dropped (a stray `PGHOSTADDR` or `PGSERVICE` would
    /// point the tool elsewhere), except the client certificate paths an operator sets.
    /// Folio's driver verifies the server's certificate for `require` as for
    /// `verify-full`, and so does libpq here: `require` becomes `verify-full`.
    static func environment(for url: String) throws -> [String: String] {
        guard let components = URLComponents(string: url) else { throw Backups.Failure(description: "DATABASE_URL is not a URL") }
        let kept: Set<String> = ["PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL"]
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") || kept.contains($0.key) }
        environment["PGHOST"] = components.host ?? "localhost"
        if let port = components.port { environment["PGPORT"] = String(port) }
        if let user = components.user { environment["PGUSER"] = user }
        if let password = components.password { environment["PGPASSWORD"] = password }
        let name = String(components.path.drop(while: { $0 == "/" }))
        if !name.isEmpty { environment["PGDATABASE"] = name }
        let mode = (components.queryItems ?? []).first { ["sslmode", "tlsmode", "tls", "ssl"].contains($0.name.lowercased()) }?.value?.lowercased()
        switch mode {
        case nil, "disable", "false": environment["PGSSLMODE"] = "disable"
        case "prefer", "allow": environment["PGSSLMODE"] = "prefer"
        default: environment["PGSSLMODE"] = "verify-full"  // require, verify-ca, verify-full, true
        }
        return environment
    }

    /// Runs a tool to its end; a non-zero exit is an error carrying its last
    /// lines of output. With `output`, the tool's standard output is handed to
    /// it as it is written (`pg_dump` into the sealer). The tool's messages go to
    /// a private file, so neither pipe can fill and stall it.
    static func run(
        _ tool: String, _ arguments: [String], url: String, database: Bool = false, output: (@Sendable (FileHandle) throws -> Void)? = nil
    ) async throws {
        var arguments = arguments
        let environment = try environment(for: url)
        // pg_restore needs the target named; pg_dump reads PGDATABASE.
        if database, let name = environment["PGDATABASE"] { arguments.insert("--dbname=\(name)", at: 0) }
        let command = arguments
        // Off the concurrency pool: the tool runs for as long as the database takes to dump.
        let (status, messages) = try await Backups.blocking { () throws -> (Int32, String) in
            let scratch = try BackupFiles.privateDirectory()
            defer { try? FileManager.default.removeItem(at: scratch) }
            let messagesURL = scratch.appendingPathComponent("messages")
            let messages = try BackupFiles.create(messagesURL)
            defer { try? messages.close() }
            let process = try ChildProcess(
                tool, command, environment: environment, output: output == nil ? .null : .pipe, error: .descriptor(messages.fileDescriptor))
            var consumed: (any Error)?
            if let pipe = process.standardOutput, let output {
                do { try output(pipe) } catch { consumed = error }
                // Read to the end even after a failure, so the tool can finish.
                if consumed != nil { _ = pipe.readDataToEndOfFile() }
            }
            let ended = process.waitUntilExit()
            if let consumed { throw consumed }
            return (ended.reason == .exit ? ended.status : 128 + ended.status, (try? String(contentsOf: messagesURL, encoding: .utf8)) ?? "")
        }
        guard status == 0 else {
            let tail = messages.split(separator: "\n").suffix(5).joined(separator: " | ")
            throw Backups.Failure(description: "\((tool as NSString).lastPathComponent) exited with status \(status): \(tail)")
        }
    }
}

/// The file id `seal` returns from inside the dump's blocking closure.
final class FileIDBox: @unchecked Sendable {
    var value: String?
}
