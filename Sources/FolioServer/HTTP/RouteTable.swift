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
    /// Only the most specific patterns count, as the router dispatches: `/api/links/holdings`
    /// answers GET, not the DELETE of `/api/links/:id` that also matches it.
    public func allowedMethods(for path: String) -> [HTTPRequest.Method] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        let methods = entries.withLockedValue { routes in
            let matching = routes.filter { Self.matches($0.path, segments) }
            guard let best = matching.map({ Self.specificity($0.path) }).max(by: { $0.lexicographicallyPrecedes($1) }) else { return Set<HTTPRequest.Method>() }
            return matching.filter { Self.specificity($0.path) == best }.reduce(into: Set<HTTPRequest.Method>()) { $0.formUnion($1.methods) }
        }
        var allowed = methods
        if allowed.contains(.get) { allowed.insert(.head) }
        return allowed.sorted { $0.rawValue < $1.rawValue }
    }

    /// Per segment: a literal beats a partial capture (`{id}.json`), which beats a capture, which beats a wildcard.
    private static func specificity(_ pattern: RouterPath) -> [Int] {
        pattern.components.map { element in
            let text = element.description
            if text == "**" || text == "*" { return 0 }
            if text.hasPrefix(":") || (text.hasPrefix("{") && text.hasSuffix("}")) { return 1 }
            if text.contains("*") || text.contains("{") || text.contains(":") { return 2 }
            return 3
        }
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
