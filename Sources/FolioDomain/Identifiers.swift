import Foundation

/// A UUID that names one kind of thing: an `AccountID` cannot be passed where
/// an `OrderID` is expected. Written in lower case, as clients expect.
public struct Identifier<Tag>: Hashable, Sendable, Codable, CustomStringConvertible {
    public let uuid: UUID

    public init(_ uuid: UUID) {
        self.uuid = uuid
    }

    /// A new random id.
    public init() {
        self.uuid = UUID.random()
    }

    /// Reads a UUID in either case; nil when it is not one.
    public init?(_ text: some StringProtocol) {
        guard let uuid = UUID(uuidString: String(text)) else { return nil }
        self.uuid = uuid
    }

    public var description: String { uuid.lowercasedString }


    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let uuid = UUID(uuidString: text) else {
            throw FieldIssue(field: FieldIssue.path(decoder.codingPath), code: "invalid", message: "\(FieldIssue.path(decoder.codingPath)) must be a UUID.")
        }
        self.uuid = uuid
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

public enum UserTag {}
public enum AccountTag {}
public enum OrderTag {}
public enum SessionTag {}
public enum FillTag {}
public enum EntryTag {}
public enum JobTag {}
public enum RebalanceRunTag {}

public typealias UserID = Identifier<UserTag>
public typealias AccountID = Identifier<AccountTag>
public typealias OrderID = Identifier<OrderTag>
public typealias SessionID = Identifier<SessionTag>
public typealias FillID = Identifier<FillTag>
public typealias EntryID = Identifier<EntryTag>
public typealias JobID = Identifier<JobTag>
public typealias RebalanceRunID = Identifier<RebalanceRunTag>
