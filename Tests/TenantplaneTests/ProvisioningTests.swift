import Config
import ControlPlane
import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Testing

@Suite("Provisioning and tenant lifecycle")
struct ProvisioningTests {
    @Test func createMakesAnActiveTenantWithItsOwnRoleAndDatabase() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = ProvisioningFixture.slug("acme")
            let created = try await fixture.cli.run("tenant", "create", slug, "--name", "Acme Inc", "--json")
            #expect(created.exitCode == 0, "\(created.stderr)")
            let tenant = try #require(try created.jsonObject() as? [String: Any])
            #expect(tenant["id"] as? String == slug)
            #expect(tenant["name"] as? String == "Acme Inc")
            #expect(tenant["status"] as? String == "active")
            #expect(tenant["server"] as? String == "default")
            #expect(tenant["schema_version"] as? Int == 1)
            #expect((tenant["database_url"] as? String)?.contains(":") == true)

            let shown = try await fixture.cli.run("tenant", "show", slug, "--json")
            #expect(try #require(try shown.jsonObject() as? [String: Any])["status"] as? String == "active")

            // The role logs in with its real password, owns its database and,
            // through pg_database_owner (the template's objects are copied
            // with that owner), every table in it.
            let url = try await fixture.tenantURL(slug)
            #expect(url.password.map { !(tenant["database_url"] as! String).contains($0) } == true)
            let owners = try await TestCluster.query(
                url,
                """
                SELECT DISTINCT pg_get_userbyid(d.datdba)::text, t.tableowner::text FROM pg_tables t, pg_database d
                WHERE t.schemaname = 'public' AND d.datname = current_database()
                """)
            #expect(try owners.map { try $0.decode((String, String).self) }.map { "\($0.0) \($0.1)" }
                == ["\(try TenantSlug(slug).roleName) pg_database_owner"])
            _ = try await TestCluster.query(url, "INSERT INTO runs (status) VALUES ('pending')")
            _ = try await TestCluster.query(url, "ALTER TABLE runs ADD COLUMN owner_probe int")
            _ = try await TestCluster.query(url, "ALTER TABLE runs DROP COLUMN owner_probe")

            // No password in plain text anywhere in the control database.
            let dump = try await TestCluster.query(
                fixture.controlURL, "SELECT count(*)::int FROM tenants WHERE database_url LIKE \("%" + url.password! + "%")")
            #expect(try dump.first?.decode(Int.self) == 0)
        }
    }

    @Test(arguments: ["A", "x", "../etc", "a'b", "robert\"; drop", String(repeating: "a", count: 64), "postgres", "template1", "9abc", "abc-", "ab", "tenant_x", "ÅÄÖ-tenant"])
    func invalidOrDangerousSlugsAreRejectedBeforeAnySQL(_ slug: String) async throws {
        try await ProvisioningFixture.with { fixture in
            let result = try await fixture.cli.run("tenant", "create", slug, "--name", "X")
            #expect(result.exitCode == 1)
            #expect(result.stderr.hasPrefix("tenantplane: tenant id "))
            let count = try await TestCluster.query(fixture.controlURL, "SELECT count(*)::int FROM tenants")
            #expect(try count.first?.decode(Int.self) == 0)
        }
    }

    @Test func anExistingSlugIsRefusedAndNothingIsTouched() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = ProvisioningFixture.slug("dup")
            #expect(try await fixture.cli.run("tenant", "create", slug, "--name", "First").exitCode == 0)
            let before = try await TestCluster.query(fixture.controlURL, "SELECT updated_at FROM tenants WHERE id = \(slug)")
                .first?.decode(Date.self)
            let again = try await fixture.cli.run("tenant", "create", slug, "--name", "Second")
            #expect(again.exitCode == 1)
            #expect(again.stderr == "tenantplane: tenant \(slug) already exists\n")
            let after = try await TestCluster.query(fixture.controlURL, "SELECT name, updated_at FROM tenants WHERE id = \(slug)")
            let (name, updated) = try #require(after.first).decode((String, Date).self)
            #expect(name == "First")
            #expect(updated == before)
            #expect(try await fixture.tenantDatabases(slug).count == 1)
        }
    }

    @Test func unknownServerAndFullFleetAreClearErrors() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = ProvisioningFixture.slug("nowhere")
            let unknown = try await fixture.cli.run("tenant", "create", slug, "--name", "X", "--server", "ghost")
            #expect(unknown.exitCode == 1)
            #expect(unknown.stderr.contains("unknown database server ghost"))
            _ = try await TestCluster.query(fixture.controlURL, "UPDATE database_servers SET capacity = 0")
            let full = try await fixture.cli.run("tenant", "create", slug, "--name", "X")
            #expect(full.exitCode == 1)
            #expect(full.stderr.contains("every active database server is full"))
            #expect(try await fixture.status(slug) == nil)
        }
    }

    @Test func anUnreachableServerLeavesTheTenantFailedAndARetrySucceeds() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = ProvisioningFixture.slug("down")
            let admin = try TestCluster.adminURL
            _ = try await TestCluster.query(
                fixture.controlURL,
                "UPDATE database_servers SET admin_url = \("postgres://\(admin.user)@127.0.0.1:1/\(admin.database)?sslmode=disable")")
            let failed = try await fixture.cli.run("tenant", "create", slug, "--name", "Down")
            #expect(failed.exitCode == 1)
            #expect(failed.stderr.contains("cannot reach PostgreSQL at 127.0.0.1:1"))
            #expect(try await fixture.status(slug) == "failed")
            let reason = try await TestCluster.query(fixture.controlURL, "SELECT last_error FROM tenants WHERE id = \(slug)")
            #expect(try reason.first?.decode(String?.self)?.contains("cannot reach") == true)

            _ = try await TestCluster.query(
                fixture.controlURL, "UPDATE database_servers SET admin_url = \(fixture.controlURL.redacted)")
            let retried = try await fixture.cli.run("tenant", "create", slug, "--name", "Down")
            #expect(retried.exitCode == 0, "\(retried.stderr)")
            #expect(try await fixture.status(slug) == "active")
        }
    }

    @Test(arguments: ["registered", "role", "database", "migrate"])
    func aProcessKilledAfterAnyStepIsFinishedByRunningCreateAgain(_ step: String) async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = ProvisioningFixture.slug("kill")
            var killer = fixture.cli
            killer.environment["TENANTPLANE_FAULT_AFTER"] = step
            let killed = try await killer.run("tenant", "create", slug, "--name", "Killed")
            #expect(killed.exitCode != 0)
            #expect(try await fixture.status(slug) == "provisioning")

            let resumed = try await fixture.cli.run("tenant", "create", slug, "--name", "Killed", "--json")
            #expect(resumed.exitCode == 0, "\(resumed.stderr)")
            #expect(try await fixture.status(slug) == "active")
            #expect(try await fixture.tenantDatabases(slug).count == 1)
            #expect(try await fixture.tenantRoles(slug).count == 1)
            let url = try await fixture.tenantURL(slug)
            let version = try await TestCluster.query(url, "SELECT max(version) FROM schema_migrations")
            #expect(try version.first?.decode(Int.self) == 1)
        }
    }

    @Test func aTenantRoleCannotOpenAnotherTenantsDatabaseNorTheControlDatabase() async throws {
        try await ProvisioningFixture.with { fixture in
            let a = ProvisioningFixture.slug("iso-a")
            let b = ProvisioningFixture.slug("iso-b")
            #expect(try await fixture.cli.run("tenant", "create", a, "--name", "A").exitCode == 0)
            #expect(try await fixture.cli.run("tenant", "create", b, "--name", "B").exitCode == 0)
            let aURL = try await fixture.tenantURL(a)
            let bURL = try await fixture.tenantURL(b)
            for target in [bURL.database, fixture.controlURL.database, fixture.template] {
                await #expect(throws: DatabaseError.self) {
                    _ = try await TestCluster.query(aURL.with(database: target), "SELECT 1")
                }
            }
            // Were B's database opened to A by mistake, A would still own
            // nothing there: only B, its owner, is pg_database_owner in it.
            _ = try await TestCluster.query(
                try TestCluster.adminURL,
                PostgresQuery(unsafeSQL: "GRANT CONNECT ON DATABASE \(bURL.database) TO \(aURL.user)"))
            let intruder = aURL.with(database: bURL.database)
            for statement in ["SELECT count(*) FROM runs", "ALTER TABLE runs ADD COLUMN x int", "DROP TABLE runs CASCADE"] {
                let refused = await #expect(throws: PSQLError.self, "\(statement)") {
                    _ = try await TestCluster.query(intruder, PostgresQuery(unsafeSQL: statement))
                }
                #expect(refused?.sqlState == "42501", "\(statement): \(String(describing: refused?.serverMessage))")
            }
            // And with a wrong password it cannot log in to its own.
            await #expect(throws: DatabaseError.self) {
                _ = try await TestCluster.query(bURL.with(user: bURL.user, password: "wrong"), "SELECT 1")
            }
        }
    }

    @Test func suspendBlocksTheRoleAndResumeRestoresIt() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = ProvisioningFixture.slug("sus")
            #expect(try await fixture.cli.run("tenant", "create", slug, "--name", "S").exitCode == 0)
            let url = try await fixture.tenantURL(slug)
            #expect(try await fixture.cli.run("tenant", "suspend", slug).exitCode == 0)
            let row = try #require(try await TestCluster.query(fixture.controlURL, "SELECT status, is_active FROM tenants WHERE id = \(slug)").first)
            #expect(try row.decode((String, Bool).self) == ("suspended", false))
            await #expect(throws: DatabaseError.self) { _ = try await TestCluster.query(url, "SELECT 1") }
            let again = try await fixture.cli.run("tenant", "suspend", slug)
            #expect(again.exitCode == 0)
            #expect(try await fixture.cli.run("tenant", "resume", slug).exitCode == 0)
            #expect(try await fixture.status(slug) == "active")
            _ = try await TestCluster.query(url, "SELECT 1")
            let unknown = try await fixture.cli.run("tenant", "suspend", "ghost-tenant")
            #expect(unknown.exitCode == 1)
            #expect(unknown.stderr == "tenantplane: no such tenant\n")
        }
    }

    @Test func deleteNeedsConfirmationStopsTheTenantAndThePurgeRemovesEverythingButTheRow() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = ProvisioningFixture.slug("del")
            #expect(try await fixture.cli.run("tenant", "create", slug, "--name", "D").exitCode == 0)
            let key = try await fixture.cli.run("tenant", "key", "create", slug, "--json").json(IssuedAPIKey.self)
            let files = fixture.storage.appendingPathComponent(slug).appendingPathComponent("run/step")
            try FileManager.default.createDirectory(at: files, withIntermediateDirectories: true)
            try Data("x".utf8).write(to: files.appendingPathComponent("output.json"))

            let wrong = try await fixture.cli.run("tenant", "delete", slug, "--confirm", "other")
            #expect(wrong.exitCode == 1)
            #expect(try await fixture.status(slug) == "active")

            // Stage one: stopped, recoverable.
            let deleted = try await fixture.cli.run("tenant", "delete", slug, "--confirm", slug)
            #expect(deleted.exitCode == 0, "\(deleted.stderr)")
            #expect(try await fixture.status(slug) == "deleting")
            #expect(try await fixture.tenantDatabases(slug).count == 1)
            let login = try await TestCluster.query(
                fixture.controlURL,
                "SELECT rolcanlogin FROM pg_roles WHERE rolname = \(try TenantSlug(slug).roleName)")
            #expect(try login.first?.decode(Bool.self) == false)
            await #expect(throws: (any Error).self) { _ = try await TestCluster.query(try await fixture.tenantURL(slug), "SELECT 1") }
            #expect(!FileManager.default.fileExists(atPath: fixture.storage.appendingPathComponent(slug).path))
            #expect(FileManager.default.fileExists(atPath: fixture.storage.appendingPathComponent(".deleted/\(slug)/run/step/output.json").path))
            let again = try await fixture.cli.run("tenant", "create", slug, "--name", "D")
            #expect(again.exitCode == 1)
            #expect(again.stderr.contains("being deleted"), "\(again.stderr)")

            // Stage two: the purge.
            let purged = try await fixture.cli.run("tenant", "delete", slug, "--confirm", slug, "--purge-now")
            #expect(purged.exitCode == 0, "\(purged.stderr)")
            #expect(try await fixture.status(slug) == "deleted")
            #expect(try await fixture.tenantDatabases(slug).isEmpty)
            #expect(try await fixture.tenantRoles(slug).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: fixture.storage.appendingPathComponent(slug).path))
            #expect(!FileManager.default.fileExists(atPath: fixture.storage.appendingPathComponent(".deleted/\(slug)").path))
            let keys = try await TestCluster.query(
                fixture.controlURL, "SELECT count(*)::int FROM tenant_api_keys WHERE id = \(key.id)")
            #expect(try keys.first?.decode(Int.self) == 0)
            let audit = try await TestCluster.query(
                fixture.controlURL,
                """
                SELECT action || ':' || outcome FROM control_audit_logs
                WHERE action IN ('tenant.delete', 'tenant.purge') AND resource_id = \(slug) ORDER BY id
                """)
            #expect(
                try audit.map { try $0.decode(String.self) }
                    == ["tenant.delete:failure", "tenant.delete:success", "tenant.purge:success", "tenant.delete:success"])
            #expect(try await fixture.cli.run("tenant", "list", "--json").json([TenantRecord].self).isEmpty)
            let undelete = try await fixture.cli.run("tenant", "undelete", slug)
            #expect(undelete.exitCode == 1)
            #expect(undelete.stderr.contains("was purged"), "\(undelete.stderr)")
        }
    }

    @Test func apiKeysArePrintedOnceAndStoredOnlyAsHashes() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = ProvisioningFixture.slug("keys")
            #expect(try await fixture.cli.run("tenant", "create", slug, "--name", "K").exitCode == 0)
            let key = try await fixture.cli.run("tenant", "key", "create", slug, "--json").json(IssuedAPIKey.self)
            #expect(key.key.count > 40)
            let stored = try await TestCluster.query(
                fixture.controlURL, "SELECT key_hash FROM tenant_api_keys WHERE id = \(key.id)")
            #expect(try stored.first?.decode(Data.self) == APIKeyHash.digest(key.key))
            let listed = try await fixture.cli.run("tenant", "key", "list", slug, "--json")
            #expect(!listed.stdout.contains(key.key))
            #expect(try listed.json([APIKeyRecord].self).map(\.id) == [key.id])
            #expect(try await fixture.cli.run("tenant", "key", "revoke", key.id).exitCode == 0)
            #expect(try await fixture.cli.run("tenant", "key", "list", slug, "--json").json([APIKeyRecord].self).first?.revokedAt != nil)
            let unknown = try await fixture.cli.run("tenant", "key", "revoke", "key_nope")
            #expect(unknown.exitCode == 1)
            #expect(unknown.stderr == "tenantplane: no such API key\n")
        }
    }

    @Test func theTemplateIsRefreshedWhenTenantMigrationsChange() async throws {
        try await ProvisioningFixture.with { fixture in
            let folder = try TestCluster.stagedCopy(of: TestCluster.tenantMigrations)
            defer { try? FileManager.default.removeItem(at: folder) }
            var cli = fixture.cli
            cli.environment["TENANTPLANE_TENANT_MIGRATIONS"] = folder.path
            let first = ProvisioningFixture.slug("tpl-a")
            #expect(try await cli.run("tenant", "create", first, "--name", "A").exitCode == 0)

            try Data("CREATE TABLE notes (id SERIAL PRIMARY KEY, body TEXT);".utf8)
                .write(to: folder.appendingPathComponent("002_notes.sql"))
            let second = ProvisioningFixture.slug("tpl-b")
            let created = try await cli.run("tenant", "create", second, "--name", "B")
            #expect(created.exitCode == 0, "\(created.stderr)")
            #expect(created.stdout.contains("schema version 2"))
            #expect(created.stdout.contains("refreshed to the latest migration"))
            let third = ProvisioningFixture.slug("tpl-c")
            let fast = try await cli.run("tenant", "create", third, "--name", "C")
            #expect(fast.stdout.contains("(copied from the template)"))
            let url = try await fixture.tenantURL(third)
            _ = try await TestCluster.query(url, "INSERT INTO notes (body) VALUES ('born current')")
            let owner = try await TestCluster.query(url, "SELECT tableowner::text FROM pg_tables WHERE tablename = 'notes'")
            #expect(try owner.first?.decode(String.self) == "pg_database_owner")
            _ = try await TestCluster.query(url, "ALTER TABLE notes ADD COLUMN title TEXT")
        }
    }

    @Test func aTemplateOfTheRetiredLayoutIsRebuiltAndItsRoleDropped() async throws {
        try await ProvisioningFixture.with { fixture in
            let first = ProvisioningFixture.slug("old-a")
            #expect(try await fixture.cli.run("tenant", "create", first, "--name", "A").exitCode == 0)
            // What earlier versions left: the template's objects owned by
            // tenantplane_template_owner, and a control row that says current
            // until control migration 005 clears it.
            let admin = try TestCluster.adminURL
            _ = try await TestCluster.query(admin, "CREATE ROLE tenantplane_template_owner NOLOGIN")
            _ = try await TestCluster.query(
                admin.with(database: fixture.template), "ALTER TABLE runs OWNER TO tenantplane_template_owner")
            _ = try await TestCluster.query(
                fixture.controlURL, "UPDATE database_servers SET template_version = NULL, template_fingerprint = NULL")

            let second = ProvisioningFixture.slug("old-b")
            let created = try await fixture.cli.run("tenant", "create", second, "--name", "B")
            #expect(created.exitCode == 0, "\(created.stderr)")
            #expect(created.stdout.contains("refreshed to the latest migration"), "\(created.stdout)")
            let url = try await fixture.tenantURL(second)
            let owners = try await TestCluster.query(url, "SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname = 'public'")
            #expect(try owners.map { try $0.decode(String.self) } == ["pg_database_owner"])
            _ = try await TestCluster.query(url, "ALTER TABLE runs ADD COLUMN owner_probe int")
            let role = try await TestCluster.query(admin, "SELECT count(*)::int FROM pg_roles WHERE rolname = 'tenantplane_template_owner'")
            #expect(try role.first?.decode(Int.self) == 0)
        }
    }

    @Test func createLeavesATenantWithAnInterruptedImportAlone() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = ProvisioningFixture.slug("imp")
            // What a `tenant import` killed during its restore leaves behind.
            _ = try await TestCluster.query(
                fixture.controlURL,
                """
                INSERT INTO tenants (id, name, database_url, status, server, provisioning_step)
                VALUES (\(slug), 'Half imported', 'postgres://x@127.0.0.1:1/x', 'provisioning', 'default', 'importing')
                """)
            let created = try await fixture.cli.run("tenant", "create", slug, "--name", "Fresh")
            #expect(created.exitCode == 1)
            #expect(created.stderr.contains("has an import that was cut short"), "\(created.stderr)")
            let row = try #require(
                try await TestCluster.query(
                    fixture.controlURL, "SELECT status, provisioning_step, name FROM tenants WHERE id = \(slug)"
                ).first)
            #expect(try row.decode((String, String, String).self) == ("provisioning", "importing", "Half imported"))
            #expect(try await fixture.tenantDatabases(slug).isEmpty)
            #expect(try await fixture.tenantRoles(slug).isEmpty)
        }
    }

    @Test func adminTenantRoutes() async throws {
        try await ProvisioningFixture.with { fixture in
            let app = try fixture.server()
            let slug = ProvisioningFixture.slug("http")
            try await app.test(.router) { client in
                let headers = TestServer.adminHeaders
                let created = try await client.execute(
                    uri: "/admin/tenants", method: .post, headers: headers,
                    body: ByteBuffer(string: #"{"id":"\#(slug)","name":"Over HTTP"}"#))
                #expect(created.status == .created)
                #expect(created.json["status"] as? String == "active")
                #expect(created.json["schema_version"] as? Int == 1)
                let duplicate = try await client.execute(
                    uri: "/admin/tenants", method: .post, headers: headers,
                    body: ByteBuffer(string: #"{"id":"\#(slug)","name":"Again"}"#))
                #expect(duplicate.status == .conflict)
                let invalid = try await client.execute(
                    uri: "/admin/tenants", method: .post, headers: headers, body: ByteBuffer(string: #"{"id":"../etc","name":"X"}"#))
                #expect(invalid.status == .badRequest)
                #expect(invalid.errorCode == "invalid_slug")
                let shown = try await client.execute(uri: "/admin/tenants/\(slug)", method: .get, headers: headers)
                #expect(shown.json["id"] as? String == slug)
                let missing = try await client.execute(uri: "/admin/tenants/nobody-here", method: .get, headers: headers)
                #expect(missing.status == .notFound)
                #expect(!String(buffer: missing.body).contains("nobody-here"))
                let key = try await client.execute(uri: "/admin/tenants/\(slug)/keys", method: .post, headers: headers)
                #expect(key.status == .created)
                #expect((key.json["key"] as? String)?.hasPrefix("tpk2_") == true)
                let suspended = try await client.execute(uri: "/admin/tenants/\(slug)/suspend", method: .post, headers: headers)
                #expect(suspended.json["status"] as? String == "suspended")
                let resumed = try await client.execute(uri: "/admin/tenants/\(slug)/resume", method: .post, headers: headers)
                #expect(resumed.json["status"] as? String == "active")
                let list = try await client.execute(uri: "/admin/tenants", method: .get, headers: headers)
                #expect((list.json["tenants"] as? [[String: Any]])?.count == 1)
                let deleted = try await client.execute(uri: "/admin/tenants/\(slug)", method: .delete, headers: headers)
                #expect(deleted.json["status"] as? String == "deleting")
                let undeleted = try await client.execute(uri: "/admin/tenants/\(slug)/undelete", method: .post, headers: headers)
                #expect(undeleted.json["status"] as? String == "active")
                let purged = try await client.execute(
                    uri: "/admin/tenants/\(slug)?purge_now=true", method: .delete, headers: headers)
                #expect(purged.json["status"] as? String == "deleted")
                let unauthenticated = try await client.execute(uri: "/admin/tenants", method: .get)
                #expect(unauthenticated.status == .unauthorized)
            }
        }
    }
}

@Suite("Start-up reconciler")
struct ReconcilerTests {
    @Test func theServerFinishesAnInterruptedCreationAtStartUp() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = ProvisioningFixture.slug("recon")
            var killer = fixture.cli
            killer.environment["TENANTPLANE_FAULT_AFTER"] = "database"
            #expect(try await killer.run("tenant", "create", slug, "--name", "Reconciled").exitCode != 0)
            #expect(try await fixture.status(slug) == "provisioning")
            let app = try fixture.server()
            try await app.test(.router) { _ in
                for _ in 0..<100 where try await fixture.status(slug) != "active" {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            #expect(try await fixture.status(slug) == "active")
            #expect(try await fixture.tenantDatabases(slug).count == 1)
        }
    }
}

extension ReconcilerTests {
    @Test func aStartingServerFailsOnlyTheAdminJobsWhoseProcessStoppedBeating() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = ProvisioningFixture.slug("jobs")
            #expect(try await fixture.cli.run("tenant", "create", slug, "--name", "Jobs").exitCode == 0)
            // Another replica's export, beating a moment ago; a move whose
            // server died five minutes ago; an export queued by a server that
            // died before it started.
            let rows = try await TestCluster.query(
                fixture.controlURL,
                """
                INSERT INTO admin_jobs (kind, tenant_id, status, created_at, started_at, heartbeat_at) VALUES
                    ('export', \(slug), 'running', now() - interval '10 minutes', now() - interval '10 minutes', now()),
                    ('move', \(slug), 'running', now() - interval '10 minutes', now() - interval '10 minutes',
                        now() - interval '5 minutes'),
                    ('export', \(slug), 'queued', now() - interval '5 minutes', NULL, NULL)
                RETURNING id
                """)
            let ids = try rows.map { try $0.decode(UUID.self) }
            let app = try fixture.server()
            @Sendable func statuses() async throws -> [String] {
                var statuses: [String] = []
                for id in ids {
                    let row = try await TestCluster.query(fixture.controlURL, "SELECT status FROM admin_jobs WHERE id = \(id)")
                    statuses.append(try row.first?.decode(String.self) ?? "missing")
                }
                return statuses
            }
            try await app.test(.router) { _ in
                for _ in 0..<100 where try await statuses() != ["running", "failed", "failed"] {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            #expect(try await statuses() == ["running", "failed", "failed"])
            let errors = try await TestCluster.query(
                fixture.controlURL, "SELECT DISTINCT error FROM admin_jobs WHERE status = 'failed'")
            #expect(try errors.map { try $0.decode(String.self) }
                == ["the server running the job stopped before it finished; start the job again"])
        }
    }
}
