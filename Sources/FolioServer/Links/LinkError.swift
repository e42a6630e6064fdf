import Foundation

/// Why a Plaid link could not be made, used or removed.
enum LinkError: Error, Equatable, Sendable {
    /// `PLAID_CLIENT_ID` and `PLAID_SECRET` are not set.
    case notConfigured
    case itemNotFound
    case accountNotFound
    /// Plaid could not be asked, or was busy: nothing was changed.
    case plaidUnavailable
    /// Plaid refused the request (a used or expired public token, say); its code, and the message meant for the user.
    case refused(code: String, message: String?, field: String?)
    /// This institution login is already linked.
    case alreadyLinked
    /// A new link of a login the user linked before (the same institution and accounts), as another item.
    case sameLoginLinked(UUID, institution: String)
    /// Reported signed in again, but Plaid still says the item needs its user to sign in.
    case loginStillRequired
}
