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
        let fields = Self.fields(logger: metadata, provided: metadataProvider?.get(), event: event.metadata)
        let timestamp = LogTimestamp.now()
        let text = redactor.redact(event.message.description)
        switch format {
        case .json:
            sink(jsonLine(timestamp: timestamp, level: event.level, message: text, fields: fields))
        case .text:
            let pairs = fields.map { "\($0.key)=\(textValue(redacted($0.value, key: $0.key)))" }.joined(separator: " ")
            sink("\(timestamp) \(event.level.rawValue.uppercased()) \(text)\(pairs.isEmpty ? "" : " " + pairs)")
        }
    }

    /// The line's metadata sorted by key: the event's own values win over the
    /// provider's, which win over the logger's. Built as one small array, not
    /// merged dictionaries: this runs for every line, access lines included.
    static func fields(logger: Logger.Metadata, provided: Logger.Metadata?, event: Logger.Metadata?) -> [(key: String, value: Logger.Metadata.Value)] {
        let provided = provided ?? [:], event = event ?? [:]
        var fields: [(key: String, value: Logger.Metadata.Value)] = []
        fields.reserveCapacity(logger.count + provided.count + event.count)
        for (key, value) in logger where provided[key] == nil && event[key] == nil { fields.append((key, value)) }
        for (key, value) in provided where event[key] == nil { fields.append((key, value)) }
        for (key, value) in event { fields.append((key, value)) }
        fields.sort { $0.key < $1.key }
        return fields
    }

    func jsonLine(timestamp: String, level: Logger.Level, message: String, fields: [(key: String, value: Logger.Metadata.Value)]) -> String {
        var line = ""
        line.reserveCapacity(256)
        line += "{\"timestamp\":"
        JSONText.append(timestamp, to: &line)
        line += ",\"level\":"
        JSONText.append(level.rawValue, to: &line)
        line += ",\"message\":"
        JSONText.append(message, to: &line)
        if !fields.contains(where: { $0.key == "label" }) {
            line += ",\"label\":"
            JSONText.append(label, to: &line)
        }
        for (key, value) in fields {
            line += ","
            // Metadata cannot overwrite the fixed fields.
            switch key {
            case "timestamp", "level", "message": JSONText.append("meta_" + key, to: &line)
            default: JSONText.append(key, to: &line)
            }
            line += ":"
            appendJSON(redacted(value, key: key), to: &line)
        }
        line += "}"
        return line
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

    func appendJSON(_ value: Logger.Metadata.Value, to line: inout String) {
        switch value {
        case .string(let text): JSONText.append(text, to: &line)
        case .stringConvertible(let convertible): JSONText.append(convertible.description, to: &line)
        case .dictionary(let dictionary):
            line += "{"
            for (index, key) in dictionary.keys.sorted().enumerated() {
                if index > 0 { line += "," }
                JSONText.append(key, to: &line)
                line += ":"
                appendJSON(dictionary[key]!, to: &line)
            }
            line += "}"
        case .array(let array):
            line += "["
            for (index, element) in array.enumerated() {
                if index > 0 { line += "," }
                appendJSON(element, to: &line)
            }
            line += "]"
        }
    }

    func jsonValue(_ value: Logger.Metadata.Value) -> String {
        var text = ""
        appendJSON(value, to: &text)
        return text
    }

    func textValue(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): return text.contains(" ") ? JSONText.quote(text) : text
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
        let micros = duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000
        let fraction = String(micros % 1000)
        return PlainLogValue("\(micros / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction)
    }
    /// Only ids that pass `EdgeMiddleware.acceptable`.
    static func requestID(_ id: String) -> PlainLogValue? {
        EdgeMiddleware.acceptable(id).map(PlainLogValue.init)
    }
    /// An id `EdgeMiddleware` made itself (a lower-case UUID): no check needed.
    static func generatedRequestID(_ id: String) -> PlainLogValue { PlainLogValue(id) }
}

enum JSONText {
    static func quote(_ text: String) -> String {
        var result = ""
        append(text, to: &result)
        return result
    }

    /// Appends `text` as a JSON string.
    static func append(_ text: String, to result: inout String) {
        // Most values need no escaping: copy them whole.
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) {
            result += "\""
            result += text
            result += "\""
            return
        }
        result += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case let control where control.value < 0x20:
                let digits = Array("0123456789abcdef")
                result += "\\u00" + String(digits[Int(control.value >> 4)]) + String(digits[Int(control.value & 0xF)])
            default: result.unicodeScalars.append(scalar)
            }
        }
        result += "\""
    }
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
