import FluentKit
import FolioDomain
import Foundation
import Hummingbird

/// Who made a request: the user, the session, and how the credential came,
/// read for each request in one query (`SessionStore.identity`), together
/// with the user's default account. Routes that change the user load the
/// whole `User` themselves.
struct Identity: Sendable {
    enum Credential: Sendable {
        case bearer, cookie
    }

    let userID: UserID
    let sessionID: SessionID
    let email: String
    let role: User.Role
    let emailVerified: Bool
    let twoFactorEnabled: Bool
    let createdAt: Date
    /// The account opened first, if any: what "my portfolio" means.
    let defaultAccountID: AccountID?
    let credential: Credential
}

/// The context of routes that need a signed-in user: it cannot be built
/// without one, so a handler cannot forget the check.
struct AuthenticatedContext: ChildRequestContext {
    var coreContext: CoreRequestContextStorage
    let parent: FolioRequestContext
    let identity: Identity

    init(context: FolioRequestContext) throws {
        guard let identity = context.identity else {
            throw AppError(
                .unauthorized, code: "unauthorized", detail: "Sign in to use this route.",
                headers: [.wwwAuthenticate: "Bearer"])
        }
        self.coreContext = context.coreContext
        self.parent = context
        self.identity = identity
    }

    var requestDecoder: FolioJSONDecoder { FolioJSONDecoder() }
    var responseEncoder: FolioJSONEncoder { FolioJSONEncoder() }
    var maxUploadSize: Int { parent.maxUploadSize }

    var origin: RequestOrigin { parent.origin }

    /// Who asked and from where, for the audit trail.
    var auditContext: AuditContext {
        AuditContext(ip: parent.clientIP, requestID: parent.requestID.isEmpty ? nil : parent.requestID)
    }
}

/// The context of admin routes: a signed-in user whose role is admin.
struct AdminContext: ChildRequestContext {
    var coreContext: CoreRequestContextStorage
    let parent: AuthenticatedContext

    init(context: AuthenticatedContext) throws {
        guard context.identity.role == .admin else {
            throw AppError(.forbidden, code: "forbidden", detail: "This is for administrators only.")
        }
        self.coreContext = context.coreContext
        self.parent = context
    }

    var identity: Identity { parent.identity }
    var origin: RequestOrigin { parent.origin }
    var requestDecoder: FolioJSONDecoder { FolioJSONDecoder() }
    var responseEncoder: FolioJSONEncoder { FolioJSONEncoder() }
    var maxUploadSize: Int { parent.maxUploadSize }
}
