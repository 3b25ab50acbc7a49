import ControlPlane
import Core
import Fleet
import Foundation
import PostgresNIO
import Testing

@Suite("Rolling upgrades: an older binary beside a newer one moves nothing backwards")
struct FleetMigrationUpgradeTests {
    @Test func anOlderBinaryRefusesTheNewerFleetKeepsTheNewerTemplateAndRecordsWhatItCopied() async throws {
        try await FleetFixture.with(tenants: 2) { fleet in
            // The old release's files (version 1) beside the new release's (1 and 2).
            let oldFiles = try TestCluster.stagedCopy(of: fleet.folder.path)
            defer { try? FileManager.default.removeItem(at: oldFiles) }
            var old = fleet.cli
            old.environment["TENANTPLANE_TENANT_MIGRATIONS"] = oldFiles.path
            try fleet.stage("002_notes.sql", "CREATE TABLE notes (id SERIAL PRIMARY KEY, body TEXT);")
            let upgraded = try await fleet.cli.run("migrate", "tenants")
            try #require(upgraded.exitCode == 0, "\(upgraded.stdout)\(upgraded.stderr)")
            let templateBefore = try await templateRecord(fleet)
            #expect(templateBefore.version == 2)

            for arguments in [["migrate", "tenants"], ["migrate", "tenants", "--dry-run", "--json"]] {
                let refused = try await old.run(arguments)
                #expect(refused.exitCode == 1)
                #expect(refused.stderr.contains("this binary knows migrations up to 1; the fleet is at 2"), "\(refused.stderr)")
            }

            // The old binary's create copies the newer template as it is and
            // records the version the copy holds.
            let late = ProvisioningFixture.slug("old-made")
            let created = try await old.run("tenant", "create", late, "--name", "Made by the old binary", "--json")
            try #require(created.exitCode == 0, "\(created.stderr)")
            #expect(try created.json(TenantRecord.self).schemaVersion == 2)
            #expect(try await fleet.versions(late) == [1, 2])
            #expect(try await templateRecord(fleet) == templateBefore)
            let templateVersions = try await TestCluster.query(
                try TestCluster.adminURL.with(database: fleet.base.template),
                "SELECT version FROM schema_migrations ORDER BY version")
            #expect(try templateVersions.map { try $0.decode(Int.self) } == [1, 2])
            #expect(try await old.run("migrate", "tenants").exitCode == 1)

            // The new binary connects to that tenant once (its files were not
            // this binary's to vouch for) and finds it current.
            let converged = try await fleet.cli.run("migrate", "tenants", "--json")
            #expect(converged.exitCode == 0, "\(converged.stderr)")
            let report = try fleet.report(converged)
            #expect(report.outcome(late) == .current)
            #expect(fleet.slugs.allSatisfy { report.outcome($0) == .skipped })
        }
    }

    /// The template's database (its oid: a rebuild makes a new one) and what
    /// the control database records of it.
    private func templateRecord(_ fleet: FleetFixture) async throws -> TemplateRecord {
        let oid = try await TestCluster.query(
            try TestCluster.adminURL, "SELECT oid::int FROM pg_database WHERE datname = \(fleet.base.template)")
        let record = try await TestCluster.query(
            fleet.base.controlURL, "SELECT template_version, template_fingerprint FROM database_servers")
        let (version, fingerprint) = try #require(record.first).decode((Int?, String?).self)
        return TemplateRecord(oid: try #require(oid.first).decode(Int.self), version: version, fingerprint: fingerprint)
    }

    struct TemplateRecord: Equatable {
        let oid: Int
        let version: Int?
        let fingerprint: String?
    }
}
