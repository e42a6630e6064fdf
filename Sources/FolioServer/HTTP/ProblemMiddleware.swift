import FluentKit
import FolioDomain
import Foundation
import NIOConcurrencyHelpers
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// Turns every error into an RFC 9457 problem response. Internal errors become
/// a generic 500; their text goes only to the log, under the request id.
struct ProblemMiddleware: RouterMiddleware {
    typealias Context = FolioRequestContext
    let routes: RouteTable
    let violations: ConstraintViolations
    /// Every 500 is reported here, off the request path.
    var errors: SentryReporter? = nil
    /// The web app's page for an address that is no page, for a browser's GET outside `/api/`.
    var missingPage: (@Sendable (Identity?) -> Response)? = nil
    /// The web app's page for any other refusal (4xx) of a browser's request outside `/api/`
    /// (a body past the limit, a NUL in a page's query): a page to go on from, not JSON.
    /// A browser's refusal as a page: the problem, who is signed in, and whether a form was sent (a POST).
    var refusalPage: (@Sendable (AppError, Identity?, Bool) -> Response)? = nil

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound && context.endpointPath == "NotFound" {
            let allowed = routes.allowedMethods(for: request.uri.path)
            guard !allowed.isEmpty else {
                // A browser that follows a stale link or a typo gets a page to go on from, not JSON.
                if let missingPage, request.method == .get, Self.isBrowserPage(request) {
                    return missingPage(context.facts.identity)
                }
                return response(for: AppError(.notFound, code: "not_found", detail: "No route matches \(request.method.rawValue) \(Self.safePath(request))."), request: request, context: context)
            }
            let allow = allowed.map(\.rawValue).joined(separator: ", ")
            return response(
                for: AppError(
                    .methodNotAllowed, code: "method_not_allowed",
                    detail: "\(request.method.rawValue) is not allowed here; allowed: \(allow).",
                    headers: [.allow: allow]),
                request: request, context: context)
        } catch {
            if let constraint = DatabaseConstraint(error) { violations.record(constraint) }
            let problem = Self.appError(for: error, context: context)
            if let refusalPage, (400..<500).contains(problem.status.code), Self.isBrowserPage(request) {
                return refusalPage(problem, context.facts.identity, request.method == .post)
            }
            let response = Self.response(for: problem, context: context)
            if response.status == .internalServerError, let errors {
                errors.report(.forServerError(
                    error: error, requestID: context.requestID, route: context.endpointPath ?? "unmatched", method: request.method.rawValue,
                    userID: context.facts.userID?.description, configuration: errors.configuration))
            }
            return response
        }
    }

    func response(for error: any Error, request: Request, context: Context) -> Response {
        Self.response(for: error, request: request, context: context)
    }

    static func response(for error: any Error, request: Request, context: Context) -> Response {
        response(for: appError(for: error, context: context), context: context)
    }

    /// A browser's request for a page (not the API): it is answered with pages, refusals included.
    static func isBrowserPage(_ request: Request) -> Bool {
        request.uri.path != "/api" && !request.uri.path.hasPrefix("/api/") && request.headers[.accept]?.contains("text/html") == true
    }

    static func response(for appError: AppError, context: Context) -> Response {
        let problem = appError.problem(requestID: context.requestID.isEmpty ? nil : context.requestID)
        var headers = appError.headers
        headers[.contentType] = ProblemDetails.mediaType
        let data = (try? FolioJSON.encode(problem)) ?? Data(#"{"status":500,"code":"internal_error"}"#.utf8)
        headers[.contentLength] = String(data.count)
        var buffer = ByteBuffer()
        buffer.writeBytes(data)
        return Response(status: appError.status, headers: headers, body: .init(byteBuffer: buffer))
    }

    static func appError(for error: any Error, context: Context) -> AppError {
        if case MoneyError.overflow = error {
            // Answered as a 422, but an arithmetic bug would look the same: logged for operators either way.
            context.logger.error("a computed amount is out of range", metadata: ["route": .string(context.endpointPath ?? "unmatched")])
        }
        if let mapped = ProblemMapping.appError(for: error) { return mapped }
        switch error {
        case let error as AppError:
            return error
        case let error as DecodingError:
            return decodingProblem(error)
        case is NIOTooManyBytesError:
            return payloadTooLarge()
        case _ where DatabaseConstraint(error) != nil:
            // Validation should have caught it; the database did. Counted (by the middleware) so operations can alert.
            context.logger.error("database constraint violation", metadata: ["error": .string(DatabaseErrorText.forLog(error))])
            return AppError(.conflict, code: "constraint_violation", detail: "The change conflicts with data already stored; nothing was written.")
        case _ where FolioDatabase.isBusy(error):
            // Another process held SQLite's write lock past every retry, or PostgreSQL's lock_timeout passed
            // (`TradingStore.waitLimits`): a moment later it is likely free.
            context.logger.warning("database busy", metadata: ["error": .string(DatabaseErrorText.forLog(error))])
            return AppError(.serviceUnavailable, code: "database_busy", detail: "The database is busy; try again in a moment.", headers: [.retryAfter: "1"])
        case _ where FolioDatabase.isUnavailable(error):
            context.logger.error("database unavailable", metadata: ["error": .string(DatabaseErrorText.forLog(error))])
            return AppError(
                .serviceUnavailable, code: "database_unavailable",
                detail: """
                    The database could not be reached; try again in a moment. A change may or may not have been saved: \
                    look before you repeat it, or repeat it with the same Idempotency-Key.
                    """,
                headers: [.retryAfter: "5"])
        case let error as HTTPError:
            return AppError(error.status, code: code(for: error.status), detail: error.body ?? defaultDetail(for: error.status), headers: error.headers)
        default:
            context.logger.error("unhandled error", metadata: ["error": .string(DatabaseErrorText.forLog(error))])
            return AppError(.internalServerError, code: "internal_error", detail: "Something went wrong on our side. Quote the request id if you contact support.")
        }
    }

    static func payloadTooLarge() -> AppError {
        AppError(.contentTooLarge, code: "payload_too_large", detail: "The request body is larger than this server accepts.")
    }

    /// JSON that is not JSON is 400; JSON of the wrong shape is 422 naming the field.
    static func decodingProblem(_ error: DecodingError) -> AppError {
        func path(_ codingPath: [any CodingKey], appending key: (any CodingKey)? = nil) -> String {
            FieldIssue.path(codingPath + (key.map { [$0] } ?? []))
        }
        switch error {
        case .dataCorrupted(let context) where context.codingPath.isEmpty:
            return AppError(.badRequest, code: "malformed_json", detail: "The request body is not valid JSON.")
        case .dataCorrupted(let context):
            let field = path(context.codingPath)
            return .validation(field: field, code: "invalid", message: "\(field) is not valid: \(context.debugDescription)")
        case .keyNotFound(let key, let context):
            let field = path(context.codingPath, appending: key)
            return .validation(field: field, code: "required", message: "\(field) is required.")
        case .valueNotFound(_, let context):
            let field = path(context.codingPath)
            return .validation(field: field, code: "required", message: "\(field) must not be null.")
        case .typeMismatch(let type, let context):
            let field = path(context.codingPath)
            if field.isEmpty {
                return AppError(.badRequest, code: "malformed_json", detail: "The request body must be a JSON object.")
            }
            return .validation(field: field, code: "invalid_type", message: "\(field) must be \(typeName(type)).")
        @unknown default:
            return AppError(.badRequest, code: "malformed_json", detail: "The request body could not be read.")
        }
    }

    static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        case is Int.Type, is Int64.Type, is Int32.Type: return "a whole number"
        case is any ExactAmount.Type: return "a decimal number as a string or a number"
        case is [String: JSONValue].Type: return "an object ({…})"
        case is [JSONValue].Type: return "an array ([…])"
        default: return "of another type"
        }
    }

    static func code(for status: HTTPResponse.Status) -> String {
        switch status {
        case .badRequest: return "bad_request"
        case .unauthorized: return "unauthorized"
        case .forbidden: return "forbidden"
        case .notFound: return "not_found"
        case .methodNotAllowed: return "method_not_allowed"
        case .conflict: return "conflict"
        case .contentTooLarge: return "payload_too_large"
        case .unsupportedMediaType: return "unsupported_media_type"
        case .unprocessableContent: return "validation_failed"
        case .tooManyRequests: return "rate_limited"
        case .serviceUnavailable: return "service_unavailable"
        default: return status.code >= 500 ? "internal_error" : "http_\(status.code)"
        }
    }

    static func defaultDetail(for status: HTTPResponse.Status) -> String {
        status.code >= 500 ? "Something went wrong on our side." : status.reasonPhrase + "."
    }

    /// The path for an error message, without the query (which may carry tokens).
    static func safePath(_ request: Request) -> String {
        String(request.uri.path.prefix(200))
    }
}

/// How many database constraint violations reached a response, or failed a
/// job, since this process started (the seed guide wants an alert on them).
final class ConstraintViolations: Sendable {
    private let counter = NIOLockedValueBox(0)
    /// Each is counted by table and kind (`folio_constraint_violations_total`): the seed alerts on any.
    let metrics: FolioMetrics?

    init(metrics: FolioMetrics? = nil) {
        self.metrics = metrics
    }

    func record(_ constraint: DatabaseConstraint? = nil) {
        counter.withLockedValue { $0 += 1 }
        metrics?.constraintViolation(table: constraint?.table, kind: constraint.map { "\($0.kind)" } ?? "other")
    }

    var count: Int { counter.withLockedValue { $0 } }
}
