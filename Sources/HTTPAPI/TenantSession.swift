import ArtifactStore
import ControlPlane
import Core
import Logging
import PostgresNIO
import TenantData
import TenantRouter

/// What a tenant request's handler gets: its own tenant's database (through the
/// router), its own corner of the artifact store, and a way to wake the run
/// engine for its own runs. It holds no way to name another tenant: the
/// identity came from the API key, not from the request.
struct TenantSession: Sendable {
    private let identity: TenantIdentity
    private let pools: TenantPools
    private let runQueue: RunQueueSignal
    let artifacts: TenantArtifacts
    let logger: Logger

    init(identity: TenantIdentity, pools: TenantPools, store: ArtifactStore, runQueue: RunQueueSignal, logger: Logger)
        throws
    {
        self.identity = identity
        self.pools = pools
        self.runQueue = runQueue
        self.artifacts = try store.tenant(identity.tenantID)
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

    /// Makes runs pending (`change`) with the tenant marked in the run queue
    /// before and after. Before: an unreachable control database fails the
    /// request before anything changes. After: a worker that read the first
    /// mark and found nothing yet must not take the mark away from the new run
    /// (it only removes a mark no newer than the one it read).
    func queueingRuns<Result: Sendable>(_ change: () async throws -> Result) async throws -> Result {
        try await runQueue.signal(identity.tenantID)
        let result = try await change()
        // The change is made and will be acknowledged: keep trying the second
        // mark through a control database restart (a few seconds).
        for attempt in 1...10 {
            do {
                try await runQueue.signal(identity.tenantID)
                break
            } catch {
                guard attempt < 10 else {
                    logger.error(
                        "could not mark the tenant in the run queue again; its new run waits for the next mark",
                        metadata: ["error": "\(OperatorFailure(error).message)"])
                    break
                }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        return result
    }
}

/// Marks a tenant in the control database's run queue.
struct RunQueueSignal: Sendable {
    let control: ControlAccess

    func signal(_ tenantID: String) async throws {
        try await control.run { try await $0.enqueueRuns(of: tenantID) }
    }
}

extension APIRequestContext {
    /// The session the tenant middleware attached; routes under `/v1` always have one.
    func requireTenant() throws -> TenantSession {
        guard let tenant else { throw TenantAccessError.unknownKey }
        return tenant
    }
}
