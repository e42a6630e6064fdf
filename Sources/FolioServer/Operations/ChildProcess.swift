import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A child process started with `posix_spawn` and reaped by `waitpid` on a
/// thread of its own. Foundation's `Process` watches its children through a
/// libdispatch source on Linux, and a test run crashed inside libdispatch
/// (`_dispatch_event_loop_drain`) while it waited; nothing here uses dispatch.
final class ChildProcess: Sendable {
    /// Where one of the child's standard streams goes.
    enum Stream: Sendable {
        case null
        /// A new pipe; the parent's end is `standardInput`, `standardOutput` or `standardError`.
        case pipe
        /// A descriptor the caller keeps open (a file, say).
        case descriptor(Int32)
        /// Standard error only: wherever standard output goes.
        case standardOutput
    }

    /// How the child ended, as Foundation's `Process` reports it: the exit
    /// status, or the number of the signal that killed it.
    struct Termination: Equatable, Sendable {
        enum Reason: Sendable { case exit, uncaughtSignal }
        var status: Int32
        var reason: Reason
    }

    struct SpawnFailed: Error, CustomStringConvertible {
        var executable: String
        var code: Int32
        var description: String { "could not start \(executable): \(String(cString: strerror(code)))" }
    }

    let pid: pid_t
    let standardInput: FileHandle?
    let standardOutput: FileHandle?
    let standardError: FileHandle?
    private let termination = NIOLockedValueBox<Termination?>(nil)
    private let reaped = ConditionLock(value: false)
    /// Tasks awaiting the exit (`exited()`), resumed by the reaper thread.
    private let waiters = NIOLockedValueBox<[CheckedContinuation<Termination, Never>]>([])
    /// Held from making a child's pipes until it is spawned (see `.pipe`).
    private static let spawning = NIOLock()

    /// Starts `executable` (an absolute path) with exactly `environment`, or
    /// this process's environment when it is nil, in `directory` when given.
    /// The child gets its three standard streams and no other descriptor of
    /// this process (a backup file, another child's pipe), as with
    /// Foundation's `Process`. Signals start with their default dispositions
    /// and none blocked, whatever this process set up for itself.
    init(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, directory: String? = nil,
        input: Stream = .null, output: Stream = .null, error: Stream = .null
    ) throws {
        var program = executable
        var arguments = arguments
        if let directory, GlibcSpawn.addChdir == nil {
            // Without glibc's chdir action (before 2.29): through env, where a missing program is exit status 127.
            arguments = ["-C", directory, "--", executable] + arguments
            program = "/usr/bin/env"
        }

        Self.spawning.lock()
        defer { Self.spawning.unlock() }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // The child's ends, closed here once it has its copies; the parent's ends.
        var childEnds: [Int32] = []
        var parentEnds: [Int32?] = [nil, nil, nil]
        var failure: Int32 = 0
        for (target, stream) in [input, output, error].enumerated() {
            let target = Int32(target)
            switch stream {
            case .null:
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            case .descriptor(let descriptor):
                posix_spawn_file_actions_adddup2(&actions, descriptor, target)
            case .standardOutput:
                posix_spawn_file_actions_adddup2(&actions, 1, target)
            case .pipe:
                // Close-on-exec on both ends: no other child inherits them, so
                // the reader sees the end of the stream when this child exits.
                // (glibc's pipe2 is not visible to Swift; `spawning` keeps
                // another spawn from coming between pipe and fcntl.)
                var ends: [Int32] = [-1, -1]
                guard pipe(&ends) == 0 else {
                    failure = errno
                    break
                }
                _ = fcntl(ends[0], F_SETFD, FD_CLOEXEC)
                _ = fcntl(ends[1], F_SETFD, FD_CLOEXEC)
                let (childEnd, parentEnd) = target == 0 ? (ends[0], ends[1]) : (ends[1], ends[0])
                posix_spawn_file_actions_adddup2(&actions, childEnd, target)
                childEnds.append(childEnd)
                parentEnds[Int(target)] = parentEnd
            }
        }

        if let directory, let addChdir = GlibcSpawn.addChdir { _ = directory.withCString { addChdir(&actions, $0) } }
        // Every other descriptor closed in the child, after the standard streams took their copies.
        if let closeFrom = GlibcSpawn.addCloseFrom {
            _ = closeFrom(&actions, 3)
        } else {
            for descriptor in Self.openDescriptors() where descriptor > 2 { posix_spawn_file_actions_addclose(&actions, descriptor) }
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t(), allSignals = sigset_t()
        sigemptyset(&noSignals)
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        let environmentStrings: [String] =
            environment.map { $0.map { "\($0.key)=\($0.value)" } } ?? ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        let envp = environmentStrings.map { strdup($0) } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var spawned: pid_t = 0
        if failure == 0 { failure = posix_spawn(&spawned, program, &actions, &attributes, argv, envp) }
        for end in childEnds { close(end) }
        guard failure == 0 else {
            for end in parentEnds.compactMap({ $0 }) { close(end) }
            throw SpawnFailed(executable: executable, code: failure)
        }
        let pid = spawned
        self.pid = pid
        standardInput = parentEnds[0].map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }
        standardOutput = parentEnds[1].map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }
        standardError = parentEnds[2].map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }

        let (termination, reaped, waiters) = (self.termination, self.reaped, self.waiters)
        Thread.detachNewThread {
            // Waited for without reaping, then reaped under the lock `signal` takes: a signal is
            // never sent to a process id the system may already have given to another process.
            var info = siginfo_t()
            while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) == -1 && errno == EINTR {}
            termination.withLockedValue { termination in
                var status: Int32 = 0
                var reapedID: pid_t
                repeat { reapedID = waitpid(pid, &status, 0) } while reapedID == -1 && errno == EINTR
                // Low seven bits: the signal that killed it, or 0 for an exit whose status is the next byte.
                let signal = status & 0x7f
                termination =
                    if reapedID != pid { Termination(status: -1, reason: .exit) }  // not ours to know: never a success
                    else if signal == 0 { Termination(status: (status >> 8) & 0xff, reason: .exit) }
                    else { Termination(status: signal, reason: .uncaughtSignal) }
            }
            reaped.lock()
            reaped.unlock(withValue: true)
            let ended = termination.withLockedValue { $0! }
            for waiter in waiters.withLockedValue({ waiters in defer { waiters = [] }; return waiters }) { waiter.resume(returning: ended) }
        }
    }

    var isRunning: Bool { termination.withLockedValue { $0 == nil } }

    /// Blocks the calling thread until the child has exited.
    @discardableResult
    func waitUntilExit() -> Termination {
        reaped.lock(whenValue: true)
        reaped.unlock()
        return termination.withLockedValue { $0! }
    }

    /// Waits for the child's exit without holding a thread: a task that blocks
    /// in `waitUntilExit` takes one of the few threads every task shares.
    func exited() async -> Termination {
        await withCheckedContinuation { continuation in
            // Under the termination's lock: the reaper either has set it (answered here) or will find this waiter.
            let ended: Termination? = termination.withLockedValue { ended in
                if ended == nil { waiters.withLockedValue { $0.append(continuation) } }
                return ended
            }
            if let ended { continuation.resume(returning: ended) }
        }
    }

    /// Sends `signal` while the child runs (SIGTERM by default).
    func signal(_ signal: Int32 = SIGTERM) {
        termination.withLockedValue { if $0 == nil { _ = kill(pid, signal) } }
    }

    /// This process's open descriptors (`/proc/self/fd`), read when glibc cannot close them all in one action.
    private static func openDescriptors() -> [Int32] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return names.compactMap(Int32.init)
    }
}

/// glibc's spawn actions that its headers declare only under `_GNU_SOURCE`,
/// which Swift's Glibc module does not set: looked up by name instead.
private enum GlibcSpawn {
    typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

    /// `posix_spawn_file_actions_addchdir_np` (glibc 2.29).
    static let addChdir: AddChdir? = symbol("posix_spawn_file_actions_addchdir_np")
    /// `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34).
    static let addCloseFrom: AddCloseFrom? = symbol("posix_spawn_file_actions_addclosefrom_np")

    private static func symbol<Function>(_ name: String) -> Function? {
        guard let address = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }
        return unsafeBitCast(address, to: Function.self)
    }
}
