import Config
import ControlPlane
import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Testing

/// A migrated control database on the test cluster. Tenant databases land on
/// the same cluster, so each test uses its own slugs (tenant names are global).
struct ProvisioningFixture {
    let controlURL: PostgresURL
    let cli: CLIRunner
    let storage: URL

    static func with(_ body: (ProvisioningFixture) async throws -> Void) async throws {
        try await TestCluster.withScratchDatabase { url in
            let storage = FileManager.default.temporaryDirectory.appendingPathComponent("tp-storage-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: storage) }
            // Each fixture keeps its own template: tests run in parallel on one cluster.
            let template = "tpl_" + UUID().uuidString.prefix(12).lowercased().replacingOccurrences(of: "-", with: "")
            let cli = try CLIRunner.forControlDatabase(
                url, extra: ["TENANTPLANE_STORAGE": storage.path, "TENANTPLANE_TEMPLATE_DATABASE": template])
            let migrated = try await cli.run("migrate", "control")
            try #require(migrated.exitCode == 0, "\(migrated.stderr)")
            let fixture = ProvisioningFixture(controlURL: url, cli: cli, storage: storage)
            do {
                try await body(fixture)
                try await fixture.dropTenantDatabases()
            } catch {
                try? await fixture.dropTenantDatabases()
                throw error
            }
        }
    }

    /// Unique slugs per test run: the cluster is shared by parallel tests.
    static func slug(_ prefix: String) -> String {
        "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
    }

    func tenantDatabases(_ slug: String) async throws -> [String] {
        let name = try TenantSlug(slug).databaseName
        return try await TestCluster.query(
            controlURL, "SELECT datname::text FROM pg_database WHERE datname = \(name)"
        ).map { try $0.decode(String.self) }
    }

    func tenantRoles(_ slug: String) async throws -> [String] {
        let name = try TenantSlug(slug).roleName
        return try await TestCluster.query(controlURL, "SELECT rolname::text FROM pg_roles WHERE rolname = \(name)")
            .map { try $0.decode(String.self) }
    }

    func status(_ slug: String) async throws -> String? {
        try await TestCluster.query(controlURL, "SELECT status FROM tenants WHERE id = \(slug)").first?.decode(String.self)
    }

    /// The tenant role's URL with its real password, opened with the master key.
    func tenantURL(_ slug: String) async throws -> PostgresURL {
        let row = try #require(
            try await TestCluster.query(
                controlURL, "SELECT database_url, role_password_encrypted FROM tenants WHERE id = \(slug)"
            ).first)
        let (raw, sealed) = try row.decode((String, Data).self)
        let key = try MasterKey(base64: cli.environment["TENANTPLANE_MASTER_KEY"]!, source: "test")
        var url = try PostgresURL(raw)
        url.password = try SecretBox(masterKey: key).open(sealed, owner: slug)
        return url
    }

    var template: String { cli.environment["TENANTPLANE_TEMPLATE_DATABASE"]! }

    /// A server on this fixture's control database, master key, storage and
    /// template (plus `extra` settings), as the CLI sees them.
    func server(extra: [String: String] = [:]) throws -> some ApplicationProtocol {
        try TestServer.application(
            controlURL: controlURL,
            extra: extra.merging([
                "TENANTPLANE_MASTER_KEY": cli.environment["TENANTPLANE_MASTER_KEY"]!,
                "TENANTPLANE_STORAGE": storage.path,
                "TENANTPLANE_TEMPLATE_DATABASE": template,
            ]) { own, _ in own })
    }

    func dropTenantDatabases() async throws {
        _ = try await TestCluster.query(
            try TestCluster.adminURL,
            PostgresQuery(unsafeSQL: "UPDATE pg_database SET datistemplate = false WHERE datname = '\(template)'"))
        try await TestCluster.drop(template)
        let spares = try await TestCluster.query(controlURL, "SELECT name FROM tenant_spares").map { try $0.decode(String.self) }
        for name in spares {
            try await TestCluster.drop(name)
            _ = try? await TestCluster.query(try TestCluster.adminURL, PostgresQuery(unsafeSQL: "DROP ROLE IF EXISTS \(name)"))
        }
        let tenants = try await TestCluster.query(controlURL, "SELECT id FROM tenants").map { try $0.decode(String.self) }
        for id in tenants {
            let slug = try TenantSlug(id)
            try await TestCluster.drop(slug.databaseName)
            _ = try? await TestCluster.query(try TestCluster.adminURL, PostgresQuery(unsafeSQL: "DROP ROLE IF EXISTS \(slug.roleName)"))
        }
    }
}
