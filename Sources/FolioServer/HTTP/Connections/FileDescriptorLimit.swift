#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's limit on open files, which every connection uses one of.
/// Running into it took the server down (libdispatch cannot start a thread
/// without a descriptor), so start-up raises the soft limit to the hard one
/// and keeps the connection limit below it.
enum FileDescriptorLimit {
    /// Descriptors kept for everything but client connections: the database
    /// pool, log and data files, the event loops, outgoing vendor calls.
    static let reserve = 256

    /// Raises the soft limit as far as the hard limit allows; returns the limit now in force.
    @discardableResult
    static func raise() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return Int(clamping: limit.rlim_cur)  // RLIM_INFINITY is the largest value: no limit
    }

    /// The connection limit to use: the configured one, or less when the file limit is lower.
    static func connections(configured: Int, fileLimit: Int) -> Int {
        max(1, min(configured, fileLimit - reserve))
    }
}
