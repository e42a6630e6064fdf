import FolioDomain
import Foundation
import HTTPTypes

/// An RFC 9457 problem document, the body of every 4xx and 5xx response.
public struct ProblemDetails: Codable, Sendable, Equatable {
    public typealias FieldError = FieldIssue

    public var type: String
    public var title: String
    public var status: Int
    public var detail: String
    public var code: String
    public var errors: [FieldError]?
    public var requestID: String?
    /// Per-component results on health problems (`database: down`).
    public var checks: [String: String]?

    enum CodingKeys: String, CodingKey {
        case type, title, status, detail, code, errors, checks
        case requestID = "request_id"
    }

    public static let mediaType = "application/problem+json"
}

/// An error a handler throws on purpose; it becomes a problem response with
/// its stable `code`. Anything else thrown becomes a generic 500.
public struct AppError: Error, Sendable {
    public var status: HTTPResponse.Status
    public var code: String
    public var detail: String
    public var errors: [ProblemDetails.FieldError]
    public var headers: HTTPFields
    public var checks: [String: String]?

    public init(
        _ status: HTTPResponse.Status, code: String, detail: String,
        errors: [ProblemDetails.FieldError] = [], headers: HTTPFields = [:], checks: [String: String]? = nil
    ) {
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers
        self.checks = checks
    }

    public static func validation(_ errors: [ProblemDetails.FieldError], detail: String? = nil) -> AppError {
        AppError(
            .unprocessableContent, code: "validation_failed",
            detail: detail ?? "The request has \(errors.count == 1 ? "an invalid field" : "invalid fields").",
            errors: errors)
    }

    public static func validation(field: String, code: String, message: String) -> AppError {
        .validation([.init(field: field, code: code, message: message)], detail: message)
    }

    public static func notFound(_ what: String = "resource") -> AppError {
        AppError(.notFound, code: "not_found", detail: "The \(what) was not found.")
    }

    func problem(requestID: String?) -> ProblemDetails {
        ProblemDetails(
            type: "urn:folio:problem:\(code)", title: status.reasonPhrase, status: status.code, detail: detail,
            code: code, errors: errors.isEmpty ? nil : errors, requestID: requestID, checks: checks)
    }
}
