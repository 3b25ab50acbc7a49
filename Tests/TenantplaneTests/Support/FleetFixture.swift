import ControlPlane
import Core
import Fleet
import Foundation
import PostgresNIO
import Testing

/// A fixture with tenants and a staged copy of the tenant migrations that a
/// test can add files to, as an operator stages a release.
struct FleetFixture {
    let base: ProvisioningFixture
    let folder: URL
    let cli: CLIRunner
    let slugs: [String]

    static func with(tenants count: Int, _ body: (FleetFixture) async throws -> Void) async throws {
        try await ProvisioningFixture.with { base in
            let folder = try TestCluster.stagedCopy(of: TestCluster.tenantMigrations)
            defer { try? FileManager.default.removeItem(at: folder) }
            var cli = base.cli
            cli.environment["TENANTPLANE_TENANT_MIGRATIONS"] = folder.path
            var slugs: [String] = []
            for index in 0..<count {
                let slug = ProvisioningFixture.slug("fleet\(index)")
                let created = try await cli.run("tenant", "create", slug, "--name", "Fleet \(index)")
                try #require(created.exitCode == 0, "\(created.stderr)")
                slugs.append(slug)
            }
            try await body(FleetFixture(base: base, folder: folder, cli: cli, slugs: slugs.sorted()))
        }
    }

    func stage(_ name: String, _ sql: String) throws {
        try Data(sql.utf8).write(to: folder.appendingPathComponent(name))
    }

    func versions(_ slug: String) async throws -> [Int] {
        try await TestCluster.query(
            try TestCluster.adminURL.with(database: try TenantSlug(slug).databaseName),
            "SELECT version FROM schema_migrations ORDER BY version"
        ).map { try $0.decode(Int.self) }
    }

    func report(_ result: CLIRunner.Result) throws -> FleetMigrationReport {
        try result.json(FleetMigrationReport.self)
    }
}

extension FleetMigrationReport {
    func outcome(_ target: String) -> FleetMigrationResult.Outcome? {
        results.first { $0.target == target }?.outcome
    }
}
