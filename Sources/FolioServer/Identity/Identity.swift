import FluentKit
import Foundation
import Hummingbird

/// Who made a request: the user, the session, and how the credential came.
struct Identity: Sendable {
    enum Credential: Sendable {
        case bearer, cookie
    }

    let user: User
    let session: Session
    let credential: Credential

    var userID: UUID { user.id! }
    var sessionID: UUID { session.id! }
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
}

/// The context of admin routes: a signed-in user whose role is admin.
struct AdminContext: ChildRequestContext {
    var coreContext: CoreRequestContextStorage
    let parent: AuthenticatedContext

    init(context: AuthenticatedContext) throws {
        guard context.identity.user.userRole == .admin else {
            throw AppError(.forbidden, code: "forbidden", detail: "This route is for administrators.")
        }
        self.coreContext = context.coreContext
        self.parent = context
    }

    var identity: Identity { parent.identity }
    var requestDecoder: FolioJSONDecoder { FolioJSONDecoder() }
    var responseEncoder: FolioJSONEncoder { FolioJSONEncoder() }
    var maxUploadSize: Int { parent.maxUploadSize }
}
