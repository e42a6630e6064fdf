import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import SQLKit
import NIOConcurrencyHelpers
import Testing

@testable import FolioServer

@Suite("HTTP error contract")
struct HTTPContractTests {
    let json: HTTPFields = [.contentType: "application/json"]

    @Test("an unknown route is 404 problem+json whose request id appears in the access log", arguments: TestDatabaseKind.all)
    func unknownRoute(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let response = try await client.execute(uri: "/api/nowhere?token=abc", method: .get)
            #expect(response.status == .notFound)
            let body = try problem(response)
            #expect(body.code == "not_found")
            #expect(body.status == 404)
            #expect(body.type == "urn:folio:problem:not_found")
            #expect(response.headers[HTTPField.Name("X-Request-ID")!] == body.request_id)
            let access = env.logs.objects.first { $0["message"] as? String == "request" && $0["request_id"] as? String == body.request_id }
            #expect(access?["status"] as? String == "404")
            #expect(access?["route"] as? String == "unmatched")
        }
    }

    @Test("a wrong method is 405 with an Allow header", arguments: TestDatabaseKind.all)
    func wrongMethod(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, _ in
            let response = try await client.execute(uri: "/health", method: .post)
            #expect(response.status == .methodNotAllowed)
            #expect(response.headers[.allow] == "GET, HEAD")
            #expect(try problem(response).code == "method_not_allowed")
            let delete = try await client.execute(uri: "/api/test/echo", method: .delete)
            #expect(delete.status == .methodNotAllowed)
            #expect(delete.headers[.allow] == "POST")
            // A literal route beside a captured one: Allow names what the literal route answers, as the router dispatches.
            let holdings = try await client.execute(uri: "/api/links/holdings", method: .delete)
            #expect(holdings.status == .methodNotAllowed)
            #expect(holdings.headers[.allow] == "GET, HEAD")
        }
    }

    @Test("malformed JSON is 400 malformed_json", arguments: TestDatabaseKind.all)
    func malformedJSON(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, _ in
            let response = try await client.execute(uri: "/api/test/echo", method: .post, headers: json, body: ByteBuffer(string: #"{"symbol": "AAPL", "quantity": "#))
            #expect(response.status == .badRequest)
            #expect(try problem(response).code == "malformed_json")
        }
    }

    @Test("JSON of the wrong shape is 422 naming each field", arguments: TestDatabaseKind.all)
    func validation(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, _ in
            let missing = try await client.execute(uri: "/api/test/echo", method: .post, headers: json, body: ByteBuffer(string: #"{"symbol": "AAPL"}"#))
            #expect(missing.status == .unprocessableContent)
            let body = try problem(missing)
            #expect(body.code == "validation_failed")
            #expect(body.errors == [.init(field: "quantity", code: "required", message: "quantity is required.")])

            let wrong = try await client.execute(uri: "/api/test/echo", method: .post, headers: json, body: ByteBuffer(string: #"{"symbol": 5, "quantity": "1"}"#))
            #expect(try problem(wrong).errors?.first?.field == "symbol")
            let badNumber = try await client.execute(uri: "/api/test/echo", method: .post, headers: json, body: ByteBuffer(string: #"{"symbol": "AAPL", "quantity": "1.5abc"}"#))
            #expect(try problem(badNumber).errors?.first?.field == "quantity")
        }
    }

    @Test("a field given an object where an array goes (or the reverse) is named with the kind it takes", arguments: [TestDatabaseKind.sqlite])
    func containerTypeNamed(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "shapes@example.com")
            let account = try await env.firstAccount()
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"
            let object = try await client.execute(
                uri: "/api/accounts/\(account.id)/targets", method: .put, headers: headers, body: ByteBuffer(string: #"{"targets": {"symbol": "AAPL"}}"#))
            #expect(object.status == .unprocessableContent)
            #expect(try problem(object).errors?.first?.message == "targets must be an array ([…]).")
        }
    }

    @Test("amounts arrive exactly from strings and numbers and leave as strings", arguments: TestDatabaseKind.all)
    func exactAmounts(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, _ in
            for body in [#"{"symbol":"AAPL","quantity":12345678901.123456789}"#, #"{"symbol":"AAPL","quantity":"12345678901.123456789"}"#] {
                let response = try await client.execute(uri: "/api/test/echo", method: .post, headers: json, body: ByteBuffer(string: body))
                #expect(response.status == .ok)
                #expect(String(buffer: response.body) == #"{"quantity":"12345678901.123456789","symbol":"AAPL"}"#)
            }
        }
    }

    @Test("a body over the limit is 413, by Content-Length or by streaming", arguments: TestDatabaseKind.all)
    func oversized(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.maxBodySize = 2048 }) { client, _ in
            let big = ByteBuffer(string: #"{"symbol":"AAPL","quantity":"1","note":""# + String(repeating: "x", count: 4096) + #""}"#)
            let response = try await client.execute(uri: "/api/test/echo", method: .post, headers: json, body: big)
            #expect(response.status == .contentTooLarge)
            #expect(try problem(response).code == "payload_too_large")
            let unknown = try await client.execute(uri: "/api/other", method: .post, headers: json, body: big)
            #expect(unknown.status == .contentTooLarge)
        }
    }

    @Test("a DELETE's body is held to the same limit and the same JSON as a POST's (erasure reads one)", arguments: TestDatabaseKind.all)
    func deleteBodies(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.maxBodySize = 2048 }) { client, env in
            let tokens = try await signUp(client, env, email: "delete-body@example.com")
            let big = ByteBuffer(string: String(repeating: " ", count: 4096) + "{}")
            var asJSON = bearer(tokens), asText = bearer(tokens)
            asJSON[.contentType] = "application/json"
            asText[.contentType] = "text/plain"
            let oversized = try await client.execute(uri: "/api/me", method: .delete, headers: asJSON, body: big)
            #expect(oversized.status == .contentTooLarge)
            #expect(try problem(oversized).code == "payload_too_large")
            let text = try await client.execute(uri: "/api/me", method: .delete, headers: asText, body: ByteBuffer(string: "{}"))
            #expect(text.status == .unsupportedMediaType)
            #expect(try await client.execute(uri: "/api/me/export", method: .get, headers: bearer(tokens)).status == .ok, "not erased")
        }
    }

    @Test("a non-JSON body is 415", arguments: TestDatabaseKind.all)
    func wrongContentType(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, _ in
            let form = try await client.execute(uri: "/api/test/echo", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"], body: ByteBuffer(string: "symbol=AAPL"))
            #expect(form.status == .unsupportedMediaType)
            #expect(try problem(form).code == "unsupported_media_type")
            let none = try await client.execute(uri: "/api/test/echo", method: .post, body: ByteBuffer(string: "{}"))
            #expect(none.status == .unsupportedMediaType)
            let charset = try await client.execute(uri: "/api/test/echo", method: .post, headers: [.contentType: "application/json; charset=utf-8"], body: ByteBuffer(string: #"{"symbol":"A","quantity":1}"#))
            #expect(charset.status == .ok)
            // A JSON-based type is JSON, whatever its subtype's spelling; a look-alike is not.
            for (contentType, status) in [("application/vnd.api+json", HTTPResponse.Status.ok), ("Application/Merge-Patch+JSON", .ok),
                                          ("text/json", .unsupportedMediaType), ("application/jsonx", .unsupportedMediaType),
                                          ("application/+json", .unsupportedMediaType), ("application/json/x", .unsupportedMediaType)] {
                let answer = try await client.execute(uri: "/api/test/echo", method: .post, headers: [.contentType: contentType], body: ByteBuffer(string: #"{"symbol":"A","quantity":1}"#))
                #expect(answer.status == status, "\(contentType)")
            }
        }
    }

    @Test("a JSON or form body in a charset other than UTF-8 is 415 saying so (it was read as UTF-8); UTF-8 in any spelling, and US-ASCII, pass", arguments: TestDatabaseKind.all)
    func otherCharsets(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, _ in
            let body = ByteBuffer(string: #"{"symbol":"A","quantity":1}"#)
            for contentType in ["application/json; charset=utf-16", "application/json;charset=\"ISO-8859-1\"", "application/json; charset=", "application/json; x=1; charset=latin1"] {
                let refused = try await client.execute(uri: "/api/test/echo", method: .post, headers: [.contentType: contentType], body: body)
                #expect(refused.status == .unsupportedMediaType, "\(contentType)")
                let answer = try problem(refused)
                #expect(answer.code == "unsupported_media_type" && answer.detail.contains("UTF-8"), "\(answer.detail)")
            }
            for contentType in ["application/json; charset=UTF-8", "application/json;charset=\"utf-8\"", "application/json; charset=utf8", "application/json; charset=us-ascii", "application/json"] {
                let accepted = try await client.execute(uri: "/api/test/echo", method: .post, headers: [.contentType: contentType], body: body)
                #expect(accepted.status == .ok, "\(contentType)")
            }
            let form = try await client.execute(
                uri: "/form", method: .post, headers: [.contentType: "application/x-www-form-urlencoded; charset=utf-16", HTTPField.Name("Sec-Fetch-Site")!: "same-origin"],
                body: ByteBuffer(string: "_api=/api/auth/login&email=a%40example.com&password=x"))
            #expect(form.status == .unsupportedMediaType)
        }
    }

    @Test("a body in a content coding (gzip, or labelled so) is 415 naming it, never read as if it were plain; identity passes", arguments: TestDatabaseKind.all)
    func contentCodings(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, _ in
            let body = ByteBuffer(string: #"{"symbol":"A","quantity":1}"#)
            for coding in ["gzip", "identity, br", "DEFLATE"] {
                let refused = try await client.execute(uri: "/api/test/echo", method: .post, headers: [.contentType: "application/json", .contentEncoding: coding], body: body)
                #expect(refused.status == .unsupportedMediaType, "\(coding)")
                #expect(refused.headers[.acceptEncoding] == "identity")
                let answer = try problem(refused)
                #expect(answer.code == "unsupported_content_encoding" && answer.detail.contains("uncompressed"), "\(answer.detail)")
            }
            let plain = try await client.execute(uri: "/api/test/echo", method: .post, headers: [.contentType: "application/json", .contentEncoding: "identity"], body: body)
            #expect(plain.status == .ok)
        }
    }

    @Test("an API GET refuses a query parameter its route does not take, naming it; the documented ones pass", arguments: TestDatabaseKind.all)
    func unknownQueryParameters(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "queries@example.com")
            let misspelt = try await client.execute(uri: "/api/orders?stauts=filled&limit=5&stauts=new", method: .get, headers: bearer(tokens))
            #expect(misspelt.status == .unprocessableContent)
            let refusal = try problem(misspelt)
            #expect(refusal.code == "validation_failed" && refusal.errors?.map(\.field) == ["stauts"] && refusal.errors?.map(\.code) == ["unknown"], "named once")
            #expect(refusal.detail.contains("it takes account_id, cursor, limit, status, symbol"), "\(refusal.detail)")
            let head = try await client.execute(uri: "/api/orders?stauts=filled", method: .head, headers: bearer(tokens))
            #expect(head.status == .unprocessableContent)
            // A route without parameters takes none; one with a captured id reads its own.
            #expect(try await client.execute(uri: "/api/accounts?page=2", method: .get, headers: bearer(tokens)).status == .unprocessableContent)
            let account = try await env.firstAccount()
            #expect(try await client.execute(uri: "/api/accounts/\(account.id)/targets?version=1&x=1", method: .get, headers: bearer(tokens)).status == .unprocessableContent)
            // A name whose escapes are not UTF-8, and a value without a name, are no parameter the route takes either.
            for (uri, field) in [("/api/transactions?%ZZ=1", "%ZZ"), ("/api/transactions?=1", "")] {
                let odd = try await client.execute(uri: uri, method: .get, headers: bearer(tokens))
                #expect(odd.status == .unprocessableContent, "\(uri)")
                #expect(try problem(odd).errors?.map(\.field) == [field], "\(uri)")
            }
            for uri in [
                "/api/orders?status=filled&limit=5", "/api/transactions?type=deposit&from=2026-01-01", "/api/accounts", "/api/market/quotes?symbols=AAPL",
                // Names are read decoded, and an empty one names nothing.
                "/api/orders?&limit=5&&status=new", "/api/transactions?account%5Fid=\(account.id)",
            ] {
                #expect(try await client.execute(uri: uri, method: .get, headers: bearer(tokens)).status == .ok, "\(uri)")
            }
            // Pages and health checks are not the API: they are not held to its document.
            #expect(try await client.execute(uri: "/health?probe=1", method: .get).status == .ok)
            #expect(try await client.execute(uri: "/api/health?t=123", method: .get).status == .ok, "a monitor's cache-buster")
        }
    }

    @Test("a query parameter given twice is refused, naming it, rather than read as its first value; the refusal comes before anything is done", arguments: TestDatabaseKind.all)
    func repeatedQueryParameters(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "repeats@example.com")
            let twice = try await client.execute(uri: "/api/orders?status=filled&limit=5&status=canceled&limit=6&status=new", method: .get, headers: bearer(tokens))
            #expect(twice.status == .unprocessableContent)
            let refusal = try problem(twice)
            #expect(refusal.code == "validation_failed" && refusal.errors?.map(\.field) == ["status", "limit"] && refusal.errors?.map(\.code) == ["duplicate", "duplicate"], "each named once, in order")
            // Names are compared decoded; an unknown name is refused as unknown first.
            #expect(try problem(try await client.execute(uri: "/api/transactions?type=buy&typ%65=sell", method: .get, headers: bearer(tokens))).errors?.map(\.code) == ["duplicate"])
            #expect(try problem(try await client.execute(uri: "/api/orders?x=1&x=2&status=new&status=new", method: .get, headers: bearer(tokens))).errors?.map(\.code) == ["unknown"])
            let quotes = try problem(try await client.execute(uri: "/api/market/quotes?symbols=AAPL&symbols=MSFT", method: .get, headers: bearer(tokens)))
            #expect(quotes.errors?.first?.message.contains("separated by commas") == true, "\(quotes)")
            // A repeated cancel-all filter cancels nothing.
            let body: [String: Any] = ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC"]
            let id = try #require(try FolioServerTests.json(try await post(client, "/api/orders", body, headers: bearer(tokens)))["id"] as? String)
            await env.worker.drain()
            #expect(try await client.execute(uri: "/api/orders?symbol=MSFT&symbol=AAPL", method: .delete, headers: bearer(tokens)).status == .unprocessableContent)
            #expect(try FolioServerTests.json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))["status"] as? String == "accepted")
            // Once each is fine, and a route outside the API is not held to it.
            #expect(try await client.execute(uri: "/api/orders?status=filled&limit=5", method: .get, headers: bearer(tokens)).status == .ok)
            #expect(try await client.execute(uri: "/api/health?t=1&t=2", method: .get).status == .ok)
        }
    }

    @Test("a change refuses a query parameter its route does not take before it does anything: a misspelt cancel-all filter cancels nothing", arguments: TestDatabaseKind.all)
    func unknownQueryParametersOnChanges(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "cancel-typo@example.com")
            var ids: [String] = []
            for symbol in ["AAPL", "MSFT"] {
                let body: [String: Any] = ["symbol": symbol, "quantity": 1, "side": "BUY", "order_type": "LIMIT", "limit_price": "1.00", "time_in_force": "GTC"]
                ids.append(try #require(try FolioServerTests.json(try await post(client, "/api/orders", body, headers: bearer(tokens)))["id"] as? String))
            }
            await env.worker.drain()
            let misspelt = try await client.execute(uri: "/api/orders?symbl=AAPL", method: .delete, headers: bearer(tokens))
            #expect(misspelt.status == .unprocessableContent)
            let refusal = try problem(misspelt)
            #expect(refusal.errors?.map(\.field) == ["symbl"], "\(refusal)")
            #expect(refusal.detail.contains("it takes account_id, symbol"), "\(refusal.detail)")
            for id in ids {
                #expect(try FolioServerTests.json(try await client.execute(uri: "/api/orders/\(id)", method: .get, headers: bearer(tokens)))["status"] as? String == "accepted")
            }
            // A route that takes none refuses any, and places nothing.
            let placed = try await post(client, "/api/orders?dry_run=true", ["symbol": "AAPL", "quantity": 1, "side": "BUY", "order_type": "MARKET"], headers: bearer(tokens))
            #expect(placed.status == .unprocessableContent)
            #expect(try await env.store.orders(of: try await env.firstAccount().userID, filter: .init(), after: nil, limit: 10).count == 2)
            // The documented filter still works.
            let canceled = try await client.execute(uri: "/api/orders?symbol=AAPL", method: .delete, headers: bearer(tokens))
            #expect(canceled.status == .ok)
            #expect((try FolioServerTests.json(canceled)["data"] as? [[String: Any]])?.map { $0["id"] as? String } == [ids[0]])
        }
    }

    @Test("an internal error is a generic 500; its text is only in the log, under the same request id", arguments: TestDatabaseKind.all)
    func internalError(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let response = try await client.execute(uri: "/api/test/boom", method: .get)
            #expect(response.status == .internalServerError)
            let text = String(buffer: response.body)
            #expect(!text.contains("SELECT"))
            #expect(!text.contains("secret internal detail"))
            let body = try problem(response)
            #expect(body.code == "internal_error")
            let logged = env.logs.objects.first { $0["message"] as? String == "unhandled error" }
            #expect(logged?["request_id"] as? String == body.request_id)
            #expect((logged?["error"] as? String)?.contains("secret internal detail") == true)
        }
    }

    @Test("an incoming X-Request-ID is kept only as a UUID or hex digits; anything else, a password included, is replaced and never logged", arguments: TestDatabaseKind.all)
    func requestIDs(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let header = HTTPField.Name("X-Request-ID")!
            for id in ["3F2504E0-4F89-11D3-9A0C-0305E82C3301", "0af7651916cd43dd8448eb211c80319c", "5b8aa5a2d2c872e8321cf37308d69df2"] {
                let kept = try await client.execute(uri: "/health", method: .get, headers: [header: id])
                #expect(kept.headers[header] == id)
                #expect(env.logs.lines.contains { $0.contains("\"request_id\":\"\(id)\"") })
            }
            for hostile in ["x\"}\n{\"level\":\"fake", "CorrectHorseBattery9", "hunter2-hunter2", "abc-12345678", "deadbeef"] {
                let replaced = try await client.execute(uri: "/health", method: .get, headers: [header: hostile])
                let id = try #require(replaced.headers[header])
                #expect(UUID(uuidString: id) != nil && id != hostile, "\(hostile)")
                #expect(!env.logs.lines.contains { $0.contains(hostile) }, "\(hostile) reached the log")
            }
        }
    }

    @Test("a request body with a password is logged without the password", arguments: TestDatabaseKind.all)
    func bodyLogRedacted(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.debug = true; $0.logLevel = .debug }) { client, env in
            let body = #"{"symbol":"AAPL","quantity":"1","note":"login","password":"correct horse battery staple","email":"jane.doe@example.com"}"#
            _ = try await client.execute(uri: "/api/test/echo", method: .post, headers: json, body: ByteBuffer(string: body))
            let lines = env.logs.lines.joined(separator: "\n")
            #expect(lines.contains("request body"))
            #expect(!lines.contains("correct horse"))
            #expect(!lines.contains("jane.doe@"))
            #expect(lines.contains("j***@example.com"))
        }
    }

    @Test("DEBUG logs request bodies at any log level, with a secret's value masked however its key is written and whatever it holds; a body that does not parse is not shown", arguments: [false, true])
    func bodyLogParsed(debugLevel: Bool) async throws {
        try await withTestApp(.sqlite, configure: { $0.debug = true; if debugLevel { $0.logLevel = .debug } }) { client, env in
            let bodies = [
                #"{"email":"gail@example.com","pass\u0077ord":"Velvet harbor 2291 sunrise"}"#,
                #"{"current_pass\u0077ord":"Amber canyon 5512 lantern","new_password":["Cobalt meadow 8812 thistle"]}"#,
                #"{"pass":"Juniper falls 4471 orchard","nested":{"secret":{"value":"Quartz ridge 1190 willow"}}}"#,
                #"{"key_id":"PKSECRETKEYID123456","secret_key":12345678901234567890}"#,
                #"{"recoveryCodes":["plum-otter-3318","fig-heron-7741"],"privateKey":{"pem":"MIIEvQ-not-really"}}"#,
                #"{"password":"Saffron delta 3382 harbor", broken"#,
            ]
            for body in bodies {
                _ = try await client.execute(uri: "/api/test/echo", method: .post, headers: json, body: ByteBuffer(string: body))
            }
            let lines = env.logs.lines.filter { $0.contains("request body") }
            #expect(lines.count == bodies.count, "logged without LOG_LEVEL=debug: \(lines.count)")
            for secret in ["Velvet harbor", "Amber canyon", "Cobalt meadow", "Juniper falls", "Quartz ridge", "PKSECRETKEYID123456", "12345678901234567890", "Saffron delta", "plum-otter", "fig-heron", "MIIEvQ"] {
                #expect(!env.logs.lines.contains { $0.contains(secret) }, "\(secret) reached the log")
            }
            #expect(lines.contains { $0.contains("do not parse as JSON: not shown") })
            #expect(lines.contains { $0.contains("g***@example.com") }, "the rest of the body is shown, redacted as any line")
        }
    }

    @Test("the access log names the route pattern, status and duration", arguments: TestDatabaseKind.all)
    func accessLog(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            _ = try await client.execute(uri: "/health", method: .get)
            let access = try #require(env.logs.objects.first { $0["message"] as? String == "request" })
            #expect(access["route"] as? String == "/health")
            #expect(access["method"] as? String == "GET")
            #expect(access["status"] as? String == "200")
            #expect(access["duration_ms"] != nil)
            #expect((access["timestamp"] as? String)?.hasSuffix("Z") == true)
            #expect(access["level"] as? String == "info")
        }
    }
}

@Suite("Database constraint violations")
struct ConstraintViolationTests {
    @Test("a violation that slips past validation is 409 constraint_violation, logged and counted, with no SQL in the body", arguments: TestDatabaseKind.all)
    func constraintViolation(kind: TestDatabaseKind) async throws {
        let logs = LogCapture()
        try await withTestDatabase(kind) { database, location in
            var configuration = AppConfiguration(environment: .testing, database: location)
            configuration.bcryptCost = 4
            let services = await FolioServices(.live(configuration: configuration, logger: logs.logger(), database: database))
            let router = services.buildRouter { routes in
                routes.post("/api/test/duplicate") { _, _ -> String in
                    let now = Date()
                    for _ in 0..<2 {
                        try await database.sql.raw("""
                            INSERT INTO users (id, email, password_hash, role, password_changed_at, created_at, updated_at)
                            VALUES (\(bind: UUID()), 'same@example.com', 'x', 'user', \(bind: now), \(bind: now), \(bind: now))
                            """).run()
                    }
                    return "unreachable"
                }
            }
            try await Application(router: router, logger: logs.logger()).test(.router) { client in
                let response = try await client.execute(uri: "/api/test/duplicate", method: .post)
                #expect(response.status == .conflict)
                let body = try problem(response)
                #expect(body.code == "constraint_violation")
                #expect(!String(buffer: response.body).lowercased().contains("insert"))
                #expect(logs.lines.contains { $0.contains("database constraint violation") && $0.contains(body.request_id) })
            }
            #expect(services.constraintViolations.count == 1, "counted once, by this server")
        }
    }
}

@Suite("Strict dates")
struct StrictDateTests {
    @Test("days and RFC 3339 times parse; impossible days, hour 24 and loose shapes are refused")
    func strictness() throws {
        #expect(StrictDate.dayOrTime("2026-01-31") == (try Date("2026-01-31T00:00:00Z", strategy: .iso8601)))
        #expect(StrictDate.dayOrTime("2024-02-29") != nil)
        #expect(StrictDate.dayOrTime("2026-11-30T14:30:00+02:00") == (try Date("2026-11-30T12:30:00Z", strategy: .iso8601)))
        for refused in ["2026-02-29", "2026-02-30", "2026-04-31", "2026-13-01", "2026-00-10", "2026-01-00",
                        "2026-01-31T24:00:00Z", "2026-01-31T23:60:00Z", "2026-01-31T23:59:61Z", "2026-1-31", "yesterday", "", "2026-01-31T",
                        "2026-01-31t10:00:00Z", "2026-01-31T10:00:00z"] {
            #expect(StrictDate.dayOrTime(refused) == nil, "\(refused)")
        }
        #expect(StrictDate.time("2026-01-31") == nil)
        #expect(StrictDate.time("2026-01-31T10:00:00Z") != nil)
        // `to` takes the whole of what it names: a day, a whole second; a time with fractions ends exactly there.
        #expect(StrictDate.end("2026-01-31") == (try Date("2026-02-01T00:00:00Z", strategy: .iso8601)))
        #expect(StrictDate.end("2026-01-31T10:00:00Z") == (try Date("2026-01-31T10:00:01Z", strategy: .iso8601)))
        #expect(StrictDate.end("2026-01-31T12:00:00+02:00") == (try Date("2026-01-31T10:00:01Z", strategy: .iso8601)))
        #expect(StrictDate.end("2026-01-31T10:00:00.250Z") == (try Date("2026-01-31T10:00:00Z", strategy: .iso8601)).addingTimeInterval(0.25))
        // A person's days (`tz`): from their midnight to the next, also across a clock change, and on a day whose midnight the
        // clock skips (Santiago, 6 September 2026: 00:00 is 01:00, and the 7th starts at 03:00 UTC, not 04:00).
        let santiago = try #require(StrictDate.zone(named: "America/Santiago"))
        #expect(StrictDate.dayOrTime("2026-09-06", in: santiago) == (try Date("2026-09-06T04:00:00Z", strategy: .iso8601)))
        #expect(StrictDate.end("2026-09-06", in: santiago) == (try Date("2026-09-07T03:00:00Z", strategy: .iso8601)))
        let newYork = try #require(StrictDate.zone(named: "America/New_York"))
        #expect(StrictDate.end("2026-11-01", in: newYork) == (try Date("2026-11-02T05:00:00Z", strategy: .iso8601)), "a 25-hour day")
        #expect(StrictDate.end("2026-03-08", in: newYork) == (try Date("2026-03-09T04:00:00Z", strategy: .iso8601)), "a 23-hour day")
        for refused in ["", "../etc/localtime", "Mars/Olympus", String(repeating: "A", count: 65), "Europe/Paris.tar"] {
            #expect(StrictDate.zone(named: refused) == nil, "\(refused)")
        }
    }
}
