import FolioDomain
import Foundation
import Logging
import NIOConcurrencyHelpers

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
    /// RFC 3339 in UTC with milliseconds: 2026-11-29T04:37:50.123Z
    static let timestampStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)

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
        let level = event.level
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        let timestamp = Self.timestampStyle.format(Date())
        let text = redactor.redact(event.message.description)
        switch format {
        case .json:
            sink(jsonLine(timestamp: timestamp, level: level, message: text, metadata: merged))
        case .text:
            let fields = merged.keys.sorted().map { "\($0)=\(textValue(redacted(merged[$0]!, key: $0)))" }.joined(separator: " ")
            sink("\(timestamp) \(level.rawValue.uppercased()) \(text)\(fields.isEmpty ? "" : " " + fields)")
        }
    }

    func jsonLine(timestamp: String, level: Logger.Level, message: String, metadata: Logger.Metadata) -> String {
        var line = "{\"timestamp\":\(JSONText.quote(timestamp)),\"level\":\(JSONText.quote(level.rawValue)),\"message\":\(JSONText.quote(message))"
        if metadata["label"] == nil { line += ",\"label\":\(JSONText.quote(label))" }
        for key in metadata.keys.sorted() {
            // Metadata cannot overwrite the fixed fields.
            let name = ["timestamp", "level", "message"].contains(key) ? "meta_" + key : key
            line += ",\(JSONText.quote(name)):\(jsonValue(redacted(metadata[key]!, key: key)))"
        }
        return line + "}"
    }

    func redacted(_ value: Logger.Metadata.Value, key: String) -> Logger.Metadata.Value {
        if redactor.isSensitiveKey(key) { return .string(LogRedactor.mask) }
        switch value {
        case .string(let text): return .string(redactor.redact(text))
        case .stringConvertible(let convertible): return .string(redactor.redact(convertible.description))
        case .dictionary(let dictionary):
            return .dictionary(dictionary.reduce(into: [:]) { $0[$1.key] = redacted($1.value, key: $1.key) })
        case .array(let array): return .array(array.map { redacted($0, key: key) })
        }
    }

    func jsonValue(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): return JSONText.quote(text)
        case .stringConvertible(let convertible): return JSONText.quote(convertible.description)
        case .dictionary(let dictionary):
            return "{" + dictionary.keys.sorted().map { "\(JSONText.quote($0)):\(jsonValue(dictionary[$0]!))" }.joined(separator: ",") + "}"
        case .array(let array): return "[" + array.map(jsonValue).joined(separator: ",") + "]"
        }
    }

    func textValue(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): return text.contains(" ") ? JSONText.quote(text) : text
        default: return jsonValue(value)
        }
    }
}

enum JSONText {
    static func quote(_ text: String) -> String {
        var result = "\""
        result.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case let control where control.value < 0x20:
                result += String(format: "\\u%04x", control.value)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
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
    /// `hasData` when the buffer holds bytes for the writer thread.
    private let state = ConditionLock(value: BufferedOutput.empty)
    private var buffer: [UInt8] = []
    /// True while the writer holds bytes it has taken from the buffer and not yet written.
    private var writing = false
    private static let empty = 0, hasData = 1
    /// Past this many unwritten bytes a logger waits for the writer rather than
    /// letting memory grow without bound when standard output is slow.
    private static let limit = 8 << 20

    init(fileDescriptor: Int32) {
        self.fileDescriptor = fileDescriptor
        buffer.reserveCapacity(64 << 10)
        let thread = Thread { [self] in drain() }
        thread.name = "folio-log-writer"
        thread.start()
    }

    func append(_ line: String) {
        state.lock()
        while buffer.count > Self.limit {
            state.unlock(withValue: Self.hasData)
            usleep(1000)
            state.lock()
        }
        buffer.append(contentsOf: line.utf8)
        buffer.append(0x0A)
        state.unlock(withValue: Self.hasData)
    }

    /// Waits until every byte appended before the call has been written.
    func flush() {
        while true {
            state.lock()
            let done = buffer.isEmpty && !writing
            state.unlock(withValue: buffer.isEmpty ? Self.empty : Self.hasData)
            if done { return }
            usleep(1000)
        }
    }

    private func drain() {
        var pending: [UInt8] = []
        pending.reserveCapacity(64 << 10)
        while true {
            state.lock(whenValue: Self.hasData)
            swap(&pending, &buffer)
            writing = true
            state.unlock(withValue: Self.empty)
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
            state.lock()
            writing = false
            state.unlock(withValue: buffer.isEmpty ? Self.empty : Self.hasData)
        }
    }
}
