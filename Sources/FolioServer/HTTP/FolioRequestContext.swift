import FolioDomain
import Foundation
import Synchronization
import HTTPTypes
import Hummingbird
import NIOFoundationCompat

/// The request context of every Folio route: the request id for logs and
/// errors, the client's address, and who is signed in, if anyone.
public struct FolioRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var requestID: String
    /// The socket peer's address.
    public let peerAddress: String?
    /// The client's address: the peer, or what a trusted proxy says it forwarded for.
    public var clientIP: String?
    /// Set by `AuthenticationMiddleware` when valid credentials came with the request.
    var identity: Identity?
    /// The API request a no-JavaScript form (`/form`) stands for: the form itself was counted against the
    /// address's general rate limit, so this one is not counted there again (the sign-in limit still applies).
    var forwardedFromForm = false
    /// Shared by every copy of this context: what inner middleware learn and outer ones report (an error report's user).
    let facts = RequestFacts()

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.requestID = ""
        self.peerAddress = source.channel.remoteAddress?.ipAddress
        self.clientIP = peerAddress
        self.identity = nil
    }

    /// The body size limit is enforced by `RequestBodyMiddleware` before any
    /// handler decodes; this only keeps the framework from allowing more.
    public var maxUploadSize: Int { 100 * 1024 * 1024 }

    public var requestDecoder: FolioJSONDecoder { FolioJSONDecoder() }
    public var responseEncoder: FolioJSONEncoder { FolioJSONEncoder() }
}

/// Decodes request bodies with Folio's own JSON reader: snake_case keys,
/// numbers kept as their exact text for the money types (never `Double` or
/// `Decimal`), duplicate keys refused (400 `malformed_json`).
public struct FolioJSONDecoder: RequestDecoder {
    public func decode<T: Decodable>(_ type: T.Type, from request: Request, context: some RequestContext) async throws -> T {
        let buffer = try await request.body.collect(upTo: context.maxUploadSize)
        let value = try buffer.withUnsafeReadableBytes { bytes in try JSONValue.parse(bytes) }
        return try JSONValueDecoder().decode(T.self, from: value)
    }
}

/// Encodes responses with RFC 3339 UTC timestamps.
public struct FolioJSONEncoder: ResponseEncoder {
    public func encode(_ value: some Encodable, from request: Request, context: some RequestContext) throws -> Response {
        var buffer = ByteBuffer()
        if let writable = value as? any JSONWritable {
            var json = JSONWriter()
            writable.write(to: &json)
            buffer.writeBytes(json.bytes)
        } else {
            buffer.writeBytes(try FolioJSON.encode(value))
        }
        return Response(
            status: .ok,
            headers: [.contentType: "application/json; charset=utf-8", .contentLength: String(buffer.readableBytes)],
            body: .init(byteBuffer: buffer))
    }
}

enum FolioJSON {
    /// One encoder for every response: configured once, never changed, and
    /// safe to share (creating one per response showed in profiles).
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        // Swift names become snake_case keys; a key spelled out in CodingKeys stays as written.
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    static func encode(_ value: some Encodable) throws -> Data {
        try encoder.encode(value)
    }
}

extension Request {
    /// Decodes the JSON body. Unlike Hummingbird's `decode`, decoding errors are
    /// passed on as they are, so the problem response can name the field (422)
    /// or say the JSON is malformed (400). Unknown keys are ignored, never bound.
    public func decodeBody<T: Decodable>(as type: T.Type, context: some RequestContext) async throws -> T {
        try await FolioJSONDecoder().decode(type, from: self, context: context)
    }
}

/// Facts about a request that an outer middleware reads after an inner one
/// learned them (contexts are values: a copy changed inside is not seen outside).
final class RequestFacts: Sendable {
    private let signedIn = Mutex<Identity?>(nil)

    /// Who is signed in, once `AuthenticationMiddleware` knows them.
    var identity: Identity? {
        get { signedIn.withLock { $0 } }
        set { signedIn.withLock { $0 = newValue } }
    }

    var userID: UserID? { identity?.userID }
}
