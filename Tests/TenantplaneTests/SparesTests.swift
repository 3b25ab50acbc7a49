import ControlPlane
import Core
import Fleet
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Testing

// One at a time: each test copies templates and runs a dozen CLI processes, and the
// whole suite already keeps both cores busy.
@Suite("Warm spares", .serialized)
struct SparesTests {
    /// The fixture's spare rows by state, and whether each row's database exists.
    static func spares(_ fixture: ProvisioningFixture) async throws -> [(name: String, state: String, exists: Bool)] {
        try await TestCluster.query(
            fixture.controlURL,
            """
            SELECT s.name, s.state, EXISTS (SELECT FROM pg_database d WHERE d.datname = s.name)
            FROM tenant_spares s ORDER BY s.created_at
            """
        ).map { try $0.decode((String, String, Bool).self) }.map { (name: $0.0, state: $0.1, exists: $0.2) }
    }

    static func cli(_ fixture: ProvisioningFixture, spares: Int) -> CLIRunner {
        var cli = fixture.cli
        cli.environment["TENANTPLANE_WARM_SPARES"] = "\(spares)"
        return cli
    }

    @Test func aCreateClaimsAReadySpareAndTheTenantIsLikeAnyOther() async throws {
        try await ProvisioningFixture.with { fixture in
            let cli = Self.cli(fixture, spares: 2)
            let filled = try await cli.run("spares", "fill", "--json")
            #expect(filled.exitCode == 0, "\(filled.stderr)")
            let pass = try #require((try filled.jsonObject() as? [[String: Any]])?.first)
            #expect((pass["created"] as? [String])?.count == 2)
            let spares = try await Self.spares(fixture)
            #expect(spares.map(\.state) == ["ready", "ready"])
            #expect(spares.allSatisfy { $0.exists && $0.name.hasPrefix("tp__spare_") })

            // A spare's role cannot log in and has no password; no role but
            // superusers may connect to its database.
            for spare in spares {
                let row = try #require(
                    try await TestCluster.query(
                        try TestCluster.adminURL,
                        """
                        SELECT r.rolcanlogin, r.rolpassword IS NULL,
                            has_database_privilege('public', d.datname, 'CONNECT')
                        FROM pg_authid r, pg_database d WHERE r.rolname = \(spare.name) AND d.datname = \(spare.name)
                        """
                    ).first)
                let (canLogin, noPassword, publicConnect) = try row.decode((Bool, Bool, Bool).self)
                #expect(!canLogin && noPassword && !publicConnect)
            }

            let status = try await cli.run("spares", "status", "--json")
            let server = try #require((try status.jsonObject() as? [[String: Any]])?.first)
            #expect(server["ready"] as? Int == 2)
            #expect(server["target"] as? Int == 2)

            let first = ProvisioningFixture.slug("spare-a")
            let created = try await cli.run("tenant", "create", first, "--name", "Spare A", "--json")
            #expect(created.exitCode == 0, "\(created.stderr)")
            let tenant = try #require(try created.jsonObject() as? [String: Any])
            #expect(tenant["origin"] as? String == "spare")
            #expect(tenant["status"] as? String == "active")
            #expect(tenant["schema_version"] as? Int == 1)
            #expect(try await Self.spares(fixture).map(\.name) == [spares[1].name])
            #expect(try await fixture.tenantDatabases(first).count == 1)
            #expect(try await fixture.tenantRoles(first).count == 1)

            // The renamed database is the tenant's own, as a template copy is.
            let url = try await fixture.tenantURL(first)
            let owners = try await TestCluster.query(
                url,
                """
                SELECT DISTINCT pg_get_userbyid(d.datdba)::text, t.tableowner::text FROM pg_tables t, pg_database d
                WHERE t.schemaname = 'public' AND d.datname = current_database()
                """)
            #expect(try owners.map { try $0.decode((String, String).self) }.map { "\($0.0) \($0.1)" }
                == ["\(try TenantSlug(first).roleName) pg_database_owner"])
            _ = try await TestCluster.query(url, "INSERT INTO runs (status) VALUES ('pending')")

            let second = ProvisioningFixture.slug("spare-b")
            #expect(try await cli.run("tenant", "create", second, "--name", "Spare B").stdout.contains("a warm spare"))
            let third = ProvisioningFixture.slug("spare-c")
            let fallback = try await cli.run("tenant", "create", third, "--name", "Spare C", "--json")
            #expect(fallback.exitCode == 0, "\(fallback.stderr)")
            let copied = try #require(try fallback.jsonObject() as? [String: Any])
            #expect(copied["origin"] as? String == "template")
            #expect((copied["origin_note"] as? String)?.contains("no warm spare was ready on server default") == true)

            // Claimed spares keep tenants apart like any other.
            let secondURL = try await fixture.tenantURL(second)
            await #expect(throws: DatabaseError.self) {
                _ = try await TestCluster.query(url.with(database: secondURL.database), "SELECT 1")
            }
            let audited = try await TestCluster.query(
                fixture.controlURL,
                "SELECT count(*)::int FROM control_audit_logs WHERE action = 'server.spares.fill' AND outcome = 'success'")
            #expect(try audited.first?.decode(Int.self) == 1)
        }
    }

    @Test(arguments: ["spare_taken", "spare_renamed"])
    func aClaimKilledAtAnyPointLeavesASpareOrATenantNeverBothNorNeither(_ step: String) async throws {
        try await ProvisioningFixture.with { fixture in
            let cli = Self.cli(fixture, spares: 1)
            #expect(try await cli.run("spares", "fill").exitCode == 0)
            let spare = try #require(try await Self.spares(fixture).first)
            let slug = ProvisioningFixture.slug("claimkill")
            var killer = cli
            killer.environment["TENANTPLANE_FAULT_AFTER"] = step
            #expect(try await killer.run("tenant", "create", slug, "--name", "Killed").exitCode != 0)

            let tenantExists = try await fixture.tenantDatabases(slug).count == 1
            let spareExists = try await Self.spares(fixture).first?.exists == true
            #expect(tenantExists != spareExists, "tenant database \(tenantExists), spare database \(spareExists)")
            #expect(tenantExists == (step == "spare_renamed"))

            // The keeper's pass settles the claim: back to ready, or gone
            // because it is the tenant's now (and a new one is made).
            let settled = try await cli.run("spares", "fill", "--json")
            #expect(settled.exitCode == 0, "\(settled.stderr)")
            let pass = try #require((try settled.jsonObject() as? [[String: Any]])?.first)
            #expect(pass["settled"] as? [String] == [spare.name])
            let after = try await Self.spares(fixture)
            #expect(after.count == 1 && after.allSatisfy { $0.state == "ready" && $0.exists })
            #expect((after.first?.name == spare.name) == (step == "spare_taken"))

            let resumed = try await cli.run("tenant", "create", slug, "--name", "Killed", "--json")
            #expect(resumed.exitCode == 0, "\(resumed.stderr)")
            #expect(try await fixture.status(slug) == "active")
            #expect(try await fixture.tenantDatabases(slug).count == 1)
            #expect(try await fixture.tenantRoles(slug).count == 1)
            let version = try await TestCluster.query(try await fixture.tenantURL(slug), "SELECT max(version) FROM schema_migrations")
            #expect(try version.first?.decode(Int.self) == 1)
            #expect(try await Self.spares(fixture).allSatisfy { $0.state == "ready" && $0.exists })
        }
    }

    @Test func aCreateAfterAKilledClaimSettlesItItself() async throws {
        try await ProvisioningFixture.with { fixture in
            let cli = Self.cli(fixture, spares: 1)
            #expect(try await cli.run("spares", "fill").exitCode == 0)
            let slug = ProvisioningFixture.slug("selfsettle")
            var killer = cli
            killer.environment["TENANTPLANE_FAULT_AFTER"] = "spare_renamed"
            #expect(try await killer.run("tenant", "create", slug, "--name", "K").exitCode != 0)
            let resumed = try await cli.run("tenant", "create", slug, "--name", "K", "--json")
            #expect(resumed.exitCode == 0, "\(resumed.stderr)")
            #expect(try resumed.jsonObject() as? [String: Any] != nil)
            #expect(try await fixture.status(slug) == "active")
            #expect(try await Self.spares(fixture).isEmpty)
            _ = try await TestCluster.query(try await fixture.tenantURL(slug), "INSERT INTO runs (status) VALUES ('pending')")
        }
    }

    @Test func sparesCountAgainstCapacityAndDrainDropsThem() async throws {
        try await ProvisioningFixture.with { fixture in
            let cli = Self.cli(fixture, spares: 4)
            _ = try await TestCluster.query(fixture.controlURL, "UPDATE database_servers SET capacity = 3")
            let first = ProvisioningFixture.slug("cap-a")
            #expect(try await cli.run("tenant", "create", first, "--name", "A").exitCode == 0)
            let filled = try await cli.run("spares", "fill", "--json")
            #expect(filled.exitCode == 0, "\(filled.stderr)")
            let pass = try #require((try filled.jsonObject() as? [[String: Any]])?.first)
            #expect((pass["created"] as? [String])?.count == 2)
            #expect((pass["note"] as? String)?.contains("at capacity (1 tenants and 2 spares of 3)") == true)

            let listed = try await cli.run("server", "list", "--json")
            let server = try #require((try listed.jsonObject() as? [[String: Any]])?.first)
            #expect(server["spare_count"] as? Int == 2)

            // A spare's place becomes its tenant's.
            for name in ["cap-b", "cap-c"] {
                let created = try await cli.run("tenant", "create", ProvisioningFixture.slug(name), "--name", name, "--json")
                #expect((try created.jsonObject() as? [String: Any])?["origin"] as? String == "spare")
            }
            let full = try await cli.run("tenant", "create", ProvisioningFixture.slug("cap-d"), "--name", "D")
            #expect(full.exitCode == 1)
            #expect(full.stderr.contains("every active database server is full"))

            _ = try await TestCluster.query(fixture.controlURL, "UPDATE database_servers SET capacity = 10")
            #expect(try await cli.run("spares", "fill").exitCode == 0)
            let names = try await Self.spares(fixture).map(\.name)
            #expect(names.count == 4)
            let drained = try await cli.run("spares", "drain", "--json")
            #expect(drained.exitCode == 0, "\(drained.stderr)")
            #expect(((try drained.jsonObject() as? [[String: Any]])?.first?["retired"] as? [String])?.sorted() == names.sorted())
            #expect(try await Self.spares(fixture).isEmpty)
            let left = try await TestCluster.query(
                try TestCluster.adminURL,
                "SELECT count(*)::int FROM pg_roles WHERE rolname = ANY(\(names))")
            #expect(try left.first?.decode(Int.self) == 0)
        }
    }

    @Test func staleSparesAreNeverHandedOutAndMigrateTenantsRetiresThem() async throws {
        try await FleetFixture.with(tenants: 1) { fleet in
            var cli = fleet.cli
            cli.environment["TENANTPLANE_WARM_SPARES"] = "1"
            #expect(try await cli.run("spares", "fill").exitCode == 0)
            try fleet.stage("002_notes.sql", "CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL);\n")

            let slug = ProvisioningFixture.slug("fresh")
            let created = try await cli.run("tenant", "create", slug, "--name", "Fresh", "--json")
            #expect(created.exitCode == 0, "\(created.stderr)")
            let tenant = try #require(try created.jsonObject() as? [String: Any])
            #expect(tenant["origin"] as? String == "refreshed_template")
            #expect(tenant["schema_version"] as? Int == 2)
            let status = try await cli.run("spares", "status", "--json")
            let server = try #require((try status.jsonObject() as? [[String: Any]])?.first)
            #expect(server["stale"] as? Int == 1 && server["ready"] as? Int == 0)

            let migrated = try await cli.run("migrate", "tenants", "--json")
            #expect(migrated.exitCode == 0, "\(migrated.stderr)")
            #expect(try fleet.report(migrated).retiredSpares.count == 1)
            #expect(try await SparesTests.spares(fleet.base).isEmpty)
            #expect(try await cli.run("spares", "fill").exitCode == 0)
            let refilled = try await SparesTests.spares(fleet.base)
            let version = try await TestCluster.query(
                try TestCluster.adminURL.with(database: try #require(refilled.first).name),
                "SELECT max(version) FROM schema_migrations")
            #expect(try version.first?.decode(Int.self) == 2)
        }
    }

    @Test func theServerRefillsSparesAndAnAdminCreateClaimsOne() async throws {
        try await ProvisioningFixture.with { fixture in
            let app = try fixture.server(extra: ["TENANTPLANE_WARM_SPARES": "2"])
            @Sendable func ready() async throws -> Int {
                try await Self.spares(fixture).filter { $0.state == "ready" && $0.exists }.count
            }
            try await app.test(.router) { client in
                for _ in 0..<600 where try await ready() < 2 { try await Task.sleep(for: .milliseconds(100)) }
                #expect(try await ready() == 2)
                let slug = ProvisioningFixture.slug("api-spare")
                let created = try await client.execute(
                    uri: "/admin/tenants", method: .post, headers: TestServer.adminHeaders,
                    body: ByteBuffer(string: #"{"id": "\#(slug)", "name": "API"}"#))
                #expect(created.status == .created)
                #expect(created.json["origin"] as? String == "spare")
                #expect(created.json["status"] as? String == "active")
                for _ in 0..<600 where try await ready() < 2 { try await Task.sleep(for: .milliseconds(100)) }
                #expect(try await ready() == 2)
            }
        }
    }

    @Test func badSpareInputsAreClearErrors() async throws {
        try await ProvisioningFixture.with { fixture in
            let ghost = try await fixture.cli.run("spares", "fill", "--server", "ghost")
            #expect(ghost.exitCode == 1)
            #expect(ghost.stderr.contains("unknown database server ghost"))
            let negative = try await fixture.cli.run("spares", "fill", "--count", "101")
            #expect(negative.exitCode != 0)
            #expect(negative.stderr.contains("--count must be 0-100"))
            var wrong = fixture.cli
            wrong.environment["TENANTPLANE_WARM_SPARES"] = "many"
            let setting = try await wrong.run("spares", "status")
            #expect(setting.exitCode == 1)
            #expect(setting.stderr.contains("TENANTPLANE_WARM_SPARES"))
            #expect(try await Self.spares(fixture).isEmpty)
        }
    }
}
