import ControlPlane
import Core
import Foundation
import Logging
import PostgresNIO
import Prometheus
import ServiceLifecycle
import TenantRouter
import Synchronization
import Testing

@Suite("Tenant pools under the global connection budget")
struct TenantPoolsTests {
    /// Provisions `count` tenants through the CLI and returns their identities.
    func identities(_ fixture: ProvisioningFixture, count: Int) async throws -> [TenantIdentity] {
        var result: [TenantIdentity] = []
        for index in 0..<count {
            let slug = ProvisioningFixture.slug("pool\(index)")
            let created = try await fixture.cli.run("tenant", "create", slug, "--name", "Pool \(index)")
            try #require(created.exitCode == 0, "\(created.stderr)")
            result.append(
                TenantIdentity(
                    tenantID: slug, keyID: "key_test", status: .active, database: try await fixture.tenantURL(slug)))
        }
        return result
    }

    func withPools(
        _ limits: TenantPools.Limits, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
        _ body: @Sendable @escaping (TenantPools) async throws -> Void
    ) async throws {
        let pools = TenantPools(limits: limits, metrics: RouterMetrics(registry: registry), logger: TestCluster.logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pools.run() }
            defer { group.cancelAll() }
            try await body(pools)
        }
    }

    @Test func manyTenantsAreServedInTurnWithoutExceedingTheBudget() async throws {
        try await ProvisioningFixture.with { fixture in
            let tenants = try await identities(fixture, count: 5)
            let databases = try tenants.map { try TenantSlug($0.tenantID).databaseName }
            try await withPools(.init(budget: 2, perTenant: 1, wait: .seconds(10))) { pools in
                for round in 0..<3 {
                    for tenant in tenants {
                        let database = try await pools.withConnection(for: tenant) { connection in
                            try await connection.query("SELECT current_database()::text, current_user::text", logger: TestCluster.logger)
                                .collect().first!.decode((String, String).self)
                        }
                        // Each tenant's query ran in its own database as its own role.
                        let expected = try TenantSlug(tenant.tenantID).databaseName
                        #expect(database.0 == expected && database.1 == expected, "round \(round)")
                        let open = try await TestCluster.query(
                            fixture.controlURL,
                            "SELECT count(*)::int FROM pg_stat_activity WHERE datname = ANY(\(databases))"
                        ).first!.decode(Int.self)
                        #expect(open <= 2)
                        #expect(pools.usage.reservedConnections <= 2)
                    }
                }
            }
        }
    }

    @Test func whenEveryPoolIsBusyARequestGets503InsteadOfAnOverrun() async throws {
        try await ProvisioningFixture.with { fixture in
            let tenants = try await identities(fixture, count: 3)
            // The wait covers a first connection too, which under the whole
            // suite on two cores once took longer than 2 s: hence 5 s, and
            // holders that keep their connections until told, not for a time.
            try await withPools(.init(budget: 2, perTenant: 1, wait: .seconds(5))) { pools in
                let (leased, signal) = AsyncStream.makeStream(of: Void.self)
                let releases = (0..<2).map { _ in AsyncStream.makeStream(of: Void.self) }
                defer { for release in releases { release.continuation.finish() } }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (tenant, release) in zip(tenants.prefix(2), releases) {
                        group.addTask {
                            _ = try await pools.withConnection(for: tenant) { connection in
                                let one = try await connection.query("SELECT 1", logger: TestCluster.logger).collect().count
                                signal.yield()
                                for await _ in release.stream { break }
                                return one
                            }
                        }
                    }
                    var holders = 0
                    for await _ in leased {
                        holders += 1
                        if holders == 2 { break }
                    }
                    // Both connections of the budget are held: the third tenant waits, then 503.
                    let started = ContinuousClock.now
                    await #expect(throws: TenantAccessError.budgetExhausted) {
                        try await pools.withConnection(for: tenants[2]) { _ in () }
                    }
                    let waited = ContinuousClock.now - started
                    #expect(waited >= .seconds(4) && waited < .seconds(15), "waited \(waited)")
                    #expect(pools.usage.reservedConnections <= 2)
                    for release in releases { release.continuation.finish() }
                    try await group.waitForAll()
                }
                // Once the others are done, the third tenant gets its turn.
                let value = try await pools.withConnection(for: tenants[2]) { connection in
                    try await connection.query("SELECT 7", logger: TestCluster.logger).collect().first!.decode(Int.self)
                }
                #expect(value == 7)
            }
        }
    }

    @Test func aBusyTenantsPoolGrowsWithinTheBudget() async throws {
        try await ProvisioningFixture.with { fixture in
            let tenants = try await identities(fixture, count: 2)
            let database = try TenantSlug(tenants[0].tenantID).databaseName
            try await withPools(.init(budget: 5, perTenant: 3, wait: .seconds(10))) { pools in
                _ = try await pools.withConnection(for: tenants[0]) { _ in () }
                _ = try await pools.withConnection(for: tenants[1]) { _ in () }
                // How many of the tenant's sleeps ran at once, from the server's own
                // clock around each (sampling pg_stat_activity could miss the
                // overlap when the whole suite loads the machine's two cores).
                let spans = try await withThrowingTaskGroup(of: (Date, Date).self) { group in
                    for _ in 0..<3 {
                        group.addTask {
                            let row = try await pools.withConnection(for: tenants[0]) { connection in
                                try await connection.query(
                                    "SELECT clock_timestamp(), pg_sleep(3)::text, clock_timestamp()", logger: TestCluster.logger
                                ).collect().first!.decode((Date, String, Date).self)
                            }
                            return (row.0, row.2)
                        }
                    }
                    var spans: [(Date, Date)] = []
                    for try await span in group {
                        spans.append(span)
                        #expect(pools.usage.reservedConnections <= 5)
                    }
                    return spans
                }
                let mostAtOnce = spans.map { span in spans.filter { $0.0 <= span.0 && span.0 < $0.1 }.count }.max() ?? 0
                // One connection would have run them one after another.
                #expect(mostAtOnce >= 2)
                let open = try await TestCluster.query(
                    fixture.controlURL, "SELECT count(*)::int FROM pg_stat_activity WHERE datname = \(database)"
                ).first!.decode(Int.self)
                #expect(open <= 3)
                #expect(pools.usage.reservedConnections <= 5)
            }
        }
    }

    /// A suspension, a move or an unreachable neighbour closes a tenant's pool
    /// while its requests may still be running: they finish on the old pool
    /// (a worker's step must not hang on a stopped one), and the pool closes
    /// and gives its reservation back once they have.
    @Test func aPoolClosedUnderARunningQueryLetsItFinishThenCloses() async throws {
        try await ProvisioningFixture.with { fixture in
            let tenant = try await identities(fixture, count: 1)[0]
            try await withPools(.init(budget: 2, perTenant: 1, wait: .seconds(10))) { pools in
                let (leased, signal) = AsyncStream.makeStream(of: Void.self)
                async let answer = pools.withConnection(for: tenant) { connection in
                    signal.yield()
                    return try await connection.query("SELECT 42 FROM pg_sleep(1)", logger: TestCluster.logger)
                        .collect().first!.decode(Int.self)
                }
                for await _ in leased { break }
                pools.close(tenantID: tenant.tenantID)
                #expect(pools.usage.openPools == 0)
                #expect(pools.usage.reservedConnections == 1, "the closing pool keeps its reservation")
                #expect(try await answer == 42)
                var reserved = pools.usage.reservedConnections
                for _ in 0..<100 where reserved > 0 {
                    try await Task.sleep(for: .milliseconds(50))
                    reserved = pools.usage.reservedConnections
                }
                #expect(reserved == 0)
                // The tenant is served again, from a new pool.
                let again = try await pools.withConnection(for: tenant) { connection in
                    try await connection.query("SELECT 7", logger: TestCluster.logger).collect().first!.decode(Int.self)
                }
                #expect(again == 7)
            }
        }
    }

    /// The interleaving that once retired every idle pool: a miss under a full
    /// budget while a retired pool is still closing. The room that pool gives
    /// back is the miss's; nothing else is closed for it, and the hot tenant
    /// keeps its pool throughout.
    @Test func aMissWhileARetiredPoolIsClosingWaitsForThatRoomAndRetiresNothingElse() async throws {
        try await ProvisioningFixture.with { fixture in
            let t = try await identities(fixture, count: 5)
            let (hot, cold, closing, busy, missing) = (t[0], t[1], t[2], t[3], t[4])
            let registry = PrometheusCollectorRegistry()
            try await withPools(.init(budget: 4, perTenant: 1, wait: .seconds(20)), registry: registry) { pools in
                let query: @Sendable (PostgresConnection) async throws -> Int = { connection in
                    try await connection.query("SELECT 1", logger: TestCluster.logger).collect().count
                }
                for _ in 0..<20 { _ = try await pools.withConnection(for: hot, query) }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    // The hot tenant, then two others, hold a connection each,
                    // so filling the budget finds no idle pool to retire early.
                    var held: [String: Holder] = [:]
                    for tenant in [hot, closing, busy] {
                        let holder = Holder()
                        held[tenant.tenantID] = holder
                        group.addTask { _ = try await pools.withConnection(for: tenant) { try await holder.hold($0) } }
                        await holder.leased()
                    }
                    _ = try await pools.withConnection(for: cold, query)
                    held[hot.tenantID]!.release()
                    #expect(try await Self.eventually { pools.usage.requestsInFlight == 2 })
                    #expect(pools.usage.openPools == 4 && pools.usage.reservedConnections == 4)
                    // Retired under its running query: its connection is still
                    // open, and its reservation still counted.
                    pools.close(tenantID: closing.tenantID)
                    async let missed = pools.withConnection(for: missing, query)
                    #expect(try await Self.eventually { pools.usage.waitingRequests == 1 })
                    #expect(pools.usage.openPools == 3, "the hot and the cold pool are both still open")
                    #expect(Self.counter("tenantplane_tenant_pool_evictions_total", in: registry) == 0)
                    held[closing.tenantID]!.release()
                    #expect(try await missed == 1)
                    held[busy.tenantID]!.release()
                    try await group.waitForAll()
                }
                // Filling the budget again retired one pool ahead of need: the cold one.
                #expect(Self.counter("tenantplane_tenant_pool_evictions_total", in: registry) == 1)
                let misses = Self.counter("tenantplane_tenant_pool_misses_total", in: registry)
                _ = try await pools.withConnection(for: hot, query)
                #expect(Self.counter("tenantplane_tenant_pool_misses_total", in: registry) == misses, "the hot pool survived")
                #expect(pools.usage.reservedConnections <= 4)
            }
        }
    }

    /// Requests waiting for room get it in the order they came, whatever
    /// their tenant. Each holds its connection until told, so every release
    /// frees room for exactly one of them.
    @Test func requestsWaitingForRoomAreServedFirstComeFirstServed() async throws {
        try await ProvisioningFixture.with { fixture in
            let t = try await identities(fixture, count: 6)
            try await withPools(.init(budget: 2, perTenant: 1, wait: .seconds(30))) { pools in
                let order = Arrivals()
                let holders = t.map { _ in Holder() }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (index, (tenant, holder)) in zip(t, holders).enumerated() {
                        group.addTask {
                            _ = try await pools.withConnection(for: tenant) { connection in
                                order.append(tenant.tenantID)
                                return try await holder.hold(connection)
                            }
                        }
                        if index < 2 {
                            await holder.leased()
                        } else {
                            #expect(try await Self.eventually { pools.usage.waitingRequests == index - 1 })
                        }
                    }
                    for (index, holder) in holders.prefix(4).enumerated() {
                        holder.release()
                        await holders[index + 2].leased()
                        #expect(order.all == t.prefix(index + 3).map(\.tenantID))
                    }
                    for holder in holders.suffix(2) { holder.release() }
                    try await group.waitForAll()
                }
                #expect(pools.usage.reservedConnections <= 2)
            }
        }
    }

    static func eventually(_ probe: () -> Bool) async throws -> Bool {
        for _ in 0..<200 where !probe() { try await Task.sleep(for: .milliseconds(25)) }
        return probe()
    }

    static func counter(_ name: String, in registry: PrometheusCollectorRegistry) -> Int {
        let text = String(decoding: registry.emitToBuffer(), as: UTF8.self)
        let line = text.split(separator: "\n").first { $0.hasPrefix(name + " ") }
        return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
    }
}

/// A request that keeps its connection until released.
final class Holder: Sendable {
    private let leasedSignal = AsyncStream.makeStream(of: Void.self)
    private let releaseSignal = AsyncStream.makeStream(of: Void.self)

    func hold(_ connection: PostgresConnection) async throws -> Int {
        let one = try await connection.query("SELECT 1", logger: TestCluster.logger).collect().count
        leasedSignal.continuation.yield()
        for await _ in releaseSignal.stream { break }
        return one
    }

    func leased() async {
        for await _ in leasedSignal.stream { break }
    }

    func release() {
        releaseSignal.continuation.finish()
    }
}

/// The tenants in the order their requests got a connection.
final class Arrivals: Sendable {
    private let names = Mutex<[String]>([])
    var all: [String] { names.withLock { $0 } }
    func append(_ name: String) { names.withLock { $0.append(name) } }
}
