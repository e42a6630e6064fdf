import Crypto
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import SQLKit
import Synchronization

/// Unsafe requests that move money accept `Idempotency-Key`: the first
/// response for a key is stored and replayed byte for byte, marked
/// `Idempotent-Replayed: true` (so a client, or the form bridge, can tell a
/// repeat from a new effect); the same key with a
/// different request is 422; while the first is still running, 409. Keys
/// expire after 24 hours. A request that fails is forgotten, so it may be retried.
///
/// The key is claimed first, before anything is priced, so a replay costs no
/// quote or vendor call. `perform` then runs inside a database transaction
/// and the stored response is written in that same transaction: the effect
/// and its record commit or roll back together. A key still `in_flight`
/// therefore committed nothing when its owner is gone, and is taken over:
/// within seconds when the owning instance stopped heartbeating (it was
/// killed), after `abandonAfter` when no heartbeat is known. A key this
/// instance owns but no request of it holds (its failed request could not
/// forget it: the database was briefly gone) is taken over by this instance
/// at once, and forgotten on its next keyed request.
struct Idempotency: Sendable {
    let database: FolioDatabase
    let clock: AppClock
    let ids: IDSource
    /// This instance, recorded as the owner of the keys it claims.
    let instance: String
    var pauses: PausePoints = .none
    /// The claims this instance's requests hold now, and those a failed request could not forget.
    let held = HeldKeys()

    static let header = HTTPField.Name("Idempotency-Key")!
    /// On a response that repeats a stored one: nothing was done again.
    static let replayedHeader = HTTPField.Name("Idempotent-Replayed")!
    static let lifetime: TimeInterval = 24 * 3600
    static let abandonAfter: TimeInterval = 300

    /// Claims the key, runs `prepare` (validation, pricing) outside any
    /// transaction, then `perform` in one; its value becomes a JSON response
    /// with `status`. Without a key, the same steps without the record.
    func run<Prepared: Sendable, Value: Encodable & Sendable>(
        _ request: Request, userID: UserID, status: HTTPResponse.Status, location: @escaping @Sendable (Value) -> String?,
        prepare: @Sendable () async throws -> Prepared,
        perform: @escaping @Sendable (Prepared, any SQLDatabase) async throws -> Value
    ) async throws -> Response {
        let database = self.database
        return try await run(request, userID: userID, status: status, prepare: prepare) { prepared, claim in
            try await database.transaction { db in
                if let claim { try await claim.hold(on: db) }
                let value = try await perform(prepared, db)
                let stored = StoredResponse(body: try FolioJSON.encode(value), location: location(value))
                if let claim { try await db.execute(sql: claim.completion(stored)) { _ in } }
                return stored
            }
        }
    }

    /// The same, for work that opens its own transaction (placements that
    /// share one): `perform` gets the claim (nil without a key), must hold it
    /// and write its completion in that transaction, and returns what it stored.
    func run<Prepared: Sendable>(
        _ request: Request, userID: UserID, status: HTTPResponse.Status,
        prepare: @Sendable () async throws -> Prepared,
        claimed perform: @Sendable (Prepared, IdempotencyClaim?) async throws -> StoredResponse
    ) async throws -> Response {
        guard let key = request.headers[Self.header] else {
            let stored = try await perform(try await prepare(), nil)
            return Self.response(status: status, location: stored.location, body: stored.body)
        }
        guard (1...255).contains(key.count), key.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
            throw FieldIssue(field: "Idempotency-Key", code: "invalid", message: "Idempotency-Key must be 1 to 255 visible ASCII characters.")
        }
        let bytes = try await request.body.collect(upTo: .max)
        // The same request in another key order, or with 1.50 for 1.5, is the same request.
        let body = bytes.withUnsafeReadableBytes { CanonicalJSON.text(of: $0) }.map { Data($0.utf8) } ?? Data(buffer: bytes)
        let fingerprint = AuditChain.hex(SHA256.hash(data: Data("\(request.method.rawValue) \(request.uri.path)\n".utf8) + body))

        await forgetUnreleased()
        let claimed: UUID
        switch try await claim(key: key, userID: userID, fingerprint: fingerprint) {
        case .claimed(let id): claimed = id
        case .replay(let response): return response
        }
        await pauses.reach(.afterIdempotencyClaim)
        do {
            let stored = try await perform(try await prepare(), IdempotencyClaim(id: claimed, status: status))
            held.release(claimed, forgotten: true)
            return Self.response(status: status, location: stored.location, body: stored.body)
        } catch {
            // Forget the key only if nothing committed (a lost COMMIT acknowledgement leaves it completed). When
            // that fails too (the database is gone for a moment), the key is forgotten later: a retry must not
            // wait for this instance to stop.
            let forgotten = (try? await forget([claimed])) != nil
            held.release(claimed, forgotten: forgotten)
            throw error
        }
    }

    private func forget(_ ids: [UUID]) async throws {
        try await database.sql.raw("DELETE FROM idempotency_keys WHERE id IN (\(binds: ids)) AND status = 'in_flight'").run()
    }

    /// Forgets the keys failed requests of this instance could not forget: in one statement, only when there are any.
    private func forgetUnreleased() async {
        let ids = held.unreleased()
        guard !ids.isEmpty, (try? await forget(Array(ids.prefix(500)))) != nil else { return }
        for id in ids.prefix(500) { held.forgotten(id) }
    }

    enum Claim {
        case claimed(UUID)
        case replay(Response)
    }

    /// Registers the key as in flight, or answers from what is stored for it.
    private func claim(key: String, userID: UserID, fingerprint: String) async throws -> Claim {
        let now = clock.now()
        for _ in 0..<3 {
            let id = ids.uuid()
            // Held before it exists: this instance's other requests never take a claim being made for one of its own.
            held.hold(id)
            do {
                try await database.sql.raw("""
                    INSERT INTO idempotency_keys (id, user_id, key, request_hash, status, instance_id, created_at, expires_at)
                    VALUES (\(bind: id), \(bind: userID), \(bind: key), \(bind: fingerprint), 'in_flight', \(bind: instance), \(bind: now),
                            \(bind: now.addingTimeInterval(Self.lifetime)))
                    """).run()
                return .claimed(id)
            } catch where DatabaseConstraint(error)?.kind == .unique {
                held.release(id, forgotten: true)
                guard let existing = try await database.sql.raw("""
                    SELECT id, request_hash, status, response_status, response_location, response_body, created_at, expires_at, instance_id
                    FROM idempotency_keys WHERE user_id = \(bind: userID) AND key = \(bind: key)
                    """).first()
                else { continue }
                let existingID = try existing.decode(column: "id", as: UUID.self)
                if try await takeOver(existingID, now: now) { continue }
                // This instance's key that none of its requests holds: one whose failure could not forget it.
                if try existing.decode(column: "instance_id", as: String?.self) == instance, !held.holds(existingID),
                   try await takeOverOwn(existingID) {
                    held.forgotten(existingID)
                    continue
                }
                if try existing.decode(column: "request_hash", as: String.self) != fingerprint {
                    throw AppError(.unprocessableContent, code: "idempotency_key_reused",
                                   detail: "This Idempotency-Key was used with a different request.",
                                   errors: [.init(field: "Idempotency-Key", code: "reused", message: "Use a new key for a different request.")])
                }
                guard try existing.decode(column: "status", as: String.self) == "completed",
                      let status = try existing.decode(column: "response_status", as: Int?.self),
                      let body = try existing.decode(column: "response_body", as: String?.self)
                else { throw Self.inProgress }
                let location = try existing.decode(column: "response_location", as: String?.self)
                return .replay(Self.response(status: HTTPResponse.Status(code: status), location: location, body: Data(body.utf8), replayed: true))
            } catch {
                // The INSERT may have committed with its answer lost: forgotten later, so no retry meets it in flight.
                held.release(id, forgotten: false)
                throw error
            }
        }
        throw Self.inProgress
    }

    /// Deletes the record when it has expired, or is in flight under an owner
    /// that is gone: its instance stopped heartbeating, or (with no heartbeat
    /// known for it) it is older than `abandonAfter`. An owner with a fresh
    /// heartbeat keeps its key. True when it did, so the key can be claimed afresh.
    private func takeOver(_ id: UUID, now: Date) async throws -> Bool {
        let deadline = now.addingTimeInterval(-Instances.deadAfter)
        let rows = try await database.sql.raw("""
            DELETE FROM idempotency_keys WHERE id = \(bind: id) AND (expires_at <= \(bind: now) OR (status = 'in_flight' AND (
                instance_id IN (SELECT id FROM instances WHERE heartbeat_at < \(bind: deadline))
                OR (created_at < \(bind: now.addingTimeInterval(-Self.abandonAfter))
                    AND (instance_id IS NULL OR instance_id NOT IN (SELECT id FROM instances WHERE heartbeat_at >= \(bind: deadline)))))))
            RETURNING id
            """).all()
        return !rows.isEmpty
    }

    private func takeOverOwn(_ id: UUID) async throws -> Bool {
        !(try await database.sql.raw("""
            DELETE FROM idempotency_keys WHERE id = \(bind: id) AND status = 'in_flight' AND instance_id = \(bind: instance) RETURNING id
            """).all()).isEmpty
    }

    static let inProgress = AppError(
        .conflict, code: "idempotency_request_in_progress", detail: "A request with this Idempotency-Key is still being processed.")

    static func response(status: HTTPResponse.Status, location: String?, body: Data, replayed: Bool = false) -> Response {
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8", .contentLength: String(body.count)]
        if let location { headers[.location] = location }
        if replayed { headers[Self.replayedHeader] = "true" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// A response as an idempotency record stores it and the client gets it: the same bytes.
struct StoredResponse: Sendable {
    var body: Data
    var location: String?
}

/// A claimed key, held and completed inside the transaction that does the work.
struct IdempotencyClaim: Sendable {
    let id: UUID
    let status: HTTPResponse.Status

    /// Holds the claim's row for the whole transaction: a takeover's DELETE
    /// waits for this commit and then finds the key completed. A claim
    /// already taken over commits nothing: 409.
    func hold(on db: any SQLDatabase) async throws {
        guard try await Self.hold([self], on: db).contains(id) else { throw Idempotency.inProgress }
    }

    /// Holds several claims in one statement; the ids still held (a claim taken over is not).
    static func hold(_ claims: [IdempotencyClaim], on db: any SQLDatabase) async throws -> Set<UUID> {
        guard !claims.isEmpty else { return [] }
        let rows = try await db.raw("""
            UPDATE idempotency_keys SET status = 'in_flight' WHERE id IN (\(binds: claims.map(\.id))) AND status = 'in_flight' RETURNING id
            """).all()
        return Set(try rows.map { try $0.decode(column: "id", as: UUID.self) })
    }

    /// The write that completes the claim with the response it stores.
    func completion(_ stored: StoredResponse) -> SQLQueryString {
        """
        UPDATE idempotency_keys SET status = 'completed', response_status = \(bind: Int(status.code)), response_location = \(bind: stored.location),
            response_body = \(bind: String(decoding: stored.body, as: UTF8.self)), instance_id = NULL
        WHERE id = \(bind: id)
        """
    }
}

/// The claims an instance's requests hold, and those a failed request could not forget (kept to forget later).
final class HeldKeys: Sendable {
    private let state = Mutex<(holding: Set<UUID>, unreleased: Set<UUID>)>(([], []))

    func hold(_ id: UUID) { state.withLock { _ = $0.holding.insert(id) } }

    func holds(_ id: UUID) -> Bool { state.withLock { $0.holding.contains(id) } }

    /// The request is done with the claim; `forgotten` false when its record could not be forgotten.
    func release(_ id: UUID, forgotten: Bool) {
        state.withLock { state in
            state.holding.remove(id)
            if !forgotten, state.unreleased.count < 10_000 { state.unreleased.insert(id) }
        }
    }

    func unreleased() -> [UUID] { state.withLock { Array($0.unreleased) } }

    func forgotten(_ id: UUID) { state.withLock { _ = $0.unreleased.remove(id) } }
}
