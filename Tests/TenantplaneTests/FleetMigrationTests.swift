import ControlPlane
import Core
import Fleet
import Foundation
import PostgresNIO
import Testing

@Suite("Fleet migrations: every tenant database, with a ledger")
struct FleetMigrationTests {
    @Test func migratesEveryTenantThenSkipsThemWithoutConnecting() async throws {
        try await FleetFixture.with(tenants: 3) { fleet in
            try fleet.stage("002_notes.sql", "CREATE TABLE notes (id SERIAL PRIMARY KEY, body TEXT);\nCREATE INDEX notes_body_idx ON notes (body);")
            let first = try await fleet.cli.run("migrate", "tenants", "--json")
            #expect(first.exitCode == 0, "\(first.stderr) \(first.stdout)")
            let report = try fleet.report(first)
            for slug in fleet.slugs {
                #expect(report.outcome(slug) == .migrated)
                #expect(try await fleet.versions(slug) == [1, 2])
            }
            #expect(report.results.contains { $0.kind == .template && $0.toVersion == 2 })
            let ledger = try await TestCluster.query(
                fleet.base.controlURL, "SELECT count(*)::int FROM tenant_migration_ledger WHERE version = 2 AND status = 'applied'")
            #expect(try ledger.first?.decode(Int.self) == 3)
            let versions = try await TestCluster.query(fleet.base.controlURL, "SELECT DISTINCT schema_version FROM tenants")
            #expect(try versions.map { try $0.decode(Int.self) } == [2])

            let second = try await fleet.cli.run("migrate", "tenants", "--json")
            #expect(second.exitCode == 0)
            #expect(try fleet.report(second).results.allSatisfy { $0.outcome == .skipped })

            // A tenant created now is born at version 2 from the refreshed template.
            let late = ProvisioningFixture.slug("late")
            let created = try await fleet.cli.run("tenant", "create", late, "--name", "Late", "--json")
            #expect(try created.json(TenantRecord.self).schemaVersion == 2)
        }
    }

    @Test func aTenantWhoseDataBreaksTheMigrationIsReportedAndConvergesAfterAFix() async throws {
        try await FleetFixture.with(tenants: 3) { fleet in
            let broken = fleet.slugs[1]
            let brokenURL = try await fleet.base.tenantURL(broken)
            _ = try await TestCluster.query(
                brokenURL,
                "INSERT INTO audit_logs (user_id, action, resource_type, resource_id) VALUES ('u', 'same', 'r', '1'), ('u', 'same', 'r', '2')")
            try fleet.stage("002_unique_actions.sql", "CREATE UNIQUE INDEX audit_logs_action_key ON audit_logs (action);")

            let failed = try await fleet.cli.run("migrate", "tenants")
            #expect(failed.exitCode == 1)
            #expect(failed.stdout.contains("23505"))
            #expect(failed.stdout.contains("002_unique_actions.sql"))
            #expect(try await fleet.versions(broken) == [1])
            for slug in fleet.slugs where slug != broken { #expect(try await fleet.versions(slug) == [1, 2]) }

            let status = try await fleet.cli.run("migrate", "status")
            #expect(status.exitCode == 1)
            #expect(status.stdout.contains("FAILED: \(broken) at version 1"))

            _ = try await TestCluster.query(brokenURL, "DELETE FROM audit_logs WHERE resource_id = '2'")
            let fixed = try await fleet.cli.run("migrate", "tenants", "--json")
            #expect(fixed.exitCode == 0, "\(fixed.stdout)")
            let report = try fleet.report(fixed)
            #expect(report.outcome(broken) == .migrated)
            #expect(fleet.slugs.filter { $0 != broken }.allSatisfy { report.outcome($0) == .skipped })
            let attempts = try await TestCluster.query(
                fleet.base.controlURL,
                "SELECT status, attempt FROM tenant_migration_ledger WHERE tenant_id = \(broken) AND version = 2")
            let (ledgerStatus, attempt) = try #require(attempts.first).decode((String, Int).self)
            #expect(ledgerStatus == "applied")
            #expect(attempt == 2)
            #expect(try await fleet.cli.run("migrate", "status").exitCode == 0)
        }
    }

    @Test func aDatabaseDroppedBehindOurBackIsReportedNotFatal() async throws {
        try await FleetFixture.with(tenants: 2) { fleet in
            let gone = fleet.slugs[0]
            try await TestCluster.drop(try TenantSlug(gone).databaseName)
            try fleet.stage("002_more.sql", "CREATE TABLE more (id INT);")
            let result = try await fleet.cli.run("migrate", "tenants", "--json")
            #expect(result.exitCode == 1)
            let report = try fleet.report(result)
            #expect(report.outcome(gone) == .failed)
            #expect(report.results.first { $0.target == gone }?.error?.contains("does not exist") == true)
            #expect(report.outcome(fleet.slugs[1]) == .migrated)
        }
    }

    @Test func aSyntaxErrorIsCaughtOnTheCanaryAndTheRestAreUntouched() async throws {
        try await FleetFixture.with(tenants: 3) { fleet in
            try fleet.stage("002_typo.sql", "CREAT TABLE oops (id INT);")
            let result = try await fleet.cli.run("migrate", "tenants", "--canary", "1", "--json")
            #expect(result.exitCode == 1)
            let report = try fleet.report(result)
            #expect(report.stoppedReason?.contains("canary \(fleet.slugs[0]) failed") == true)
            #expect(report.outcome(fleet.slugs[0]) == .failed)
            #expect(report.results.first { $0.target == fleet.slugs[0] }?.sqlState == "42601")
            #expect(report.outcome(fleet.slugs[1]) == .notAttempted)
            #expect(report.outcome(fleet.slugs[2]) == .notAttempted)
            for slug in fleet.slugs { #expect(try await fleet.versions(slug) == [1]) }
        }
    }

    @Test func wavesStopWhenTooManyTenantsOfAWaveFail() async throws {
        try await FleetFixture.with(tenants: 4) { fleet in
            for slug in fleet.slugs.prefix(2) {
                _ = try await TestCluster.query(
                    try await fleet.base.tenantURL(slug),
                    "INSERT INTO audit_logs (user_id, action, resource_type, resource_id) VALUES ('u', 'x', 'r', '1'), ('u', 'x', 'r', '2')")
            }
            try fleet.stage("002_unique.sql", "CREATE UNIQUE INDEX audit_logs_action_key ON audit_logs (action);")
            let result = try await fleet.cli.run("migrate", "tenants", "--wave-size", "2", "--json")
            #expect(result.exitCode == 1)
            let report = try fleet.report(result)
            #expect(report.stoppedReason?.contains("2 of 2 tenants fail") == true)
            #expect(report.outcome(fleet.slugs[2]) == .notAttempted)
            #expect(report.outcome(fleet.slugs[3]) == .notAttempted)
        }
    }

    @Test func dryRunListsPendingFilesAndTouchesNothing() async throws {
        try await FleetFixture.with(tenants: 2) { fleet in
            try fleet.stage("002_more.sql", "CREATE TABLE more (id INT);")
            let result = try await fleet.cli.run("migrate", "tenants", "--dry-run", "--json")
            #expect(result.exitCode == 0)
            let report = try fleet.report(result)
            for slug in fleet.slugs {
                #expect(report.outcome(slug) == .pending)
                #expect(report.results.first { $0.target == slug }?.pendingFiles == ["002_more.sql"])
                #expect(try await fleet.versions(slug) == [1])
            }
            let only = try await fleet.cli.run("migrate", "tenants", "--tenant", fleet.slugs[0], "--json")
            #expect(try fleet.report(only).results.map(\.target) == [fleet.slugs[0]])
            #expect(try await fleet.versions(fleet.slugs[1]) == [1])
            let unknown = try await fleet.cli.run("migrate", "tenants", "--tenant", "no-such-tenant")
            #expect(unknown.exitCode == 1)
            #expect(unknown.stderr.contains("is not an active or suspended tenant"))
        }
    }

    @Test func driftOnOneTenantIsReportedAndThatTenantSkipped() async throws {
        try await FleetFixture.with(tenants: 2) { fleet in
            let drifted = fleet.slugs[0]
            _ = try await TestCluster.query(
                try TestCluster.adminURL.with(database: try TenantSlug(drifted).databaseName),
                "UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
            try fleet.stage("002_more.sql", "CREATE TABLE more (id INT);")
            let result = try await fleet.cli.run("migrate", "tenants", "--json")
            #expect(result.exitCode == 1)
            let report = try fleet.report(result)
            #expect(report.outcome(drifted) == .drift)
            #expect(report.outcome(fleet.slugs[1]) == .migrated)
            #expect(try await fleet.versions(drifted) == [1])
            let verify = try await fleet.cli.run("migrate", "status", "--verify")
            #expect(verify.exitCode == 1)
            #expect(verify.stdout.contains("verify \(drifted): drift"))
        }
    }

    @Test func twoRunsAtOnceApplyEachFileOnce() async throws {
        try await FleetFixture.with(tenants: 3) { fleet in
            try fleet.stage("002_slow.sql", "SELECT pg_sleep(0.2);\nCREATE TABLE counter (n INT);\nINSERT INTO counter VALUES (1);")
            async let a = fleet.cli.run("migrate", "tenants", "--concurrency", "2")
            async let b = fleet.cli.run("migrate", "tenants", "--concurrency", "2")
            let (first, second) = try await (a, b)
            #expect(first.exitCode == 0, "\(first.stdout)\(first.stderr)")
            #expect(second.exitCode == 0, "\(second.stdout)\(second.stderr)")
            for slug in fleet.slugs {
                #expect(try await fleet.versions(slug) == [1, 2])
                let rows = try await TestCluster.query(
                    try TestCluster.adminURL.with(database: try TenantSlug(slug).databaseName), "SELECT count(*)::int FROM counter")
                #expect(try rows.first?.decode(Int.self) == 1)
            }
        }
    }

    @Test func aRunKilledHalfwayLeavesNoTenantHalfAppliedAndARerunConverges() async throws {
        try await FleetFixture.with(tenants: 4) { fleet in
            try fleet.stage(
                "002_two_tables.sql", "CREATE TABLE first_half (id INT);\nSELECT pg_sleep(0.25);\nCREATE TABLE second_half (id INT);")
            let killed = try await fleet.cli.runAndKill(["migrate", "tenants", "--concurrency", "1"], after: .milliseconds(1100))
            #expect(killed.exitCode != 0)
            for slug in fleet.slugs {
                let tables = try await TestCluster.query(
                    try TestCluster.adminURL.with(database: try TenantSlug(slug).databaseName),
                    "SELECT count(*)::int FROM pg_tables WHERE tablename IN ('first_half', 'second_half')")
                let count = try tables.first?.decode(Int.self) ?? -1
                #expect(count == 0 || count == 2, "tenant \(slug) has \(count) of the two tables")
            }
            let rerun = try await fleet.cli.run("migrate", "tenants")
            #expect(rerun.exitCode == 0, "\(rerun.stdout)\(rerun.stderr)")
            for slug in fleet.slugs { #expect(try await fleet.versions(slug) == [1, 2]) }
        }
    }
}

@Suite("Fleet migrations: the ledger is trusted, --verify logs in")
struct FleetMigrationLedgerTests {
    @Test func aNoOpRunAndStatusLogInToNoTenantDatabaseAndVerifyLogsInToEveryOne() async throws {
        try await FleetFixture.with(tenants: 2) { fleet in
            try fleet.stage("002_more.sql", "CREATE TABLE more (id INT);")
            let migrated = try await fleet.cli.run("migrate", "tenants")
            #expect(migrated.exitCode == 0, "\(migrated.stdout)\(migrated.stderr)")
            // Dropped behind the ledger's back: only a command that logs in
            // to the tenant's database can tell.
            let gone = fleet.slugs[0]
            try await TestCluster.drop(try TenantSlug(gone).databaseName)

            let noOp = try await fleet.cli.run("migrate", "tenants", "--json")
            #expect(noOp.exitCode == 0, "\(noOp.stdout)\(noOp.stderr)")
            #expect(try fleet.report(noOp).results.allSatisfy { $0.outcome == .skipped })
            let status = try await fleet.cli.run("migrate", "status", "--json")
            #expect(status.exitCode == 0, "\(status.stdout)\(status.stderr)")
            let trusted = try #require(try status.jsonObject() as? [String: Any])["tenants"] as? [String: Any]
            #expect(trusted?["not_at_current_files"] as? Int == 0)
            #expect(trusted?["verified"] == nil)
            #expect(trusted?["verify_duration_milliseconds"] == nil)

            let verify = try await fleet.cli.run("migrate", "status", "--verify", "--json")
            #expect(verify.exitCode == 1, "\(verify.stdout)\(verify.stderr)")
            let checked = try #require(try verify.jsonObject() as? [String: Any])["tenants"] as? [String: Any]
            let verified = try #require(checked?["verified"] as? [[String: Any]])
            #expect(verified.count == 2)
            #expect(verified.first { $0["target"] as? String == gone }?["outcome"] as? String == "failed")
            #expect(verified.first { $0["target"] as? String == fleet.slugs[1] }?["outcome"] as? String == "current")
            #expect((checked?["verify_duration_milliseconds"] as? Double ?? 0) > 0)
            let text = try await fleet.cli.run("migrate", "status", "--verify")
            #expect(text.exitCode == 1)
            #expect(text.stdout.contains("verified 2 tenant databases (logged in to each) in "), "\(text.stdout)")

            let every = try await fleet.cli.run("migrate", "tenants", "--check-every-database", "--json")
            #expect(every.exitCode == 1, "\(every.stdout)\(every.stderr)")
            let report = try fleet.report(every)
            #expect(report.outcome(gone) == .failed)
            #expect(report.outcome(fleet.slugs[1]) == .current)
        }
    }
}
