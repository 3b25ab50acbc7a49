import Core
import Logging
import PostgresNIO
import TenantData
import TenantRouter

/// What a tenant request's handler gets: its own tenant's database (through the
/// router) and its own storage directory. It holds no way to name another
/// tenant: the identity came from the API key, not from the request.
struct TenantSession: Sendable {
    private let identity: TenantIdentity
    private let pools: TenantPools
    let storageRoot: String
    let logger: Logger

    init(identity: TenantIdentity, pools: TenantPools, storage: String, logger: Logger) {
        self.identity = identity
        self.pools = pools
        self.storageRoot = storage + "/" + identity.tenantID
        self.logger = logger
    }

    func withStore<Result: Sendable>(_ body: @Sendable @escaping (TenantStore) async throws -> Result) async throws
        -> Result
    {
        let actor = "key:" + identity.keyID
        let logger = self.logger
        return try await pools.withConnection(for: identity) { connection in
            try await body(TenantStore(connection: connection, actor: actor, logger: logger))
        }
    }
}

extension APIRequestContext {
    /// The session the tenant middleware attached; routes under `/v1` always have one.
    func requireTenant() throws -> TenantSession {
        guard let tenant else { throw TenantAccessError.unknownKey }
        return tenant
    }
}
