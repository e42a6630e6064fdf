import Foundation
import FolioDomain
import Synchronization

@testable import FolioServer

/// Every log line the suite sees, and every secret the suite configures, kept
/// on disk when `FOLIO_TEST_LOG_DIR` names a directory (CI sets it), so that
/// `ops/check-test-logs` can grep all of the suite's logs for any configured
/// secret: the in-process apps' captured lines and the output of every
/// `folio` child process alike. Without the variable nothing is written.
enum TestLogArchive {
    private static let files: Mutex<(log: FileHandle, secrets: FileHandle)?> = Mutex(openFiles())

    private static func openFiles() -> (log: FileHandle, secrets: FileHandle)? {
        guard let directory = ProcessInfo.processInfo.environment["FOLIO_TEST_LOG_DIR"], !directory.isEmpty else { return nil }
        let pid = ProcessInfo.processInfo.processIdentifier
        func open(_ name: String) -> FileHandle? {
            let path = directory + "/" + name
            guard FileManager.default.createFile(atPath: path, contents: nil) else { return nil }
            return FileHandle(forWritingAtPath: path)
        }
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        guard let log = open("swift-test-\(pid).log"), let secrets = open("swift-test-\(pid).secrets") else { return nil }
        // The fakes' credentials, which tests hand to clients built without an app.
        let fakes = [
            FakeAlphaVantage.apiKey, FakeAlpaca.keyID, FakeAlpaca.secretKey, FakePlaid.clientID, FakePlaid.secret,
            FakeSendGrid.apiKey, FakeSentry.publicKey,
        ]
        secrets.write(Data(fakes.map { $0 + "\n" }.joined().utf8))
        return (log, secrets)
    }

    /// One log line, as the test captured it.
    static func record(line: String) {
        files.withLock { files in files?.log.write(Data((line + "\n").utf8)) }
    }

    /// The secret values of a configuration a test built an app from.
    static func recordSecrets(_ values: [String]) {
        let worthChecking = values.filter { $0.utf8.count >= ConfiguredSecrets.minimumLength && !$0.contains("\n") }
        guard !worthChecking.isEmpty else { return }
        files.withLock { files in files?.secrets.write(Data(worthChecking.map { $0 + "\n" }.joined().utf8)) }
    }

    /// The secrets in a child process's environment: every variable whose name
    /// says it holds a key, a secret, a token or a password (lists split at commas),
    /// and the password in a database URL.
    static func recordSecrets(inEnvironment environment: [String: String]) {
        var values: [String] = []
        for (name, value) in environment {
            let named = ["SECRET", "TOKEN", "_KEY", "PASSWORD"].contains(where: name.contains)
            if named, !["_TTL", "_PATH", "PUBLIC_KEY"].contains(where: name.hasSuffix) {
                values += value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            }
            if name.hasSuffix("DATABASE_URL"), let components = URLComponents(string: value) {
                values += [components.password, components.percentEncodedPassword].compactMap { $0 }
            }
        }
        recordSecrets(values)
    }
}
