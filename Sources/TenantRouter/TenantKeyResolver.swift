import ControlPlane
import Core
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// Resolves a bearer key to its tenant, through caches, so the hot path costs
/// a SHA-256 and a dictionary lookup and a flood of bad keys costs no control
/// query.
///
/// - A key without a valid tag (`APIKeyFormat`) is refused before anything
///   else. Keys issued before the tag are looked up only while any of them is
///   live (checked once a minute at most).
/// - Keys that belong to a tenant are cached for `ttl` (1 s): a revoked key, a
///   suspended tenant or a moved database takes effect within that long.
/// - Keys the control database does not know are cached apart, for
///   `unknownTTL`, in a bounded table of their own, so no flood of them can
///   push the valid keys out.
public final class TenantKeyResolver: Sendable {
    private struct Known: Sendable {
        let tenantID: String
        let outcome: Result<TenantIdentity, TenantAccessError>
        let expires: ContinuousClock.Instant
    }

    private struct UnsignedKeys {
        var live = true
        var checked: ContinuousClock.Instant?
    }

    private let control: ControlPool
    private let secrets: SecretBox
    private let format: APIKeyFormat
    private let ttl: Duration
    private let unknownTTL: Duration
    private let logger: Logger
    private let known = Mutex<[Data: Known]>([:])
    private let unknown = Mutex<[Data: ContinuousClock.Instant]>([:])
    private let unsignedKeys = Mutex(UnsignedKeys())
    private let capacity: Int
    private let unknownCapacity: Int
    static let unsignedKeysRecheck: Duration = .seconds(60)

    public init(
        control: ControlPool, secrets: SecretBox, format: APIKeyFormat, ttl: Duration = .seconds(1),
        unknownTTL: Duration = .seconds(10), capacity: Int = 50_000, unknownCapacity: Int = 10_000, logger: Logger
    ) {
        self.control = control
        self.secrets = secrets
        self.format = format
        self.ttl = ttl
        self.unknownTTL = unknownTTL
        self.capacity = capacity
        self.unknownCapacity = unknownCapacity
        self.logger = logger
    }

    /// The key's tenant. `admit` runs first for a key not known to belong to a
    /// tenant (it may refuse a client that failed too often); a key that is
    /// not one is `.unknownKey`.
    public func resolve(
        key: String, admit: () throws(TenantAccessError) -> Void = {}
    ) async throws -> TenantIdentity {
        let digest = APIKeyHash.digest(key)
        let now = ContinuousClock.now
        let hit = known.withLock { $0[digest] }
        if let hit, hit.expires > now { return try hit.outcome.get() }
        // A key that belonged to a tenant a moment ago is looked up again
        // whatever the client's failures: a tenant sharing an address with
        // someone guessing keys keeps working.
        if hit == nil { try admit() }
        let shape = format.shape(of: key)
        guard shape != .invalid else { throw TenantAccessError.unknownKey }
        if let until = unknown.withLock({ $0[digest] }), until > now { throw TenantAccessError.unknownKey }
        if shape == .unsigned, !(await unsignedKeysMayBeLive(now)) { throw TenantAccessError.unknownKey }
        guard let (tenantID, outcome) = try await lookUp(digest) else {
            known.withLock { _ = $0.removeValue(forKey: digest) }
            remember(unknown: digest, now: now)
            throw TenantAccessError.unknownKey
        }
        let entry = Known(tenantID: tenantID, outcome: outcome, expires: now.advanced(by: ttl))
        known.withLock { entries in
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
        known.withLock { entries in entries = entries.filter { $0.value.tenantID != tenantID } }
    }

    private func remember(unknown digest: Data, now: ContinuousClock.Instant) {
        unknown.withLock { entries in
            if entries.count >= unknownCapacity {
                entries = entries.filter { $0.value > now }
                if entries.count >= unknownCapacity { entries.removeAll(keepingCapacity: true) }
            }
            entries[digest] = now.advanced(by: unknownTTL)
        }
    }

    /// Whether keys issued before the tag may still be live. The answer is
    /// rechecked once a minute at most; while a check runs, or if it fails, the
    /// last answer holds (at first: live).
    private func unsignedKeysMayBeLive(_ now: ContinuousClock.Instant) async -> Bool {
        let (live, due) = unsignedKeys.withLock { state -> (Bool, Bool) in
            let due = state.checked.map { now - $0 >= Self.unsignedKeysRecheck } ?? true
            if due { state.checked = now }
            return (state.live, due)
        }
        guard due else { return live }
        do {
            let answer = try await control.run { try await $0.hasLiveUnsignedKeys() }
            unsignedKeys.withLock { $0.live = answer }
            return answer
        } catch {
            logger.warning("could not check for untagged API keys", metadata: ["error": "\(String(reflecting: error))"])
            return live
        }
    }

    /// The key's tenant and what serving it comes to, or nil if no live key
    /// has this digest.
    private func lookUp(_ digest: Data) async throws -> (String, Result<TenantIdentity, TenantAccessError>)? {
        let holder: APIKeyHolder?
        do {
            holder = try await control.run { try await $0.apiKeyHolder(digest: digest) }
        } catch {
            logger.warning("tenant key lookup failed", metadata: ["error": "\(String(reflecting: error))"])
            throw TenantAccessError.controlUnavailable
        }
        // The row was found by its hash; comparing again in constant time keeps
        // the decision itself independent of where two digests differ.
        guard let holder, ConstantTime.equal(holder.keyHash, digest) else { return nil }
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
