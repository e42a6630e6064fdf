import FolioDomain
import HTTPTypes
import Hummingbird
import Logging

/// Enforces the body size limit (413), JSON bodies (415, except a form
/// posted to the form bridge), no content coding (415), URLs without a NUL (400) and, on the API's
/// routes, only the query parameters the route takes (422) before any
/// handler runs. With DEBUG on, logs the body with its secrets masked (`loggable`).
struct RequestBodyMiddleware: RouterMiddleware {
    typealias Context = FolioRequestContext
    let maxBodySize: Int
    let logBodies: Bool
    let queries: QueryParameters

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // No text Folio stores or looks up can hold U+0000 (PostgreSQL refuses it, SQLite cuts text there): a URL
        // that carries one, in the path or a query parameter, is refused whole, as a JSON body's is field by field.
        if request.uri.string.contains("%00") {
            throw AppError(.badRequest, code: "bad_request", detail: "The URL carries a NUL character (%00), which no value can hold.")
        }
        // SendGrid posts what it posts (event batches up to 768 KB) and its
        // handler holds it to its own limit: a smaller MAX_BODY_SIZE would
        // refuse every large batch, and SendGrid would give up on it.
        let maxBodySize = SendGridWebhookController.isPath(request.uri.path) ? max(self.maxBodySize, SendGridWebhookController.bodyLimit) : self.maxBodySize
        if let length = request.headers[.contentLength].flatMap(Int.init), length > maxBodySize {
            throw ProblemMiddleware.payloadTooLarge()
        }
        let unknown = queries.unknown(in: request, route: context.endpointPath)
        if !unknown.isEmpty { throw Self.unknownParameters(unknown, takes: queries.allowed(in: request, route: context.endpointPath ?? "")) }
        let repeated = queries.repeated(in: request, route: context.endpointPath)
        if !repeated.isEmpty { throw Self.repeatedParameters(repeated) }
        // Every method that may carry a body a handler reads (erasure's DELETE takes the password), whatever its
        // framing: a chunked body has no Content-Length to refuse it by.
        guard request.method != .get, request.method != .head, request.method != .options else {
            return try await next(request, context)
        }
        var request = request
        let body = try await request.collectBody(upTo: maxBodySize)
        // A mail app's one-click unsubscribe (RFC 8058) posts `List-Unsubscribe=One-Click` as a form, URL-encoded or
        // multipart, in whatever charset; the link in the URL is the request, and the body is not read.
        if context.endpointPath == UnsubscribeLinks.path {
            return try await next(request, context)
        }
        // Folio decodes no content coding (RFC 9110 §8.4): a gzip body would be read as its compressed bytes, and one
        // labelled gzip but sent plain would pass where a proxy that honours the label would see something else.
        if body.readableBytes > 0, let coding = Self.contentCoding(request.headers[values: .contentEncoding]) {
            throw AppError(
                .unsupportedMediaType, code: "unsupported_content_encoding",
                detail: "Send the request body uncompressed: Content-Encoding \(coding) is not accepted.",
                headers: [.acceptEncoding: "identity"])
        }
        // JSON is UTF-8 (RFC 8259), and a form is read as UTF-8: a body said to be in another charset would be
        // read as something its sender did not write. A vendor's webhook is verified on its bytes and read as its vendor documents.
        if body.readableBytes > 0, !request.uri.path.hasPrefix("/webhooks/") {
            guard Self.isUTF8(request.headers[.contentType]) else {
                throw AppError(
                    .unsupportedMediaType, code: "unsupported_media_type",
                    detail: "Send the request body in UTF-8 (charset=utf-8, or no charset).",
                    headers: [.accept: "application/json"])
            }
        }
        // The form bridge alone takes a browser's form, and turns it into JSON for the route it names.
        if body.readableBytes > 0, request.uri.path == FormBridge.path, Self.isForm(request.headers[.contentType]) {
            return try await next(request, context)
        }
        if body.readableBytes > 0 {
            guard Self.isJSON(request.headers[.contentType]) else {
                throw AppError(
                    .unsupportedMediaType, code: "unsupported_media_type",
                    detail: "Send the request body as JSON with Content-Type: application/json.",
                    headers: [.accept: "application/json"])
            }
            if logBodies {
                // At info: DEBUG is what asks for bodies, whatever LOG_LEVEL says.
                context.logger.info("request body", metadata: ["body": .string(Self.loggable(body))])
            }
        }
        return try await next(request, context)
    }

    /// The body as a log line may show it: parsed, so a key is judged as the routes read it (`"pass\u0077ord"` is
    /// `password`), with the whole value of a secret's key masked whatever it holds (a string, a number, a list, an
    /// object). A body that does not parse is not shown at all: no pattern can be sure of finding its secrets, and the
    /// request is refused anyway. The log's redactor then runs over the result as over any line (card numbers, addresses).
    static func loggable(_ body: ByteBuffer) -> String {
        guard let parsed = try? JSONValue.parse(body.readableBytesView) else {
            return "(\(body.readableBytes) bytes that do not parse as JSON: not shown)"
        }
        var json = JSONWriter()
        json.value(masked(parsed))
        return String(decoding: json.bytes, as: UTF8.self)
    }

    static func masked(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let fields):
            .object(Dictionary(uniqueKeysWithValues: fields.map { key, value in
                (key, isSecretField(key) ? .string(LogRedactor.mask) : masked(value))
            }))
        case .array(let items): .array(items.map(masked))
        default: value
        }
    }

    /// A secret's key, in any case and spelling of its separators (`recovery_codes`, `recoveryCodes`), or a short form
    /// of a password's that the routes take as a misspelling of it (`pass`, `pwd`).
    static func isSecretField(_ key: String) -> Bool {
        if LogRedactor.standard.isSensitiveKey(key) { return true }
        let folded = key.lowercased()
        let squashed = folded.filter { $0 != "_" && $0 != "-" }
        if squashedFragments.contains(where: { squashed.contains($0) }) { return true }
        return folded.hasPrefix("pass") || folded.hasPrefix("pwd") || folded == "pw" || folded.hasSuffix("_pass") || folded.hasSuffix("_pw")
    }

    static let squashedFragments = LogRedactor.sensitiveKeyFragments.map { $0.filter { $0 != "_" } }

    static func unknownParameters(_ names: [String], takes allowed: [String]) -> AppError {
        let takes = allowed.isEmpty ? "it takes none" : "it takes " + allowed.joined(separator: ", ")
        return AppError.validation(
            names.map { .init(field: $0, code: "unknown", message: "\($0) is not a query parameter of this route; \(takes).") },
            detail: "The query names a parameter this route does not take; \(takes).")
    }

    static func repeatedParameters(_ names: [String]) -> AppError {
        AppError.validation(
            names.map { .init(field: $0, code: "duplicate", message: "\($0) is given more than once; give it once\($0 == "symbols" ? ", with the symbols separated by commas" : "").") },
            detail: names.count == 1 ? "\(names[0]) is given more than once; give it once." : "The query gives parameters more than once; give each once.")
    }

    /// The first content coding other than `identity` that the Content-Encoding fields name, if any.
    static func contentCoding(_ fields: [String]) -> String? {
        for coding in fields.flatMap({ $0.split(separator: ",") }) {
            let name = coding.trimmingCharacters(in: .whitespaces)
            if !name.isEmpty, name.lowercased() != "identity" { return String(name.prefix(40)) }
        }
        return nil
    }

    static func isForm(_ contentType: String?) -> Bool {
        guard let contentType, let mediaType = MediaType(from: contentType) else { return false }
        return mediaType.type == .application && mediaType.subType == "x-www-form-urlencoded"
    }

    /// No charset parameter, or one naming UTF-8 (or US-ASCII, which is UTF-8's first half).
    static func isUTF8(_ contentType: String?) -> Bool {
        guard let contentType else { return true }
        for parameter in contentType.split(separator: ";").dropFirst() {
            let parts = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts[0].trimmingCharacters(in: .whitespaces).lowercased() == "charset" else { continue }
            var value = parts.count == 2 ? parts[1].trimmingCharacters(in: .whitespaces) : ""
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            guard ["utf-8", "utf8", "us-ascii"].contains(value.lowercased()) else { return false }
        }
        return true
    }

    /// `application/json`, or a JSON-based `application/…+json` type (`application/vnd.api+json`), in any case,
    /// with any parameters. Read by hand: a dotted subtype is a valid token the media-type parser did not take.
    static func isJSON(_ contentType: String?) -> Bool {
        guard let essence = contentType?.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first else { return false }
        let parts = essence.trimmingCharacters(in: .whitespaces).lowercased().split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0] == "application" else { return false }
        let subtype = parts[1]
        let token = subtype.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "!#$&^_.+-".contains($0)) }
        return token && (subtype == "json" || (subtype.hasSuffix("+json") && subtype.count > 5))
    }
}
