import FluentKit
import FluentSQL
import FolioDomain
import Foundation
import Hummingbird
import SQLKit

/// Keyset pagination over (time column, id). The cursor is the last row's id,
/// opaque to clients; the next page compares against that row's own stored
/// time in SQL, so a timestamp never makes a round trip through Swift (where
/// SQLite's floating-point dates could move by a bit and skip or repeat a row).
enum Pagination {
    static let defaultPageSize = 50

    static func pageSize(_ request: Request, maximum: Int) throws -> Int {
        guard let raw = request.query["limit"] else { return min(defaultPageSize, maximum) }
        guard let limit = Int(raw) else {
            throw AppError.validation(field: "limit", code: "invalid", message: "limit must be a whole number from 1 to \(maximum).")
        }
        guard (1...maximum).contains(limit) else {
            throw AppError.validation(field: "limit", code: "out_of_range", message: "limit must be from 1 to \(maximum).")
        }
        return limit
    }

    static func cursor(after id: UUID) -> String {
        SecureToken.base64URL(Data(id.uuidString.utf8))
    }

    static func decode(_ cursor: Substring) throws -> UUID {
        guard let data = SecureToken.decodeBase64URL(cursor), let id = UUID(uuidString: String(decoding: data, as: UTF8.self)) else {
            throw AppError.validation(field: "cursor", code: "invalid", message: "The cursor is not one this server gave out.")
        }
        return id
    }

    /// Rows after the cursor row in `ORDER BY time DESC, id DESC` (or, not
    /// `descending`, `ORDER BY time, id`), as a condition for hand-written
    /// SQL. The cursor row's time is read from the table, not bound back from
    /// a `Date`, which can differ from the stored value in its last digits.
    /// With `owner`, the cursor row must belong to that user, so a cursor made
    /// from someone else's id reveals nothing.
    static func after(_ id: UUID, table: String, timeColumn: String, descending: Bool = true, owner: UUID? = nil) -> SQLQueryString {
        let comparison = descending ? "<" : ">"
        let ownerCondition: SQLQueryString = owner.map { " AND \(ident: "user_id") = \(bind: $0)" } ?? ""
        let anchor: SQLQueryString = "(SELECT \(ident: timeColumn) FROM \(ident: table) WHERE \(ident: "id") = \(bind: id)\(ownerCondition))"
        return "(\(ident: timeColumn) \(unsafeRaw: comparison) \(anchor) OR (\(ident: timeColumn) = \(anchor) AND \(ident: "id") \(unsafeRaw: comparison) \(bind: id)))"
    }

    /// An empty page after a cursor can also mean the cursor's row is gone
    /// (erased, removed by retention) or was never the user's: then every
    /// comparison with its time is NULL and nothing would ever follow. That is
    /// refused, so a client starts again instead of taking it for the end.
    /// Checked only when a page comes back empty, so a full page costs nothing.
    static func checkAnchor<Row>(_ rows: [Row], cursor id: UUID?, table: String, owner: UUID? = nil, on db: any SQLDatabase) async throws -> [Row] {
        guard rows.isEmpty, let id else { return rows }
        let ownerCondition: SQLQueryString = owner.map { " AND \(ident: "user_id") = \(bind: $0)" } ?? ""
        guard try await db.raw("SELECT 1 AS found FROM \(ident: table) WHERE \(ident: "id") = \(bind: id)\(ownerCondition)").first() != nil else {
            throw AppError.validation(
                field: "cursor", code: "invalid",
                message: "The cursor names nothing in this list any more (its row was removed). Start again from the first page.")
        }
        return rows
    }

    /// The same, as a Fluent filter.
    static func after(_ id: UUID, table: String, timeColumn: String, descending: Bool, owner: UUID? = nil) -> DatabaseQuery.Filter {
        .sql(embed: after(id, table: table, timeColumn: timeColumn, descending: descending, owner: owner))
    }
}

/// One page of a list: its items and the cursor of the next page, if any.
struct Page<Item: Encodable & Sendable>: ResponseEncodable {
    var data: [Item]
    var nextCursor: String?
}
