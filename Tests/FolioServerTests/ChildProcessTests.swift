import Foundation
import Testing

@testable import FolioServer

@Suite("Child processes")
struct ChildProcessTests {
    @Test("a child gets its three streams and no other descriptor of this process, in the directory asked for")
    func descriptorsAndDirectory() throws {
        // A descriptor of this process that is not close-on-exec, as Foundation opens files.
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("child-\(UUID())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let file = scratch.appendingPathComponent("open")
        FileManager.default.createFile(atPath: file.path, contents: nil)
        let held = try FileHandle(forWritingTo: file)
        defer { try? held.close() }
        #expect(fcntl(held.fileDescriptor, F_GETFD) & FD_CLOEXEC == 0, "the case this guards against")

        // The shell lists its descriptors (its own listing adds none: a glob reads the directory before the loop).
        let child = try ChildProcess(
            "/bin/sh", ["-c", "pwd; for fd in /proc/$$/fd/*; do echo ${fd##*/}; done"], directory: scratch.path, output: .pipe)
        let output = String(decoding: child.standardOutput!.readDataToEndOfFile(), as: UTF8.self)
        #expect(child.waitUntilExit() == .init(status: 0, reason: .exit))
        let lines = output.split(separator: "\n").map(String.init)
        #expect(lines.first.map { URL(fileURLWithPath: $0).resolvingSymlinksInPath().path } == scratch.resolvingSymlinksInPath().path)
        let descriptors = Set(lines.dropFirst().compactMap { Int32($0) })
        #expect(descriptors.isSuperset(of: [0, 1, 2]))
        #expect(!descriptors.contains(held.fileDescriptor), "\(descriptors.sorted())")
        #expect(descriptors.filter { $0 > 2 }.count <= 1, "at most the shell's own: \(descriptors.sorted())")
    }

    @Test("exit status, a signal's death, and a program that is not there")
    func endings() throws {
        let failing = try ChildProcess("/bin/sh", ["-c", "exit 3"])
        #expect(failing.waitUntilExit() == .init(status: 3, reason: .exit))

        let sleeper = try ChildProcess("/bin/sleep", ["30"])
        #expect(sleeper.isRunning)
        sleeper.signal(SIGTERM)
        #expect(sleeper.waitUntilExit() == .init(status: SIGTERM, reason: .uncaughtSignal))
        #expect(!sleeper.isRunning)
        sleeper.signal(SIGKILL)  // after the exit: nothing is sent, nothing fails

        #expect(throws: ChildProcess.SpawnFailed.self) { try ChildProcess("/nonexistent/tool", [], directory: "/tmp") }
    }
}
