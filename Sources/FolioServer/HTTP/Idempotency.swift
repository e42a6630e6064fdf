import Crypto
import FluentKit
import Foundation
import HTTPTypes
import Hummingbird
import SQLKit

/// A stored first response for an `Idempotency-Key`.
final class IdempotencyRecord: Model, @unchecked Sendable {
    static let schema = "idempotency_keys"

    @ID(key: .id) var id: UUID?
    @Field(key: "user_id") var userID: UUID
    @Field(key: "key") var key: String
    @Field(key: "request_hash") var requestHash: String
    @Field(key: "status") var status: String
    @OptionalField(key: "response_status") var responseStatus: Int?
    @OptionalField(key: "response_location") var responseLocation: String?
    @OptionalField(key: "response_body") var responseBody: String?
    @Field(key: "created_at") var createdAt: Date
    @Field(key: "expires_at") var expiresAt: Date

    init() {}
}

/// Unsafe requests that move money accept `Idempotency-Key`: the first
/// response for a key is stored and replayed byte for byte; the same key with a
/// different request is 422; while the first is still running, 409. Keys
/// expire after 24 hours. A request that fails is forgotten, so it may be retried.
///
/// `perform` runs inside a database transaction, and the stored response is
/// written in that same transaction: the effect and its record commit or roll
/// back together. A key still `in_flight` after `abandonAfter` therefore never
/// committed anything (its process died) and is taken over.
struct Idempotency: Sendable {
    let database: FolioDatabase
    let clock: AppClock

    static let header = HTTPField.Name("Idempotency-Key")!
    static let lifetime: TimeInterval = 24 * 3600
    static let abandonAfter: TimeInterval = 300

    /// Runs `perform` once per key; its value becomes a JSON response with `status`.
    func run<Value: Encodable>(
        _ request: Request, userID: UUID, status: HTTPResponse.Status, location: @escaping @Sendable (Value) -> String?,
        _ perform: @escaping @Sendable (any Database) async throws -> Value
    ) async throws -> Response where Value: Sendable {
        guard let key = request.headers[Self.header] else {
            let value = try await database.db.transaction { try await perform($0) }
            return Self.response(status: status, location: location(value), body: try FolioJSON.encode(value))
        }
        guard (1...255).contains(key.count), key.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
            throw AppError.validation(field: "Idempotency-Key", code: "invalid", message: "Idempotency-Key must be 1 to 255 visible ASCII characters.")
        }
        let bytes = try await request.body.collect(upTo: .max)
        // The same request in another key order is the same request.
        let canonical = CanonicalJSON.text(of: Data(buffer: bytes)).map { Data($0.utf8) } ?? Data(buffer: bytes)
        let fingerprint = SHA256.hash(data: Data("\(request.method.rawValue) \(request.uri.path)\n".utf8) + canonical)
            .map { String(format: "%02x", $0) }.joined()

        let record: IdempotencyRecord
        do {
            record = try await claim(key: key, userID: userID, fingerprint: fingerprint)
        } catch let replay as Replay {
            return replay.response
        }
        let responseLocation = location
        let encoded: Data
        do {
            encoded = try await database.db.transaction { db in
                let value = try await perform(db)
                let encoded = try FolioJSON.encode(value)
                record.status = "completed"
                record.responseStatus = status.code
                record.responseLocation = responseLocation(value)
                record.responseBody = String(decoding: encoded, as: UTF8.self)
                try await record.save(on: db)
                return encoded
            }
        } catch {
            // Forget the key only if nothing committed (a lost COMMIT acknowledgement leaves it completed).
            try? await IdempotencyRecord.query(on: database.db).filter(\.$id == record.id!).filter(\.$status == "in_flight").delete()
            throw error
        }
        return Self.response(status: status, location: record.responseLocation, body: encoded)
    }

    /// Registers the key as in flight, or answers from what is stored for it.
    private func claim(key: String, userID: UUID, fingerprint: String) async throws -> IdempotencyRecord {
        let now = clock.now()
        for _ in 0..<2 {
            let record = IdempotencyRecord()
            record.id = UUID()
            record.userID = userID
            record.key = key
            record.requestHash = fingerprint
            record.status = "in_flight"
            record.createdAt = now
            record.expiresAt = now.addingTimeInterval(Self.lifetime)
            do {
                try await record.create(on: database.db)
                return record
            } catch let error as any DatabaseError where error.isConstraintFailure {
                guard let existing = try await IdempotencyRecord.query(on: database.db).filter(\.$userID == userID).filter(\.$key == key).first() else { continue }
                if existing.expiresAt <= now || (existing.status == "in_flight" && existing.createdAt < now.addingTimeInterval(-Self.abandonAfter)) {
                    try await existing.delete(on: database.db)
                    continue
                }
                if existing.requestHash != fingerprint {
                    throw AppError(.unprocessableContent, code: "idempotency_key_reused",
                                   detail: "This Idempotency-Key was used with a different request.",
                                   errors: [.init(field: "Idempotency-Key", code: "reused", message: "Use a new key for a different request.")])
                }
                guard existing.status == "completed", let status = existing.responseStatus, let body = existing.responseBody else {
                    throw AppError(.conflict, code: "idempotency_request_in_progress", detail: "A request with this Idempotency-Key is still being processed.")
                }
                throw Replay(response: Self.response(status: HTTPResponse.Status(code: status), location: existing.responseLocation, body: Data(body.utf8)))
            }
        }
        throw AppError(.conflict, code: "idempotency_request_in_progress", detail: "A request with this Idempotency-Key is still being processed.")
    }

    /// Carries a stored response out of `claim`, past `perform`.
    struct Replay: Error {
        let response: Response
    }

    static func response(status: HTTPResponse.Status, location: String?, body: Data) -> Response {
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8", .contentLength: String(body.count)]
        if let location { headers[.location] = location }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}
