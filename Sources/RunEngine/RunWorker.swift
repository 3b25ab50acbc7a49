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

/// Executes queued runs, up to `maxInflight` at once in this process and
/// `tenantMaxInflight` of any one tenant. A provider call holds no database
/// connection, so hundreds of runs wait on their providers while their short
/// database statements share the router's pools (as `.worker`: behind
/// requests, within the workers' share of the budget).
///
/// Woken by the database: a dedicated connection LISTENs for tenants newly
/// queued, and the queue is read in full after every (re)connect and every
/// `sweep` (lost notifications, leases ended in a dead process). Each tenant
/// with work gets one feeder here, which claims its runs in batches (`FOR
/// UPDATE SKIP LOCKED`); feeders queue for the process's slots first come,
/// first served, so a tenant with thousands of runs cannot keep another
/// tenant's first one waiting. Several processes share the queue: a run has
/// one worker at a time, and a dead process's runs are taken over when their
/// leases end. On graceful shutdown it stops claiming, cancels what it runs
/// and gives the leases back at once.
public final class RunWorker: Service, Sendable {
    public struct Options: Sendable {
        public var maxInflight: Int
        public var tenantMaxInflight: Int
        public var lease: Duration
        /// How often the queue is read in full.
        public var sweep: Duration
        public var providerTimeout: Duration
        public var providerRetries: Int
        /// The process's own key for a provider id (TENANTPLANE_<ID>_API_KEY),
        /// which wins over the key stored for the provider, not over a
        /// tenant's own.
        public var providerKey: @Sendable (String) -> String?

        public init(
            maxInflight: Int, tenantMaxInflight: Int, lease: Duration, sweep: Duration, providerTimeout: Duration,
            providerRetries: Int, providerKey: @escaping @Sendable (String) -> String?
        ) {
            self.maxInflight = maxInflight
            self.tenantMaxInflight = max(1, tenantMaxInflight)
            self.lease = lease
            self.sweep = sweep
            self.providerTimeout = providerTimeout
            self.providerRetries = providerRetries
            self.providerKey = providerKey
        }
    }

    /// Runs one claim asks for at most.
    static let claimBatch = 16

    private enum Wake: Sendable {
        case sweep
        case swept
        case notified(String)
        case queued(String, mark: Int64)
    }

    private struct Feeds {
        var active: [String: TenantFeed] = [:]
        /// Tenants to leave alone until a time unless queued again meanwhile
        /// (their unfinished runs are leased elsewhere).
        var resting: [String: (until: ContinuousClock.Instant, mark: Int64)] = [:]
    }

    let options: Options
    let control: ControlPool
    let secrets: SecretBox
    let listener: RunQueueListener
    let directory: TenantDirectory
    let pools: TenantPools
    let store: ArtifactStore
    let gateway: LLMGateway
    let owner: String
    let logger: Logger
    let slots: RunSlots
    let leases: LeaseKeeper
    private let feeds = Mutex(Feeds())
    /// Tenants whose runs were cut short by shutdown: their leases are given back.
    private let interrupted = Mutex<[String: TenantIdentity]>([:])

    public init(
        options: Options, control: ControlPool, secrets: SecretBox, listener: RunQueueListener,
        directory: TenantDirectory,
        pools: TenantPools, store: ArtifactStore, gateway: LLMGateway, logger: Logger
    ) {
        self.options = options
        self.control = control
        self.secrets = secrets
        self.listener = listener
        self.directory = directory
        self.pools = pools
        self.store = store
        self.gateway = gateway
        self.owner = Self.makeOwnerName()
        self.logger = logger
        slots = RunSlots(max(0, options.maxInflight))
        leases = LeaseKeeper(owner: owner, lease: options.lease, logger: logger)
    }

    /// `host:pid:random`, so a lease names the process holding it.
    static func makeOwnerName() -> String {
        "\(ProcessInfo.processInfo.hostName.prefix(40)):\(ProcessInfo.processInfo.processIdentifier):\(UInt32.random(in: 0...UInt32.max))"
    }

    public func run() async throws {
        guard options.maxInflight > 0 else {
            // Execution is left to other processes; stay up with the rest.
            try? await gracefulShutdown()
            return
        }
        let (wakes, wake) = AsyncStream.makeStream(of: Wake.self)
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    await self.listener.listen(
                        onListening: { wake.yield(.sweep) }, onNotification: { wake.yield(.notified($0)) })
                }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: self.options.sweep)
                        wake.yield(.sweep)
                    }
                }
                group.addTask { await self.leases.run() }
                var sweeping = false
                for await event in wakes {
                    switch event {
                    case .sweep:
                        // One sweep at a time; a request during one is covered by it.
                        guard !sweeping else { continue }
                        sweeping = true
                        group.addTask {
                            await self.sweep(into: wake)
                            wake.yield(.swept)
                        }
                    case .swept:
                        sweeping = false
                    case .notified(let tenantID):
                        self.feed(tenantID, ignoringRest: true, group: &group)
                    case .queued(let tenantID, let mark):
                        self.feed(tenantID, mark: mark, group: &group)
                    }
                }
            }
        }
        wake.finish()
        await releaseInterrupted()
    }

    /// Reads the whole queue and hands each tenant on.
    private func sweep(into wake: AsyncStream<Wake>.Continuation) async {
        do {
            for (tenantID, mark) in try await control.run({ try await $0.queuedTenants() }) {
                wake.yield(.queued(tenantID, mark: mark))
            }
        } catch {
            if Task.isCancelled { return }
            logger.warning("cannot read the run queue", metadata: ["error": "\(OperatorFailure(error).message)"])
        }
    }

    /// Wakes the tenant's feeder, or starts one.
    private func feed(
        _ tenantID: String, mark: Int64? = nil, ignoringRest: Bool = false, group: inout DiscardingTaskGroup
    ) {
        guard NameRule.tenantID.accepts(tenantID) else { return }
        let now = ContinuousClock.now
        let started = feeds.withLock { feeds -> TenantFeed? in
            if let feed = feeds.active[tenantID] {
                feed.signal.fire()
                return nil
            }
            if !ignoringRest, let rest = feeds.resting[tenantID], rest.until > now, rest.mark == mark { return nil }
            feeds.resting[tenantID] = nil
            let feed = TenantFeed(tenantID: tenantID, worker: self)
            feeds.active[tenantID] = feed
            return feed
        }
        guard let started else { return }
        group.addTask { await started.run() }
    }

    /// Whether the feeder may end: not when it was woken meanwhile (the
    /// wake-up would be lost with it).
    func retire(_ feed: TenantFeed, restingFor rest: Duration?, mark: Int64?) -> Bool {
        feeds.withLock { feeds in
            guard !feed.signal.isPending else { return false }
            feeds.active[feed.tenantID] = nil
            if let rest, let mark { feeds.resting[feed.tenantID] = (ContinuousClock.now.advanced(by: rest), mark) }
            let now = ContinuousClock.now
            if feeds.resting.count > 1_000 { feeds.resting = feeds.resting.filter { $0.value.until > now } }
            return true
        }
    }

    func interrupted(_ tenant: TenantIdentity) {
        interrupted.withLock { $0[tenant.tenantID] = tenant }
    }

    /// Gives back the leases of runs shutdown cut short, so another process resumes them at once.
    private func releaseInterrupted() async {
        let tenants = interrupted.withLock { $0 }
        let owner = self.owner
        await withDiscardingTaskGroup { group in
            for tenant in tenants.values {
                group.addTask {
                    _ = try? await self.pools.withConnection(for: tenant, priority: .worker) { connection in
                        try await TenantStore(connection: connection, actor: "worker", logger: self.logger)
                            .releaseLeases(owner: owner)
                    }
                }
            }
        }
    }
}
