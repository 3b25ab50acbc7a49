import ControlPlane
import Core
import Fleet
import Foundation
import PostgresNIO
import Synchronization
import Testing

@Suite("Fleet migrations never stall a tenant: lock timeouts, open moves")
struct FleetMigrationLockTests {
    @Test func aTenantBlockedByALongTransactionEndsLockTimeoutAndItsReadsNeverWaitLongerThanTheTimeout() async throws {
        try await FleetFixture.with(tenants: 4) { fleet in
            let blocked = fleet.slugs[1]
            let blockedURL = try await fleet.base.tenantURL(blocked)
            try fleet.stage("002_run_priority.sql", "ALTER TABLE runs ADD COLUMN priority INT NOT NULL DEFAULT 0;")

            // The tenant's own long transaction: its ACCESS SHARE lock on runs
            // conflicts with the ACCESS EXCLUSIVE lock the ALTER TABLE needs.
            let holder = try await DatabaseConnection.open(blockedURL, logger: TestCluster.logger)
            try await holder.query("BEGIN", logger: TestCluster.logger)
            try await holder.query("SELECT count(*) FROM runs", logger: TestCluster.logger)
            // Requests' sessions, with the settings the router's pools pin
            // (lock_timeout=0: on their own they would wait for ever).
            var readers: [PostgresConnection] = []
            for _ in 0..<3 {
                readers.append(
                    try await DatabaseConnection.open(
                        blockedURL, startupOptions: TenantLogin.startupOptions(), logger: TestCluster.logger))
            }
            let waits = ReadWaits()
            let lockTimeout = Duration.milliseconds(300)
            let result: CLIRunner.Result
            do {
                async let reading: Void = waits.readInLoops(on: readers)
                result = try await fleet.cli.run(
                    "migrate", "tenants", "--lock-timeout", "300ms", "--lock-retries", "2", "--json")
                waits.stop()
                try await reading
                try await holder.query("COMMIT", logger: TestCluster.logger)
            } catch {
                for connection in [holder] + readers { try? await connection.close() }
                throw error
            }
            for connection in [holder] + readers { try await connection.close() }

            #expect(result.exitCode == 3, "\(result.stderr)")
            #expect(result.stderr.contains("left for a re-run"), "\(result.stderr)")
            let report = try fleet.report(result)
            let outcome = try #require(report.results.first { $0.target == blocked })
            #expect(outcome.outcome == .lockTimeout)
            #expect(outcome.attempts == 3)
            #expect(outcome.sqlState == "55P03")
            #expect(outcome.error?.contains("002_run_priority.sql waited 300 ms for a lock on 3 attempts") == true, "\(outcome.error ?? "")")
            #expect(try await fleet.versions(blocked) == [1])
            for slug in fleet.slugs where slug != blocked {
                #expect(report.outcome(slug) == .migrated)
                #expect(try await fleet.versions(slug) == [1, 2])
            }
            let recorded = try await TestCluster.query(
                fleet.base.controlURL, "SELECT migration_outcome FROM tenants WHERE id = \(blocked)")
            #expect(try recorded.first?.decode(String.self) == "lock_timeout")

            let measured = waits.measured
            print(
                "lock timeout \(lockTimeout): the blocked tenant's longest read waited \(measured.longestInServer) in "
                    + "PostgreSQL, \(measured.longestRoundTrip) round trip (\(measured.reads) reads on 3 sessions)")
            // No read waited longer than the lock timeout. (Whether a read
            // queued at all depends on the scheduling of a loaded machine:
            // measured 0.30 s alone, 0.04 s under the whole suite; printed above.)
            #expect(measured.longestInServer < lockTimeout + .milliseconds(500))

            let rerun = try await fleet.cli.run("migrate", "tenants", "--lock-timeout", "300ms")
            #expect(rerun.exitCode == 0, "\(rerun.stdout)\(rerun.stderr)")
            #expect(rerun.stdout.contains("1 migrated"), "\(rerun.stdout)")
            for slug in fleet.slugs { #expect(try await fleet.versions(slug) == [1, 2]) }
        }
    }

    @Test func aTenantWithAnOpenMoveIsLeftAloneAndReported() async throws {
        try await FleetFixture.with(tenants: 2) { fleet in
            let moving = fleet.slugs[0]
            // The row a `tenant move` that is under way (or was cut short) keeps open.
            _ = try await TestCluster.query(
                fleet.base.controlURL,
                """
                INSERT INTO tenant_moves (tenant_id, from_server, to_server, phase)
                SELECT id, server, server, 'restored' FROM tenants WHERE id = \(moving)
                """)
            try fleet.stage("002_more.sql", "CREATE TABLE more (id INT);")
            let result = try await fleet.cli.run("migrate", "tenants", "--json")
            #expect(result.exitCode == 3, "\(result.stderr)")
            let report = try fleet.report(result)
            #expect(report.outcome(moving) == .moving)
            #expect(report.results.first { $0.target == moving }?.error?.contains("being moved") == true)
            #expect(report.outcome(fleet.slugs[1]) == .migrated)
            #expect(try await fleet.versions(moving) == [1])

            _ = try await TestCluster.query(
                fleet.base.controlURL,
                "UPDATE tenant_moves SET phase = 'rolled_back', finished_at = now() WHERE tenant_id = \(moving)")
            let rerun = try await fleet.cli.run("migrate", "tenants", "--json")
            #expect(rerun.exitCode == 0, "\(rerun.stderr)")
            #expect(try fleet.report(rerun).outcome(moving) == .migrated)
            #expect(try await fleet.versions(moving) == [1, 2])
        }
    }

    @Test(arguments: [
        ["--lock-timeout", "0"], ["--lock-timeout", "0ms"], ["--lock-timeout", "-1"], ["--lock-timeout", "soon"],
        ["--lock-timeout", "2h"], ["--statement-timeout", "0"], ["--statement-timeout", "-5s"], ["--lock-retries", "-1"],
    ])
    func aBadLockOptionIsRefusedBeforeAnythingRuns(_ option: [String]) async throws {
        let cli = try CLIRunner.forControlDatabase(try TestCluster.adminURL.with(database: "no_such_database"))
        let result = try await cli.run(["migrate", "tenants"] + option)
        #expect(result.exitCode == 64, "\(result.stderr)")
        #expect(result.stderr.contains(option[0]), "\(result.stderr)")
        #expect(result.stderr.contains(option[0] == "--lock-retries" ? "zero or more" : "above zero"), "\(result.stderr)")
    }
}

/// Loops of reads, one per session, as a tenant's requests make them,
/// keeping the longest wait. The wait that counts is measured by PostgreSQL
/// (from the statement's arrival, when its implicit transaction starts, to
/// its execution, past any lock wait): under the whole suite the test
/// process's own scheduling adds up to a second to the round trip.
final class ReadWaits: Sendable {
    struct Measured {
        var longestInServer = Duration.zero
        var longestRoundTrip = Duration.zero
        var reads = 0
    }

    private let state = Mutex<(measured: Measured, stopped: Bool)>((Measured(), false))

    var measured: Measured { state.withLock { $0.measured } }

    func stop() { state.withLock { $0.stopped = true } }

    func readInLoops(on connections: [PostgresConnection]) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for connection in connections {
                group.addTask { try await self.readInALoop(on: connection) }
            }
            try await group.waitForAll()
        }
    }

    private func readInALoop(on connection: PostgresConnection) async throws {
        let clock = ContinuousClock()
        while !Task.isCancelled, !state.withLock({ $0.stopped }) {
            let started = clock.now
            let rows = try await connection.query(
                """
                SELECT extract(epoch FROM clock_timestamp() - transaction_timestamp())::float8
                FROM (SELECT count(*) FROM runs) AS counted
                """,
                logger: TestCluster.logger
            ).collect()
            let roundTrip = clock.now - started
            let inServer = Duration.seconds(try rows.first?.decode(Double.self) ?? 0)
            state.withLock {
                $0.measured.longestInServer = max($0.measured.longestInServer, inServer)
                $0.measured.longestRoundTrip = max($0.measured.longestRoundTrip, roundTrip)
                $0.measured.reads += 1
            }
            // A pause between reads keeps the loops off the shared cores;
            // three sessions still reach each 300 ms lock wait.
            try await Task.sleep(for: .milliseconds(5))
        }
    }
}
