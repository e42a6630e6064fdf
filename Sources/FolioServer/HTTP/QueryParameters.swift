import Foundation
import Hummingbird

/// The query parameters each GET route of the API takes, read from the OpenAPI
/// document, so what is refused and what is documented cannot drift apart. A
/// parameter a route does not take is refused (422 `unknown`), never ignored:
/// a misspelt filter (`?stauts=filled`) would otherwise answer every row, as
/// if the list held only what was asked for.
struct QueryParameters: Sendable {
    /// By route pattern with its captures blanked (`/api/accounts/{}/targets`).
    private let byRoute: [String: Set<String>]

    init(_ document: [String: Any]) {
        var byRoute: [String: Set<String>] = [:]
        let components = (document["components"] as? [String: Any])?["parameters"] as? [String: Any] ?? [:]
        for (path, item) in document["paths"] as? [String: Any] ?? [:] where path.hasPrefix("/api/") {
            guard let item = item as? [String: Any], let get = item["get"] as? [String: Any] else { continue }
            let declared = (item["parameters"] as? [Any] ?? []) + (get["parameters"] as? [Any] ?? [])
            var names = Set<String>()
            for case var parameter as [String: Any] in declared {
                if let reference = parameter["$ref"] as? String, let resolved = components[String(reference.split(separator: "/").last ?? "")] as? [String: Any] {
                    parameter = resolved
                }
                if parameter["in"] as? String == "query", let name = parameter["name"] as? String { names.insert(name) }
            }
            byRoute[Self.blanked(path)] = names
        }
        self.byRoute = byRoute
    }

    /// The names in the request's query that its route does not take, each once, in the order given;
    /// empty for a route the document does not describe (pages, health checks, metrics).
    func unknown(in request: Request, route: String?) -> [String] {
        guard let query = request.uri.query, !query.isEmpty, let route, let allowed = byRoute[Self.blanked(route)] else { return [] }
        var seen = Set<String>()
        return request.uri.queryParameters.map { String($0.key) }.filter { !allowed.contains($0) && seen.insert($0).inserted }
    }

    /// What the route takes, for the refusal's message.
    func allowed(route: String) -> [String] {
        (byRoute[Self.blanked(route)] ?? []).sorted()
    }

    static func blanked(_ pattern: String) -> String {
        pattern.replacing(/\{[^}]*\}/, with: "{}")
    }
}
