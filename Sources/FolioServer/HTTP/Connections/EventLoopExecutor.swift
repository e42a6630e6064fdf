import NIOCore
import NIOPosix

/// Runs Swift's tasks on the server's event loops instead of a pool of their
/// own, as SwiftNIO offers for servers: a request's handler and the database
/// replies it waits for then need no hop between two sets of threads. Safe
/// because nothing blocking runs on the task pool here (bcrypt has its own
/// threads, SQLite and file reads go through NIO's thread pool).
public enum EventLoopExecutor {
    /// Call once, first thing in a long-running command, before it starts any task.
    public static func install() {
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }
}
