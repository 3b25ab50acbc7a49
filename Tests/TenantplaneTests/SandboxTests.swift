import Backup
import Config
import ControlPlane
import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Runtime
import Testing

/// What a hostile tenant could have gained on a cluster, read as its superuser.
private struct ClusterPowers: Equatable {
    /// Roles with any power a tenant role must never have, and their powers.
    var powerful: [String]
    /// Roles and databases whose names carry the attack's tag.
    var tagged: [String]

    static func read(_ url: PostgresURL, tag: String) async throws -> ClusterPowers {
        let powerful = try await TestCluster.query(
            url,
            """
            SELECT rolname::text || ':' || concat_ws(',',
                CASE WHEN rolsuper THEN 'super' END, CASE WHEN rolcreaterole THEN 'createrole' END,
                CASE WHEN rolcreatedb THEN 'createdb' END, CASE WHEN rolreplication THEN 'replication' END,
                CASE WHEN rolbypassrls THEN 'bypassrls' END)
            FROM pg_roles
            WHERE (rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls)
                -- An online move's own publisher login and its reachability
                -- probe (REPLICATION), made and dropped by tests that run alongside.
                AND rolname NOT LIKE 'tp\\_mover\\_%' AND rolname NOT LIKE 'tp\\_probe\\_%'
            ORDER BY 1
            """
        ).map { try $0.decode(String.self) }
        let pattern = "%\(tag)%"
        let tagged = try await TestCluster.query(
            url,
            """
            SELECT rolname::text FROM pg_roles WHERE rolname LIKE \(pattern)
            UNION ALL SELECT datname::text FROM pg_database WHERE datname LIKE \(pattern)
            """
        ).map { try $0.decode(String.self) }
        return ClusterPowers(powerful: powerful, tagged: tagged)
    }
}

/// A tenant whose database tries every way out of its role it can think of,
/// and what must still hold after tenantplane worked on it.
private struct HostileTenant {
    let tag: String
    let sourceDatabase: String

    /// Statements that would each widen the session or reach outside the
    /// database; tried one by one, every failure swallowed, so that nothing
    /// but the sandbox stops them.
    var escapes: [String] {
        [
            "RESET ROLE", "CREATE ROLE evil_\(tag)_reset SUPERUSER",
            "SET ROLE NONE", "CREATE ROLE evil_\(tag)_none SUPERUSER",
            "SET SESSION AUTHORIZATION DEFAULT", "CREATE ROLE evil_\(tag)_auth SUPERUSER",
            "SELECT set_config('role', 'none', false)", "CREATE ROLE evil_\(tag)_config SUPERUSER",
            "RESET SESSION AUTHORIZATION", "CREATE ROLE evil_\(tag)_plain LOGIN",
            "ALTER ROLE CURRENT_USER SUPERUSER", "ALTER ROLE SESSION_USER SUPERUSER",
            "ALTER ROLE CURRENT_USER CREATEROLE CREATEDB REPLICATION BYPASSRLS",
            "GRANT pg_execute_server_program, pg_write_server_files, pg_read_server_files TO CURRENT_USER",
            "GRANT pg_database_owner TO CURRENT_USER",
            "COPY (SELECT 1) TO PROGRAM 'touch /tmp/evil_\(tag)_program'",
            "COPY (SELECT 1) TO '/tmp/evil_\(tag)_copy'",
            "ALTER SYSTEM SET application_name = 'evil_\(tag)'",
            "SELECT lo_export(lo_from_bytea(0, 'x'::bytea), '/tmp/evil_\(tag)_lo')",
            "SELECT pg_catalog.pg_reload_conf()",
        ]
    }

    /// What persists into later sessions (and, with the new password, locks
    /// tenantplane out). Done only where the check constraint fires (at
    /// restore) and only in a copy, never in the source database.
    var settings: [String] {
        [
            "ALTER ROLE CURRENT_USER PASSWORD 'known-\(tag)'",
            "ALTER ROLE CURRENT_USER SET search_path = evil_\(tag)",
            "ALTER ROLE CURRENT_USER SET statement_timeout = 1",
            "EXECUTE format('ALTER ROLE CURRENT_USER IN DATABASE %I SET lock_timeout = 1', current_database())",
            "EXECUTE format('ALTER DATABASE %I SET search_path = evil_\(tag)', current_database())",
            "EXECUTE format('ALTER DATABASE %I SET statement_timeout = 1', current_database())",
        ]
    }

    /// Installed by the tenant itself, logged in as its own role:
    /// - `tp_fire(persist)` tries every escape (and, when asked to persist,
    ///   in a copy, every setting);
    /// - a check constraint calls it for every row, so it fires when a
    ///   restore copies the rows in;
    /// - a trigger calls it on every update of `artifacts` (the import's path
    ///   rewrite, a migration that touches rows), directly and through a
    ///   SECURITY DEFINER function of the tenant's, and pollutes the session.
    var installation: [String] {
        func block(_ statement: String) -> String {
            let sql = statement.hasPrefix("EXECUTE ") ? statement : "EXECUTE \(dollarQuoted(statement))"
            return "BEGIN \(sql); EXCEPTION WHEN OTHERS THEN NULL; END;"
        }
        return [
            """
            CREATE FUNCTION public.tp_fire(persist boolean) RETURNS boolean LANGUAGE plpgsql AS $fire$
            BEGIN
                \(escapes.map(block).joined(separator: "\n    "))
                IF persist AND current_database() <> '\(sourceDatabase)' THEN
                    \(settings.map(block).joined(separator: "\n        "))
                END IF;
                RETURN true;
            END $fire$
            """,
            "CREATE FUNCTION public.tp_definer() RETURNS boolean LANGUAGE sql SECURITY DEFINER AS 'SELECT public.tp_fire(false)'",
            """
            CREATE FUNCTION public.tp_on_update() RETURNS trigger LANGUAGE plpgsql AS $trigger$
            BEGIN
                PERFORM public.tp_fire(false);
                PERFORM public.tp_definer();
                PERFORM set_config('search_path', 'evil_\(tag), public', false);
                RETURN NEW;
            END $trigger$
            """,
            "CREATE TRIGGER tp_hostile AFTER UPDATE ON public.artifacts FOR EACH ROW EXECUTE FUNCTION public.tp_on_update()",
            "CREATE TABLE public.tp_rows (n int CHECK (public.tp_fire(true)))",
        ]
    }

    private func dollarQuoted(_ text: String) -> String { "$q$\(text)$q$" }

    /// Every attack failed: on each cluster, no role gained a power and none
    /// carries the tag; no file was written outside; ALTER SYSTEM wrote nothing.
    func expectContained(
        _ before: [PostgresURL: ClusterPowers], roles: [String], when: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        for (url, powers) in before {
            let now = try await ClusterPowers.read(url, tag: tag)
            #expect(now == powers, "\(when): \(now)", sourceLocation: sourceLocation)
            for role in roles {
                let memberships = try await TestCluster.query(
                    url,
                    """
                    SELECT count(*)::int FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
                    WHERE r.rolname = \(role)
                    """)
                #expect(try memberships.first?.decode(Int.self) == 0, "\(when): \(role) is a member", sourceLocation: sourceLocation)
            }
        }
        let leaked = try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.contains("evil_\(tag)") }
        #expect(leaked.isEmpty, "\(when): \(leaked)", sourceLocation: sourceLocation)
        if let directory = ProcessInfo.processInfo.environment["TENANTPLANE_TEST_PG_DIR"] {
            let auto = (try? String(contentsOfFile: "\(directory)/data/postgresql.auto.conf", encoding: .utf8)) ?? ""
            #expect(!auto.contains(tag), "\(when): ALTER SYSTEM", sourceLocation: sourceLocation)
        }
    }
}

/// The control tables a tenant must never reach, as text.
private func controlSnapshot(_ url: PostgresURL) async throws -> [String] {
    var rows: [String] = []
    for table in ["database_servers", "llm_providers", "llm_models", "step_llm_defaults", "tenant_api_keys"] {
        rows += try await TestCluster.query(url, PostgresQuery(unsafeSQL: "SELECT to_jsonb(t)::text FROM \(table) t ORDER BY 1"))
            .map { try $0.decode(String.self) }
    }
    return rows
}

/// What the tenant's own SQL persisted for its role and database.
private func sessionDefaults(_ url: PostgresURL, slug: String) async throws -> Int {
    let name = try TenantSlug(slug).databaseName
    return try await TestCluster.query(
        url,
        """
        SELECT count(*)::int FROM pg_db_role_setting s
        LEFT JOIN pg_roles r ON r.oid = s.setrole LEFT JOIN pg_database d ON d.oid = s.setdatabase
        WHERE r.rolname = \(name) OR d.datname = \(name)
        """
    ).first?.decode(Int.self) ?? -1
}

@Suite("Tenant sandbox: SQL from a tenant database never runs with the admin's rights")
struct SandboxTests {
    @Test func aHostileTenantGainsNothingAtRestoreFixUpsMigrationExportOrMove() async throws {
        try await TenantAPIFixture.with { api in
            let fixture = api.provisioning
            let seeded = try await SeededTenant.make(api, prefix: "hostile")
            let tag = UUID().uuidString.prefix(8).lowercased()
            let hostile = HostileTenant(tag: String(tag), sourceDatabase: try TenantSlug(seeded.slug).databaseName)
            let source = try await fixture.tenantURL(seeded.slug)
            // The tenant installs it itself, as its own role.
            for statement in hostile.installation {
                _ = try await TestCluster.query(source, PostgresQuery(unsafeSQL: statement))
            }
            _ = try await TestCluster.query(source, "INSERT INTO tp_rows SELECT generate_series(1, 3)")
            try await fixture.addSecondServer()
            let second = try ProvisioningFixture.secondClusterURL
            let first = try TestCluster.adminURL
            let before = [first: try await ClusterPowers.read(first, tag: hostile.tag), second: try await ClusterPowers.read(second, tag: hostile.tag)]
            let control = try await controlSnapshot(fixture.controlURL)
            let copy = ProvisioningFixture.slug("hostile-copy")
            let roles = [try TenantSlug(seeded.slug).roleName, try TenantSlug(copy).roleName]
            let work = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: work) }

            try await fixture.cleaningSecondCluster([copy]) {
                // Export: dumped and read back as the tenant.
                let archive = work.appendingPathComponent("hostile.tar").path
                let exported = try await fixture.cli.run("tenant", "export", seeded.slug, "--out", archive)
                try #require(exported.exitCode == 0, "\(exported.stderr)")
                try await hostile.expectContained(before, roles: roles, when: "export")

                // Import under another id: the restore fires the check on every
                // row, the path rewrite fires the trigger.
                let imported = try await fixture.cli.run("tenant", "import", archive, "--as", copy, "--server", "default", "--json")
                try #require(imported.exitCode == 0, "\(imported.stderr)")
                let report = try #require(try imported.jsonObject() as? [String: Any])
                #expect(report["signed_by_this_deployment"] as? Bool == true)
                try await hostile.expectContained(before, roles: roles + [try TenantSlug(copy).roleName], when: "import")
                // Nothing the dump set survives, and tenantplane still logs in.
                #expect(try await sessionDefaults(first, slug: copy) == 0)
                let copyURL = try await fixture.tenantURL(copy)
                let fired = try await TestCluster.query(copyURL, "SELECT count(*)::int FROM tp_rows")
                #expect(try fired.first?.decode(Int.self) == 3)
                var known = copyURL
                known.password = "known-\(hostile.tag)"
                await #expect(throws: (any Error).self) { _ = try await TestCluster.query(known, "SELECT 1") }
                let key = try await api.client.execute(uri: "/admin/tenants/\(copy)/keys", method: .post, headers: TestServer.adminHeaders)
                let copyKey = try #require(key.json["key"] as? String)
                #expect(try await api.call(.get, "/v1/runs", key: copyKey).status == .ok)

                // A later release's migration updates rows: the trigger fires
                // inside a fleet migration, which logs in as the tenant.
                let staged = try TestCluster.stagedCopy(of: TestCluster.tenantMigrations)
                defer { try? FileManager.default.removeItem(at: staged) }
                try "UPDATE artifacts SET metadata = metadata;\n".write(
                    to: staged.appendingPathComponent("002_touch_artifacts.sql"), atomically: true, encoding: .utf8)
                var newer = fixture.cli
                newer.environment["TENANTPLANE_TENANT_MIGRATIONS"] = staged.path
                let migrated = try await newer.run("migrate", "tenants", "--tenant", copy, "--json")
                #expect(migrated.exitCode == 0, "\(migrated.stdout) \(migrated.stderr)")
                try await hostile.expectContained(before, roles: roles + [try TenantSlug(copy).roleName], when: "fleet migration")

                // Online, the target's schema is the template's: a tenant with
                // tables of its own is refused, with nothing of its run anywhere.
                let online = try await newer.run("tenant", "move", copy, "--to", "second", "--json")
                #expect(online.exitCode != 0)
                #expect(online.stderr.contains("--offline"), "\(online.stderr)")
                try await hostile.expectContained(before, roles: roles + [try TenantSlug(copy).roleName], when: "online move")
                // Offline, the dump restores on the other cluster, where the check fires again.
                let moved = try await newer.run("tenant", "move", copy, "--to", "second", "--offline", "--json")
                #expect(moved.exitCode == 0, "\(moved.stderr)")
                try await hostile.expectContained(before, roles: roles + [try TenantSlug(copy).roleName], when: "move")
                #expect(try await sessionDefaults(second, slug: copy) == 0)
                #expect(try await api.eventually(within: .seconds(5)) {
                    try await api.call(.get, "/v1/runs", key: copyKey).status == .ok
                })
                #expect(try await controlSnapshot(fixture.controlURL).filter { !$0.contains(copy) } == control)
            }
        }
    }

    @Test func superuserObjectsInAnArchiveFailTheImportCleanlyAndRequireSignedRefusesForeignArchives() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = ProvisioningFixture.slug("evt")
            try #require(try await fixture.cli.run("tenant", "create", slug, "--name", slug).exitCode == 0)
            let tag = UUID().uuidString.prefix(8).lowercased()
            let database = try TestCluster.adminURL.with(database: try TenantSlug(slug).databaseName)
            // Objects only a superuser could have made: an event trigger and a
            // SECURITY DEFINER function of the superuser's.
            _ = try await TestCluster.query(
                database,
                PostgresQuery(
                    unsafeSQL: """
                        CREATE FUNCTION public.tp_su() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER AS $f$
                        BEGIN CREATE ROLE evil_\(tag)_event SUPERUSER; EXCEPTION WHEN OTHERS THEN NULL; END $f$
                        """))
            _ = try await TestCluster.query(
                database, PostgresQuery(unsafeSQL: "CREATE EVENT TRIGGER evil_\(tag) ON ddl_command_end EXECUTE FUNCTION public.tp_su()"))
            let work = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: work) }
            let archive = work.appendingPathComponent("su.tar").path
            let exported = try await fixture.cli.run("tenant", "export", slug, "--out", archive)
            try #require(exported.exitCode == 0, "\(exported.stderr)")
            _ = try await TestCluster.query(database, PostgresQuery(unsafeSQL: "DROP EVENT TRIGGER evil_\(tag)"))
            let before = try await ClusterPowers.read(try TestCluster.adminURL, tag: String(tag))

            let copy = ProvisioningFixture.slug("evt-copy")
            let imported = try await fixture.cli.run("tenant", "import", archive, "--as", copy)
            #expect(imported.exitCode == 1)
            #expect(imported.stderr.contains("pg_restore"), "\(imported.stderr)")
            #expect(try await fixture.tenantDatabases(copy).isEmpty)
            #expect(try await fixture.tenantRoles(copy).isEmpty)
            #expect(try await ClusterPowers.read(try TestCluster.adminURL, tag: String(tag)) == before)

            // The same archive, edited (its manifest re-serialised): it is no
            // longer this deployment's; --require-signed refuses it before
            // anything is created, and without the flag it imports as untrusted.
            let parts = work.appendingPathComponent("parts")
            try FileManager.default.createDirectory(at: parts, withIntermediateDirectories: true)
            let good = work.appendingPathComponent("good.tar").path
            let plain = ProvisioningFixture.slug("plain")
            try #require(try await fixture.cli.run("tenant", "create", plain, "--name", plain).exitCode == 0)
            try #require(try await fixture.cli.run("tenant", "export", plain, "--out", good).exitCode == 0)
            try await tar(["-xf", good, "-C", parts.path])
            let manifestURL = parts.appendingPathComponent("manifest.json")
            let manifest = try String(contentsOf: manifestURL, encoding: .utf8)
            try (manifest + "\n").write(to: manifestURL, atomically: true, encoding: .utf8)
            let edited = work.appendingPathComponent("edited.tar").path
            try await tar(["-cf", edited, "-C", parts.path, "database.dump", "manifest.json", "manifest.json.hmac-sha256"])
            let unsigned = work.appendingPathComponent("unsigned.tar").path
            try await tar(["-cf", unsigned, "-C", parts.path, "database.dump", "manifest.json"])

            for (file, why) in [(edited, "does not match"), (unsigned, "no signature")] {
                let target = ProvisioningFixture.slug("strict")
                let refused = try await fixture.cli.run("tenant", "import", file, "--as", target, "--require-signed")
                #expect(refused.exitCode == 1)
                #expect(refused.stderr.contains("not made by this deployment"), "\(refused.stderr)")
                #expect(refused.stderr.contains(why), "\(refused.stderr)")
                try await fixture.expectNothingCreated(for: target)
            }
            let lenient = ProvisioningFixture.slug("lenient")
            let accepted = try await fixture.cli.run("tenant", "import", edited, "--as", lenient, "--json")
            #expect(accepted.exitCode == 0, "\(accepted.stderr)")
            #expect(try #require(try accepted.jsonObject() as? [String: Any])["signed_by_this_deployment"] as? Bool == false)
            let signed = ProvisioningFixture.slug("signed")
            let strict = try await fixture.cli.run("tenant", "import", good, "--as", signed, "--require-signed", "--json")
            #expect(strict.exitCode == 0, "\(strict.stderr)")
        }
    }

    /// An `artifacts` row the tenant pointed outside its tree: the export
    /// refuses it, and an archive whose rows end up so (a trigger rewrites
    /// them during the import's fix-ups) fails the import with nothing left.
    @Test(arguments: ["../other/x/output.json", "/etc/passwd", "OTHER/00000000-0000-0000-0000-000000000000/s/output.json"])
    func anArtifactPathOutsideTheTenantIsRefused(_ pattern: String) async throws {
        try await TenantAPIFixture.with { api in
            let fixture = api.provisioning
            let victim = try await api.tenant("victim")
            let path = pattern.replacingOccurrences(of: "OTHER", with: victim.slug)
            let seeded = try await SeededTenant.make(api, prefix: "pointer")
            let url = try await fixture.tenantURL(seeded.slug)
            let work = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: work) }

            let archive = work.appendingPathComponent("pointer.tar").path
            try #require(try await fixture.cli.run("tenant", "export", seeded.slug, "--out", archive).exitCode == 0)
            _ = try await TestCluster.query(
                url,
                PostgresQuery(
                    unsafeSQL: """
                        CREATE FUNCTION public.tp_point() RETURNS trigger LANGUAGE plpgsql AS $f$
                        BEGIN NEW.file_path := '\(path)'; RETURN NEW; END $f$
                        """))
            _ = try await TestCluster.query(
                url,
                PostgresQuery(
                    unsafeSQL: "CREATE TRIGGER tp_point BEFORE UPDATE ON public.artifacts FOR EACH ROW EXECUTE FUNCTION public.tp_point()"))
            let pointing = work.appendingPathComponent("pointing.tar").path
            try #require(try await fixture.cli.run("tenant", "export", seeded.slug, "--out", pointing).exitCode == 0)

            let copy = ProvisioningFixture.slug("pointer-copy")
            let imported = try await fixture.cli.run("tenant", "import", pointing, "--as", copy)
            #expect(imported.exitCode == 1)
            #expect(imported.stderr.contains("outside the tenant's own storage tree"), "\(imported.stderr)")
            #expect(try await fixture.tenantDatabases(copy).isEmpty)
            #expect(try await fixture.tenantRoles(copy).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: fixture.storage.appendingPathComponent(copy).path))

            // The tenant's own rows pointing out: its export is refused.
            _ = try await TestCluster.query(url, "UPDATE artifacts SET metadata = metadata")
            let refused = try await fixture.cli.run("tenant", "export", seeded.slug, "--out", work.appendingPathComponent("no.tar").path)
            #expect(refused.exitCode == 1)
            #expect(refused.stderr.contains("outside the tenant's own storage tree"), "\(refused.stderr)")
            #expect(!FileManager.default.fileExists(atPath: work.appendingPathComponent("no.tar").path))
            #expect(FileManager.default.fileExists(atPath: archive))
        }
    }
}

@Suite("A suspended tenant is still worked on as itself")
struct SuspendedTenantTests {
    /// Its role is NOLOGIN; an export, a backup and a fleet migration log in as
    /// it for their own length, under its lock, and leave it NOLOGIN.
    @Test func exportBackupAndFleetMigrationOfASuspendedTenantLogInAsItAndLeaveItSuspended() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = ProvisioningFixture.slug("asleep")
            try #require(try await fixture.cli.run("tenant", "create", slug, "--name", slug).exitCode == 0)
            _ = try await TestCluster.query(try await fixture.tenantURL(slug), "INSERT INTO runs (status) VALUES ('pending')")
            try #require(try await fixture.cli.run("tenant", "suspend", slug).exitCode == 0)
            func canLogIn() async throws -> Bool {
                try await TestCluster.query(
                    fixture.controlURL, "SELECT rolcanlogin FROM pg_roles WHERE rolname = \(try TenantSlug(slug).roleName)"
                ).first?.decode(Bool.self) ?? true
            }
            #expect(try await canLogIn() == false)
            let work = FileManager.default.temporaryDirectory.appendingPathComponent("tp-asleep-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: work) }

            let exported = try await fixture.cli.run("tenant", "export", slug, "--out", work.appendingPathComponent("a.tar").path)
            #expect(exported.exitCode == 0, "\(exported.stderr)")
            #expect(try await canLogIn() == false)
            let backup = try await fixture.cli.run("backup", "--all", "--out", work.path, "--json")
            #expect(backup.exitCode == 0, "\(backup.stderr)")
            #expect(try #require(try backup.jsonObject() as? [String: Any])["succeeded"] as? Int == 1)
            #expect(try await canLogIn() == false)

            let staged = try TestCluster.stagedCopy(of: TestCluster.tenantMigrations)
            defer { try? FileManager.default.removeItem(at: staged) }
            try "ALTER TABLE runs ADD COLUMN asleep TEXT;\n".write(
                to: staged.appendingPathComponent("002_asleep.sql"), atomically: true, encoding: .utf8)
            var newer = fixture.cli
            newer.environment["TENANTPLANE_TENANT_MIGRATIONS"] = staged.path
            let migrated = try await newer.run("migrate", "tenants", "--tenant", slug, "--json")
            #expect(migrated.exitCode == 0, "\(migrated.stdout) \(migrated.stderr)")
            #expect(try await canLogIn() == false)
            #expect(try await fixture.status(slug) == "suspended")
            let columns = try await TestCluster.query(
                try TestCluster.adminURL.with(database: try TenantSlug(slug).databaseName),
                "SELECT count(*)::int FROM information_schema.columns WHERE table_name = 'runs' AND column_name = 'asleep'")
            #expect(try columns.first?.decode(Int.self) == 1)
        }
    }
}

@Suite("Child processes stop with the task that started them")
struct ChildProcessTests {
    /// The `pg_dump` processes whose command line names `database`.
    static func dumps(of database: String) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.filter { $0.allSatisfy(\.isNumber) }.filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            let line = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            return line.contains("pg_dump") && line.contains(database)
        }
    }

    @Test func aCancelledExportStopsItsPgDumpAndLeavesNoArchive() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = ProvisioningFixture.slug("cancel")
            try #require(try await fixture.cli.run("tenant", "create", slug, "--name", slug).exitCode == 0)
            // Enough rows that the dump takes a while.
            _ = try await TestCluster.query(
                try await fixture.tenantURL(slug),
                """
                INSERT INTO runs (status, config)
                SELECT 'pending', jsonb_build_object('pad', md5(g::text) || repeat(md5((g * 7)::text), 30))
                FROM generate_series(1, 150000) g
                """)
            var environment = fixture.cli.environment
            environment["TENANTPLANE_CONFIG_FILE"] = "/dev/null"
            let settings = try Settings.load(environment: environment, workingDirectory: NSTemporaryDirectory())
            let context = try BackupContext(settings: settings, logger: TestCluster.logger)
            let out = FileManager.default.temporaryDirectory.appendingPathComponent("tp-cancel-\(UUID().uuidString).tar")
            let database = try TenantSlug(slug).databaseName

            let outcome = try await withThrowingTaskGroup(of: String.self) { group in
                group.addTask {
                    do {
                        _ = try await TenantExporter(context: context).export(
                            try TenantSlug(slug), to: out.path, actor: ControlPlane.Actor("test"))
                        return "finished"
                    } catch {
                        return "failed"
                    }
                }
                let started = try await TenantAPIFixture.poll(within: .seconds(30)) { !Self.dumps(of: database).isEmpty }
                group.cancelAll()
                let result = try await group.next() ?? ""
                return started ? result : "pg_dump never seen"
            }
            #expect(outcome == "failed")
            #expect(try await TenantAPIFixture.poll(within: .seconds(10)) { Self.dumps(of: database).isEmpty })
            #expect(!FileManager.default.fileExists(atPath: out.path))
        }
    }
}
