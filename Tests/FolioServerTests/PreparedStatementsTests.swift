import FolioDomain
import Foundation
import PostgresNIO
import SQLKit
import Testing

@testable import FolioServer

@Suite("Prepared statements on PostgreSQL")
struct PreparedStatementsTests {
    static let postgres = TestDatabaseKind.all.filter { $0 == .postgres }

    @Test("only plain queries and writes are prepared, never utility statements")
    func plannable() {
        for sql in ["SELECT 1", "  select id FROM t", "(SELECT 1) UNION (SELECT 2)", "WITH w AS (SELECT 1) SELECT * FROM w",
                    "INSERT INTO t VALUES (1)", "UPDATE t SET a = 1", "DELETE FROM t", "\nSELECT 1"] {
            #expect(PreparedStatements.isPlannable(sql), "\(sql)")
        }
        for sql in ["CREATE TABLE t (a INT)", "VACUUM", "SET lock_timeout = 1", "LOCK TABLE t", "BEGIN", "COMMIT", "", "SELECTED"] {
            #expect(!PreparedStatements.isPlannable(sql), "\(sql)")
        }
    }

    @Test("a statement seen twice is prepared once per connection, and answers as an unnamed one would", arguments: postgres)
    func prepared(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind, migrated: false) { database, _ in
            let statements = try #require(database.preparedStatements)
            try await database.sql.raw("CREATE TABLE prepared_probe (id INT PRIMARY KEY, label TEXT, amount NUMERIC(20,4))").run()
            let names = try await database.transaction { sql in
                for (id, label, amount) in [(1, "one", "1.2345"), (2, nil, "-2"), (3, "three", "9999999999999999.9999"), (4, nil, "0")] {
                    try await sql.raw("INSERT INTO prepared_probe (id, label, amount) VALUES (\(bind: id), \(bind: label), \(bind: try Cash(parsing: amount)))")
                        .run()
                }
                var read: [String] = []
                for id in 1...4 {
                    let row = try #require(try await sql.raw("SELECT label, amount FROM prepared_probe WHERE id = \(bind: id)").first())
                    read.append("\(try row.decode(column: "label", as: String?.self) ?? "-") \(try row.decode(column: "amount", as: Cash.self))")
                }
                #expect(read == ["one 1.2345", "- -2.00", "three 9999999999999999.9999", "- 0.00"])
                return try await sql.raw("SELECT name FROM pg_prepared_statements WHERE NOT from_sql ORDER BY name").all()
                    .map { try $0.decode(column: "name", as: String.self) }
            }
            // The INSERT with a label and the one without (NULL has no type) are two statements; so is the SELECT.
            #expect(names.count >= 3)
            // Named by a hash of text and types: the same in every process, never one name for two statements.
            #expect(names.allSatisfy { $0.hasPrefix("folio_") && $0.count == 30 })
            let key = PreparedStatements.Key(sql: "SELECT 1", types: [.int8])
            #expect(key.name == PreparedStatements.Key(sql: "SELECT 1", types: [.int8]).name)
            #expect(key.name != PreparedStatements.Key(sql: "SELECT 1", types: [.text]).name)
            #expect(key.name != PreparedStatements.Key(sql: "SELECT 2", types: [.int8]).name)
            #expect(statements.counts.prepared >= 3)
            #expect(statements.counts.unnamed == 0)
        }
    }

    @Test("a failed preparation sends its statement unnamed from then on; a constraint violation does not", arguments: postgres)
    func failures(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind, migrated: false) { database, _ in
            let statements = try #require(database.preparedStatements)
            try await database.sql.raw("CREATE TABLE prepared_probe (id INT PRIMARY KEY, label TEXT)").run()
            @Sendable func insert(_ id: Int, on sql: any SQLDatabase) async throws {
                try await sql.raw("INSERT INTO prepared_probe (id, label) VALUES (\(bind: id), \(bind: "x"))").run()
            }
            @Sendable func label(_ id: Int, on sql: any SQLDatabase) async throws -> String? {
                try await sql.raw("SELECT label AS probed FROM prepared_probe WHERE id = \(bind: id)").first()?.decode(column: "probed", as: String.self)
            }
            // A duplicate key where the statement has run is the data's fault, not the statement's: it stays prepared.
            struct Rollback: Error {}
            await #expect(throws: Rollback.self) {
                try await database.transaction { sql in
                    try await insert(1, on: sql)
                    try await insert(2, on: sql)  // prepared, and ran on this connection
                    await expectConstraintViolation(.unique) { try await insert(1, on: sql) }
                    throw Rollback()
                }
            }
            #expect(statements.counts == (1, 0))
            try await insert(1, on: database.sql)
            try await insert(2, on: database.sql)

            // Seen once; its second use, the one that prepares it, comes in a transaction already aborted.
            #expect(try await label(1, on: database.sql) == "x")
            await #expect(throws: (any Error).self) {
                try await database.transaction { sql in
                    let division: Void? = try? await sql.raw("SELECT 1 / 0 AS boom").run()
                    #expect(division == nil)
                    _ = try await label(1, on: sql)
                }
            }
            #expect(statements.counts.unnamed == 1)
            // Every connection answers it again, the one that saw the failure too.
            try await withThrowingTaskGroup(of: String?.self) { group in
                for _ in 0..<16 { group.addTask { try await label(2, on: database.sql) } }
                for try await answer in group { #expect(answer == "x") }
            }

            // A statement that ran on a connection, whose plan a change of column type then invalidates there.
            @Sendable func typed(on sql: any SQLDatabase) async throws -> String? {
                try await sql.raw("SELECT label AS typed FROM prepared_probe WHERE id = \(bind: 1)").first()?.decode(column: "typed", as: String.self)
            }
            await #expect(throws: (any Error).self) {
                try await database.transaction { sql in
                    _ = try await typed(on: sql)
                    _ = try await typed(on: sql)  // prepared, and ran here
                    try await sql.raw("ALTER TABLE prepared_probe ALTER COLUMN label TYPE VARCHAR(20)").run()
                    _ = try await typed(on: sql)  // "cached plan must not change result type"
                }
            }
            #expect(statements.counts.unnamed == 2)
            #expect(try await typed(on: database.sql) == "x")
        }
    }

    @Test("a prepared statement the server no longer has (a pooler swapped the connection) stops all preparing in the process, with one error line naming the setting", arguments: postgres)
    func poolerDetected(kind: TestDatabaseKind) async throws {
        let logs = LogCapture()
        try await withTestDatabase(kind, migrated: false, logger: logs.logger(level: .info)) { database, _ in
            let statements = try #require(database.preparedStatements)
            try await database.sql.raw("CREATE TABLE prepared_probe (id INT PRIMARY KEY, label TEXT)").run()
            try await database.sql.raw("INSERT INTO prepared_probe (id, label) VALUES (1, 'x')").run()
            @Sendable func label(on sql: any SQLDatabase) async throws -> String? {
                try await sql.raw("SELECT label AS probed FROM prepared_probe WHERE id = \(bind: 1)").first()?.decode(column: "probed", as: String.self)
            }
            // What a pooler in transaction mode does: the next use lands on a server connection without the statement.
            await #expect(throws: (any Error).self) {
                try await database.transaction { sql in
                    _ = try await label(on: sql)
                    _ = try await label(on: sql)  // prepared, and ran here
                    let name = try #require(try await sql.raw("SELECT name FROM pg_prepared_statements WHERE NOT from_sql").first()?.decode(column: "name", as: String.self))
                    try await sql.raw("DEALLOCATE \(unsafeRaw: name)").run()
                    _ = try await label(on: sql)  // 26000: prepared statement does not exist
                }
            }
            #expect(statements.poolerDetected)
            let warnings = logs.lines.filter { $0.contains("DATABASE_PREPARED_STATEMENTS=false") }
            #expect(warnings.count == 1, "\(logs.lines.suffix(5))")
            // Nothing new is prepared, on any connection, and every statement answers.
            let prepared = statements.counts.prepared
            @Sendable func other(on sql: any SQLDatabase) async throws -> Int? {
                try await sql.raw("SELECT id AS other FROM prepared_probe WHERE label = \(bind: "x")").first()?.decode(column: "other", as: Int.self)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<16 {
                    group.addTask {
                        let (first, second) = (try await label(on: database.sql), try await other(on: database.sql))
                        #expect(first == "x" && second == 1)
                    }
                }
                try await group.waitForAll()
            }
            #expect(statements.counts.prepared == prepared)
        }
    }
}
