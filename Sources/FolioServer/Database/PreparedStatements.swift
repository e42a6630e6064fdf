import FluentPostgresDriver
import Logging
import NIOCore
import SQLKit
import Synchronization

/// Hand-written SQL on PostgreSQL, sent as named prepared statements.
///
/// PostgresKit sends every statement unnamed, so PostgreSQL parses, analyses
/// and plans it on every call: about a third of its CPU on the order path. A
/// statement the stores send often is instead prepared once per connection,
/// under a name this registry gives it, and then only bound and executed
/// (PostgreSQL switches to a generic plan when it costs no more).
///
/// A statement is prepared for its exact text and parameter types, the same
/// types an unnamed statement is parsed with, so its meaning cannot differ.
/// Only plain `SELECT`, `INSERT`, `UPDATE`, `DELETE` and `WITH` statements,
/// seen `usesBeforePreparing` times, short enough, and while fewer than
/// `capacity` are prepared: each costs memory in every connection's backend,
/// and a batch's statements change shape with its size. Everything else goes
/// unnamed, as before.
///
/// The driver remembers a statement whose preparation failed, per
/// connection, and fails it from then on. Errors that only executing a
/// statement raises (bad data, a constraint, a serialization failure or
/// deadlock) leave it prepared; any other server error, such as a
/// transaction already aborted or a plan invalidated by a schema change,
/// sends that statement unnamed for the rest of the process.
final class PreparedStatements: Sendable {
    struct Key: Hashable, Sendable {
        var sql: String
        var types: [PostgresDataType]
    }

    private enum Entry {
        case seen(Int)
        case prepared(name: String)
        case unnamed
    }

    private struct State {
        var entries: [Key: Entry] = [:]
        var prepared = 0
    }

    private let state = Mutex(State())
    let capacity: Int
    let usesBeforePreparing: Int
    static let longestSQL = 4096
    /// Keys tracked at most, prepared or not, so that odd shapes cannot grow the registry without end.
    static let trackedKeys = 4096

    init(capacity: Int = 128, usesBeforePreparing: Int = 2) {
        self.capacity = capacity
        self.usesBeforePreparing = usesBeforePreparing
    }

    /// The name to execute `key` under, or nil to send it unnamed.
    func name(for key: Key) -> String? {
        guard key.sql.utf8.count <= Self.longestSQL, Self.isPlannable(key.sql) else { return nil }
        return state.withLock { state in
            switch state.entries[key] {
            case .prepared(let name): return name
            case .unnamed: return nil
            case .seen(let uses) where uses + 1 >= usesBeforePreparing && state.prepared < capacity:
                state.prepared += 1
                let name = "folio_\(state.prepared)"
                state.entries[key] = .prepared(name: name)
                return name
            case .seen(let uses):
                state.entries[key] = .seen(uses + 1)
                return nil
            case nil:
                guard state.entries.count < Self.trackedKeys else { return nil }
                if usesBeforePreparing <= 1, state.prepared < capacity {
                    state.prepared += 1
                    let name = "folio_\(state.prepared)"
                    state.entries[key] = .prepared(name: name)
                    return name
                }
                state.entries[key] = .seen(1)
                return nil
            }
        }
    }

    /// A prepared statement failed with `error`: keep it, or send it unnamed from now on.
    func failed(_ key: Key, error: any Error) {
        guard let sqlState = (error as? PSQLError)?.serverInfo?[.sqlState] else { return }
        // 22 data exception, 23 integrity constraint, 40 serialization failure or deadlock: raised by executing.
        guard !["22", "23", "40"].contains(String(sqlState.prefix(2))) else { return }
        state.withLock { $0.entries[key] = .unnamed }
    }

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
                return try await base.execute(sql: query, onRow)
            }
        }
        let key = PreparedStatements.Key(sql: sql, types: types)
        guard let name = statements.name(for: key) else { return try await base.execute(sql: query, onRow) }
        if let level = queryLogLevel {
            logger.log(level: level, "Executing prepared query", metadata: ["sql": .string(sql), "statement": .string(name)])
        }
        let statement = NamedStatement(name: name, sql: sql, types: types, bindings: bindings)
        do {
            _ = try await base.withConnection { connection in
                connection.eventLoop.makeFutureWithTask {
                    try await statement.run(on: connection) { onRow($0.sql(decodingContext: .default)) }
                }
            }.get()
        } catch {
            statements.failed(key, error: error)
            throw error
        }
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
