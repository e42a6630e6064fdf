import Foundation

/// A problem with a value a user gave, named by its field (`quantity`,
/// `legs[0].symbol`); the server lists these in a problem response's `errors`.
public struct FieldIssue: Error, Codable, Equatable, Sendable {
    public var field: String
    public var code: String
    public var message: String

    public init(field: String, code: String, message: String) {
        self.field = field
        self.code = code
        self.message = message
    }
}

public enum OrderSide: String, Codable, Sendable, CaseIterable {
    case buy = "BUY"
    case sell = "SELL"
}

public enum OrderType: String, Codable, Sendable, CaseIterable {
    case market = "MARKET"
    case limit = "LIMIT"
    case stop = "STOP"
    case stopLimit = "STOP_LIMIT"

    public var needsLimitPrice: Bool { self == .limit || self == .stopLimit }
    public var needsStopPrice: Bool { self == .stop || self == .stopLimit }

    /// As a sentence says it: "stop limit".
    public var words: String { rawValue.lowercased().replacingOccurrences(of: "_", with: " ") }
}

public enum TimeInForce: String, Codable, Sendable, CaseIterable {
    /// Until the end of the regular session (16:00 America/New_York).
    case day = "DAY"
    /// Until canceled.
    case goodTillCanceled = "GTC"
    /// Fill what can be filled at once, cancel the rest.
    case immediateOrCancel = "IOC"
    /// Fill all at once or nothing.
    case fillOrKill = "FOK"
}
