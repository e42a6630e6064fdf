import Foundation
import Logging
import NIOConcurrencyHelpers

@testable import FolioServer

/// Collects the lines Folio's log handler writes, for assertions.
final class LogCapture: Sendable {
    private let box = NIOLockedValueBox<[String]>([])

    var lines: [String] { box.withLockedValue { $0 } }

    func logger(level: Logger.Level = .info, format: AppConfiguration.LogFormat = .json) -> Logger {
        var configuration = AppConfiguration()
        configuration.logLevel = level
        configuration.logFormat = format
        let box = self.box
        return Logger.folio(configuration: configuration) { line in
            box.withLockedValue { $0.append(line) }
            TestLogArchive.record(line: line)
        }
    }

    /// Lines parsed as JSON objects.
    var objects: [[String: Any]] {
        lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }
}
