import Core
import Foundation
import Logging
import PostgresNIO
// For ConnectionPoolError, which a retired pool throws as is.
import _ConnectionPoolModule
import Prometheus
import ServiceLifecycle
import Synchronization

/// One `PostgresClient` per tenant database, connecting as that tenant's own
/// role, all under one global connection budget.
///
/// The budget is kept by reservation: a pool of size n may open n connections,
/// so opening it reserves n, and a closed pool gives them back only once its
/// connections are really gone. A tenant's first pool has one connection, so
/// the budget keeps as many tenants pooled as it can; a tenant whose requests
/// queue behind its connections gets a pool twice the size (up to `perTenant`),
/// and the smaller one drains and closes. When the budget is full the coldest idle pool (fewest recent
/// uses) is closed; when every pool is busy a request waits up to `wait`, then gets 503.
/// One pool is retired ahead of need, so a new tenant's first connection does
/// not wait for an old one to close. Requests wait ahead of run workers, and
/// workers hold at most `Limits.workerConnections` connections at once, so
/// hundreds of runs in flight never starve the requests (`RoomWaiters`).
public final class TenantPools: Service, Sendable {
    private struct Pool {
        let client: PostgresClient
        let database: PostgresURL
        let size: Int
        let stop: AsyncStream<Never>.Continuation
        var lastUse: UInt64
        var inFlight: Int
        /// Uses, decaying by half every `Self.halfLife` requests to any tenant.
        var heat: Double = 1

        func heat(at tick: UInt64) -> Double {
            heat * exp2(-Double(tick &- lastUse) / TenantPools.halfLife)
        }

        mutating func use(at tick: UInt64) {
            heat = heat(at: tick) + 1
            lastUse = tick
        }
    }

    /// A pool used once in the last few thousand requests is a better victim
    /// than one used hundreds of times, even if the hot one was used a moment
    /// earlier: with skewed traffic (a few hot tenants, a long tail) that keeps
    /// more requests on open connections than least-recently-used alone.
    static let halfLife = 4096.0

    private struct State {
        var pools: [String: Pool] = [:]
        /// Pools replaced by a larger one, closing once their last request is done.
        var draining: [ObjectIdentifier: Pool] = [:]
        var reserved = 0
        /// The part of `reserved` held by retired pools whose connections are
        /// still closing: room that is coming, which eviction must not chase.
        var closing = 0
        var inFlight = 0
        var workersInFlight = 0
        var waiters = RoomWaiters()
        var tick: UInt64 = 0
        var accepting = true
        var refusedUntil: [String: ContinuousClock.Instant] = [:]
    }

    private struct Launch: Sendable {
        let tenantID: String
        let client: PostgresClient
        let size: Int
        let stopped: AsyncStream<Never>
    }

    private enum Checkout {
        case ready(PostgresClient)
        case full(RoomWaiters.Enrolled)
        case refused(TenantAccessError)
    }

    public let limits: Limits
    let holds = MoveHolds()
    private let state = Mutex(State())
    private let launches: AsyncStream<Launch>
    private let launcher: AsyncStream<Launch>.Continuation
    let metrics: RouterMetrics
    let logger: Logger

    public init(limits: Limits, metrics: RouterMetrics, logger: Logger) {
        self.limits = limits
        self.metrics = metrics
        self.logger = logger
        (launches, launcher) = AsyncStream.makeStream(of: Launch.self)
    }

    /// Hosts every tenant pool until shutdown, then closes them all. Requests
    /// arriving after that get 503.
    public func run() async throws {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await launch in launches {
                    group.addTask { await self.host(launch) }
                }
                state.withLock { state in
                    state.accepting = false
                    for pool in state.pools.values {
                        state.closing += pool.size
                        pool.stop.finish()
                    }
                    for pool in state.draining.values { pool.stop.finish() }
                    state.pools.removeAll()
                    state.draining.removeAll()
                }
            }
        } onGracefulShutdown: {
            self.state.withLock { $0.accepting = false }
            self.launcher.finish()
        }
    }

    /// Runs `body` on a connection to `tenant`'s own database. A connection that
    /// cannot be had within `wait` (budget full, database down) is a 503; a
    /// query that is already running is never cut short by that wait.
    public func withConnection<Result: Sendable>(
        for tenant: TenantIdentity, priority: ConnectionPriority = .request,
        _ body: @Sendable @escaping (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let tenant = await holds.pass(tenant)
        do {
            return try await withPooledConnection(for: tenant, priority: priority, body)
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == Self.readOnlyTransaction {
            // The database is fenced for a move, or was until a
            // moment ago and this pool's sessions began under the fence (a
            // session keeps the read-only default it started with). A fresh
            // pool tells the two apart; the failed statement wrote nothing, so
            // running `body` again is safe.
            close(tenantID: tenant.tenantID)
            do {
                return try await withPooledConnection(for: tenant, priority: priority, body)
            } catch let error as PSQLError where error.serverInfo?[.sqlState] == Self.readOnlyTransaction {
                throw TenantAccessError.writesPaused
            }
        }
    }

    /// SQLSTATE 25006: a write in a read-only transaction.
    static let readOnlyTransaction = "25006"

    private func withPooledConnection<Result: Sendable>(
        for tenant: TenantIdentity, priority: ConnectionPriority,
        _ body: @Sendable @escaping (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let deadline = ContinuousClock.now.advanced(by: limits.wait)
        let client = try await checkoutWaiting(tenant, priority: priority, until: deadline)
        defer { checkin(tenant.tenantID, client, priority: priority) }
        do {
            return try await lease(client, until: deadline, body)
        } catch is LeaseTimeout {
            // More requests than connections: the tenant is merely busy. Fewer,
            // and still no connection: its database is down or refusing us, and
            // a fresh pool will try again after the backoff.
            guard isOversubscribed(tenant.tenantID, client) else {
                markUnreachable(tenant.tenantID, client)
                throw TenantAccessError.databaseUnavailable
            }
            throw TenantAccessError.tenantBusy
        } catch where error.meansConnectionLost {
            markUnreachable(tenant.tenantID, client)
            throw TenantAccessError.databaseUnavailable
        } catch let error as ConnectionPoolError where error == .poolShutdown {
            // The pool was retired under this request (another request found
            // the database gone a moment earlier): the same answer as theirs.
            throw TenantAccessError.databaseUnavailable
        }
    }

    /// Closes a tenant's pool now (its database moved, was suspended or deleted).
    public func close(tenantID: String) {
        state.withLock { state in retire(tenantID, &state) }
    }

    /// The tenant's database moved away from `from`: a pool still on it
    /// closes (one a request already opened on the new database stays), and
    /// what the old database did while it was fenced (sessions ended) no
    /// longer refuses the tenant.
    func closeMoved(tenantID: String, from: PostgresURL) {
        state.withLock { state in
            state.refusedUntil[tenantID] = nil
            if let pool = state.pools[tenantID], pool.database.sameDatabase(as: from) { retire(tenantID, &state) }
        }
    }

    /// How many of the tenant's connections are in use by this process now.
    public func connectionsInUse(tenantID: String) -> Int {
        state.withLock { $0.pools[tenantID]?.inFlight ?? 0 }
    }

    public var usage: Usage {
        state.withLock {
            Usage(
                openPools: $0.pools.count, reservedConnections: $0.reserved, requestsInFlight: $0.inFlight,
                workersInFlight: $0.workersInFlight, waitingRequests: $0.waiters.waitingRequests,
                waitingWorkers: $0.waiters.waitingWorkers)
        }
    }

    private func checkoutWaiting(
        _ tenant: TenantIdentity, priority: ConnectionPriority, until deadline: ContinuousClock.Instant
    ) async throws -> PostgresClient {
        var ticket: UInt64?
        while true {
            switch checkout(tenant, priority: priority, ticket: ticket) {
            case .ready(let client):
                if ticket != nil { passTheTurn() }
                return client
            case .refused(let error):
                if ticket != nil { passTheTurn() }
                throw error
            case .full(let enrolled):
                if ticket == nil { metrics.budgetWaits.increment() }
                ticket = enrolled.ticket
                guard await wait(enrolled.waiter, until: deadline) else {
                    // A wake that came as the wait ended belongs to the next in line.
                    passTheTurn()
                    try Task.checkCancellation()
                    throw TenantAccessError.budgetExhausted
                }
            }
        }
    }

    /// Whether the waiter was woken (room may be free) before the deadline or
    /// the caller's cancellation.
    private func wait(_ waiter: RoomWaiter, until deadline: ContinuousClock.Instant) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await waiter.wait()
                return true
            }
            group.addTask {
                try? await Task.sleep(until: deadline, clock: .continuous)
                return false
            }
            let woken = await group.next() ?? false
            if !woken {
                state.withLock { $0.waiters.remove(waiter) }
                waiter.wake()
            }
            group.cancelAll()
            return woken
        }
    }

    /// Wakes the next waiter: room may be left after a woken checkout took its
    /// share, or gave up.
    private func passTheTurn() {
        state.withLock { $0.waiters.roomMayHaveFreed() }?.wake()
    }

    private func checkout(_ tenant: TenantIdentity, priority: ConnectionPriority, ticket: UInt64?) -> Checkout {
        let id = tenant.tenantID
        let now = ContinuousClock.now
        return state.withLock { state -> Checkout in
            guard state.accepting else { return .refused(.shuttingDown) }
            if let until = state.refusedUntil[id] {
                if until > now { return .refused(.databaseUnavailable) }
                state.refusedUntil[id] = nil
            }
            if priority == .worker,
                state.waiters.waitingRequests > 0 || state.workersInFlight >= limits.workerConnections
            {
                return .full(state.waiters.enrol(.worker, ticket: ticket))
            }
            let checkout = take(tenant, priority: priority, ticket: ticket, &state)
            if case .ready = checkout, priority == .worker { state.workersInFlight += 1 }
            return checkout
        }
    }

    private func take(
        _ tenant: TenantIdentity, priority: ConnectionPriority, ticket: UInt64?, _ state: inout State
    ) -> Checkout {
        let id = tenant.tenantID
        state.tick += 1
        var size = 1
        if var pool = state.pools[id] {
            if pool.database == tenant.database {
                // Only requests grow a pool: a larger pool costs other tenants
                // their connections, and run workers' short statements can
                // queue on one connection where a customer's request should not.
                let queues = priority == .request && pool.inFlight >= pool.size && pool.size < limits.perTenant
                // Doubling, not straight to `perTenant`: a pool reserves its
                // whole size, so one that grew past its need holds connections
                // that would keep other tenants pooled.
                let grown = min(limits.perTenant, pool.size * 2)
                if !queues || !makeRoom(for: grown, &state) {
                    pool.inFlight += 1
                    pool.use(at: state.tick)
                    state.pools[id] = pool
                    state.inFlight += 1
                    return .ready(pool.client)
                }
                // Busy enough to queue behind its connections: a larger
                // pool takes over and this one drains.
                retire(id, &state)
                size = grown
                metrics.poolGrowths.increment()
            } else {
                retire(id, &state)
            }
        }
        if size == 1, state.waiters.mustQueue(ticket, priority) || !makeRoom(for: 1, &state) {
            return .full(state.waiters.enrol(priority, ticket: ticket))
        }
        let client = makeClient(for: tenant.database, size: size)
        let (stopped, stop) = AsyncStream.makeStream(of: Never.self)
        state.pools[id] = Pool(
            client: client, database: tenant.database, size: size, stop: stop, lastUse: state.tick, inFlight: 1)
        state.reserved += size
        state.inFlight += 1
        launcher.yield(Launch(tenantID: id, client: client, size: size, stopped: stopped))
        metrics.poolOpens.increment()
        if priority == .request { metrics.poolMisses.increment() }
        if state.reserved - state.closing >= limits.budget { evictColdest(&state) }
        publish(state)
        return .ready(client)
    }

    /// Whether `connections` more fit in the budget now. Idle pools are closed
    /// (coldest first) only until the room that is coming (pools already
    /// closing) is enough; closing one does not free its reservation at once,
    /// so the caller waits for it rather than evicting every other pool too.
    private func makeRoom(for connections: Int, _ state: inout State) -> Bool {
        while state.reserved - state.closing + connections > limits.budget {
            guard evictColdest(&state) else { return false }
        }
        return state.reserved + connections <= limits.budget
    }

    private func checkin(_ tenantID: String, _ client: PostgresClient, priority: ConnectionPriority) {
        let woken = state.withLock { state in
            state.inFlight -= 1
            if priority == .worker { state.workersInFlight -= 1 }
            if var pool = state.pools[tenantID], pool.client === client {
                pool.inFlight -= 1
                state.pools[tenantID] = pool
            } else if var pool = state.draining[ObjectIdentifier(client)] {
                pool.inFlight -= 1
                if pool.inFlight == 0 {
                    state.draining[ObjectIdentifier(client)] = nil
                    pool.stop.finish()
                } else {
                    state.draining[ObjectIdentifier(client)] = pool
                }
            }
            return state.waiters.roomMayHaveFreed()
        }
        woken?.wake()
    }

    private func isOversubscribed(_ tenantID: String, _ client: PostgresClient) -> Bool {
        state.withLock { state in
            let pool = state.pools[tenantID].flatMap { $0.client === client ? $0 : nil }
                ?? state.draining[ObjectIdentifier(client)]
            guard let pool else { return false }
            return pool.inFlight > pool.size
        }
    }

    private func markUnreachable(_ tenantID: String, _ client: PostgresClient) {
        let until = ContinuousClock.now.advanced(by: limits.downtimeBackoff)
        state.withLock { state in
            state.refusedUntil[tenantID] = until
            if let pool = state.pools[tenantID], pool.client === client { retire(tenantID, &state) }
        }
        logger.warning("tenant database unreachable", metadata: ["tenant": "\(tenantID)"])
    }

    @discardableResult
    private func evictColdest(_ state: inout State) -> Bool {
        var victim: (id: String, heat: Double)?
        for (id, pool) in state.pools where pool.inFlight == 0 {
            let heat = pool.heat(at: state.tick)
            if victim == nil || heat < victim!.heat { victim = (id, heat) }
        }
        guard let victim else { return false }
        retire(victim.id, &state)
        metrics.evictions.increment()
        return true
    }

    /// Takes a pool out of use: it stops now if idle, else once its last
    /// request checks in. Stopping a `PostgresClient` under a leased connection
    /// can leave that connection's query waiting forever (seen in ops/soak: a
    /// worker's run stuck `running` with its lease still renewed), so requests
    /// in flight always finish on a live pool; those on a connection the server
    /// ended fail at their next statement (`LiveConnection`). The reservation
    /// stays until `host` sees the pool closed.
    private func retire(_ tenantID: String, _ state: inout State) {
        guard let pool = state.pools.removeValue(forKey: tenantID) else { return }
        state.closing += pool.size
        if pool.inFlight == 0 {
            pool.stop.finish()
        } else {
            state.draining[ObjectIdentifier(pool.client)] = pool
        }
        publish(state)
    }

    private func host(_ launch: Launch) async {
        logger.debug("tenant pool opened", metadata: ["tenant": "\(launch.tenantID)"])
        await withDiscardingTaskGroup { group in
            group.addTask { await launch.client.run() }
            for await _ in launch.stopped {}
            group.cancelAll()
        }
        let woken = state.withLock { state in
            state.reserved -= launch.size
            state.closing -= launch.size
            publish(state)
            return state.waiters.roomMayHaveFreed()
        }
        woken?.wake()
        logger.debug("tenant pool closed", metadata: ["tenant": "\(launch.tenantID)"])
    }

    private func publish(_ state: State) {
        metrics.openPools.set(Int64(state.pools.count))
        metrics.reservedConnections.set(Int64(state.reserved))
    }
}
