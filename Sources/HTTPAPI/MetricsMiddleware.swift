import Hummingbird
import Prometheus

/// Counts every request by route, method and status and times it by route.
/// The route is the matched pattern (`/v1/runs/{id}`), never the raw path, so
/// ids and tenant names do not become label values.
struct MetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let registry: PrometheusCollectorRegistry

    static var buckets: [Duration] {
        [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10].map {
            .nanoseconds(Int64($0 * 1_000_000_000))
        }
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let started = ContinuousClock.now
        let response: Response
        do {
            response = try await next(request, context)
        } catch {
            record(request, context, status: APIErrorBody(error).status.code, since: started)
            throw error
        }
        record(request, context, status: response.status.code, since: started)
        return response
    }

    private func record(_ request: Request, _ context: Context, status: Int, since started: ContinuousClock.Instant) {
        let route = context.endpointPath ?? "unmatched"
        registry.makeCounter(
            name: "tenantplane_http_requests_total",
            labels: [("route", route), ("method", request.method.rawValue), ("status", String(status))],
            help: "HTTP requests by route pattern, method and status"
        ).increment()
        registry.makeDurationHistogram(
            name: "tenantplane_http_request_duration_seconds", labels: [("route", route)], buckets: Self.buckets,
            help: "HTTP request latency by route pattern"
        ).record(ContinuousClock.now - started)
    }
}
