import FolioDomain
import Foundation
import HTTPTypes
import Logging

/// Writes one log line per event, JSON by default, after the sensitive-data
/// filter has redacted the message and every metadata value, nested ones too.
public struct FolioLogHandler: LogHandler {
    public typealias Sink = @Sendable (String) -> Void

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let format: AppConfiguration.LogFormat
    let sink: Sink
    let redactor = LogRedactor.standard

    public init(label: String, level: Logger.Level, format: AppConfiguration.LogFormat, sink: @escaping Sink = StandardOutput.writeLine) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let fields = Self.fields(logger: metadata, provided: metadataProvider?.get(), event: event.metadata.map(Array.init) ?? [])
        write(level: event.level, message: redactor.redact(event.message.description), fields: fields)
    }

    /// One request's access line: what `info("request", metadata:)` with these
    /// four fields writes, built without that path's metadata dictionary and
    /// without running the redactor over a message Folio wrote itself. It runs
    /// for every request, and the general path was a tenth of `/health`'s cost.
    func logAccess(method: PlainLogValue, route: PlainLogValue, status: PlainLogValue, duration: PlainLogValue) {
        guard logLevel <= .info else { return }
        let event: [(key: String, value: Logger.Metadata.Value)] = [
            ("duration_ms", .stringConvertible(duration)), ("method", .stringConvertible(method)),
            ("route", .stringConvertible(route)), ("status", .stringConvertible(status)),
        ]
        write(level: .info, message: "request", fields: Self.fields(logger: metadata, provided: metadataProvider?.get(), event: event))
    }

    private func write(level: Logger.Level, message: String, fields: [(key: String, value: Logger.Metadata.Value)]) {
        let timestamp = LogTimestamp.now()
        switch format {
        case .json:
            sink(jsonLine(timestamp: timestamp, level: level, message: message, fields: fields))
        case .text:
            let pairs = fields.map { "\($0.key)=\(textValue(redacted($0.value, key: $0.key)))" }.joined(separator: " ")
            // A message with a line break or another control character is quoted, so it cannot forge a line.
            let shown = Self.needsQuoting(message, space: false) ? JSONText.quote(message) : message
            sink("\(timestamp) \(level.rawValue.uppercased()) \(shown)\(pairs.isEmpty ? "" : " " + pairs)")
        }
    }

    /// The line's metadata sorted by key: the event's own values win over the
    /// provider's, which win over the logger's. Built as one small array, not
    /// merged dictionaries: this runs for every line, access lines included.
    static func fields(
        logger: Logger.Metadata, provided: Logger.Metadata?, event: [(key: String, value: Logger.Metadata.Value)]
    ) -> [(key: String, value: Logger.Metadata.Value)] {
        let provided = provided ?? [:]
        // An event has a handful of keys: a scan is cheaper than a dictionary.
        func inEvent(_ key: String) -> Bool { event.contains { $0.key == key } }
        var fields: [(key: String, value: Logger.Metadata.Value)] = []
        fields.reserveCapacity(logger.count + provided.count + event.count)
        for (key, value) in logger where provided[key] == nil && !inEvent(key) { fields.append((key, value)) }
        for (key, value) in provided where !inEvent(key) { fields.append((key, value)) }
        fields.append(contentsOf: event)
        fields.sort { $0.key < $1.key }
        return fields
    }

    func jsonLine(timestamp: String, level: Logger.Level, message: String, fields: [(key: String, value: Logger.Metadata.Value)]) -> String {
        // Bytes, not a growing String: appending to a String showed in profiles of every request.
        var line: [UInt8] = []
        line.reserveCapacity(256)
        line.append(contentsOf: #"{"timestamp":"#.utf8)
        JSONText.append(timestamp, to: &line)
        line.append(contentsOf: #","level":"#.utf8)
        JSONText.append(level.rawValue, to: &line)
        line.append(contentsOf: #","message":"#.utf8)
        JSONText.append(message, to: &line)
        if !fields.contains(where: { $0.key == "label" }) {
            line.append(contentsOf: #","label":"#.utf8)
            JSONText.append(label, to: &line)
        }
        for (key, value) in fields {
            line.append(UInt8(ascii: ","))
            // Metadata cannot overwrite the fixed fields.
            switch key {
            case "timestamp", "level", "message": JSONText.append("meta_" + key, to: &line)
            default: JSONText.append(key, to: &line)
            }
            line.append(UInt8(ascii: ":"))
            appendJSON(redacted(value, key: key), to: &line)
        }
        line.append(UInt8(ascii: "}"))
        return String(decoding: line, as: UTF8.self)
    }

    func redacted(_ value: Logger.Metadata.Value, key: String) -> Logger.Metadata.Value {
        // Folio's own plain values (every field of an access line) need no key check and no
        // redaction; comparing the type is far cheaper than casting the existential.
        if case .stringConvertible(let convertible) = value, type(of: convertible) == PlainLogValue.self {
            return .string(convertible.description)
        }
        if redactor.isSensitiveKey(key) { return .string(LogRedactor.mask) }
        switch value {
        case .string(let text): return .string(redactor.redact(text))
        case .stringConvertible(let convertible): return .string(redactor.redact(convertible.description))
        case .dictionary(let dictionary):
            return .dictionary(dictionary.reduce(into: [:]) { $0[$1.key] = redacted($1.value, key: $1.key) })
        case .array(let array): return .array(array.map { redacted($0, key: key) })
        }
    }

    func appendJSON(_ value: Logger.Metadata.Value, to line: inout [UInt8]) {
        switch value {
        case .string(let text): JSONText.append(text, to: &line)
        case .stringConvertible(let convertible): JSONText.append(convertible.description, to: &line)
        case .dictionary(let dictionary):
            line.append(UInt8(ascii: "{"))
            for (index, key) in dictionary.keys.sorted().enumerated() {
                if index > 0 { line.append(UInt8(ascii: ",")) }
                JSONText.append(key, to: &line)
                line.append(UInt8(ascii: ":"))
                appendJSON(dictionary[key]!, to: &line)
            }
            line.append(UInt8(ascii: "}"))
        case .array(let array):
            line.append(UInt8(ascii: "["))
            for (index, element) in array.enumerated() {
                if index > 0 { line.append(UInt8(ascii: ",")) }
                appendJSON(element, to: &line)
            }
            line.append(UInt8(ascii: "]"))
        }
    }

    func jsonValue(_ value: Logger.Metadata.Value) -> String {
        var bytes: [UInt8] = []
        appendJSON(value, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Whether text-format output must quote `text`: a control character (a
    /// line break would start a forged line) or a quote, and in a value also
    /// a space (which would end it).
    static func needsQuoting(_ text: String, space: Bool) -> Bool {
        text.utf8.contains { $0 < 0x20 || $0 == 0x22 || $0 == 0x7F || (space && $0 == 0x20) }
    }

    func textValue(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): return Self.needsQuoting(text, space: true) ? JSONText.quote(text) : text
        default: return jsonValue(value)
        }
    }
}

/// A value Folio itself made from a closed set of shapes (an HTTP method, a
/// route pattern, a status code, a duration, a request id checked to be short
/// and plain), so it cannot carry a secret: access lines write it without
/// running the redactor over it. There is no way to wrap any other text.
struct PlainLogValue: CustomStringConvertible, Sendable {
    let description: String

    private init(_ text: String) { description = text }

    static func method(_ method: HTTPRequest.Method) -> PlainLogValue { PlainLogValue(method.rawValue) }
    /// A route as registered (`/api/orders/:id`), never the raw path.
    static func route(_ pattern: String) -> PlainLogValue { PlainLogValue(pattern) }
    static func status(_ code: Int) -> PlainLogValue { PlainLogValue(String(code)) }
    /// In milliseconds with three places ("0.316"), without Foundation's formatter.
    static func milliseconds(_ duration: Duration) -> PlainLogValue {
        let micros = max(0, duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000)
        return PlainLogValue(String(micros / 1000) + threeDigits[Int(micros % 1000)])
    }
    /// ".000" to ".999": a duration's fraction without formatting it per line.
    private static let threeDigits: [String] = (0..<1000).map { "." + String(String($0 + 1000).dropFirst()) }
    /// Only ids that pass `EdgeMiddleware.acceptable`.
    static func requestID(_ id: String) -> PlainLogValue? {
        EdgeMiddleware.acceptable(id).map(PlainLogValue.init)
    }
    /// An id `EdgeMiddleware` made itself (a lower-case UUID): no check needed.
    static func generatedRequestID(_ id: String) -> PlainLogValue { PlainLogValue(id) }
}

enum JSONText {
    static func quote(_ text: String) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count + 2)
        append(text, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Appends `text` as a JSON string, as UTF-8. `shortEscapes` writes
    /// backspace and form feed as `\b` and `\f`, as `JSONEncoder` does
    /// (responses); without it they are `\u0008` and `\u000c`, as log lines
    /// and the audit chain's hashed text have always written them.
    static func append(_ text: String, to bytes: inout [UInt8], shortEscapes: Bool = false) {
        var text = text
        // A native string's bytes in place: iterating `utf8` index by index showed in profiles.
        text.withUTF8 { append(utf8: $0, to: &bytes, shortEscapes: shortEscapes) }
    }

    static func append(utf8 text: UnsafeBufferPointer<UInt8>, to bytes: inout [UInt8], shortEscapes: Bool = false) {
        bytes.append(UInt8(ascii: "\""))
        // Most values need no escaping: copy them whole.
        var clean = true
        for byte in text where byte < 0x20 || byte == 0x22 || byte == 0x5C {
            clean = false
            break
        }
        if clean {
            bytes.append(contentsOf: text)
        } else {
            for byte in text {
                switch byte {
                case 0x22: bytes.append(contentsOf: #"\""#.utf8)
                case 0x5C: bytes.append(contentsOf: #"\\"#.utf8)
                case 0x0A: bytes.append(contentsOf: #"\n"#.utf8)
                case 0x0D: bytes.append(contentsOf: #"\r"#.utf8)
                case 0x09: bytes.append(contentsOf: #"\t"#.utf8)
                case 0x08 where shortEscapes: bytes.append(contentsOf: #"\b"#.utf8)
                case 0x0C where shortEscapes: bytes.append(contentsOf: #"\f"#.utf8)
                case ..<0x20:
                    bytes.append(contentsOf: #"\u00"#.utf8)
                    bytes.append(hexDigits[Int(byte >> 4)])
                    bytes.append(hexDigits[Int(byte & 0xF)])
                // Bytes of a multi-byte character are copied as they are: valid UTF-8 in, valid UTF-8 out.
                default: bytes.append(byte)
                }
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
}

/// RFC 3339 in UTC with milliseconds (2026-11-29T04:37:50.123Z), from the
/// clock's integer time: no formatter, no calendar, no locale.
enum LogTimestamp {
    static func now() -> String {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return format(milliseconds: Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec / 1_000_000))
    }

    static func format(milliseconds: Int64) -> String {
        let seconds = milliseconds / 1000, millis = Int(milliseconds % 1000)
        let days = seconds / 86_400, secondOfDay = Int(seconds % 86_400)
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = Int(dayOfYear - (153 * monthIndex + 2) / 5 + 1)
        let month = Int(monthIndex < 10 ? monthIndex + 3 : monthIndex - 9)
        let year = Int(yearOfEra + era * 400 + (month <= 2 ? 1 : 0))
        // Written straight into the string's storage: no array to allocate per line.
        return String(unsafeUninitializedCapacity: 24) { bytes in
            func put(_ value: Int, at offset: Int, width: Int) {
                var value = value
                for index in stride(from: offset + width - 1, through: offset, by: -1) {
                    bytes[index] = UInt8(48 + value % 10)
                    value /= 10
                }
            }
            put(year, at: 0, width: 4)
            bytes[4] = 45
            put(month, at: 5, width: 2)
            bytes[7] = 45
            put(day, at: 8, width: 2)
            bytes[10] = 84
            put(secondOfDay / 3600, at: 11, width: 2)
            bytes[13] = 58
            put(secondOfDay / 60 % 60, at: 14, width: 2)
            bytes[16] = 58
            put(secondOfDay % 60, at: 17, width: 2)
            bytes[19] = 46
            put(millis, at: 20, width: 3)
            bytes[23] = 90
            return 24
        }
    }
}

/// Standard output, written off the request path: a line is appended whole
/// to a buffer under a lock (lines never interleave or split), and one writer
/// thread drains the buffer to the file descriptor. `flush()` writes what is
/// buffered and waits until it is written; it runs at process exit (every
/// `folio` command ends through `exit`), so a graceful shutdown loses no line.
/// Standard error, line by line and unbuffered: the log of a one-off command, whose standard output is its
/// answer (an export, a list) and must not carry a log line into a file it is piped to.
public enum StandardError {
    public static let writeLine: FolioLogHandler.Sink = { line in FileHandle.standardError.write(Data((line + "\n").utf8)) }
}

public enum StandardOutput {
    static let output: BufferedOutput = {
        let output = BufferedOutput(fileDescriptor: STDOUT_FILENO)
        atexit { StandardOutput.flush() }
        return output
    }()

    public static let writeLine: FolioLogHandler.Sink = { line in output.append(line) }

    /// Writes everything buffered so far, then returns.
    public static func flush() {
        output.flush()
    }
}

final class BufferedOutput: @unchecked Sendable {
    private let fileDescriptor: Int32
    private let condition = NSCondition()
    private var buffer: [UInt8] = []
    /// True while the writer holds bytes it has taken from the buffer and not yet written.
    private var writing = false
    /// True while the writer sleeps for want of lines: only then does a logger wake it,
    /// so a busy server does not pay a wake-up (a system call) per line.
    private var writerWaiting = false
    /// Past this many unwritten bytes a logger waits for the writer rather than
    /// letting memory grow without bound when standard output is slow.
    private static let limit = 8 << 20
    /// After each write the writer lets lines gather this long (microseconds),
    /// so under load it writes a few thousand times a second, not once a line.
    private static let gathering: UInt32 = 500

    init(fileDescriptor: Int32) {
        self.fileDescriptor = fileDescriptor
        buffer.reserveCapacity(64 << 10)
        let thread = Thread { [self] in drain() }
        thread.name = "folio-log-writer"
        thread.start()
    }

    func append(_ line: String) {
        condition.lock()
        while buffer.count > Self.limit {
            condition.unlock()
            usleep(1000)
            condition.lock()
        }
        buffer.append(contentsOf: line.utf8)
        buffer.append(0x0A)
        if writerWaiting { condition.signal() }
        condition.unlock()
    }

    /// Waits until every byte appended before the call has been written.
    func flush() {
        while true {
            condition.lock()
            let done = buffer.isEmpty && !writing
            condition.unlock()
            if done { return }
            usleep(1000)
        }
    }

    private func drain() {
        var pending: [UInt8] = []
        pending.reserveCapacity(64 << 10)
        while true {
            condition.lock()
            while buffer.isEmpty {
                writerWaiting = true
                condition.wait()
                writerWaiting = false
            }
            swap(&pending, &buffer)
            writing = true
            condition.unlock()
            pending.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = write(fileDescriptor, bytes.baseAddress! + offset, bytes.count - offset)
                    if written <= 0 {
                        if written < 0, errno == EINTR { continue }
                        // A non-blocking descriptor (a parent may hand one over) that is full: wait until it takes more.
                        if written < 0, errno == EAGAIN || errno == EWOULDBLOCK {
                            var ready = pollfd(fd: fileDescriptor, events: Int16(POLLOUT), revents: 0)
                            if poll(&ready, 1, 1000) >= 0 || errno == EINTR { continue }
                        }
                        // The reader is gone or the disk is full: these bytes cannot be written anywhere.
                        break
                    }
                    offset += written
                }
            }
            pending.removeAll(keepingCapacity: true)
            condition.lock()
            writing = false
            condition.unlock()
            usleep(Self.gathering)
        }
    }
}
