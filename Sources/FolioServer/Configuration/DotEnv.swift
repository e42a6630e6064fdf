import Foundation

/// Reads a `.env` file: `KEY=value` lines, `#` comments, optional `export `,
/// single- or double-quoted values. No interpolation: a secret containing `$`
/// stays as written.
public enum DotEnv {
    public struct ParseError: Error, CustomStringConvertible {
        public var line: Int
        public var description: String { ".env line \(line) is not KEY=value" }
    }

    /// A file that is there but cannot be read as settings, in an operator's words.
    public struct ReadError: Error, CustomStringConvertible {
        public var description: String
    }

    /// The file's settings; none when there is no file. `/dev/null` reads as empty (the usual "no settings file").
    public static func load(path: String) throws -> [String: String] {
        guard FileManager.default.fileExists(atPath: path) else { return [:] }
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { throw ReadError(description: "cannot be read: \(String(cString: strerror(errno)).lowercased())") }
        let file = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        let data: Data
        do { data = try file.readToEnd() ?? Data() } catch { throw ReadError(description: "cannot be read: \(error.localizedDescription)") }
        guard let text = String(data: data, encoding: .utf8) else { throw ReadError(description: "is not UTF-8 text") }
        return try parse(text)
    }

    public static func parse(_ text: String) throws -> [String: String] {
        var values: [String: String] = [:]
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.hasSuffix("\r") { line.removeLast() }
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst("export ".count)) }
            guard let equals = line.firstIndex(of: "=") else { throw ParseError(line: number + 1) }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw ParseError(line: number + 1)
            }
            values[key] = unquote(line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces))
        }
        return values
    }

    private static func unquote(_ value: String) -> String {
        for quote in ["\"", "'"] where value.count >= 2 && value.hasPrefix(quote) && value.hasSuffix(quote) {
            return String(value.dropFirst().dropLast())
        }
        // An unquoted value may carry a trailing comment: `PORT=8080  # the port`.
        if let hash = value.range(of: " #") { return value[..<hash.lowerBound].trimmingCharacters(in: .whitespaces) }
        return value
    }
}
