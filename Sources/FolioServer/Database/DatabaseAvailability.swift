import AsyncKit
import NIOPosix
import PostgresNIO

extension FolioDatabase {
    /// The database could not be reached, or ended the connection, or left it without an answer: not a
    /// fault of the request, and likely gone in a moment (a restart, a failover), so a 503 with
    /// `Retry-After`, not a 500. What was being written may or may not have been saved.
    static func isUnavailable(_ error: any Error) -> Bool {
        switch error {
        case is ConnectionPoolTimeoutError, is Unanswered, is NIOConnectionError:
            return true
        case let error as PSQLError:
            if [.serverClosedConnection, .clientClosedConnection, .connectionError, .uncleanShutdown, .poolClosed].contains(error.code) { return true }
            // Class 08 (connection exception); 57P01–57P03: the server is shutting down, crashed, or not yet accepting;
            // 25P03: it ended a transaction left idle past its limit (an overloaded instance), so nothing of it was saved;
            // 3D000: the database is not there (dropped, or renamed under us); 53300: no connection slot is left;
            // 28000, 28P01: the server no longer lets this role in (its password changed). None is the request's fault.
            guard let state = error.serverInfo?[.sqlState] else { return false }
            return state.hasPrefix("08") || ["57P01", "57P02", "57P03", "25P03", "3D000", "53300", "28000", "28P01"].contains(state)
        default:
            return false
        }
    }
}
