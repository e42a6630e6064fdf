import Foundation
import Logging
import SQLKit
import Testing

@testable import FolioServer

@Suite("log output")
struct LogOutputTests {
    @Test("the buffered writer keeps lines whole and in order, and flush returns only once every appended byte is written")
    func flushWritesEverything() throws {
        let pipe = Pipe()
        // A child another test spawns meanwhile must not hold the write end open.
        for end in [pipe.fileHandleForReading, pipe.fileHandleForWriting] { _ = fcntl(end.fileDescriptor, F_SETFD, FD_CLOEXEC) }
        let output = BufferedOutput(fileDescriptor: pipe.fileHandleForWriting.fileDescriptor)
        let lines = 20_000
        DispatchQueue.concurrentPerform(iterations: 4) { lane in
            for index in 0..<(lines / 4) { output.append("lane \(lane) line \(index) " + String(repeating: "x", count: 40)) }
        }
        // Only now start reading: the pipe holds 64 KiB, so the writer is still
        // blocked with most of the lines when flush is called.
        let text = try Self.readFlushed(pipe, output)
        let written = text.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        #expect(written.count == lines)
        #expect(text.hasSuffix("\n"))
        for lane in 0..<4 {
            let ofLane = written.filter { $0.hasPrefix("lane \(lane) ") }
            #expect(ofLane.count == lines / 4)
            #expect(ofLane.enumerated().allSatisfy { $0.element.hasPrefix("lane \(lane) line \($0.offset) ") }, "in order, none split")
        }
    }

    @Test("a non-blocking output that is full is waited for, not skipped: every line arrives")
    func nonBlockingOutput() throws {
        let pipe = Pipe()
        for end in [pipe.fileHandleForReading, pipe.fileHandleForWriting] { _ = fcntl(end.fileDescriptor, F_SETFD, FD_CLOEXEC) }
        let writeEnd = pipe.fileHandleForWriting.fileDescriptor
        _ = fcntl(writeEnd, F_SETFL, fcntl(writeEnd, F_GETFL) | O_NONBLOCK)
        let output = BufferedOutput(fileDescriptor: writeEnd)
        let lines = 5_000
        for index in 0..<lines { output.append("line \(index) " + String(repeating: "y", count: 60)) }
        // The pipe holds 64 KiB of the 330 KiB: the writer finds it full until the reader starts, a moment later.
        usleep(200_000)
        let written = try Self.readFlushed(pipe, output).split(separator: "\n")
        #expect(written.count == lines)
        #expect(written.enumerated().allSatisfy { $0.element.hasPrefix("line \($0.offset) ") })
    }

    /// Starts reading the pipe, flushes `output`, then closes the write end (nothing may be written
    /// after flush returned) and gives back all that was read.
    static func readFlushed(_ pipe: Pipe, _ output: BufferedOutput) throws -> String {
        let received = ResultBox()
        let finished = DispatchSemaphore(value: 0)
        Thread {
            received.data = pipe.fileHandleForReading.readDataToEndOfFile()
            finished.signal()
        }.start()
        output.flush()
        try pipe.fileHandleForWriting.close()
        finished.wait()
        return String(decoding: received.data, as: UTF8.self)
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

@Suite("log lines")
struct LogLineTests {
    /// The line without its timestamp, which differs between two writes.
    private func withoutTimestamp(_ line: String) -> String {
        line.replacing(/"timestamp":"[^"]*"/, with: "").replacing(#/^\S+Z /#, with: "")
    }

    @Test("an access line written directly is the line `info` writes with the same fields, in JSON and in text")
    func accessLineMatchesInfo() throws {
        for format in [AppConfiguration.LogFormat.json, .text] {
            let capture = LogCapture()
            var logger = capture.logger(format: format)
            logger[metadataKey: "request_id"] = .stringConvertible(PlainLogValue.generatedRequestID("13a98df0-9610-4aaa-a41d-872b1df864ba"))
            // Logger metadata under an access key gives way to the request's own value, as in `info`.
            logger[metadataKey: "status"] = "stale"
            logger[metadataKey: "api_token"] = "abc123"
            // A fixed field's name is renamed, a given label kept, and a secret by shape redacted, as in `info`.
            logger[metadataKey: "message"] = "shadow"
            logger[metadataKey: "label"] = "edge"
            logger[metadataKey: "note"] = "Bearer abcdefghijklmnop123456"
            // A provider's value gives way to the request's own; its others are kept.
            logger.handler.metadataProvider = Logger.MetadataProvider { ["route": "provided", "trace": "t-1"] }
            let fields = (method: PlainLogValue.method(.post), route: PlainLogValue.route("/api/orders/:id"),
                          status: PlainLogValue.status(201), duration: PlainLogValue.milliseconds(.microseconds(2_316)))
            EdgeMiddleware.logAccess(to: logger, method: fields.method, route: fields.route, status: fields.status, duration: fields.duration)
            logger.info(
                "request",
                metadata: [
                    "method": .stringConvertible(fields.method), "route": .stringConvertible(fields.route),
                    "status": .stringConvertible(fields.status), "duration_ms": .stringConvertible(fields.duration),
                ])
            let lines = capture.lines
            try #require(lines.count == 2)
            #expect(withoutTimestamp(lines[0]) == withoutTimestamp(lines[1]))
            #expect(lines[0].contains("/api/orders/:id") && lines[0].contains("2.316") && lines[0].contains("201"))
            #expect(!lines[0].contains("stale") && !lines[0].contains("abc123"), "the request's status wins; a token key is masked")
            #expect(!lines[0].contains("provided") && lines[0].contains("t-1") && lines[0].contains("edge"))
            #expect(!lines[0].contains("abcdefghijklmnop123456") && lines[0].contains("shadow"))
            if format == .json {
                let object = try #require(capture.objects.first)
                #expect(object["meta_message"] as? String == "shadow" && object["message"] as? String == "request")
            }
        }
        // Below info, nothing.
        let quiet = LogCapture()
        EdgeMiddleware.logAccess(
            to: quiet.logger(level: .warning), method: .method(.get), route: .route("/health"), status: .status(200), duration: .milliseconds(.zero))
        #expect(quiet.lines.isEmpty)
    }

    @Test("JSON lines escape quotes, backslashes and control characters, keep other text as it is, and keep the fixed fields")
    func escaping() throws {
        let capture = LogCapture()
        let text = "say \"hi\" \\ to\n\tthe\u{01}café € 😀"
        capture.logger().warning("\(text)", metadata: ["message": .string(text), "nested": ["list": [.string("a\"b")]]])
        let line = try #require(capture.lines.first)
        #expect(line.contains(#"say \"hi\" \\ to\n\tthe\u0001café € 😀"#))
        let object = try #require(capture.objects.first)
        #expect(object["message"] as? String == text)
        #expect(object["meta_message"] as? String == text, "metadata cannot overwrite a fixed field")
        #expect((object["nested"] as? [String: [String]])?["list"] == ["a\"b"])
        #expect(JSONText.quote("\u{1F}\u{7F}") == #""\u001f\#u{7F}""#)
    }

    @Test("a text-format line cannot be split or forged by a message or value with a line break")
    func textLinesStayWhole() {
        let capture = LogCapture()
        let logger = capture.logger(format: .text)
        logger.warning("first\n2026-01-01T00:00:00.000Z INFO forged", metadata: ["value": "a\rb", "plain": "fine", "spaced": "two words"])
        let line = capture.lines.first ?? ""
        #expect(capture.lines.count == 1)
        #expect(!line.contains("\n") && !line.contains("\r"))
        #expect(line.contains(#""first\n2026-01-01T00:00:00.000Z INFO forged""#))
        #expect(line.contains(#"value="a\rb""#) && line.contains("plain=fine") && line.contains(#"spaced="two words""#))
    }

    @Test("a database error in a log line carries the message and SQLSTATE, never the query's binds or PostgreSQL's failing row", arguments: TestDatabaseKind.all)
    func databaseErrorForLog(kind: TestDatabaseKind) async throws {
        try await withTestDatabase(kind, migrated: false) { database, _ in
            let hash = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"
            try await database.sql.raw("CREATE TABLE log_probe (secret TEXT NOT NULL, word TEXT CHECK (word <> 'bad'))").run()
            do {
                try await database.sql.raw("INSERT INTO log_probe (secret, word) VALUES (\(bind: hash), \(bind: "bad"))").run()
                Issue.record("the CHECK did not refuse the row")
            } catch {
                let line = DatabaseErrorText.forLog(error)
                #expect(!line.contains("R9h"), "\(line)")
                #expect(!line.contains("Failing row"), "\(line)")
                #expect(line.lowercased().contains("check"), "\(line)")
                if kind == .postgres {
                    #expect(String(reflecting: error).contains("R9h"), "the driver's own description prints the binds, which is why this exists")
                    #expect(line.contains("SQLSTATE 23514"), "\(line)")
                }
            }
        }
    }

    @Test("durations are milliseconds with three places")
    func milliseconds() {
        #expect(PlainLogValue.milliseconds(.zero).description == "0.000")
        #expect(PlainLogValue.milliseconds(.microseconds(316)).description == "0.316")
        #expect(PlainLogValue.milliseconds(.nanoseconds(999)).description == "0.000")
        #expect(PlainLogValue.milliseconds(.microseconds(20_050)).description == "20.050")
        #expect(PlainLogValue.milliseconds(.seconds(12) + .microseconds(4_500)).description == "12004.500")
    }
}
