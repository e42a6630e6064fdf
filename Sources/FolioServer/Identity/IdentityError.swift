import FolioDomain
import Foundation
import Logging

/// What can go wrong signing up, signing in and looking after one's account,
/// in identity's own terms. `ProblemMapping` gives each its status and code;
/// a refused field (a wrong current password, a spent link) is a `FieldIssue`.
enum IdentityError: Error, Equatable, Sendable {
    /// Fields the request got wrong, such as a password the policy refuses.
    case invalid([FieldIssue])
    case invalidCredentials
    /// Too many failed sign-ins; the seconds to wait.
    case tooManyAttempts(retryAfter: Int)
    case accountDisabled
    case twoFactorRequired
    case wrongSecondFactor
    case emailNotVerified
    case invalidRefreshToken
    case twoFactorAlreadyEnabled
    case twoFactorNotEnrolling
    case twoFactorNotEnabled
    case cannotDisableSelf
    /// Demoting or disabling the last enabled administrator.
    case lastAdministrator
    case userNotFound
    /// An erased person's row: it stays disabled for good.
    case userErased
    case sessionNotFound
}

/// Who is asking and from where, as the audit trail and the logs need it:
/// what a flow takes from a request, without HTTP.
struct RequestOrigin: Sendable {
    var ip: String?
    var requestID: String?
    var logger: Logger

    var audit: AuditContext { AuditContext(ip: ip, requestID: requestID) }

    /// The `folio` commands: no request id, `cli` as the address.
    static func commandLine(logger: Logger) -> RequestOrigin {
        RequestOrigin(ip: "cli", requestID: nil, logger: logger)
    }
}

extension FolioRequestContext {
    var origin: RequestOrigin {
        RequestOrigin(ip: clientIP, requestID: requestID.isEmpty ? nil : requestID, logger: logger)
    }
}
