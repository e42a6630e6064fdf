import NIOCore
import NIOPosix

/// Runs Swift's tasks on the server's event loops instead of a pool of their
/// own, as SwiftNIO offers for servers: a request's handler and the database
/// replies it awaits then need no hop between two sets of threads. Safe
/// because nothing blocking runs on a task here (bcrypt has its own threads,
/// SQLite and the backup tools go through NIO's thread pool, the log writer
/// has its thread).
public enum EventLoopExecutor {
    /// Call once, first thing in a long-running command, before it starts any task.
    /// PostgreSQL only. There it gives orders on many accounts about a third
    /// more fills a second (for about 10 % of `/health`; docs/PERFORMANCE.md);
    /// on SQLite, whose one connection answers on one event loop, the portfolio
    /// read's p99 went from about 60 ms to seconds while that loop ran everyone's tasks.
    public static func install(for database: AppConfiguration.DatabaseLocation) {
        guard database.isPostgres else { return }
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }
}
