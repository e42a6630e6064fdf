import Foundation
import NIOConcurrencyHelpers
import NIOPosix

@testable import FolioServer

/// Stops a test run that has stopped making progress, and says where it
/// stood: every thread's stack, the processes it started, and what
/// PostgreSQL's sessions are waiting on. Without it a hung run sits idle
/// until CI's time is up and leaves nothing to read.
///
/// Progress is a test database given back (nearly every test of the server
/// uses one). The watchdog also checks that a task still starts on the shared
/// concurrency pool and a job on each event loop: one thread blocked there
/// stops every test that needs it.
enum HangWatchdog {
    /// How long without progress is a hang: longer than any one test may take (the read-replica test waits for
    /// its standby up to about 20 minutes), and short enough that CI's 90 still hold the run's diagnosis.
    static let quietMinutes = Double(ProcessInfo.processInfo.environment["FOLIO_TEST_HANG_MINUTES"] ?? "") ?? 25
    private static let state = NIOLockedValueBox((inUse: 0, lastProgress: ContinuousClock.now))
    private static let started: Void = {
        let thread = Thread { watch() }
        thread.name = "folio-test-watchdog"
        thread.start()
    }()

    /// A test database was taken (or is waited for).
    static func began() {
        _ = started
        state.withLockedValue {
            // Quiet while no test used a database is no hang: the clock starts with this one.
            if $0.inUse == 0 { $0.lastProgress = .now }
            $0.inUse += 1
        }
    }

    /// A test database was given back: the run moves.
    static func ended() {
        state.withLockedValue {
            $0.inUse -= 1
            $0.lastProgress = .now
        }
    }

    private static func watch() {
        while true {
            sleep(30)
            var stuck: [String] = []
            let (inUse, lastProgress) = state.withLockedValue { ($0.inUse, $0.lastProgress) }
            if inUse > 0, ContinuousClock.now - lastProgress > .seconds(quietMinutes * 60) {
                stuck.append("no test has given back its database for \(String(format: "%g", quietMinutes)) minutes, while \(inUse) are taken or waited for")
            }
            if !runs(within: 120, { done in Task.detached { done() } }) {
                stuck.append("a task did not start on the shared concurrency pool within two minutes: its threads are blocked")
            }
            for loop in MultiThreadedEventLoopGroup.singleton.makeIterator() where !runs(within: 120, { done in loop.execute { done() } }) {
                stuck.append("\(loop) did not run a job within two minutes: its thread is blocked")
            }
            if !stuck.isEmpty { stop(stuck) }
        }
    }

    /// Whether `start` calls its completion within `seconds`, waited for on this thread.
    private static func runs(within seconds: Double, _ start: (@escaping @Sendable () -> Void) -> Void) -> Bool {
        let ran = ConditionLock(value: false)
        start {
            ran.lock()
            ran.unlock(withValue: true)
        }
        guard ran.lock(whenValue: true, timeoutSeconds: seconds) else { return false }
        ran.unlock()
        return true
    }

    private static func stop(_ stuck: [String]) -> Never {
        let say = { (line: String) in FileHandle.standardError.write(Data((line + "\n").utf8)) }
        say("\nfolio tests: the run is stuck and is stopped here:")
        for reason in stuck { say("  - \(reason)") }
        let pid = String(ProcessInfo.processInfo.processIdentifier)
        show("the processes", "/bin/ps", ["-eo", "pid,ppid,stat,etime,args", "--forest"])
        // Each tool under a time limit: the database (or gdb) may be what hangs.
        if let url = TestDatabaseKind.adminURL {
            show(
                "PostgreSQL's busy sessions", "/usr/bin/timeout",
                ["30", "/usr/bin/psql", url, "-X", "-c", "SELECT pid, datname, state, wait_event_type, wait_event, now() - query_start AS running, left(query, 160) AS query FROM pg_stat_activity WHERE state <> 'idle' AND pid <> pg_backend_pid()"])
        }
        // (Without the many lines gdb writes about the debug build's module caches.)
        show("every thread's stack", "/bin/sh", [
            "-c", "/usr/bin/timeout 120 /usr/bin/gdb -p \(pid) -batch -ex 'set pagination off' -ex 'thread apply all bt 40' 2>&1 | grep -v '^During symbol reading'",
        ])
        _exit(70)
    }

    /// Runs a diagnostic tool with its output on this process's standard error; a missing tool is said, not fatal.
    private static func show(_ what: String, _ tool: String, _ arguments: [String]) {
        FileHandle.standardError.write(Data("\nfolio tests: \(what) (\(tool)):\n".utf8))
        guard FileManager.default.isExecutableFile(atPath: tool) else {
            return FileHandle.standardError.write(Data("  \(tool) is not installed\n".utf8))
        }
        guard let process = try? ChildProcess(tool, arguments, output: .descriptor(STDERR_FILENO), error: .descriptor(STDERR_FILENO)) else { return }
        process.waitUntilExit()
    }
}
