import ControlPlane
import Core
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// Resolves a bearer key to its tenant through a short-lived cache, so the hot
/// path costs a SHA-256 and a dictionary lookup. Entries live `ttl` (1 s by
/// default): a revoked key, a suspended tenant or a moved database takes effect
/// within that long. Unknown keys are cached too, so a flood of bad keys does
/// not become a flood of control queries.
public final class TenantKeyResolver: Sendable {
    private struct Cached: Sendable {
        let tenantID: String?
        let outcome: Result<TenantIdentity, TenantAccessError>
        let expires: ContinuousClock.Instant
    }

    private let control: ControlPool
    private let secrets: SecretBox
    private let ttl: Duration
    private let logger: Logger
    private let cache = Mutex<[Data: Cached]>([:])
    private let capacity: Int

    public init(
        control: ControlPool, secrets: SecretBox, ttl: Duration = .seconds(1), capacity: Int = 50_000,
        logger: Logger
    ) {
        self.control = control
        self.secrets = secrets
        self.ttl = ttl
        self.capacity = capacity
        self.logger = logger
    }

    public func resolve(key: String) async throws -> TenantIdentity {
        let digest = APIKeyHash.digest(key)
        let now = ContinuousClock.now
        if let hit = cache.withLock({ $0[digest] }), hit.expires > now {
            return try hit.outcome.get()
        }
        let (tenantID, outcome) = try await lookUp(digest)
        let entry = Cached(tenantID: tenantID, outcome: outcome, expires: now.advanced(by: ttl))
        cache.withLock { entries in
            if entries.count >= capacity {
                entries = entries.filter { $0.value.expires > now }
                if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            }
            entries[digest] = entry
        }
        return try outcome.get()
    }

    /// Drops what is cached for a tenant whose keys or status this process just
    /// changed, so the change holds here at once rather than within `ttl`.
    public func forget(tenantID: String) {
        cache.withLock { entries in entries = entries.filter { $0.value.tenantID != tenantID } }
    }

    private func lookUp(_ digest: Data) async throws -> (String?, Result<TenantIdentity, TenantAccessError>) {
        let holder: APIKeyHolder?
        do {
            holder = try await control.run { try await $0.apiKeyHolder(digest: digest) }
        } catch {
            logger.warning("tenant key lookup failed", metadata: ["error": "\(String(reflecting: error))"])
            throw TenantAccessError.controlUnavailable
        }
        // The row was found by its hash; comparing again in constant time keeps
        // the decision itself independent of where two digests differ.
        guard let holder, ConstantTime.equal(holder.keyHash, digest) else { return (nil, .failure(.unknownKey)) }
        let tenantID = holder.tenant.tenantID
        do throws(TenantAccessError) {
            return (tenantID, .success(try TenantIdentity(serving: holder.tenant, keyID: holder.keyID, secrets: secrets)))
        } catch {
            if error == .databaseUnavailable {
                logger.error("tenant has an unreadable database_url or role password", metadata: ["tenant": "\(tenantID)"])
            }
            return (tenantID, .failure(error))
        }
    }
}
