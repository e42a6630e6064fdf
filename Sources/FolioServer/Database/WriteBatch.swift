import SQLKit

/// Writes that read nothing back from one another, sent to the database
/// together: what a commit changed (orders, holdings, fills, ledger rows,
/// audit events, the account row, notices), written while the account's
/// lock is held, so it should cost as few round trips as it can.
///
/// On PostgreSQL the writes travel as one statement, each a data-modifying
/// `WITH` clause: PostgreSQL runs every one of them to completion on one
/// snapshot and checks foreign keys when the statement ends, so one round
/// trip does the work of many. On SQLite, where a statement costs no round
/// trip, they run one after another.
///
/// So two writes of one batch must never touch the same row, nor one read
/// what another writes.
struct WriteBatch: Sendable {
    let kind: FolioDatabase.Kind
    private(set) var statements: [SQLQueryString] = []

    /// PostgreSQL's limit on the parameters of one statement (the protocol counts them in 16 bits).
    static let maxBinds = 65_535

    init(for kind: FolioDatabase.Kind) {
        self.kind = kind
    }

    var isEmpty: Bool { statements.isEmpty }

    mutating func add(_ statement: SQLQueryString) {
        statements.append(statement)
    }

    /// The cast a value of a `VALUES` list's first row carries. PostgreSQL
    /// types a `VALUES` column from its values, and a column of nulls alone
    /// (no order rejected, no job about an order) would be text: the first
    /// row names each column's type there; SQLite needs none.
    func cast(_ type: String, row: Int) -> SQLQueryString {
        row == 0 && kind == .postgres ? "::\(unsafeRaw: type)" : ""
    }

    /// Runs the writes in the caller's transaction `db`, in the order they were added.
    func run(on db: any SQLDatabase) async throws {
        if let together = together(on: db) {
            try await db.execute(sql: together) { _ in }
        } else {
            for statement in statements { try await db.execute(sql: statement) { _ in } }
        }
    }

    /// Runs the writes whole or not at all: as the one statement they make on
    /// PostgreSQL, which needs no transaction around it, or in a transaction.
    func run(in database: FolioDatabase) async throws {
        if let together = together(on: database.sql) {
            try await database.sql.execute(sql: together) { _ in }
        } else if statements.count == 1 {
            try await database.sql.execute(sql: statements[0]) { _ in }
        } else if !statements.isEmpty {
            try await database.transaction { db in try await run(on: db) }
        }
    }

    /// The writes as one statement, when they make more than one on PostgreSQL
    /// and fit in one (a very large batch, an import of thousands of rows,
    /// runs as a statement each).
    private func together(on db: any SQLDatabase) -> SerializedSQL? {
        guard kind == .postgres, statements.count > 1 else { return nil }
        var serializer = SQLSerializer(database: db)
        Together(statements: statements).serialize(to: &serializer)
        guard serializer.binds.count <= Self.maxBinds else { return nil }
        return SerializedSQL(sql: serializer.sql, binds: serializer.binds)
    }

    /// `WITH w0 AS (…), w1 AS (…) SELECT 1`: PostgreSQL runs a data-modifying
    /// `WITH` clause whether or not the query reads it.
    private struct Together: SQLExpression {
        let statements: [SQLQueryString]

        func serialize(to serializer: inout SQLSerializer) {
            serializer.write("WITH ")
            for (index, statement) in statements.enumerated() {
                if index > 0 { serializer.write(", ") }
                serializer.write("w\(index) AS (")
                statement.serialize(to: &serializer)
                serializer.write(")")
            }
            serializer.write(" SELECT 1")
        }
    }
}

/// A statement serialized already (to count its parameters, say), its
/// placeholders numbered from `$1`, handed on as it is.
struct SerializedSQL: SQLExpression {
    let sql: String
    let binds: [any Encodable & Sendable]

    func serialize(to serializer: inout SQLSerializer) {
        serializer.write(sql)
        serializer.binds.append(contentsOf: binds)
    }
}
