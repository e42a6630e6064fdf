import FluentKit
import FolioDomain
import Foundation
import SQLKit
import Testing

@testable import FolioServer

/// A throwaway model with money columns declared through `MoneyColumn`.
final class LedgerProbe: Model, @unchecked Sendable {
    static let schema = "ledger_probes"
    @ID(key: .id) var id: UUID?
    @Field(key: "amount") var amount: StoredDecimal
    @OptionalField(key: "price") var price: StoredDecimal?

    init() {}
    init(amount: Decimal, price: Decimal?) {
        self.amount = StoredDecimal(amount)
        self.price = price.map(StoredDecimal.init)
    }
}

struct CreateLedgerProbes: AsyncMigration {
    func prepare(on database: any Database) async throws {
        try await database.schema(LedgerProbe.schema)
            .id()
            .field("amount", MoneyColumn(precision: 38, scale: 18).dataType(on: database), .required)
            .field("price", MoneyColumn(precision: 20, scale: 8).dataType(on: database))
            .constraint(.sql(unsafeRaw: "CONSTRAINT ledger_probes_amount_check CHECK (\(MoneyColumn.check("amount", "> 0", on: database)))"))
            .create()
    }
    func revert(on database: any Database) async throws {
        try await database.schema(LedgerProbe.schema).delete()
    }
}

@Suite("Money columns")
struct MoneyColumnTests {
    static let values = [
        "123456789012.345678", "0.000000000000000001", "99999999999999999.9", "0.1", "12345678901.123456789", "1",
    ]

    @Test("decimals with up to 18 significant digits round-trip exactly through a model", arguments: TestDatabaseKind.all)
    func roundTrip(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind) { database, _ in
            let db = database.db
            try await CreateLedgerProbes().prepare(on: db)
            for text in Self.values {
                let probe = LedgerProbe(amount: try ExactDecimal.parse(text), price: try ExactDecimal.parse("189.12345678"))
                try await probe.create(on: db)
                let loaded = try #require(try await LedgerProbe.find(probe.id, on: db))
                #expect(loaded.amount.description == text)
                #expect(loaded.price?.description == "189.12345678")
            }
        }
    }

    @Test("the CHECK written with MoneyColumn.check refuses non-positive amounts", arguments: TestDatabaseKind.all)
    func positiveCheck(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind) { database, _ in
            try await CreateLedgerProbes().prepare(on: database.db)
            await #expect(throws: (any Error).self) { try await LedgerProbe(amount: 0, price: nil).create(on: database.db) }
            await #expect(throws: (any Error).self) { try await LedgerProbe(amount: -1, price: nil).create(on: database.db) }
            try await LedgerProbe(amount: try ExactDecimal.parse("0.000000001"), price: nil).create(on: database.db)
        }
    }

    @Test("PostgreSQL declares money columns NUMERIC with their precision and scale")
    func postgresColumnTypes() async throws {
        guard TestDatabaseKind.all.contains(.postgres) else { return }
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
                Column(column_name: "price", data_type: "numeric", numeric_precision: 20, numeric_scale: 8),
            ])
        }
    }

    @Test("SQLite stores money as TEXT, never REAL")
    func sqliteStorageClass() async throws {
        try await withTestDatabase(.sqlite) { database, _ in
            try await CreateLedgerProbes().prepare(on: database.db)
            try await LedgerProbe(amount: try ExactDecimal.parse("0.1"), price: nil).create(on: database.db)
            let storage = try await database.sql.raw("SELECT typeof(amount) AS t FROM ledger_probes").first(decodingColumn: "t", as: String.self)
            #expect(storage == "text")
        }
    }
}
