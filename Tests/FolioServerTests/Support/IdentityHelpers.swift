import FluentKit
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import FolioServer

let jsonHeaders: HTTPFields = [.contentType: "application/json"]
let strongPassword = "correct horse battery staple"

func json(_ response: TestResponse) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
}

func post(_ client: some TestClientProtocol, _ uri: String, _ body: [String: Any], headers: HTTPFields = [:]) async throws -> TestResponse {
    let data = try JSONSerialization.data(withJSONObject: body)
    var all = jsonHeaders
    for field in headers { all[field.name] = field.value }
    return try await client.execute(uri: uri, method: .post, headers: all, body: ByteBuffer(bytes: data))
}

/// The newest token of the given kind that the outbox holds for an address.
func outboxToken(_ env: TestEnvironment, email: String, kind: String) async throws -> String {
    await env.deliverMail()
    let message = try #require(
        try await OutboxMessage.query(on: env.database.db).filter(\.$recipient == email).filter(\.$kind == kind)
            .sort(\.$createdAt, .descending).first())
    let token = try #require(message.body.components(separatedBy: "token=").last?.split(whereSeparator: { $0.isWhitespace }).first)
    return String(token)
}

/// Registers, verifies through the outbox and logs in; returns the token response.
@discardableResult
func signUp(_ client: some TestClientProtocol, _ env: TestEnvironment, email: String, password: String = strongPassword) async throws -> [String: Any] {
    let registered = try await post(client, "/api/auth/register", ["email": email, "password": password])
    #expect(registered.status == .created)
    let token = try await outboxToken(env, email: email.lowercased(), kind: "verify_email")
    let verified = try await post(client, "/api/auth/verify-email", ["token": token])
    #expect(verified.status == .ok)
    let login = try await post(client, "/api/auth/login", ["email": email, "password": password])
    #expect(login.status == .ok)
    return try json(login)
}

func bearer(_ tokens: [String: Any]) -> HTTPFields {
    [.authorization: "Bearer \(tokens["access_token"] as? String ?? "")"]
}
