import Crypto
import FluentPostgresDriver
import Foundation
import Logging
import NIOCore
import SQLKit
import Synchronization

/// Hand-written SQL on PostgreSQL, sent as named prepared statements.
///
/// PostgresKit sends every statement unnamed, so PostgreSQL parses, analyses
/// and plans it on every call: about a third of its CPU on the order path. A
/// statement the stores send often is instead prepared once per connection
/// and then only bound and executed (PostgreSQL switches to a generic plan
/// when it costs no more).
///
/// A statement is prepared for its exact text and parameter types, the same
/// types an unnamed statement is parsed with, so its meaning cannot differ.
/// Its name is a hash of both: every process (instances, the worker,
/// commands) gives one statement the same name and never one name to two
/// statements, even on a server connection a pooler shares between them.
/// Only plain `SELECT`, `INSERT`, `UPDATE`, `DELETE` and `WITH` statements,
/// seen `usesBeforePreparing` times, short enough, and while fewer than
/// `capacity` are prepared: each costs memory in every connection's backend,
/// and a batch's statements change shape with its size. Everything else goes
/// unnamed, as before.
///
/// The driver remembers a statement whose preparation failed, per
/// connection, and fails it there from then on. So a statement that fails on
/// a connection where it had not yet run is sent unnamed for the rest of the
/// process, whatever the error (its preparation may be what failed). Where it
/// had run, only an error about the statement itself (a plan a schema change
/// invalidated, a statement a column change broke) does the same; a
/// constraint, a deadlock or a timeout is the data's or the moment's.
///
/// A pooler that hands one client connection's statements to several server
/// connections (PgBouncer before 1.21 in transaction mode) shows itself by
/// answering that a statement the driver prepared does not exist (26000), or
/// that one it is preparing already does (42P05): neither can happen on a
/// connection of Folio's own (nothing in Folio deallocates a statement). The
/// first such answer stops all preparing on this database's connections
/// (`poolerDetected`; a read replica's has its own), rather than costing each
/// statement a failed request of its own.
final class PreparedStatements: Sendable {
    struct Key: Hashable, Sendable {
        var sql: String
        var types: [PostgresDataType]

        /// `folio_` and 96 bits of the SHA-256 of the text and the parameter types.
        var name: String {
            var digest = SHA256()
            digest.update(data: Array(sql.utf8))
            digest.update(data: Array(types.map { "\0\($0.rawValue)" }.joined().utf8))
            return "folio_" + digest.finalize().prefix(12).map { String(format: "%02x", $0) }.joined()
        }
    }

    private enum Entry {
        case seen(Int)
        case prepared(name: String)
        case unnamed
    }

    /// A statement that has run on a connection, and so is prepared there.
    private struct Established: Hashable {
        var connection: PostgresConnection.ID
        var name: String
    }

    private struct State {
        var entries: [Key: Entry] = [:]
        var prepared = 0
        var established: Set<Established> = []
        var poolerDetected = false
    }

    private let state = Mutex(State())
    let capacity: Int
    let usesBeforePreparing: Int
    static let longestSQL = 4096
    /// Keys tracked at most, prepared or not, so that odd shapes cannot grow the registry without end.
    static let trackedKeys = 4096
    /// Statements known to run on connections, at most; forgetting them only makes a failure count as a first one.
    static let trackedEstablished = 65_536

    init(capacity: Int = 128, usesBeforePreparing: Int = 2) {
        self.capacity = capacity
        self.usesBeforePreparing = usesBeforePreparing
    }

    /// Whether `sql` may ever be prepared: short enough, and planned by PostgreSQL.
    static func isCandidate(_ sql: String) -> Bool {
        sql.utf8.count <= longestSQL && isPlannable(sql)
    }

    /// The name to execute `key` (a candidate) under, or nil to send it unnamed.
    func name(for key: Key) -> String? {
        state.withLock { state in
            if state.poolerDetected { return nil }
            let uses: Int
            switch state.entries[key] {
            case .prepared(let name): return name
            case .unnamed: return nil
            case .seen(let before): uses = before + 1
            case nil:
                guard state.entries.count < Self.trackedKeys else { return nil }
                uses = 1
            }
            guard uses >= usesBeforePreparing, state.prepared < capacity else {
                state.entries[key] = .seen(uses)
                return nil
            }
            // Hashed once per statement, the first time it is prepared.
            let name = key.name
            state.prepared += 1
            state.entries[key] = .prepared(name: name)
            return name
        }
    }

    /// The statement `name` ran on `connection`: it is prepared there.
    func ran(_ name: String, on connection: PostgresConnection.ID) {
        state.withLock { state in
            if state.established.count >= Self.trackedEstablished { state.established.removeAll() }
            state.established.insert(Established(connection: connection, name: name))
        }
    }

    /// What a failure of a prepared statement changed.
    enum Failure: Equatable {
        /// Nothing: the error is the data's or the moment's.
        case kept
        /// This statement is sent unnamed from now on.
        case unnamed
        /// The server's answer shows a pooler between: nothing is prepared any more.
        case poolerDetected
    }

    /// SQLSTATEs a connection of Folio's own never answers: a statement the
    /// driver prepared is missing, or one it is preparing is there already.
    static let poolerSigns: Set<String> = ["26000", "42P05"]

    /// The statement `name` failed on `connection` with `error`.
    @discardableResult
    func failed(_ key: Key, name: String, on connection: PostgresConnection.ID, error: any Error) -> Failure {
        // No server error: the connection is closing, and what it prepared goes with it.
        guard let sqlState = (error as? PSQLError)?.serverInfo?[.sqlState] else { return .kept }
        // 0A feature not supported ("cached plan must not change result type"), 42 the statement itself.
        let aboutTheStatement = ["0A", "42"].contains(String(sqlState.prefix(2)))
        return state.withLock { state in
            if Self.poolerSigns.contains(sqlState) {
                // Once detected, nothing is prepared any more: the failures still in flight change nothing.
                defer { state.poolerDetected = true }
                return state.poolerDetected ? .kept : .poolerDetected
            }
            let ranHere = state.established.contains(Established(connection: connection, name: name))
            guard !ranHere || aboutTheStatement else { return .kept }
            state.entries[key] = .unnamed
            return .unnamed
        }
    }

    /// Whether a pooler's answer has stopped all preparing (tests, metrics of the moment).
    var poolerDetected: Bool { state.withLock { $0.poolerDetected } }

    /// Statements PostgreSQL plans; utility statements (DDL, `SET`, `VACUUM`…) are never prepared.
    static func isPlannable(_ sql: String) -> Bool {
        var keyword = ""
        for character in sql.utf8 {
            if character == 32 || character == 10 || character == 9 || character == 13 || character == 40 {
                if keyword.isEmpty { continue } else { break }
            }
            keyword.unicodeScalars.append(Unicode.Scalar(character))
            if keyword.utf8.count > 6 { return false }
        }
        return ["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"].contains(keyword.uppercased())
    }

    /// Statements prepared so far, and those sent unnamed after a failure (tests).
    var counts: (prepared: Int, unnamed: Int) {
        state.withLock { state in
            (state.prepared, state.entries.values.filter { if case .unnamed = $0 { true } else { false } }.count)
        }
    }
}

/// An `SQLDatabase` over PostgreSQL that executes what the stores send as
/// prepared statements where `PreparedStatements` allows, and passes
/// everything else to the driver unchanged.
struct PreparingSQLDatabase: SQLDatabase {
    /// Fluent's PostgreSQL database, a pool or one connection (a transaction's).
    let base: any SQLDatabase & PostgresDatabase
    let statements: PreparedStatements

    var logger: Logger { base.logger }
    var eventLoop: any EventLoop { base.eventLoop }
    var version: (any SQLDatabaseReportedVersion)? { base.version }
    var dialect: any SQLDialect { base.dialect }
    var queryLogLevel: Logger.Level? { base.queryLogLevel }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) -> EventLoopFuture<Void> {
        eventLoop.makeFutureWithTask { try await self.execute(sql: query, onRow) }
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        let (sql, binds) = serialize(query)
        // Sent unnamed as serialized here, never serialized a second time by the driver.
        let serialized = SerializedSQL(sql: sql, binds: binds)
        guard PreparedStatements.isCandidate(sql) else { return try await base.execute(sql: serialized, onRow) }
        var bindings = PostgresBindings(capacity: binds.count)
        var types: [PostgresDataType] = []
        types.reserveCapacity(binds.count)
        for bind in binds {
            // The driver's own encodings; any other value (encoded through Codable) goes the driver's way.
            if (bind as? any OptionalValue)?.isNone == true {
                bindings.appendNull()
                types.append(.null)
            } else if let value = bind as? any PostgresThrowingDynamicTypeEncodable {
                try bindings.append(value, context: .default)
                types.append(value.psqlType)
            } else {
                return try await base.execute(sql: serialized, onRow)
            }
        }
        let key = PreparedStatements.Key(sql: sql, types: types)
        guard let name = statements.name(for: key) else { return try await base.execute(sql: serialized, onRow) }
        if let level = queryLogLevel {
            logger.log(level: level, "Executing prepared query", metadata: ["sql": .string(sql), "statement": .string(name)])
        }
        let statement = NamedStatement(name: name, sql: sql, types: types, bindings: bindings)
        let (statements, logger) = (self.statements, self.logger)
        _ = try await base.withConnection { connection in
            connection.eventLoop.makeFutureWithTask {
                do {
                    try await statement.run(on: connection) { onRow($0.sql(decodingContext: .default)) }
                    statements.ran(name, on: connection.id)
                } catch {
                    let sqlState = (error as? PSQLError)?.serverInfo?[.sqlState] ?? ""
                    switch statements.failed(key, name: name, on: connection.id, error: error) {
                    case .kept:
                        break
                    case .unnamed:
                        logger.notice(
                            "a prepared statement failed; it is sent unnamed from now on",
                            metadata: ["statement": .string(name), "sqlstate": .string(sqlState)])
                    case .poolerDetected:
                        logger.error(
                            """
                            PostgreSQL answered as if a pooler that cannot keep prepared statements shared its connections: \
                            this process prepares none on this database from now on. Set DATABASE_PREPARED_STATEMENTS=false, \
                            or run PgBouncer 1.21 or later with max_prepared_statements above 0.
                            """,
                            metadata: ["statement": .string(name), "sqlstate": .string(sqlState)])
                    }
                    throw error
                }
            }
        }.get()
    }

    func withSession<R>(_ closure: @escaping @Sendable (any SQLDatabase) async throws -> R) async throws -> R {
        try await base.withSession { session in
            guard let session = session as? any SQLDatabase & PostgresDatabase else { return try await closure(session) }
            return try await closure(PreparingSQLDatabase(base: session, statements: statements))
        }
    }
}

/// Sees an Optional's nil behind `any Encodable`.
private protocol OptionalValue {
    var isNone: Bool { get }
}

extension Optional: OptionalValue {
    var isNone: Bool { self == nil }
}

/// One named statement for PostgresNIO's prepared-statement API, which keeps
/// the per-connection record of what is prepared. That API takes the name,
/// text and parameter types as static members of a type, made for statements
/// written in the source; ours come from the stores at run time, so the
/// statics read them from a task-local value, bound around the one call that
/// reads them (`PostgresConnection.execute` reads them before it first
/// suspends, and again, in the same task, when it decorates an error).
struct NamedStatement: PostgresPreparedStatement {
    typealias Row = PostgresRow

    struct Text: Sendable {
        var name: String
        var sql: String
        var types: [PostgresDataType]
    }

    @TaskLocal static var current: Text?

    // Outside `run` there is no statement: the one named here fails loudly
    // (the function does not exist), never runs a wrong text in silence.
    static var name: String { current?.name ?? "folio_unbound" }
    static var sql: String { current?.sql ?? "SELECT folio_prepared_statement_read_outside_its_task()" }
    static var bindingDataTypes: [PostgresDataType] { current?.types ?? [] }

    let text: Text
    let bindings: PostgresBindings

    init(name: String, sql: String, types: [PostgresDataType], bindings: PostgresBindings) {
        self.text = Text(name: name, sql: sql, types: types)
        self.bindings = bindings
    }

    func makeBindings() throws -> PostgresBindings { bindings }
    func decodeRow(_ row: PostgresRow) throws -> PostgresRow { row }

    /// Executes the statement on `connection`, preparing it there first if it is new to it.
    func run(on connection: PostgresConnection, _ onRow: (PostgresRow) throws -> Void) async throws {
        try await Self.$current.withValue(text) {
            for try await row in try await connection.execute(self, logger: connection.logger) {
                try onRow(row)
            }
        }
    }
}
