import Foundation
import Hummingbird

/// `GET /openapi.json` (the spec, `docs/openapi.yaml` converted by
/// `ops/openapi-json` and bundled) and `GET /docs`: a page generated from
/// that spec at start-up, plain HTML with no script, style or CDN, so the
/// strict content security policy stays as it is everywhere else.
struct APIDocumentation: Sendable {
    let spec: ByteBuffer
    let page: ByteBuffer
    /// The query parameters each documented GET route takes: the API refuses others (`RequestBodyMiddleware`).
    let queries: QueryParameters

    /// The bundled spec; start-up stops if it is missing or unreadable, as it does for a missing mail template.
    /// Built once per process: every `FolioServices` (each test app, each CLI command) shares it.
    static func bundled() throws -> APIDocumentation {
        try built.get()
    }

    private static let built = Result { try build() }

    private static func build() throws -> APIDocumentation {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json") else {
            throw APIDocumentationError(description: "the bundled openapi.json is missing (run ops/openapi-json)")
        }
        let data = try Data(contentsOf: url)
        guard let document = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw APIDocumentationError(description: "the bundled openapi.json is not a JSON object")
        }
        return APIDocumentation(spec: ByteBuffer(bytes: data), page: ByteBuffer(string: APIPage(document).html), queries: QueryParameters(document))
    }

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let spec = self.spec, page = self.page
        router.get("/openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "public, max-age=300"], body: .init(byteBuffer: spec))
        }
        router.get("/docs") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "public, max-age=300"], body: .init(byteBuffer: page))
        }
    }
}

struct APIDocumentationError: Error, CustomStringConvertible {
    var description: String
}

/// The spec as one HTML page: operations by tag, each with its parameters,
/// body, responses and problem codes, then every schema, linked by anchor.
struct APIPage {
    let document: [String: Any]
    var schemas: [String: Any] { (document["components"] as? [String: Any])?["schemas"] as? [String: Any] ?? [:] }
    var components: [String: Any] { document["components"] as? [String: Any] ?? [:] }

    init(_ document: [String: Any]) {
        self.document = document
    }

    static let methods = ["get", "put", "post", "patch", "delete"]

    var html: String {
        let info = document["info"] as? [String: Any] ?? [:]
        let title = info["title"] as? String ?? "API"
        var out = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(escape(title)) reference</title></head><body>
            <header><h1>\(escape(title)) \(escape(info["version"] as? String ?? ""))</h1>
            \(paragraphs(info["description"] as? String ?? ""))
            <p>The machine-readable spec: <a href="/openapi.json">/openapi.json</a> (OpenAPI \(escape(document["openapi"] as? String ?? ""))).</p></header>

            """
        let paths = (document["paths"] as? [String: Any] ?? [:]).sorted { $0.key < $1.key }
        var byTag: [String: [(path: String, method: String, operation: [String: Any])]] = [:]
        for (path, item) in paths {
            guard let item = item as? [String: Any] else { continue }
            for method in Self.methods {
                guard let operation = item[method] as? [String: Any] else { continue }
                let tag = (operation["tags"] as? [String])?.first ?? "other"
                byTag[tag, default: []].append((path, method, operation))
            }
        }
        let tags = (document["tags"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        let order = tags + byTag.keys.filter { !tags.contains($0) }.sorted()
        out += "<nav><h2>Contents</h2><ul>\n"
        for tag in order where byTag[tag] != nil {
            out += "<li>\(escape(tag))<ul>"
            for entry in byTag[tag]! {
                out += "<li><a href=\"#\(anchor(entry.method, entry.path))\"><code>\(entry.method.uppercased()) \(escape(entry.path))</code></a> \(escape(entry.operation["summary"] as? String ?? ""))</li>"
            }
            out += "</ul></li>\n"
        }
        out += "<li><a href=\"#schemas\">Schemas</a></li></ul></nav>\n<main>\n"
        for tag in order where byTag[tag] != nil {
            out += "<section><h2>\(escape(tag))</h2>\n"
            for entry in byTag[tag]! { out += operation(entry.method, entry.path, entry.operation) }
            out += "</section>\n"
        }
        out += "<section><h2 id=\"schemas\">Schemas</h2>\n"
        for (name, schema) in schemas.sorted(by: { $0.key < $1.key }) {
            out += "<h3 id=\"schema-\(escape(name))\">\(escape(name))</h3>\n\(describe(schema as? [String: Any] ?? [:], depth: 0))\n"
        }
        out += "</section></main></body></html>\n"
        return out
    }

    func operation(_ method: String, _ path: String, _ operation: [String: Any]) -> String {
        var out = "<article><h3 id=\"\(anchor(method, path))\"><code>\(method.uppercased()) \(escape(path))</code></h3>\n"
        if let summary = operation["summary"] as? String { out += "<p><strong>\(escape(summary))</strong></p>\n" }
        if let description = operation["description"] as? String { out += "\(paragraphs(description))\n" }
        if let security = operation["security"] as? [[String: Any]] {
            let schemes = security.flatMap(\.keys)
            out += "<p>Authentication: \(schemes.isEmpty ? "none" : schemes.map { "<code>\(escape($0))</code>" }.joined(separator: " or "))</p>\n"
        }
        let parameters = (operation["parameters"] as? [Any] ?? []).compactMap { resolve($0) }
        if !parameters.isEmpty {
            out += "<table><caption>Parameters</caption><tr><th>Name</th><th>In</th><th>Required</th><th>Schema</th><th>Description</th></tr>\n"
            for parameter in parameters {
                out += "<tr><td><code>\(escape(parameter["name"] as? String ?? ""))</code></td><td>\(escape(parameter["in"] as? String ?? ""))</td>"
                out += "<td>\((parameter["required"] as? Bool ?? false) ? "yes" : "no")</td><td>\(typeName(parameter["schema"]))</td>"
                out += "<td>\(escape(parameter["description"] as? String ?? ""))</td></tr>\n"
            }
            out += "</table>\n"
        }
        if let body = resolve(operation["requestBody"] as Any), let content = body["content"] as? [String: Any] {
            for (type, media) in content.sorted(by: { $0.key < $1.key }) {
                let media = media as? [String: Any] ?? [:]
                out += "<p>Request body (<code>\(escape(type))</code>\((body["required"] as? Bool ?? false) ? ", required" : "")): \(typeName(media["schema"]))</p>\n"
                if let example = media["example"], let text = json(example) { out += "<pre>\(escape(text))</pre>\n" }
            }
        }
        out += "<table><caption>Responses</caption><tr><th>Status</th><th>Description</th><th>Body</th></tr>\n"
        for (status, response) in (operation["responses"] as? [String: Any] ?? [:]).sorted(by: { $0.key < $1.key }) {
            guard let response = resolve(response) else { continue }
            let bodies = (response["content"] as? [String: Any] ?? [:]).sorted { $0.key < $1.key }.map { type, media in
                "<code>\(escape(type))</code> \(typeName((media as? [String: Any])?["schema"]))"
            }
            out += "<tr><td>\(escape(status))</td><td>\(paragraphs(response["description"] as? String ?? ""))</td><td>\(bodies.joined(separator: "<br>"))</td></tr>\n"
        }
        out += "</table></article>\n"
        return out
    }

    /// A schema's fields as a nested list (objects), or its type (everything else).
    func describe(_ schema: [String: Any], depth: Int) -> String {
        var out = ""
        if let description = schema["description"] as? String { out += paragraphs(description) }
        if let properties = schema["properties"] as? [String: Any] {
            let required = Set(schema["required"] as? [String] ?? [])
            out += "<ul>"
            for (name, property) in properties.sorted(by: { $0.key < $1.key }) {
                let property = property as? [String: Any] ?? [:]
                out += "<li><code>\(escape(name))</code>\(required.contains(name) ? " (required)" : ""): \(typeName(property))"
                if let text = property["description"] as? String { out += " — \(escape(text))" }
                if let example = property["example"], let text = json(example) { out += " Example: <code>\(escape(text))</code>" }
                if depth < 2, property["$ref"] == nil, property["properties"] != nil {
                    out += describe(property, depth: depth + 1)
                }
                out += "</li>"
            }
            out += "</ul>"
        } else if schema["$ref"] == nil {
            out += "<p>\(typeName(schema))</p>"
        }
        if let values = schema["enum"] as? [Any] { out += "<p>One of: \(values.compactMap { json($0) }.map { "<code>\(escape($0))</code>" }.joined(separator: ", "))</p>" }
        return out
    }

    /// `string`, `array of Order`, a link to a named schema, or the alternatives of a oneOf.
    func typeName(_ value: Any?) -> String {
        guard let schema = value as? [String: Any] else { return "" }
        if let reference = schema["$ref"] as? String {
            let name = String(reference.split(separator: "/").last ?? "")
            return "<a href=\"#schema-\(escape(name))\">\(escape(name))</a>"
        }
        for combiner in ["oneOf", "anyOf", "allOf"] {
            if let options = schema[combiner] as? [Any] {
                return options.map { typeName($0) }.joined(separator: combiner == "allOf" ? " and " : " or ")
            }
        }
        let type: String
        if let types = schema["type"] as? [String] { type = types.joined(separator: " or ") } else { type = schema["type"] as? String ?? "any" }
        if type == "array" { return "array of \(typeName(schema["items"]))" }
        var text = escape(type)
        if let format = schema["format"] as? String { text += " (\(escape(format)))" }
        if let pattern = schema["pattern"] as? String { text += " matching <code>\(escape(pattern))</code>" }
        return text
    }

    /// A `$ref` to a component (parameter, response, body) followed once.
    func resolve(_ value: Any) -> [String: Any]? {
        guard let object = value as? [String: Any] else { return nil }
        guard let reference = object["$ref"] as? String else { return object }
        let parts = reference.split(separator: "/").map(String.init)
        guard parts.count == 4, parts[0] == "#", parts[1] == "components" else { return nil }
        return (components[parts[2]] as? [String: Any])?[parts[3]] as? [String: Any]
    }

    func anchor(_ method: String, _ path: String) -> String {
        escape(method + path.replacingOccurrences(of: "/", with: "-").replacingOccurrences(of: "{", with: "").replacingOccurrences(of: "}", with: ""))
    }

    func json(_ value: Any) -> String? {
        guard JSONSerialization.isValidJSONObject([value]),
              let data = try? JSONSerialization.data(withJSONObject: [value], options: [.sortedKeys, .withoutEscapingSlashes])
        else { return nil }
        return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
    }

    /// The descriptions' small Markdown: blocks between blank lines are
    /// paragraphs, a block of `- ` lines a list (an indented line goes on the
    /// item before it), and `code` in backticks code. Everything is escaped first.
    func paragraphs(_ text: String) -> String {
        var out = ""
        for block in escape(text).components(separatedBy: "\n\n") where !block.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            var lead: [String] = [], items: [String] = []
            for line in block.split(separator: "\n", omittingEmptySubsequences: true) {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                if trimmed.hasPrefix("- ") {
                    items.append(String(trimmed.dropFirst(2)))
                } else if !items.isEmpty {
                    items[items.count - 1] += " " + trimmed
                } else {
                    lead.append(trimmed)
                }
            }
            if !lead.isEmpty { out += "<p>\(Self.code(lead.joined(separator: " ")))</p>" }
            if !items.isEmpty { out += "<ul>" + items.map { "<li>\(Self.code($0))</li>" }.joined() + "</ul>" }
        }
        return out
    }

    /// `a` in backticks as `<code>a</code>`; an unpaired backtick stays as it is.
    static func code(_ text: String) -> String {
        let parts = text.split(separator: "`", omittingEmptySubsequences: false)
        var out = ""
        for (index, part) in parts.enumerated() {
            if index % 2 == 0 {
                out += part
            } else if index < parts.count - 1 {
                out += "<code>\(part)</code>"
            } else {
                out += "`" + part
            }
        }
        return out
    }

    /// By Unicode scalar, as every page is (see `ScalarHTMLEscaping`).
    func escape(_ text: String) -> String {
        ScalarHTMLEscaping.escape(text)
    }
}
