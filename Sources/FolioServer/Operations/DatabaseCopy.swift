import Foundation
import Logging
import SQLKit

/// `folio copy-database`: a development SQLite database's every row, moved
/// into an empty PostgreSQL database for production (which refuses SQLite).
///
/// Refused before anything changes: a SQLite file that is not there, one not
/// at this build's migrations, one a Folio process still writes (a fresh
/// heartbeat), one whose ledger or audit trail does not verify (with this
/// `SECRET_KEY`), and a target that holds anything but this build's empty
/// schema. The target is migrated, then every table is copied parents first,
/// column by column as PostgreSQL declares them, inside one read of the source
/// and one transaction on the target: row counts, `ledger verify` and `audit
/// verify` run in that transaction, so a copy that does not verify is never
/// committed and the target is left empty (migrated) for another try.
///
/// Money goes across as the text SQLite holds, cast to the column's
/// `NUMERIC` after a check that it has no digits past the column's scale
/// (PostgreSQL would round them); ids, flags and whole numbers as text cast
/// to their type; times as whole microseconds. Sequences go on after the
/// copied values.
public enum DatabaseCopy {
    public struct Failure: CommandRefusal {
        public var description: String
    }

    /// The tables copied and their rows, parents first.
    public typealias Copied = [(table: String, rows: Int)]

    /// Rows read and inserted at a time.
    public static let defaultPageSize = 500
    /// A heartbeat this recent means a Folio process still runs on the source.
    static let liveHeartbeat: TimeInterval = 30

    /// Copies `source` (SQLite) into `target` (an empty PostgreSQL database); throws `Failure` with the reasons when it cannot.
    public static func copy(
        from source: AppConfiguration.DatabaseLocation, into target: AppConfiguration.DatabaseLocation, configuration: AppConfiguration, logger: Logger,
        pageSize: Int = defaultPageSize, progress: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> Copied {
        guard case .sqlite(let path) = source else { throw Failure(description: "DATABASE_URL names PostgreSQL: the copy reads a SQLite database") }
        guard target.isPostgres else { throw Failure(description: "--into must name a PostgreSQL database (postgres://…)") }
        // Opening a SQLite path creates it: a mistyped one must not become an empty "successful" copy.
        guard FileManager.default.fileExists(atPath: path) else { throw Failure(description: "there is no SQLite database at \(path)") }
        let anchor = AuditAnchor(secretKey: configuration.secretKey, previousKeys: configuration.previousSecretKeys)
        return try await Backups.withDatabase(source, logger: logger) { from in
            let applied = try await from.appliedMigrations().map(\.name)
            guard applied == MigrationRegistry.all.map(\.name) else {
                throw Failure(description: "the SQLite database is not at this build's migrations: run this build's `folio migrate` on it first (nothing was changed)")
            }
            if let kind = try await Instances(database: from, clock: .system).anyAlive(within: liveHeartbeat) {
                throw Failure(description: "a folio \(kind) still runs on the SQLite database: stop the servers and workers first (nothing was changed)")
            }
            progress("verifying the SQLite database")
            let ledger = try await LedgerVerifier(store: TradingStore(database: from)).verify().differences
            let audit = try await AuditVerifier(database: from, anchor: anchor).verify().firstBreak
            guard ledger.isEmpty, audit == nil else {
                let found = ledger.map { "ledger: \($0)" } + (audit.map { ["audit: \($0)"] } ?? [])
                throw Failure(description: "the SQLite database does not verify, so it is not copied: \(found.joined(separator: "; "))")
            }
            return try await Backups.withDatabase(target, logger: logger) { into in
                try await requireEmpty(into)
                progress("migrating the target")
                try await into.migrate()
                let copied = try await from.readTransaction { source in
                    try await into.transaction { target in
                        let copied = try await copyRows(from: source, into: target, pageSize: pageSize, progress: progress)
                        progress("checking the copy")
                        var problems: [String] = []
                        for (table, rows) in copied {
                            let there = try await target.raw("SELECT COUNT(*) AS n FROM \(ident: table)").first()?.decode(column: "n", as: Int.self) ?? 0
                            if there != rows { problems.append("\(table): \(rows) row(s) read, \(there) in the copy") }
                        }
                        problems += try await LedgerVerifier.verify(store: TradingStore(database: into), on: target).differences.map { "ledger verify: \($0)" }
                        if let broken = try await AuditVerifier(database: into, anchor: anchor).verify(on: target).firstBreak { problems.append("audit verify: \(broken)") }
                        guard problems.isEmpty else {
                            throw Failure(description: "the copy does not verify, so nothing was kept: \(problems.joined(separator: "; "))")
                        }
                        return copied
                    }
                }
                try await into.sql.raw("ANALYZE").run()
                return copied
            }
        }
    }

    /// No table at all, or this build's schema with no row in it (what a copy that failed leaves).
    private static func requireEmpty(_ database: FolioDatabase) async throws {
        if try await database.isEmpty() { return }
        let refused = Failure(description: "the target database is not empty: copy only into an empty database (nothing was changed)")
        guard try await database.pendingMigrations().isEmpty else { throw refused }
        for table in try await tables(of: database.sql) where try await database.sql.raw("SELECT 1 AS row FROM \(ident: table) LIMIT 1").first() != nil {
            throw refused
        }
    }

    /// PostgreSQL's tables in the current schema, but Fluent's own.
    private static func tables(of sql: any SQLDatabase) async throws -> [String] {
        try await sql.raw("""
            SELECT table_name FROM information_schema.tables
            WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name <> '_fluent_migrations' ORDER BY table_name
            """).all().map { try $0.decode(column: "table_name", as: String.self) }
    }

    private struct Column {
        var name: String
        /// PostgreSQL's type name for a cast (`numeric`, `uuid`, `boolean`…).
        var type: String
        /// Digits after the point a `NUMERIC` column keeps.
        var scale: Int?
        var isTime: Bool { type.hasPrefix("timestamp") }
    }

    private static func copyRows(
        from source: any SQLDatabase, into target: any SQLDatabase, pageSize: Int, progress: @Sendable (String) -> Void
    ) async throws -> Copied {
        var columns: [String: [Column]] = [:]
        for row in try await target.raw("""
            SELECT table_name, column_name, data_type, numeric_scale FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name <> '_fluent_migrations' ORDER BY table_name, ordinal_position
            """).all() {
            let table = try row.decode(column: "table_name", as: String.self)
            columns[table, default: []].append(Column(
                name: try row.decode(column: "column_name", as: String.self), type: try row.decode(column: "data_type", as: String.self),
                scale: try row.decode(column: "numeric_scale", as: Int?.self)))
        }
        let sourceTables = Set(try await source.raw("""
            SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, 7) <> 'sqlite_' AND name <> '_fluent_migrations'
            """).all().map { try $0.decode(column: "name", as: String.self) })
        guard sourceTables == Set(try await tables(of: target)) else {
            throw Failure(description: "the databases' tables differ (only in SQLite: \(sourceTables.subtracting(columns.keys).sorted()); only in PostgreSQL: \(Set(columns.keys).subtracting(sourceTables).sorted()))")
        }
        var parents: [String: Set<String>] = [:]
        for row in try await target.raw("""
            SELECT DISTINCT tc.table_name AS child, ccu.table_name AS parent
            FROM information_schema.table_constraints tc
            JOIN information_schema.constraint_column_usage ccu ON ccu.constraint_name = tc.constraint_name AND ccu.table_schema = tc.table_schema
            WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = current_schema()
            """).all() {
            let (child, parent) = (try row.decode(column: "child", as: String.self), try row.decode(column: "parent", as: String.self))
            if child != parent { parents[child, default: []].insert(parent) }
        }

        var copied: Copied = []
        for table in try parentsFirst(Array(columns.keys), parents: parents) {
            let columns = columns[table]!
            let sourceColumns = Set(try await source.raw("SELECT name FROM pragma_table_info(\(bind: table))").all().map { try $0.decode(column: "name", as: String.self) })
            guard sourceColumns == Set(columns.map(\.name)) else {
                throw Failure(description: "\(table) has other columns in SQLite (\(sourceColumns.sorted().joined(separator: ", "))) than in PostgreSQL")
            }
            progress("copying \(table)")
            // Times as whole microseconds (SQLite holds seconds as REAL); everything else as its text, cast over there.
            let selected = columns.map { column in
                column.isTime
                    ? "CAST(ROUND(\"\(column.name)\" * 1000000) AS INTEGER) AS \"\(column.name)\""
                    : "CAST(\"\(column.name)\" AS TEXT) AS \"\(column.name)\""
            }.joined(separator: ", ")
            var rows = 0, after: Int64 = Int64.min
            while true {
                let page = try await source.raw("""
                    SELECT rowid AS folio_rowid, \(unsafeRaw: selected) FROM \(ident: table) WHERE rowid > \(bind: after) ORDER BY rowid LIMIT \(unsafeRaw: String(pageSize))
                    """).all()
                guard let last = page.last else { break }
                after = try last.decode(column: "folio_rowid", as: Int64.self)
                var insert = SQLQueryString("INSERT INTO \(ident: table) (\(unsafeRaw: columns.map { "\"\($0.name)\"" }.joined(separator: ", "))) VALUES ")
                for (index, row) in page.enumerated() {
                    insert.appendLiteral(index == 0 ? "(" : ", (")
                    for (position, column) in columns.enumerated() {
                        if position > 0 { insert.appendLiteral(", ") }
                        if column.isTime {
                            insert.appendLiteral("TIMESTAMPTZ 'epoch' + INTERVAL '1 microsecond' * ")
                            insert.appendInterpolation(bind: try row.decode(column: column.name, as: Int64?.self))
                        } else {
                            let text = try row.decode(column: column.name, as: String?.self)
                            if let text, let scale = column.scale, column.type == "numeric", !fits(text, scale: scale) {
                                throw Failure(description: "\(table).\(column.name) holds \(text), more places than PostgreSQL's column keeps (\(scale)): not rounded")
                            }
                            insert.appendLiteral("CAST(")
                            insert.appendInterpolation(bind: text)
                            insert.appendLiteral(" AS \(column.type))")
                        }
                    }
                    insert.appendLiteral(")")
                }
                try await target.raw(insert).run()
                rows += page.count
            }
            copied.append((table, rows))
        }
        // A sequence goes on after the highest value copied (the audit trail's global order).
        for row in try await target.raw("""
            SELECT table_name, column_name, column_default FROM information_schema.columns
            WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'
            """).all() {
            let table = try row.decode(column: "table_name", as: String.self), column = try row.decode(column: "column_name", as: String.self)
            // nextval('name'::regclass)
            guard let sequence = try row.decode(column: "column_default", as: String.self).split(separator: "'").dropFirst().first else { continue }
            try await target.raw("""
                SELECT setval(\(bind: String(sequence)), MAX(\(ident: column))) FROM \(ident: table) HAVING MAX(\(ident: column)) IS NOT NULL
                """).run()
        }
        return copied
    }

    /// Whether a decimal's text has no nonzero digit past `scale` places.
    static func fits(_ text: String, scale: Int) -> Bool {
        guard let point = text.firstIndex(of: ".") else { return true }
        return text[text.index(after: point)...].dropFirst(scale).allSatisfy { $0 == "0" }
    }

    /// `tables` ordered so that every table comes after the tables it references.
    static func parentsFirst(_ tables: [String], parents: [String: Set<String>]) throws -> [String] {
        var ordered: [String] = [], placed: Set<String> = []
        var remaining = tables.sorted()
        while !remaining.isEmpty {
            let ready = remaining.filter { parents[$0, default: []].subtracting([$0]).isSubset(of: placed) }
            guard !ready.isEmpty else { throw Failure(description: "the tables' references form a cycle: \(remaining.joined(separator: ", "))") }
            ordered += ready
            placed.formUnion(ready)
            remaining.removeAll { placed.contains($0) }
        }
        return ordered
    }
}
