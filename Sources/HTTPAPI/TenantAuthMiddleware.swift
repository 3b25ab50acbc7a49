import ArtifactStore
import Hummingbird
import Logging
import TenantRouter

/// Resolves `Authorization: Bearer <tenant key>` to its tenant and attaches that
/// tenant's session: unknown or revoked key 401, suspended tenant 403.
struct TenantAuthMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext
    let resolver: TenantKeyResolver
    let pools: TenantPools
    let store: ArtifactStore
    let runQueue: RunQueueSignal

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard let key = request.bearerToken else { throw TenantAccessError.unknownKey }
        let identity = try await resolver.resolve(key: key)
        var context = context
        context.logger[metadataKey: "tenant"] = "\(identity.tenantID)"
        context.tenant = try TenantSession(
            identity: identity, pools: pools, store: store, runQueue: runQueue, logger: context.logger)
        return try await next(request, context)
    }
}
