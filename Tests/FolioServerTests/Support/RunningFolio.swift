import Foundation
import NIOConcurrencyHelpers
import Testing

@testable import FolioServer

/// Waits until `condition` holds, polling with a growing pause, for at most
/// `limit`; fails with `what` when it never does. A deadline, not a count
/// of sleeps, so a slow machine waits longer instead of failing.
func eventually(
    _ what: String, within limit: Duration = .seconds(60), sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + limit
    var pause = Duration.milliseconds(10)
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: pause)
        pause = min(pause * 2, .milliseconds(250))
    }
    Issue.record("\(what) did not happen within \(limit)", sourceLocation: sourceLocation)
    throw WaitedTooLong(what: what)
}

struct WaitedTooLong: Error, CustomStringConvertible {
    var what: String
    var description: String { "waited too long for \(what)" }
}

/// Collects what a child process writes, line by line, as it writes it, on
/// a thread of its own that reads until the stream ends.
final class OutputLines: Sendable {
    private let state = NIOLockedValueBox((pending: Data(), lines: [String](), raw: Data(), ended: false, waiters: [UUID: CheckedContinuation<Void, Never>]()))
    private let ended = ConditionLock(value: false)

    func attach(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(handle.fileDescriptor, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { break }
                state.withLockedValue { state in
                    state.raw.append(contentsOf: buffer[0..<count])
                    state.pending.append(contentsOf: buffer[0..<count])
                    while let newline = state.pending.firstIndex(of: 0x0A) {
                        append(String(decoding: state.pending[state.pending.startIndex..<newline], as: UTF8.self), to: &state.lines)
                        state.pending.removeSubrange(state.pending.startIndex...newline)
                    }
                }
            }
            // A last line without its newline is a line too.
            state.withLockedValue { state in
                if !state.pending.isEmpty { append(String(decoding: state.pending, as: UTF8.self), to: &state.lines) }
                state.pending = Data()
            }
            ended.lock()
            ended.unlock(withValue: true)
            let waiters = state.withLockedValue { state in
                state.ended = true
                defer { state.waiters = [:] }
                return state.waiters.values
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    /// Waits, without holding a thread, until the stream has ended (the writer exited), for at most
    /// `limit`: a descendant that kept the pipe open must fail the test, not hang it.
    func end(within limit: Duration = .seconds(60)) async {
        let id = UUID()
        await withCheckedContinuation { continuation in
            let done = state.withLockedValue { state in
                if !state.ended { state.waiters[id] = continuation }
                return state.ended
            }
            if done { return continuation.resume() }
            Task {
                try? await Task.sleep(for: limit)
                state.withLockedValue { $0.waiters.removeValue(forKey: id) }?.resume()
            }
        }
    }

    /// Everything written, byte for byte, once the stream has ended.
    func text() async -> String {
        await end()
        return state.withLockedValue { String(decoding: $0.raw, as: UTF8.self) }
    }

    private func append(_ line: String, to lines: inout [String]) {
        lines.append(line)
        TestLogArchive.record(line: line)
    }

    var lines: [String] { state.withLockedValue { $0.lines } }

    var objects: [[String: Any]] {
        lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// Everything written, byte for byte, once the stream has ended (blocks until then).
    func untilEnd() -> String {
        waitForEnd()
        return state.withLockedValue { String(decoding: $0.raw, as: UTF8.self) }
    }

    /// Blocks until the stream has ended (the writer exited), for at most `limit` seconds.
    func waitForEnd(within limit: Double = 60) {
        if ended.lock(whenValue: true, timeoutSeconds: limit) { ended.unlock() }
    }
}

/// `folio serve` or `folio worker` running as a child process, as in production.
final class RunningFolio: @unchecked Sendable {
    let process: ChildProcess
    let stdout = OutputLines()
    let stderr = OutputLines()
    /// The port `serve` bound (it is started with PORT 0: the kernel picks a free one).
    private(set) var port = 0

    init(_ folio: FolioProcess, _ arguments: [String], environment: [String: String]) throws {
        process = try folio.start(arguments, environment: environment)
        stdout.attach(process.standardOutput!)
        stderr.attach(process.standardError!)
    }

    /// Starts `folio serve` on a free port and waits until it listens.
    static func serve(_ folio: FolioProcess, environment: [String: String], arguments: [String] = []) async throws -> RunningFolio {
        let running = try RunningFolio(folio, ["serve", "--port", "0"] + arguments, environment: environment)
        try await eventually("folio serve listening") {
            guard running.process.isRunning else {
                running.readToEnd()
                throw ExitedEarly(output: running.stderr.lines + running.stdout.lines)
            }
            return running.stdout.objects.contains { $0["message"] as? String == "listening" }
        }
        let listening = running.stdout.objects.first { $0["message"] as? String == "listening" }
        running.port = try #require((listening?["port"] as? String).flatMap { Int($0) })
        return running
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    /// Waits for a line of output containing `text` (a pause point's announcement, say).
    func waitForLine(containing text: String, within limit: Duration = .seconds(60)) async throws {
        try await eventually("a line with \"\(text)\"", within: limit) {
            guard process.isRunning else {
                readToEnd()
                throw ExitedEarly(output: stderr.lines + stdout.lines)
            }
            return stdout.lines.contains { $0.contains(text) }
        }
    }

    /// SIGKILL: no graceful shutdown, no flushing, exactly like a crash.
    func kill() {
        process.signal(SIGKILL)
        process.waitUntilExit()
        readToEnd()
    }

    /// SIGTERM and the exit that follows; what it wrote as it stopped is in `stdout` and `stderr` after.
    func terminate(sourceLocation: SourceLocation = #_sourceLocation) async -> ChildProcess.Termination {
        process.signal(SIGTERM)
        return await exited(sourceLocation: sourceLocation)
    }

    /// The exit, and the output to its end.
    func exited(sourceLocation: SourceLocation = #_sourceLocation) async -> ChildProcess.Termination {
        let termination = await process.exited(within: .seconds(180), sourceLocation: sourceLocation)
        await stdout.end()
        await stderr.end()
        return termination
    }

    /// What the process wrote as it stopped is in `stdout` and `stderr` once this returns.
    func readToEnd() {
        stdout.waitForEnd(within: 10)
        stderr.waitForEnd(within: 10)
    }

    struct ExitedEarly: Error, CustomStringConvertible {
        var output: [String]
        var description: String { "the process exited early:\n" + output.suffix(20).joined(separator: "\n") }
    }
}

extension ChildProcess {
    /// The exit, waited for at most `limit`: past it the test fails and the
    /// process is killed, so a shutdown that never ends fails one test
    /// instead of hanging the run.
    func exited(within limit: Duration, sourceLocation: SourceLocation = #_sourceLocation) async -> Termination {
        let deadline = Task {
            try await Task.sleep(for: limit)
            Issue.record("process \(pid) had not exited after \(limit): it is killed", sourceLocation: sourceLocation)
            signal(SIGKILL)
        }
        defer { deadline.cancel() }
        return await exited()
    }
}
