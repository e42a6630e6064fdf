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

@Suite("log timestamps")
struct LogTimestampTests {
    @Test("the hand-made RFC 3339 timestamp matches Foundation's to the millisecond, across leap days and centuries")
    func matchesFoundation() throws {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)
        var generator = SystemRandomNumberGenerator()
        var instants: [Int64] = [0, 951_782_400_000, 951_868_799_999, 1_709_164_800_123, 4_107_542_399_999, 253_402_300_799_999]
        for _ in 0..<2000 { instants.append(Int64.random(in: 0...4_102_444_800_000, using: &generator)) }
        for milliseconds in instants {
            // Half a millisecond in, so Foundation's truncation of a binary fraction lands on the same millisecond.
            let date = Date(timeIntervalSince1970: (Double(milliseconds) + 0.5) / 1000)
            #expect(LogTimestamp.format(milliseconds: milliseconds) == style.format(date), "\(milliseconds)")
        }
    }
}
