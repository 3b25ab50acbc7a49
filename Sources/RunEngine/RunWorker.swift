import ArtifactStore
import ControlPlane
import Core
import Foundation
import LLMProviders
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization
import TenantData
import TenantRouter

/// Finds tenants with queued runs and executes their runs, at most
/// `concurrency` at once. Several processes may run workers against the same
/// databases: claims use `FOR UPDATE SKIP LOCKED` and leases, so each run has
/// one worker at a time and a crashed worker's run is taken over when its lease
/// ends. On graceful shutdown it stops claiming, cancels what it runs and gives
/// the leases back at once, so another process resumes those runs right away.
public final class RunWorker: Service, Sendable {
    public struct Options: Sendable {
        public var concurrency: Int
        public var lease: Duration
        public var poll: Duration
        public var providerTimeout: Duration
        public var providerRetries: Int
        /// A provider's API key by provider id.
        public var providerKey: @Sendable (String) -> String?

        public init(
            concurrency: Int, lease: Duration, poll: Duration, providerTimeout: Duration, providerRetries: Int,
            providerKey: @escaping @Sendable (String) -> String?
        ) {
            self.concurrency = concurrency
            self.lease = lease
            self.poll = poll
            self.providerTimeout = providerTimeout
            self.providerRetries = providerRetries
            self.providerKey = providerKey
        }
    }

    private let options: Options
    private let control: ControlPool
    private let directory: TenantDirectory
    private let pools: TenantPools
    private let store: ArtifactStore
    private let gateway: LLMGateway
    private let owner: String
    private let logger: Logger
    /// Lanes working on each tenant here, and tenants to leave alone until a
    /// time unless queued again meanwhile (their unfinished runs are leased).
    private let busy = Mutex<Lanes>(Lanes())

    private struct Lanes {
        var working: [String: Int] = [:]
        var resting: [String: (until: ContinuousClock.Instant, mark: Int64)] = [:]
    }

    /// Lanes one tenant may take at once: its runs execute in parallel, yet a
    /// busy tenant leaves lanes for the others.
    private var lanesPerTenant: Int { max(1, options.concurrency / 2) }

    public init(
        options: Options, control: ControlPool, directory: TenantDirectory, pools: TenantPools,
        store: ArtifactStore, gateway: LLMGateway, logger: Logger
    ) {
        self.options = options
        self.control = control
        self.directory = directory
        self.pools = pools
        self.store = store
        self.gateway = gateway
        self.owner = Self.makeOwnerName()
        self.logger = logger
    }

    /// `host:pid:random`, so a lease names the process holding it.
    static func makeOwnerName() -> String {
        "\(ProcessInfo.processInfo.hostName.prefix(40)):\(ProcessInfo.processInfo.processIdentifier):\(UInt32.random(in: 0...UInt32.max))"
    }

    public func run() async throws {
        guard options.concurrency > 0 else {
            // Execution is left to other processes; stay up with the rest.
            try? await gracefulShutdown()
            return
        }
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                for _ in 0..<self.options.concurrency {
                    group.addTask { await self.lane() }
                }
            }
        }
        await releaseLeases()
    }

    /// One of `concurrency` loops: take a queued tenant with a lane to spare,
    /// execute its runs, repeat; sleep `poll` when there is none.
    private func lane() async {
        while !Task.isCancelled {
            let entry: (tenantID: String, mark: Int64)?
            do {
                entry = try await nextTenant()
            } catch {
                // The control database is down or not migrated: say so, and
                // ask again in a second rather than at every poll.
                logger.warning("cannot read the run queue", metadata: ["error": "\(OperatorFailure(error).message)"])
                try? await Task.sleep(for: max(options.poll, .seconds(1)))
                continue
            }
            guard let entry else {
                try? await Task.sleep(for: options.poll)
                continue
            }
            await work(on: entry.tenantID, mark: entry.mark)
            busy.withLock { lanes in
                lanes.working[entry.tenantID, default: 1] -= 1
                if lanes.working[entry.tenantID] == 0 { lanes.working[entry.tenantID] = nil }
            }
        }
    }

    private func nextTenant() async throws -> (tenantID: String, mark: Int64)? {
        let queued = try await control.run { try await $0.queuedTenants(limit: 64) }
        let now = ContinuousClock.now
        let limit = lanesPerTenant
        return busy.withLock { lanes in
            lanes.resting = lanes.resting.filter { $0.value.until > now }
            guard
                let entry = queued.first(where: { entry in
                    // A tenant queued again since it was set aside is taken at once.
                    let resting = lanes.resting[entry.tenantID].map { $0.mark == entry.mark } ?? false
                    return !resting && lanes.working[entry.tenantID, default: 0] < limit
                })
            else { return nil }
            lanes.working[entry.tenantID, default: 0] += 1
            return entry
        }
    }

    /// Executes the tenant's claimable runs one after another, then takes the
    /// tenant off the queue if nothing is left (unless it was queued again).
    private func work(on tenantID: String, mark: Int64) async {
        do {
            let tenant = try await directory.identity(of: tenantID, actor: "worker")
            let artifacts = try store.tenant(tenantID)
            let executor = RunExecutor(
                tenant: tenant, artifacts: artifacts, pools: pools, control: control, gateway: gateway,
                providerKey: options.providerKey, providerTimeout: options.providerTimeout,
                retriesPerCall: options.providerRetries, owner: owner, logger: logger)
            let owner = self.owner
            let lease = options.lease
            while !Task.isCancelled {
                guard let run = try await executor.store({ try await $0.claimRun(owner: owner, lease: lease) }) else {
                    break
                }
                var runLogger = logger
                runLogger[metadataKey: "tenant"] = "\(tenantID)"
                runLogger[metadataKey: "run"] = "\(run.id)"
                runLogger.debug("run claimed")
                defer { runLogger.debug("run released") }
                try await withLeaseRenewal(run.id, executor: executor) {
                    try await executor.execute(run)
                }
            }
            if Task.isCancelled { return }
            let unfinished = try await executor.store { try await $0.unfinishedRuns() }
            if unfinished.pending > 0 {
                // Claimed by another lane or process a moment ago: look again soon.
                rest(tenantID, mark: mark, for: options.poll)
            } else if unfinished.running > 0 {
                // Leased elsewhere: look again once such a lease could have ended.
                rest(tenantID, mark: mark, for: options.lease)
            } else {
                try await control.run { try await $0.dequeueRuns(of: tenantID, mark: mark) }
            }
        } catch is CancellationError {
            return
        } catch let error as TenantAccessError where error == .suspended || error.code == "tenant_not_serving" {
            // Suspended or gone: its runs wait in its database; `tenant resume`
            // queues the tenant again.
            try? await control.run { try await $0.dequeueRuns(of: tenantID, mark: mark) }
        } catch {
            if Task.isCancelled { return }
            logger.warning(
                "run work for a tenant failed; it stays queued",
                metadata: ["tenant": "\(tenantID)", "error": "\(OperatorFailure(error).message)"])
            rest(tenantID, mark: mark, for: .seconds(1))
        }
    }

    private func rest(_ tenantID: String, mark: Int64, for duration: Duration) {
        let until = ContinuousClock.now.advanced(by: duration)
        busy.withLock { $0.resting[tenantID] = (until, mark) }
    }

    /// Runs `body` while renewing the run's lease every third of its length; if
    /// the lease is lost (paused, cancelled, taken over) `body` is cancelled.
    private func withLeaseRenewal(
        _ run: UUID, executor: RunExecutor, _ body: @Sendable @escaping () async throws -> Void
    ) async throws {
        let owner = self.owner
        let lease = options.lease
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await body()
                return true
            }
            group.addTask {
                while true {
                    try await Task.sleep(for: lease / 3)
                    let held = try await executor.store { try await $0.renewLease(run: run, owner: owner, lease: lease) }
                    if !held { return false }
                }
            }
            // Whichever ends first ends both: the run finished, or the lease is
            // gone and the run is someone else's now.
            _ = try await group.next()
            group.cancelAll()
        }
    }

    /// Gives back every lease this process holds, tenant by tenant of those it touched.
    private func releaseLeases() async {
        let tenants: [String]
        do {
            tenants = try await control.run { try await $0.queuedTenants(limit: 10_000).map(\.tenantID) }
        } catch {
            return
        }
        let owner = self.owner
        for tenantID in tenants {
            guard let tenant = try? await directory.identity(of: tenantID, actor: "worker") else { continue }
            _ = try? await pools.withConnection(for: tenant) { connection in
                try await TenantStore(connection: connection, actor: "worker", logger: self.logger)
                    .releaseLeases(owner: owner)
            }
        }
    }
}
