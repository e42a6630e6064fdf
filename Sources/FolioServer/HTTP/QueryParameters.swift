import Foundation
import Hummingbird

/// The query parameters each route of the API takes, by method, read from the
/// OpenAPI document, so what is refused and what is documented cannot drift
/// apart. A parameter a route does not take is refused (422 `unknown`), never
/// ignored: a misspelt filter (`?stauts=filled`) would otherwise answer every
/// row, as if the list held only what was asked for, and a misspelt filter of
/// `DELETE /api/orders` (`?symbl=AAPL`) would cancel every open order.
/// A parameter given twice is refused too (422 `duplicate`): each takes one
/// value, and `?status=filled&status=canceled` would otherwise answer the
/// filled orders alone, as if none had been canceled.
struct QueryParameters: Sendable {
    /// By method and route pattern with its captures blanked (`GET /api/accounts/{}/targets`).
    private let byRoute: [String: Set<String>]

    static let methods = ["get", "put", "post", "delete", "patch"]

    init(_ document: [String: Any]) {
        var byRoute: [String: Set<String>] = [:]
        let components = (document["components"] as? [String: Any])?["parameters"] as? [String: Any] ?? [:]
        // The liveness check answers whatever it is asked with (a monitor's cache-buster, say), as `/health` does.
        for (path, item) in document["paths"] as? [String: Any] ?? [:] where path.hasPrefix("/api/") && path != "/api/health" {
            guard let item = item as? [String: Any] else { continue }
            for method in Self.methods {
                guard let operation = item[method] as? [String: Any] else { continue }
                let declared = (item["parameters"] as? [Any] ?? []) + (operation["parameters"] as? [Any] ?? [])
                var names = Set<String>()
                for case var parameter as [String: Any] in declared {
                    if let reference = parameter["$ref"] as? String, let resolved = components[String(reference.split(separator: "/").last ?? "")] as? [String: Any] {
                        parameter = resolved
                    }
                    if parameter["in"] as? String == "query", let name = parameter["name"] as? String { names.insert(name) }
                }
                byRoute[Self.key(method, path)] = names
            }
        }
        self.byRoute = byRoute
    }

    /// The names in the request's query that its route does not take, each once, in the order given;
    /// empty for a route the document does not describe (pages, health checks, metrics).
    func unknown(in request: Request, route: String?) -> [String] {
        guard let query = request.uri.query, !query.isEmpty, let route, let allowed = byRoute[Self.key(Self.method(request), route)] else { return [] }
        var seen = Set<String>()
        // Names decoded as the handlers read them (`FormQuery`): `account%5Fid` is `account_id`; `?&limit=5` names nothing more.
        // A name whose escapes are not UTF-8 (`%ZZ=1`), which the handlers never see, is refused as written, and so is
        // a value without a name (`?=1`): neither is a parameter the route takes.
        let names = query.split(separator: "&", omittingEmptySubsequences: true).map { pair -> String in
            let name = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0]
            return FormQuery.decode(name) ?? String(name)
        }
        return names.filter { !allowed.contains($0) && seen.insert($0).inserted }
    }

    /// The names the route takes that the query gives more than once, each once, in the order given.
    func repeated(in request: Request, route: String?) -> [String] {
        guard let query = request.uri.query, query.contains("&"), let route, let allowed = byRoute[Self.key(Self.method(request), route)] else { return [] }
        var seen = Set<String>(), named = Set<String>()
        return FormQuery.pairs(query).map(\.0).filter { allowed.contains($0) && !seen.insert($0).inserted && named.insert($0).inserted }
    }

    /// What the route takes, for the refusal's message.
    func allowed(in request: Request, route: String) -> [String] {
        (byRoute[Self.key(Self.method(request), route)] ?? []).sorted()
    }

    /// HEAD is answered as GET.
    static func method(_ request: Request) -> String {
        request.method == .head ? "get" : request.method.rawValue.lowercased()
    }

    static func key(_ method: String, _ path: String) -> String {
        method + " " + blanked(path)
    }

    /// The pattern with each capture's name left out, so the document's and the router's names need not agree.
    static func blanked(_ pattern: String) -> String {
        guard pattern.contains("{") else { return pattern }
        var blanked = "", inCapture = false
        for character in pattern {
            if character == "{" { inCapture = true; blanked.append("{") }
            else if character == "}" { inCapture = false; blanked.append("}") }
            else if !inCapture { blanked.append(character) }
        }
        return blanked
    }
}
