import FluentKit
import PostgresNIO
import SQLiteNIO

/// A database constraint refusing a write, recognised by its code (SQLSTATE
/// class 23 on PostgreSQL, `SQLITE_CONSTRAINT_*` on SQLite), never by the text
/// of its message.
struct DatabaseConstraint: Error, Sendable {
    enum Kind: Sendable, Equatable {
        case unique, check, foreignKey, notNull, trigger, other
    }

    var kind: Kind
    /// The table, when the database names it (PostgreSQL does; SQLite only in its message text, which is not read).
    var table: String?

    /// The constraint an error names, or nil when it is no constraint error.
    init?(_ error: any Error) {
        if let error = error as? PSQLError, let state = error.serverInfo?[.sqlState], state.hasPrefix("23") {
            table = error.serverInfo?[.tableName]
            switch state {
            case "23505": kind = .unique
            case "23514": kind = .check
            case "23503": kind = .foreignKey
            case "23502": kind = .notNull
            case "23000": kind = .trigger  // the audit trail's append-only trigger
            default: kind = .other
            }
            return
        }
        if let error = error as? SQLiteError {
            switch error.reason {
            case .constraintUniqueFailed, .constraintPrimaryKeyFailed, .constraintUniqueRowIDFailed: kind = .unique
            case .constraintCheckFailed: kind = .check
            case .constraintForeignKeyFailed: kind = .foreignKey
            case .constraintNotNullFailed: kind = .notNull
            case .constraintTriggerFailed: kind = .trigger
            case .constraint, .constraintCommitHookFailed, .constraintUserFunctionFailed, .constraintVirtualTableFailed,
                 .constraintUpdateTriggerDeletedRow, .constraintStrictDataTypeFailed:
                kind = .other
            default:
                return nil
            }
            return
        }
        return nil
    }
}
