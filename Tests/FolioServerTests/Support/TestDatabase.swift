import FluentKit
import Foundation
import Logging
import SQLKit
import Testing

@testable import FolioServer

/// The databases the suite runs against: SQLite always; PostgreSQL when
/// FOLIO_TEST_DATABASE_URL points at a server, and always under CI, where a
/// missing server fails the PostgreSQL cases instead of skipping them.
enum TestDatabaseKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres

    var testDescription: String { rawValue }

    static let adminURL = ProcessInfo.processInfo.environment["FOLIO_TEST_DATABASE_URL"].flatMap { $0.isEmpty ? nil : $0 }
    static let requirePostgres = ProcessInfo.processInfo.environment["CI"] == "true"

    static var all: [TestDatabaseKind] {
        postgresAvailable ? [.sqlite, .postgres] : [.sqlite]
    }

    /// Whether the PostgreSQL cases run: with a server configured, and always
    /// under CI (where a missing server then fails them instead of skipping them).
    static var postgresAvailable: Bool { adminURL != nil || requirePostgres }
}

struct TestDatabaseError: Error, CustomStringConvertible {
    var description: String
}

/// Lets at most `limit` tests hold a PostgreSQL database at once: every
/// server test runs there too, and all of them at once would pass the
/// server's connection limit.
actor TestDatabaseGate {
    static let postgres = TestDatabaseGate(limit: 12)

    let limit: Int
    private var held = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) {
        self.limit = limit
    }

    func acquire() async {
        if held < limit {
            held += 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty {
            held -= 1
        } else {
            waiting.removeFirst().resume()
        }
    }
}

/// A fresh, empty database of the given kind for one test, removed afterwards.
func withTestDatabase<T>(
    _ kind: TestDatabaseKind,
    migrated: Bool = true,
    logger: Logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
    _ body: (FolioDatabase, AppConfiguration.DatabaseLocation) async throws -> T
) async throws -> T {
    HangWatchdog.began()
    defer { HangWatchdog.ended() }
    if kind == .postgres { await TestDatabaseGate.postgres.acquire() }
    defer { if kind == .postgres { Task { await TestDatabaseGate.postgres.release() } } }
    let location: AppConfiguration.DatabaseLocation
    let name = "folio_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
    var cleanup: () async throws -> Void
    switch kind {
    case .sqlite:
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(name).path
        location = .sqlite(path: directory + "/folio.sqlite")
        cleanup = { try? FileManager.default.removeItem(atPath: directory) }
    case .postgres:
        guard let adminURL = TestDatabaseKind.adminURL else {
            throw TestDatabaseError(description: "CI requires PostgreSQL but FOLIO_TEST_DATABASE_URL is not set (run .ci/run)")
        }
        let admin = try FolioDatabase(location: .postgres(url: adminURL), poolSize: 1, preparedStatements: false, logger: logger)
        do {
            try await admin.sql.raw("CREATE DATABASE \(unsafeRaw: name)").run()
        } catch {
            await admin.shutdown()
            throw TestDatabaseError(description: "could not create test database: \(String(reflecting: error))")
        }
        var components = URLComponents(string: adminURL)!
        components.path = "/" + name
        location = .postgres(url: components.string!)
        cleanup = {
            try await admin.sql.raw("DROP DATABASE IF EXISTS \(unsafeRaw: name) WITH (FORCE)").run()
            await admin.shutdown()
        }
    }
    let database = try FolioDatabase(location: location, poolSize: 4, preparedStatements: true, logger: logger)
    do {
        try await database.prepareConnectionSettings()
        if migrated { try await database.migrate() }
        let result = try await body(database, location)
        await database.shutdown()
        try await cleanup()
        return result
    } catch {
        await database.shutdown()
        try? await cleanup()
        throw error
    }
}

/// Expects `body` to be refused by a database constraint: SQLSTATE class 23
/// on PostgreSQL, `SQLITE_CONSTRAINT_*` on SQLite; of `kind` when given. Any
/// other error (a typo in the SQL, a lost connection) fails the test.
func expectConstraintViolation(
    _ kind: DatabaseConstraint.Kind? = nil, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> Void
) async {
    do {
        try await body()
        Issue.record("expected a constraint violation\(comment.map { ": \($0.rawValue)" } ?? "")", sourceLocation: sourceLocation)
    } catch {
        guard let constraint = DatabaseConstraint(error) else {
            Issue.record("expected a constraint violation, got \(String(reflecting: error))", sourceLocation: sourceLocation)
            return
        }
        if let kind { #expect(constraint.kind == kind, comment, sourceLocation: sourceLocation) }
    }
}

extension AppConfiguration.DatabaseLocation {
    /// The `DATABASE_URL` a `folio` process is given to use this database.
    var databaseURL: String {
        switch self {
        case .sqlite(let path): "sqlite:" + path
        case .postgres(let url): url
        }
    }
}
