import Foundation
import NIOCore
import NIOPosix
import PostgresNIO
import SQLiteNIO

/// A database error for an operator's terminal, in one line: what PostgreSQL said (its message, hint and
/// SQLSTATE), or what kept Folio from reaching it. PostgresNIO's own description hides all of that on
/// purpose (it is meant for responses, which never show it); these lines go to the command's operator only.
public enum DatabaseErrorText {
    public static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return String(reflecting: error) }
        if let said = serverSaid(error, hint: true) { return said }
        switch error.code {
        case .sslUnsupported:
            return "the PostgreSQL server does not offer TLS, and the URL's sslmode asks for it (enable ssl on the server, or use sslmode=disable on a trusted network only)"
        case .connectionError:
            return "cannot connect to PostgreSQL" + (error.underlying.map { ": " + connectionFailure($0) } ?? "")
        case .serverClosedConnection, .clientClosedConnection:
            return "the connection to PostgreSQL was closed" + (error.underlying.map { ": \(String(describing: $0))" } ?? "")
        default:
            // PostgresNIO's reflection carries the statement and its bound values (an address, a token's digest): its code only.
            return "PostgreSQL client error: \(error.code)"
        }
    }

    /// Why a connection could not be made, as an operator reads it ("127.0.0.1:5433: connection refused"), not
    /// NIO's description of its attempt structures.
    static func connectionFailure(_ error: any Error) -> String {
        func reason(_ error: any Error) -> String {
            if let io = error as? IOError { return String(cString: strerror(io.errnoCode)).lowercased() }
            if let channel = error as? ChannelError, case .connectTimeout = channel { return "no answer in time" }
            return String(describing: error)
        }
        guard let failure = error as? NIOConnectionError else { return reason(error) }
        let attempts = failure.connectionErrors.map { attempt in
            "\(attempt.target.ipAddress ?? failure.host):\(attempt.target.port ?? failure.port): \(reason(attempt.error))"
        }
        if !attempts.isEmpty { return attempts.joined(separator: "; ") }
        if failure.dnsAError != nil || failure.dnsAAAAError != nil { return "the host name \(failure.host) could not be resolved" }
        return "\(failure.host):\(failure.port): no address to connect to"
    }

    /// What the server said: its message, detail (never a NOT NULL or CHECK failure's, which is the whole row:
    /// a password hash or sealed keys), hint when asked for, and SQLSTATE. Nil when it said nothing.
    private static func serverSaid(_ error: PSQLError, hint: Bool) -> String? {
        guard let info = error.serverInfo, let message = info[.message] else { return nil }
        var text = "PostgreSQL says: \(message)"
        if let detail = info[.detail], !detail.hasPrefix("Failing row contains") { text += " (\(detail))" }
        if hint, let said = info[.hint] { text += "; hint: \(said)" }
        return text + (info[.sqlState].map { " [SQLSTATE \($0)]" } ?? "")
    }

    /// The operator's line for a database error (as `describe`), or nil for any other error.
    public static func describeIfDatabase(_ error: any Error) -> String? {
        if let error = error as? SQLiteError {
            switch error.reason {
            // A read-only file, directory or mount: SQLite writes its -wal and -shm files beside the database.
            case .readOnly, .readonlyInRecovery, .readonlyCantLock, .readonlyInRollback, .readonlyBackingMoved, .readonlyDirectory,
                 .cantOpen, .cantOpenDirectory, .cantOpenInvalidPath, .cantOpenUnfollowedSymlink:
                return "the SQLite database cannot be opened for writing (\(error.message)): Folio's commands write beside it (its -wal and -shm files) "
                    + "and need the file and its directory writable; to check a read-only copy, copy it somewhere writable first"
            default:
                return nil
            }
        }
        return error is PSQLError ? describe(error) : nil
    }

    /// Whether the database answered and refused (a SQLite error, PostgreSQL's own error), as opposed to not being
    /// reached at all (a refused or lost connection): what the data did, not what the machine did.
    static func isRefusalByDatabase(_ error: any Error) -> Bool {
        if let error = error as? PSQLError { return error.serverInfo != nil }
        return error is SQLiteError
    }

    /// An error for a log line. A PostgreSQL error's own reflection prints the query with every bind value, and a
    /// NOT NULL or CHECK failure's detail ("Failing row contains (…)") the whole row: a password hash or a token
    /// split by punctuation into pieces no redaction rule recognises. A log line gets the message, the SQLSTATE
    /// and any other detail (a unique key's, whose values the redactor reads), never the query or the row.
    public static func forLog(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return String(reflecting: error) }
        if let said = serverSaid(error, hint: false) { return said }
        return "PostgreSQL error: \(error.code)" + (error.underlying.map { " (\(String(describing: $0)))" } ?? "")
    }
}
