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
    case wrongSecondFactor(SecondFactorRefusal)
    /// Too many wrong authenticator codes came with the right password (`IdentityServices.secondFactorFailureLimit`):
    /// sign-in by code is off until the password is reset; a recovery code still works.
    case secondFactorBlocked
    case emailNotVerified
    case invalidRefreshToken
    /// The token was spent a moment ago by another request (two tabs refreshing at once): refused with a
    /// code of its own (`refresh_token_just_used`), and its cookie is not cleared, since the browser holds the next one.
    case refreshRaced
    case twoFactorAlreadyEnabled
    case twoFactorNotEnrolling
    /// Another set-up replaced the secret a confirmation's code was checked against.
    case twoFactorSetUpReplaced
    case twoFactorNotEnabled
    case cannotDisableSelf
    /// Demoting or disabling the last enabled administrator.
    case lastAdministrator
    case userNotFound
    /// An erased person's row: it stays disabled for good.
    case userErased
    case sessionNotFound
}

/// Why a second factor was refused, in words that tell a person what to do: a code typed twice (signing in on
/// two devices in one half-minute) is not a wrong one. Telling them apart gives nothing away: only someone
/// holding a valid code learns that it was spent.
enum SecondFactorRefusal: Equatable, Sendable {
    case wrongCode
    case codeAlreadyUsed
    /// A recovery code that was spent within the last minute (or by a request running at the same moment).
    case recoveryCodeJustUsed
    case wrongRecoveryCode
    /// Neither a code nor a recovery code was given.
    case missing
    /// Too many wrong authenticator codes came with the right password: codes are not taken (a recovery code is).
    case blocked

    var message: String {
        switch self {
        case .missing: "Enter a code from your authenticator app, or a recovery code."
        case .blocked: "Too many wrong authenticator codes were sent with this password, so codes are no longer taken: reset your password, or use a recovery code."
        case .wrongCode: "The code from the authenticator app is wrong."
        case .codeAlreadyUsed: "That code was already used; enter the next one the authenticator app shows."
        // Said alike: the difference is only in what the sign-in throttle counts.
        case .wrongRecoveryCode, .recoveryCodeJustUsed: "The recovery code is wrong or was already used."
        }
    }

    /// As a refused field of a form that asks for the password and a code.
    var issue: FieldIssue {
        FieldIssue(
            field: self == .wrongRecoveryCode || self == .recoveryCodeJustUsed ? "recovery_code" : "totp_code",
            code: self == .missing ? "required" : self == .blocked ? "blocked" : "invalid_code", message: message)
    }
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
