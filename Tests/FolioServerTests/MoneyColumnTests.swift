import FluentKit
import FolioDomain
import Foundation
import SQLKit
import Testing

@testable import FolioServer

/// A throwaway table with money columns declared through `MoneyColumn`.
struct CreateLedgerProbes: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema("ledger_probes")
            .id()
            .field("amount", MoneyColumn(precision: 38, scale: 18).dataType(on: database), .required)
            .field("price", MoneyColumn(precision: 20, scale: 8).dataType(on: database))
            .field("cash", MoneyColumn(precision: 20, scale: 4).dataType(on: database))
            .field("quantity", MoneyColumn(precision: 28, scale: 9).dataType(on: database))
            .constraint(.sql(unsafeRaw: "CONSTRAINT ledger_probes_amount_check CHECK (\(MoneyColumn.check("amount", "> 0", on: database)))"))
            .create()
    }
    func revert(on database: any Database) async throws {
        try await database.schema("ledger_probes").delete()
    }
}

typealias Wide = Fixed<WideScale>

@Suite("Money columns")
struct MoneyColumnTests {
    static let values = [
        "123456789012.345678", "0.000000000000000001", "99999999999999999.9", "0.1", "12345678901.123456789", "1",
    ]

    func insert(_ database: FolioDatabase, amount: Wide, price: Price? = nil, cash: Cash? = nil, quantity: Quantity? = nil) async throws -> UUID {
        let id = UUID()
        try await database.sql.raw("""
            INSERT INTO ledger_probes (id, amount, price, cash, quantity) VALUES (\(bind: id), \(bind: amount), \(bind: price), \(bind: cash), \(bind: quantity))
            """).run()
        return id
    }

    @Test("amounts with up to 38 digits round-trip exactly through a column", arguments: TestDatabaseKind.all)
    func roundTrip(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind) { database, _ in
            try await CreateLedgerProbes().prepare(on: database.db)
            for text in Self.values {
                let id = try await insert(database, amount: try Wide(parsing: text), price: try Price(parsing: "189.12345678"))
                let row = try #require(try await database.sql.raw("SELECT amount, price FROM ledger_probes WHERE id = \(bind: id)").first())
                #expect(try row.decode(column: "amount", as: Wide.self).formatted(minimumFractionDigits: 0) == text)
                #expect(try row.decode(column: "price", as: Price?.self)?.description == "189.12345678")
            }
        }
    }

    @Test("each type's extremes and smallest unit survive the database's own number format", arguments: TestDatabaseKind.all)
    func extremes(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind) { database, _ in
            try await CreateLedgerProbes().prepare(on: database.db)
            let cases: [(Cash, Quantity, Price)] = [
                (.max, .max, .max), (-Cash.max, -Quantity.max, -Price.max),
                (Cash(uncheckedUnits: 1), Quantity(uncheckedUnits: 1), Price(uncheckedUnits: 1)),
                (Cash(uncheckedUnits: -1), Quantity(uncheckedUnits: 10_000), Price(uncheckedUnits: 10_000)),
                (.zero, .zero, .zero), (try Cash(parsing: "10000.1"), try Quantity(parsing: "0.0001"), try Price(parsing: "1000000.00000001")),
            ]
            for (cash, quantity, price) in cases {
                let id = try await insert(database, amount: 1, price: price, cash: cash, quantity: quantity)
                let row = try #require(try await database.sql.raw("SELECT price, cash, quantity FROM ledger_probes WHERE id = \(bind: id)").first())
                #expect(try row.decode(column: "cash", as: Cash.self) == cash)
                #expect(try row.decode(column: "quantity", as: Quantity.self) == quantity)
                #expect(try row.decode(column: "price", as: Price.self) == price)
            }
        }
    }

    @Test("the CHECK written with MoneyColumn.check refuses non-positive amounts", arguments: TestDatabaseKind.all)
    func positiveCheck(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind) { database, _ in
            try await CreateLedgerProbes().prepare(on: database.db)
            await expectConstraintViolation(.check) { _ = try await insert(database, amount: 0) }
            await expectConstraintViolation(.check) { _ = try await insert(database, amount: -1) }
            // The same insert with a positive amount passes: the refusals were the check's.
            _ = try await insert(database, amount: try Wide(parsing: "0.000000001"))
        }
    }

    @Test("PostgreSQL declares money columns NUMERIC with their precision and scale (PostgreSQL only: SQLite has no such types)", .enabled(if: TestDatabaseKind.postgresAvailable, "needs PostgreSQL (FOLIO_TEST_DATABASE_URL)"))
    func postgresColumnTypes() async throws {
        try await withTestDatabase(.postgres) { database, _ in
            try await CreateLedgerProbes().prepare(on: database.db)
            struct Column: Decodable, Equatable {
                var column_name: String
                var data_type: String
                var numeric_precision: Int
                var numeric_scale: Int
            }
            let columns = try await database.sql.raw("""
                SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns
                WHERE table_name = 'ledger_probes' AND data_type = 'numeric' ORDER BY column_name
                """).all(decoding: Column.self)
            #expect(columns == [
                Column(column_name: "amount", data_type: "numeric", numeric_precision: 38, numeric_scale: 18),
                Column(column_name: "cash", data_type: "numeric", numeric_precision: 20, numeric_scale: 4),
                Column(column_name: "price", data_type: "numeric", numeric_precision: 20, numeric_scale: 8),
                Column(column_name: "quantity", data_type: "numeric", numeric_precision: 28, numeric_scale: 9),
            ])
        }
    }

    @Test("SQLite stores money as TEXT, never REAL, and refuses a REAL read back (SQLite only: its storage classes)")
    func sqliteStorageClass() async throws {
        try await withTestDatabase(.sqlite) { database, _ in
            try await CreateLedgerProbes().prepare(on: database.db)
            _ = try await insert(database, amount: try Wide(parsing: "0.1"))
            let storage = try await database.sql.raw("SELECT typeof(amount) AS t FROM ledger_probes").first(decodingColumn: "t", as: String.self)
            #expect(storage == "text")
            let real = try #require(try await database.sql.raw("SELECT CAST(amount AS REAL) AS amount FROM ledger_probes").first())
            #expect(throws: (any Error).self, "a REAL has lost exactness already") { try real.decode(column: "amount", as: Wide.self) }
        }
    }
}
