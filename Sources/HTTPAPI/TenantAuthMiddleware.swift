import Hummingbird
import Logging
import TenantRouter

/// Resolves `Authorization: Bearer <tenant key>` to its tenant and attaches that
/// tenant's session: unknown or revoked key 401, suspended tenant 403.
struct TenantAuthMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext
    let resolver: TenantKeyResolver
    let pools: TenantPools
    let storageRoot: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard let key = request.bearerToken else { throw TenantAccessError.unknownKey }
        let identity = try await resolver.resolve(key: key)
        var context = context
        context.logger[metadataKey: "tenant"] = "\(identity.tenantID)"
        context.tenant = TenantSession(identity: identity, pools: pools, storage: storageRoot, logger: context.logger)
        return try await next(request, context)
    }
}
