import ArtifactStore
import Hummingbird
import Logging
import Prometheus
import TenantRouter

/// Resolves `Authorization: Bearer <tenant key>` to its tenant and attaches that
/// tenant's session: unknown or revoked key 401, suspended tenant 403, and 429
/// for a client address that failed too often (`AuthFailureLimiter`).
struct TenantAuthMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext
    let resolver: TenantKeyResolver
    let limiter: AuthFailureLimiter
    let proxies: TrustedProxies
    let pools: TenantPools
    let store: ArtifactStore
    let runQueue: RunQueueSignal
    let failures: AuthFailureMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let client = { proxies.client(peer: context.peer, forwardedFor: request.headers[values: .xForwardedFor]) }
        let identity: TenantIdentity
        do {
            guard let key = request.bearerToken else { throw TenantAccessError.unknownKey }
            identity = try await resolver.resolve(key: key) { () throws(TenantAccessError) in
                try limiter.admit(client())
            }
        } catch TenantAccessError.unknownKey {
            failures.unknownKey.increment()
            limiter.recordFailure(client())
            throw TenantAccessError.unknownKey
        } catch let error as TenantAccessError {
            if case .tooManyFailures = error {
                failures.limited.increment()
                // Answered after a pause: a client over its limit then gets
                // one answer a second per connection, instead of spending our
                // CPU as fast as it can ask (a connection held meanwhile costs
                // a sleeping task, and TENANTPLANE_MAX_CONNECTIONS caps those).
                try? await Task.sleep(for: AuthFailureLimiter.refusalPause)
            }
            throw error
        }
        var context = context
        context.logger[metadataKey: "tenant"] = "\(identity.tenantID)"
        context.tenant = try TenantSession(
            identity: identity, pools: pools, store: store, runQueue: runQueue, logger: context.logger)
        return try await next(request, context)
    }
}

/// Failed tenant authentications, without any label a client chooses.
struct AuthFailureMetrics: Sendable {
    let unknownKey: Counter
    let limited: Counter

    init(registry: PrometheusCollectorRegistry) {
        let name = "tenantplane_auth_failures_total"
        let help = "Tenant requests refused before reaching a tenant: a key that is not one (401), or an address over its failure limit (429)"
        unknownKey = registry.makeCounter(name: name, labels: [("reason", "unknown_key")], help: help)
        limited = registry.makeCounter(name: name, labels: [("reason", "rate_limited")], help: help)
    }
}
