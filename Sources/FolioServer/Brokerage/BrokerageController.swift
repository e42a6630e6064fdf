import FolioDomain
import Foundation
import Hummingbird

/// Linking accounts at Alpaca: `GET /api/brokerage/links`,
/// `POST /api/brokerage/alpaca`, `PUT /api/brokerage/alpaca/{account_id}/keys`
/// (new keys for the same Alpaca account), `DELETE /api/brokerage/alpaca/{account_id}`.
/// A secret goes in once and never comes back out: responses show the key
/// id's last four characters only.
struct BrokerageController: Sendable {
    let links: BrokerageLinks

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let api = router.group("/api/brokerage", context: AuthenticatedContext.self)
        api.get("/links", use: list)
        api.post("/alpaca", use: linkAlpaca)
        api.put("/alpaca/:account_id/keys", use: replaceKeys)
        api.delete("/alpaca/:account_id", use: unlink)
    }

    struct LinkResponse: ResponseEncodable {
        var accountID: AccountID
        var broker: String
        var environment: String
        var remoteAccount: String
        var keyHint: String
        var status: String
        var createdAt: Date
        var removedAt: Date?

        init(_ link: BrokerageLink) {
            accountID = link.accountID
            broker = link.broker
            environment = link.environment.rawValue
            remoteAccount = link.remoteAccount
            keyHint = link.keyHint
            status = link.status.rawValue
            createdAt = link.createdAt
            removedAt = link.removedAt
        }
    }

    struct LinkList: ResponseEncodable {
        var data: [LinkResponse]
    }

    struct Linked: ResponseEncodable {
        var account: AccountsController.AccountResponse
        var link: LinkResponse
    }

    struct LinkRequest: Decodable {
        var keyID: String?
        var secretKey: String?
        var environment: String?

        func credentials() throws -> (AlpacaCredentials, BrokerageLink.Environment) {
            var issues: [FieldIssue] = []
            func key(_ value: String?, field: String) -> String {
                guard let value, !value.isEmpty else {
                    issues.append(.init(field: field, code: "required", message: "\(field) is required."))
                    return ""
                }
                // Alpaca's keys are short printable ASCII; anything else is a paste gone wrong, refused before it reaches a header.
                guard (8...256).contains(value.utf8.count), value.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                    issues.append(.init(field: field, code: "invalid", message: "\(field) must be 8 to 256 printable characters without spaces."))
                    return ""
                }
                return value
            }
            let keyID = key(self.keyID, field: "key_id"), secretKey = key(self.secretKey, field: "secret_key")
            let environment = BrokerageLink.Environment(rawValue: self.environment ?? "paper")
            if environment == nil { issues.append(.init(field: "environment", code: "invalid", message: "environment must be \"paper\" or \"live\".")) }
            guard issues.isEmpty, let environment else { throw TradingError.invalid(issues) }
            return (AlpacaCredentials(keyID: keyID, secretKey: secretKey), environment)
        }
    }

    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> LinkList {
        LinkList(data: try await links.links(of: context.identity.userID).map(LinkResponse.init))
    }

    @Sendable func linkAlpaca(_ request: Request, context: AuthenticatedContext) async throws -> EditedResponse<Linked> {
        let body = try await request.decodeBody(as: LinkRequest.self, context: context)
        let (credentials, environment) = try body.credentials()
        let linked = try await links.linkAlpaca(
            userID: context.identity.userID, credentials: credentials, environment: environment, context: context.auditContext)
        return EditedResponse(
            status: .created, headers: [.location: "/api/accounts/\(linked.account.id)"],
            response: Linked(account: .init(linked.account), link: .init(linked.link)))
    }

    @Sendable func replaceKeys(_ request: Request, context: AuthenticatedContext) async throws -> LinkResponse {
        guard let id = context.parameters.get("account_id").flatMap(AccountID.init) else { throw BrokerageError.linkNotFound }
        var body = try await request.decodeBody(as: LinkRequest.self, context: context)
        // The environment is the link's own: new keys cannot move it between paper and live.
        body.environment = nil
        let (credentials, _) = try body.credentials()
        return LinkResponse(try await links.replaceKeys(account: id, userID: context.identity.userID, credentials: credentials, context: context.auditContext))
    }

    @Sendable func unlink(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        guard let id = context.parameters.get("account_id").flatMap(AccountID.init) else { throw BrokerageError.linkNotFound }
        try await links.unlink(account: id, userID: context.identity.userID, context: context.auditContext)
        return Response(status: .noContent)
    }
}
