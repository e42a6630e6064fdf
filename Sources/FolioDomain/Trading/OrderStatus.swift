/// The life of an order. Every allowed transition is listed here; every other
/// one is impossible.
public enum OrderStatus: String, Codable, Sendable, CaseIterable {
    case new
    case accepted
    case partiallyFilled = "partially_filled"
    case filled
    case canceled
    case rejected
    case expired

    /// Where an order in this status may go next.
    public var successors: Set<OrderStatus> {
        switch self {
        // A DAY order that reaches the broker only after the close expires unseen.
        case .new: [.accepted, .rejected, .canceled, .expired]
        case .accepted: [.partiallyFilled, .filled, .canceled, .expired, .rejected]
        // Another partial fill keeps the status; the fill itself is what changes.
        case .partiallyFilled: [.partiallyFilled, .filled, .canceled, .expired]
        case .filled, .canceled, .rejected, .expired: []
        }
    }

    public func canTransition(to next: OrderStatus) -> Bool {
        successors.contains(next)
    }

    /// No further change is possible.
    public var isTerminal: Bool { successors.isEmpty }

    /// The order still reserves cash or shares.
    public var isOpen: Bool { !isTerminal }

    /// A user may still cancel it.
    public var isCancelable: Bool { canTransition(to: .canceled) }
}

extension OrderState {
    /// The status a user sees: `pending_cancel` while a cancel the user asked
    /// for waits on the broker (an order on its way there, or one the broker
    /// has yet to confirm canceled); the order keeps its reservation and any
    /// fill that beats the cancel still counts.
    public var shownStatus: String {
        cancelRequestedAt != nil && status.isOpen ? "pending_cancel" : status.rawValue
    }
}
