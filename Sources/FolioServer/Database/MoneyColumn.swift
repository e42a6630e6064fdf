import FluentKit
import FluentPostgresDriver
import FluentSQLiteDriver
import FolioDomain
import Foundation
import PostgresNIO
import SQLiteNIO

/// How a money or quantity column is declared so that it is exact on both databases.
///
/// PostgreSQL: `NUMERIC(precision, scale)`, exact and summable in SQL.
/// SQLite: `TEXT`, because a column declared NUMERIC or DECIMAL gets numeric
/// affinity and is stored as a lossy REAL. Sum SQLite money in Swift, never with `SUM()`.
public struct MoneyColumn: Sendable {
    public var precision: Int
    public var scale: Int

    public init(precision: Int, scale: Int) {
        precondition(precision > 0 && scale >= 0 && scale <= precision)
        self.precision = precision
        self.scale = scale
    }

    public func dataType(on database: any Database) -> DatabaseSchema.DataType {
        if database is any SQLDatabase, (database as! any SQLDatabase).dialect.name == "postgresql" {
            return .custom(SQLRaw("NUMERIC(\(precision),\(scale))"))
        }
        return .string
    }

    /// A CHECK expression comparing the column with zero, e.g. `quantity > 0`,
    /// written so that it compares numbers on SQLite's TEXT columns too.
    public static func check(_ column: String, _ comparison: String, on database: any Database) -> String {
        "\(numeric(column, on: database)) \(comparison)"
    }

    /// The column as a number inside a CHECK: itself on PostgreSQL, `CAST(… AS
    /// REAL)` on SQLite. Only for comparisons in constraints, never for arithmetic
    /// whose result is stored.
    public static func numeric(_ column: String, on database: any Database) -> String {
        if (database as? any SQLDatabase)?.dialect.name == "postgresql" { return column }
        return "CAST(\(column) AS REAL)"
    }
}

/// The stored form of an exact decimal: PostgreSQL `numeric` on one side,
/// SQLite text on the other. Use it for every money field of a Fluent model.
public struct StoredDecimal: Codable, Hashable, Sendable, CustomStringConvertible {
    public var value: Decimal

    public init(_ value: Decimal) {
        self.value = value
    }

    public var description: String { ExactDecimal.format(value) }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self), let value = try? ExactDecimal.parse(text) {
            self.value = value
        } else {
            self.value = try container.decode(Decimal.self)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

extension StoredDecimal: SQLiteDataConvertible {
    public init?(sqliteData: SQLiteData) {
        switch sqliteData {
        case .text(let text):
            guard let value = try? ExactDecimal.parse(text) else { return nil }
            self.value = value
        case .integer(let integer):
            self.value = Decimal(integer)
        default:
            // A REAL has already lost exactness; refuse it rather than pass it on.
            return nil
        }
    }

    public var sqliteData: SQLiteData? { .text(description) }
}

extension StoredDecimal: PostgresNonThrowingEncodable, PostgresDecodable {
    public static var psqlType: PostgresDataType { .numeric }
    public static var psqlFormat: PostgresFormat { Decimal.psqlFormat }

    public func encode<JSONEncoder: PostgresJSONEncoder>(into byteBuffer: inout ByteBuffer, context: PostgresEncodingContext<JSONEncoder>) {
        value.encode(into: &byteBuffer, context: context)
    }

    public init<JSONDecoder: PostgresJSONDecoder>(
        from byteBuffer: inout ByteBuffer, type: PostgresDataType, format: PostgresFormat,
        context: PostgresDecodingContext<JSONDecoder>
    ) throws {
        self.value = try Decimal(from: &byteBuffer, type: type, format: format, context: context)
    }
}
