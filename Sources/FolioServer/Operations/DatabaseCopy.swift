import Foundation
import Logging
import SQLKit

/// `folio copy-database`: a development SQLite database's every row, moved
/// into an empty PostgreSQL database for production (which refuses SQLite).
///
/// Both must be at the same migration (the source all applied; the target is
/// migrated here, and its seeded rows replaced by the source's). Tables are
/// copied parents first, column by column as PostgreSQL declares them, in one
/// transaction: a failure leaves the target empty. Money goes across as the
/// text SQLite holds, cast to the column's `NUMERIC` (never through a
/// floating-point number); ids, flags and whole numbers as text cast to their
/// type; times as dates. Then sequences continue after the copied values,
/// the row counts are compared, and `ledger verify` and `audit verify` run on
/// the copy (with this deployment's `SECRET_KEY`, which signed the audit heads).
public enum DatabaseCopy {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// The tables copied and their rows, parents first.
    public typealias Copied = [(table: String, rows: Int)]

    static let batchSize = 200

    /// Copies `source` (SQLite) into `target` (an empty PostgreSQL database).
    /// Returns what was copied and the problems the verifiers find (none: the copy is sound).
    public static func copy(
        from source: AppConfiguration.DatabaseLocation, into target: AppConfiguration.DatabaseLocation, configuration: AppConfiguration, logger: Logger,
        progress: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> (copied: Copied, problems: [String]) {
        guard !source.isPostgres else { throw Failure(description: "DATABASE_URL names PostgreSQL: the copy reads a SQLite database") }
        guard target.isPostgres else { throw Failure(description: "--into must name a PostgreSQL database (postgres://…)") }
        return try await Backups.withDatabase(source, logger: logger) { from in
            let pending = try await from.pendingMigrations()
            guard pending.isEmpty else {
                throw Failure(description: "the SQLite database has \(pending.count) migration(s) pending: run `folio migrate` on it first (nothing was changed)")
            }
            return try await Backups.withDatabase(target, logger: logger) { into in
                guard try await into.isEmpty() else {
                    throw Failure(description: "the target database is not empty: copy only into an empty database (nothing was changed)")
                }
                progress("migrating the target")
                try await into.migrate()
                let copied = try await into.transaction { sql in try await copyRows(from: from.sql, into: sql, progress: progress) }
                var problems: [String] = []
                for (table, rows) in copied {
                    let there = try await into.sql.raw("SELECT COUNT(*) AS n FROM \(ident: table)").first()?.decode(column: "n", as: Int.self) ?? 0
                    if there != rows { problems.append("\(table): \(rows) row(s) read, \(there) in the copy") }
                }
                try await into.sql.raw("ANALYZE").run()
                progress("ledger verify")
                problems += try await LedgerVerifier(store: TradingStore(database: into)).verify().differences.map { "ledger verify: \($0)" }
                progress("audit verify")
                let anchor = AuditAnchor(secretKey: configuration.secretKey, previousKeys: configuration.previousSecretKeys)
                if let broken = try await AuditVerifier(database: into, anchor: anchor).verify().firstBreak { problems.append("audit verify: \(broken)") }
                return (copied, problems)
            }
        }
    }

    private struct Column {
        var name: String
        /// PostgreSQL's type name for a cast (`numeric`, `uuid`, `boolean`…).
        var type: String
        var isTime: Bool { type.hasPrefix("timestamp") }
    }

    private static func copyRows(from source: any SQLDatabase, into target: any SQLDatabase, progress: @Sendable (String) -> Void) async throws -> Copied {
        var columns: [String: [Column]] = [:]
        for row in try await target.raw("""
            SELECT table_name, column_name, data_type FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name <> '_fluent_migrations' ORDER BY table_name, ordinal_position
            """).all() {
            let table = try row.decode(column: "table_name", as: String.self)
            columns[table, default: []].append(Column(name: try row.decode(column: "column_name", as: String.self), type: try row.decode(column: "data_type", as: String.self)))
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
        let tables = try parentsFirst(Array(columns.keys), parents: parents)

        // Rows the migrations seeded make way for the source's own.
        var seeded: [String] = []
        for table in tables where try await target.raw("SELECT 1 AS seeded FROM \(ident: table) LIMIT 1").first() != nil { seeded.append(table) }
        if !seeded.isEmpty { try await target.raw("TRUNCATE \(unsafeRaw: seeded.map { "\"\($0)\"" }.joined(separator: ", "))").run() }
        var copied: Copied = []
        for table in tables {
            let columns = columns[table]!
            let sourceColumns = Set(try await source.raw("SELECT name FROM pragma_table_info(\(bind: table))").all().map { try $0.decode(column: "name", as: String.self) })
            let missing = columns.map(\.name).filter { !sourceColumns.contains($0) }
            guard missing.isEmpty, sourceColumns.count == columns.count else {
                throw Failure(description: "\(table) differs between the databases (\(missing.isEmpty ? "extra columns in SQLite" : "missing in SQLite: \(missing.joined(separator: ", "))"))")
            }
            progress("copying \(table)")
            // Times as SQLite's dates; everything else as its text, cast to the column's type over there.
            let selected = columns.map { $0.isTime ? "\"\($0.name)\"" : "CAST(\"\($0.name)\" AS TEXT) AS \"\($0.name)\"" }.joined(separator: ", ")
            let rows = try await source.raw("SELECT \(unsafeRaw: selected) FROM \(ident: table) ORDER BY rowid").all()
            for start in stride(from: 0, to: rows.count, by: batchSize) {
                var insert = SQLQueryString("INSERT INTO \(ident: table) (\(unsafeRaw: columns.map { "\"\($0.name)\"" }.joined(separator: ", "))) VALUES ")
                for (index, row) in rows[start..<min(start + batchSize, rows.count)].enumerated() {
                    insert.appendLiteral(index == 0 ? "(" : ", (")
                    for (position, column) in columns.enumerated() {
                        if position > 0 { insert.appendLiteral(", ") }
                        if column.isTime {
                            insert.appendInterpolation(bind: try row.decode(column: column.name, as: Date?.self))
                        } else {
                            insert.appendLiteral("CAST(")
                            insert.appendInterpolation(bind: try row.decode(column: column.name, as: String?.self))
                            insert.appendLiteral(" AS \(column.type))")
                        }
                    }
                    insert.appendLiteral(")")
                }
                try await target.raw(insert).run()
            }
            copied.append((table, rows.count))
        }
        // A sequence goes on after the highest value copied (the audit trail's global order).
        for row in try await target.raw("""
            SELECT table_name, column_name, column_default, pg_get_serial_sequence(quote_ident(table_name), column_name) AS sequence
            FROM information_schema.columns WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'
            """).all() {
            let table = try row.decode(column: "table_name", as: String.self), column = try row.decode(column: "column_name", as: String.self)
            let sequence = try row.decode(column: "sequence", as: String?.self)
                ?? String(try row.decode(column: "column_default", as: String?.self)?.split(separator: "'").dropFirst().first ?? "")
            guard !sequence.isEmpty else { continue }
            try await target.raw("""
                SELECT setval(\(bind: sequence), MAX(\(ident: column))) FROM \(ident: table) HAVING MAX(\(ident: column)) IS NOT NULL
                """).run()
        }
        return copied
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
