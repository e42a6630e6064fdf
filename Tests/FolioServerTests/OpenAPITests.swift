import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import FolioServer

@Suite("OpenAPI document")
struct OpenAPITests {
    static func spec() throws -> [String: Any] {
        let url = try #require(Bundle.module.url(forResource: "openapi", withExtension: "json") ?? bundledSpec())
        return try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    }

    /// The server's bundle, when the test bundle does not carry the file itself.
    static func bundledSpec() -> URL? {
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return source.appendingPathComponent("Sources/FolioServer/Resources/openapi.json")
    }

    @Test("every problem code and field code written in the server's source is one the spec lists: a client generated from it decodes every answer")
    func codesDocumented() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        // A status then a code (`AppError(.conflict, code: "…"`), and a field then a code (`FieldIssue(field: …, code: "…"`).
        let problem = try NSRegularExpression(pattern: #"(?<![\w$)\]])\.[a-zA-Z]+\s*,\s*code:\s*"([a-z0-9_]+)""#)
        let field = try NSRegularExpression(pattern: #"field:\s*[^,]+,\s*code:\s*"([a-z0-9_]+)""#)
        var problemCodes: Set<String> = [], fieldCodes: Set<String> = []
        for folder in ["Sources/FolioServer", "Sources/FolioDomain"] {
            let files = FileManager.default.enumerator(at: root.appendingPathComponent(folder), includingPropertiesForKeys: nil)
            while let file = files?.nextObject() as? URL {
                guard file.pathExtension == "swift" else { continue }
                let text = try String(contentsOf: file, encoding: .utf8)
                let range = NSRange(text.startIndex..., in: text)
                for (pattern, into) in [(problem, 0), (field, 1)] {
                    for match in pattern.matches(in: text, range: range) {
                        let code = String(text[Range(match.range(at: 1), in: text)!])
                        if into == 0 { problemCodes.insert(code) } else { fieldCodes.insert(code) }
                    }
                }
            }
        }
        let schemas = try #require((try Self.spec()["components"] as? [String: Any])?["schemas"] as? [String: Any])
        let listed = Set(try #require((schemas["ProblemCode"] as? [String: Any])?["enum"] as? [String]))
        let fieldText = try #require((((schemas["FieldError"] as? [String: Any])?["properties"] as? [String: Any])?["code"] as? [String: Any])?["description"] as? String)
        let fieldListed = Set(try NSRegularExpression(pattern: "`([a-z0-9_]+)`").matches(in: fieldText, range: NSRange(fieldText.startIndex..., in: fieldText))
            .map { String(fieldText[Range($0.range(at: 1), in: fieldText)!]) })
        #expect(problemCodes.count > 50 && fieldCodes.count > 30, "the scan finds the codes: \(problemCodes.count), \(fieldCodes.count)")
        #expect(problemCodes.subtracting(listed).sorted() == [], "problem codes missing from ProblemCode")
        #expect(fieldCodes.subtracting(fieldListed).subtracting(listed).sorted() == [], "field codes missing from FieldError.code")
    }

    @Test("the spec's paths and methods are exactly the router's")
    func specEqualsRouter() async throws {
        try await withTestApp(.sqlite) { _, env in
            let table = RouteTable()
            _ = env.services.buildRouter(table: table)
            var routed: Set<String> = []
            for route in table.routes where !route.path.hasPrefix("/api/test") && !WebController.routes.contains(route.path) {
                let path = route.path.split(separator: "/", omittingEmptySubsequences: false)
                    .map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0) }.joined(separator: "/")
                for method in route.methods where method != .head { routed.insert("\(method.rawValue) \(path)") }
            }
            var documented: Set<String> = []
            for (path, item) in try Self.spec()["paths"] as? [String: Any] ?? [:] {
                for method in ["get", "put", "post", "patch", "delete"] where (item as? [String: Any])?[method] != nil {
                    documented.insert("\(method.uppercased()) \(path)")
                }
            }
            #expect(routed.subtracting(documented).sorted() == [], "routes the spec does not describe")
            #expect(documented.subtracting(routed).sorted() == [], "operations the router does not have")
            #expect(routed.count > 70)
        }
    }

    @Test("GET /openapi.json serves the spec and /docs renders every operation from it, with no script or style")
    func served() async throws {
        try await withTestApp(.sqlite) { client, _ in
            let specResponse = try await client.execute(uri: "/openapi.json", method: .get)
            #expect(specResponse.status == .ok)
            #expect(specResponse.headers[.contentType] == "application/json")
            let served = try #require(try JSONSerialization.jsonObject(with: Data(buffer: specResponse.body)) as? [String: Any])
            #expect(served["openapi"] as? String == (try Self.spec())["openapi"] as? String)

            let page = try await client.execute(uri: "/docs", method: .get)
            #expect(page.status == .ok)
            #expect(page.headers[.contentType] == "text/html; charset=utf-8")
            #expect(page.headers[.contentSecurityPolicy]?.contains("default-src 'none'") == true)
            let html = String(buffer: page.body)
            for path in (served["paths"] as? [String: Any] ?? [:]).keys {
                #expect(html.contains(path.replacingOccurrences(of: "&", with: "&amp;")), "\(path) is not on the page")
            }
            #expect(!html.contains("<script") && !html.contains("<style") && !html.contains("style=") && !html.contains("http://") && !html.contains("https://cdn"))
            #expect(html.contains("id=\"schema-Problem\""))
            // Written for the API's users: no notes on how the file is made, and its lists as lists.
            #expect(!html.contains("FolioServices.buildRouter") && !html.contains("ops/openapi-json"))
            #expect(html.contains("<ul><li>JSON over HTTP with snake_case keys."), "the conventions are a list")
        }
    }

    @Test("the reference page's descriptions: paragraphs, lists with their run-on lines, code in backticks, everything escaped")
    func descriptionMarkdown() {
        let page = APIPage([:])
        #expect(page.paragraphs("Intro `x`.\n\n- one `a`\n  more\n- two <b>") == "<p>Intro <code>x</code>.</p><ul><li>one <code>a</code> more</li><li>two &lt;b&gt;</li></ul>")
        #expect(page.paragraphs("A lone ` stays.") == "<p>A lone ` stays.</p>")
        #expect(page.paragraphs("Lead:\n- item") == "<p>Lead:</p><ul><li>item</li></ul>")
    }
}
