import Foundation
import Testing

@testable import FolioServer

@Suite("log output")
struct LogOutputTests {
    @Test("the buffered writer keeps lines whole and in order, and flush returns only once every appended byte is written")
    func flushWritesEverything() throws {
        let pipe = Pipe()
        let output = BufferedOutput(fileDescriptor: pipe.fileHandleForWriting.fileDescriptor)
        let lines = 20_000
        DispatchQueue.concurrentPerform(iterations: 4) { lane in
            for index in 0..<(lines / 4) { output.append("lane \(lane) line \(index) " + String(repeating: "x", count: 40)) }
        }
        // Only now start reading: the pipe holds 64 KiB, so the writer is still
        // blocked with most of the lines when flush is called.
        let received = ResultBox()
        let finished = DispatchSemaphore(value: 0)
        Thread {
            received.data = pipe.fileHandleForReading.readDataToEndOfFile()
            finished.signal()
        }.start()
        output.flush()
        // Nothing may be written after flush returned: close the pipe now and count.
        try pipe.fileHandleForWriting.close()
        finished.wait()
        let text = String(decoding: received.data, as: UTF8.self)
        let written = text.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        #expect(written.count == lines)
        #expect(text.hasSuffix("\n"))
        for lane in 0..<4 {
            let ofLane = written.filter { $0.hasPrefix("lane \(lane) ") }
            #expect(ofLane.count == lines / 4)
            #expect(ofLane.enumerated().allSatisfy { $0.element.hasPrefix("lane \(lane) line \($0.offset) ") }, "in order, none split")
        }
    }

    private final class ResultBox: @unchecked Sendable { var data = Data() }
}
