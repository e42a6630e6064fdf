import FluentKit
import FluentPostgresDriver
import FluentSQLiteDriver
import Foundation

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
