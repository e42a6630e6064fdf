import Hummingbird

/// Counts every request by route pattern, method and status, and times it.
/// It sits outermost, so refusals by the rate limiter and problem answers are counted as they leave.
struct MetricsMiddleware: RouterMiddleware {
    typealias Context = FolioRequestContext
    let metrics: FolioMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        do {
            let response = try await next(request, context)
            metrics.recordRequest(
                route: context.endpointPath, method: request.method.rawValue, status: Int(response.status.code), duration: ContinuousClock.now - start)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            metrics.recordRequest(route: context.endpointPath, method: request.method.rawValue, status: Int(status), duration: ContinuousClock.now - start)
            throw error
        }
    }
}
