import Foundation

/// `folio audit verify`: walks the audit trail's hash chain.
public struct AuditVerifier: Sendable {
    let database: FolioDatabase

    public init(database: FolioDatabase) {
        self.database = database
    }

    /// The number of events read, and a description of the first broken link (nil when intact).
    public func verify() async throws -> (events: Int, firstBreak: String?) {
        let result = try await AuditChain.verify(on: database.db)
        return (result.events, result.firstBreak?.description)
    }
}
