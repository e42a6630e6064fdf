import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Plain HTTP calls to a Folio running as its own process.
struct HTTPCalls: Sendable {
    let baseURL: String

    struct Answer: Sendable {
        var status: Int
        var body: Data
        /// Header names in lower case.
        var headers: [String: String] = [:]

        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body) as? [String: Any]) ?? [:] }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    static let session: URLSession = {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = 30
        configuration.httpMaximumConnectionsPerHost = 64
        return URLSession(configuration: configuration)
    }()

    func send(_ method: String, _ path: String, json body: [String: Any]? = nil, headers: [String: String] = [:]) async throws -> Answer {
        var request = URLRequest(url: URL(string: baseURL + path)!)
        request.httpMethod = method
        if let body {
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let (data, response) = try await Self.session.data(for: request)
        let http = response as? HTTPURLResponse
        var headers: [String: String] = [:]
        for (name, value) in http?.allHeaderFields ?? [:] { headers[String(describing: name).lowercased()] = String(describing: value) }
        return Answer(status: http?.statusCode ?? 0, body: data, headers: headers)
    }

    func post(_ path: String, _ body: [String: Any], headers: [String: String] = [:]) async throws -> Answer {
        try await send("POST", path, json: body, headers: headers)
    }

    func get(_ path: String, headers: [String: String] = [:]) async throws -> Answer {
        try await send("GET", path, headers: headers)
    }

    /// Registers (with verification off) and logs in; the bearer header.
    func signIn(_ email: String) async throws -> [String: String] {
        _ = try await post("/api/auth/register", ["email": email, "password": strongPassword])
        let login = try await post("/api/auth/login", ["email": email, "password": strongPassword])
        guard login.status == 200, let token = login.json["access_token"] as? String else {
            throw TestDatabaseError(description: "login failed: \(login.status) \(login.text)")
        }
        return ["Authorization": "Bearer \(token)"]
    }
}
