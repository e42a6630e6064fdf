import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers

/// Remembers which methods each route path answers, so that a request with the
/// wrong method gets 405 with an `Allow` header instead of 404. Every GET
/// route answers HEAD too, so `Allow` lists it.
public final class RouteTable: Sendable {
    private let entries = NIOLockedValueBox<[(path: RouterPath, methods: Set<HTTPRequest.Method>)]>([])

    public init() {}

    func record(_ path: RouterPath, method: HTTPRequest.Method) {
        entries.withLockedValue { routes in
            if let index = routes.firstIndex(where: { $0.path == path }) {
                routes[index].methods.insert(method)
            } else {
                routes.append((path, [method]))
            }
        }
    }

    /// Every route as registered (`/api/orders/:id`) with its methods: what the
    /// hostile-request fuzz test generates requests from.
    public var routes: [(path: String, methods: [HTTPRequest.Method])] {
        entries.withLockedValue { routes in routes.map { ($0.path.description, $0.methods.sorted { $0.rawValue < $1.rawValue }) } }
    }

    /// Methods registered for a concrete request path, sorted; empty when no route matches.
    public func allowedMethods(for path: String) -> [HTTPRequest.Method] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        let methods = entries.withLockedValue { routes in
            routes.filter { Self.matches($0.path, segments) }.reduce(into: Set<HTTPRequest.Method>()) { $0.formUnion($1.methods) }
        }
        var allowed = methods
        if allowed.contains(.get) { allowed.insert(.head) }
        return allowed.sorted { $0.rawValue < $1.rawValue }
    }

    private static func matches(_ pattern: RouterPath, _ segments: [Substring]) -> Bool {
        let elements = pattern.components
        if elements.last == .recursiveWildcard {
            guard segments.count >= elements.count - 1 else { return false }
        } else if elements.count != segments.count {
            return false
        }
        for (element, segment) in zip(elements, segments) where element != .recursiveWildcard {
            if !(element ~= segment) { return false }
        }
        return true
    }
}

/// A router front that records every route it registers in a `RouteTable`.
public struct RecordingRouter<Context: RequestContext>: RouterMethods {
    public let router: Router<Context>
    public let table: RouteTable
    let prefix: RouterPath

    public init(router: Router<Context>, table: RouteTable, prefix: RouterPath = "") {
        self.router = router
        self.table = table
        self.prefix = prefix
    }

    @discardableResult
    public func on<Responder: HTTPResponder>(_ path: RouterPath, method: HTTPRequest.Method, responder: Responder) -> Self
    where Responder.Context == Context {
        table.record(prefix.appendingPath(path), method: method)
        router.on(prefix.appendingPath(path), method: method, responder: responder)
        // HEAD wherever GET is answered (RFC 9110 9.3.2): the same handler, and NIO's encoder sends no body.
        if method == .get { router.on(prefix.appendingPath(path), method: .head, responder: responder) }
        return self
    }

    @discardableResult
    public func add(middleware: any MiddlewareProtocol<Request, Response, Context>) -> Self {
        router.add(middleware: middleware)
        return self
    }
}
