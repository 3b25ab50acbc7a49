import Core
import Foundation
import PostgresNIO
import Testing

@Suite("migrate control, migrate status, server and llm commands through the binary")
struct ControlCLITests {
    @Test func migrateControlCreatesTheSchemaOnceAndRegistersTheDefaultServer() async throws {
        try await TestCluster.withScratchDatabase { url in
            let cli = try CLIRunner.forControlDatabase(url)
            let first = try await cli.run("migrate", "control")
            #expect(first.exitCode == 0, "\(first.stderr)")
            #expect(first.stdout.contains("registered the control server as database server \"default\""))
            let second = try await cli.run("migrate", "control", "--json")
            #expect(second.exitCode == 0)
            let outcome = try #require(try second.jsonObject() as? [String: Any])
            #expect(outcome["registered_default_server"] as? Bool == false)
            #expect(((outcome["report"] as? [String: Any])?["applied"] as? [Any])?.isEmpty == true)

            let tables = try await TestCluster.query(
                url,
                """
                SELECT table_name::text FROM information_schema.tables
                WHERE table_schema = 'public' ORDER BY table_name
                """
            ).map { try $0.decode(String.self) }
            for table in [
                "tenants", "llm_providers", "llm_models", "step_llm_defaults", "database_servers",
                "tenant_api_keys", "control_audit_logs", "schema_migrations",
            ] {
                #expect(tables.contains(table), "missing table \(table)")
            }
            let servers = try await cli.run("server", "list", "--json")
            let list = try #require(try servers.jsonObject() as? [[String: Any]])
            #expect(list.map { $0["name"] as? String } == ["default"])
            #expect((list[0]["admin_url"] as? String)?.contains(url.password ?? "-") == false)
        }
    }

    @Test func specifiedTenantColumnsAloneMakeAValidRow() async throws {
        try await TestCluster.withScratchDatabase { url in
            let cli = try CLIRunner.forControlDatabase(url)
            #expect(try await cli.run("migrate", "control").exitCode == 0)
            _ = try await TestCluster.query(
                url,
                "INSERT INTO tenants (id, name, database_url, is_active) VALUES ('legacy', 'Legacy', 'postgres://x@h/db', false)")
            let row = try #require(try await TestCluster.query(url, "SELECT status, is_active FROM tenants").first)
            let (status, active) = try row.decode((String, Bool).self)
            #expect(status == "suspended")
            #expect(active == false)
        }
    }

    @Test func migrateStatusShowsVersionPendingAndDrift() async throws {
        try await TestCluster.withScratchDatabase { url in
            let folder = try TestCluster.stagedCopy(of: TestCluster.controlMigrations)
            defer { try? FileManager.default.removeItem(at: folder) }
            let cli = try CLIRunner.forControlDatabase(url, extra: ["TENANTPLANE_CONTROL_MIGRATIONS": folder.path])
            #expect(try await cli.run("migrate", "control").exitCode == 0)

            let extra = folder.appendingPathComponent("900_extra.sql")
            try Data("CREATE TABLE extra (id INT);".utf8).write(to: extra)
            let pending = try await cli.run("migrate", "status", "--json")
            #expect(pending.exitCode == 0)
            let state = try #require((try pending.jsonObject() as? [String: Any])?["control"] as? [String: Any])
            #expect(state["pending"] as? [String] == ["900_extra.sql"])

            #expect(try await cli.run("migrate", "control").exitCode == 0)
            try Data("CREATE TABLE extra (id BIGINT);".utf8).write(to: extra)
            let drifted = try await cli.run("migrate", "status")
            #expect(drifted.exitCode != 0)
            #expect(drifted.stdout.contains("DRIFT: 900_extra.sql was changed after it was applied"))
            let refused = try await cli.run("migrate", "control")
            #expect(refused.exitCode == 1)
            #expect(refused.stderr.contains("checksum drift"))
            #expect(refused.stderr.split(separator: "\n").count == 1)
        }
    }

    @Test func missingConfigurationIsOneClearLine() async throws {
        let cli = CLIRunner(environment: ["PATH": "/usr/bin:/bin", "TENANTPLANE_CONFIG_FILE": "/dev/null"])
        let result = try await cli.run("migrate", "control")
        #expect(result.exitCode == 1)
        #expect(result.stderr == "tenantplane: TENANTPLANE_CONTROL_URL is not set: point it at the control database (postgres://user:password@host:5432/db), or run ops/up for a local one\n")

        let badKey = CLIRunner(environment: [
            "PATH": "/usr/bin:/bin", "TENANTPLANE_CONFIG_FILE": "/dev/null",
            "TENANTPLANE_CONTROL_URL": "postgres://u@127.0.0.1:1/db", "TENANTPLANE_MASTER_KEY": "c2hvcnQ=",
        ])
        let keyResult = try await badKey.run("server", "list")
        #expect(keyResult.exitCode == 1)
        #expect(keyResult.stderr.contains("TENANTPLANE_MASTER_KEY must be the base64 of exactly 32 bytes"))
    }

    @Test func aReaderThatGoesAwayEndsTheCommandQuietly() async throws {
        try await TestCluster.withScratchDatabase { url in
            let cli = try CLIRunner.forControlDatabase(url)
            #expect(try await cli.run("migrate", "control").exitCode == 0)
            // `true` exits at once, long before the command has its answer to write.
            let piped = try await CLIRunner.runProcess(
                URL(fileURLWithPath: "/bin/sh"),
                ["-c", #"("$0" server list --json; echo "exit=$?" >&2) | true"#, try CLIRunner.binary.path],
                environment: cli.environment)
            #expect(piped.stderr == "exit=141\n", "\(piped.stderr.prefix(400))")
        }
    }

    @Test func anUnreachableControlDatabaseIsAClearError() async throws {
        let cli = try CLIRunner.forControlDatabase(try PostgresURL("postgres://u:p@127.0.0.1:1/db?sslmode=disable"))
        let result = try await cli.run("migrate", "control")
        #expect(result.exitCode == 1)
        #expect(result.stderr.hasPrefix("tenantplane: cannot reach PostgreSQL at 127.0.0.1:1"))
        #expect(!result.stderr.contains(":p@"))
    }

    @Test func llmCatalogCommandsAndTheirBadInputs() async throws {
        try await TestCluster.withScratchDatabase { url in
            let cli = try CLIRunner.forControlDatabase(url)
            #expect(try await cli.run("migrate", "control").exitCode == 0)

            let added = try await cli.run(
                "llm", "provider", "add", "acme", "--name", "Acme AI", "--base-url", "http://127.0.0.1:9/v1", "--style",
                "openai", "--json")
            #expect(added.exitCode == 0, "\(added.stderr)")
            let duplicate = try await cli.run("llm", "provider", "add", "acme", "--name", "Again")
            #expect(duplicate.exitCode == 1)
            #expect(duplicate.stderr == "tenantplane: provider acme already exists\n")
            let badStyle = try await cli.run("llm", "provider", "add", "other", "--name", "X", "--style", "soap")
            #expect(badStyle.exitCode == 1)
            let badId = try await cli.run("llm", "provider", "add", "../x", "--name", "X")
            #expect(badId.exitCode == 1)
            #expect(badId.stderr.contains("provider id must be"))

            let providers = try await cli.run("llm", "provider", "list", "--json")
            let ids = try #require(try providers.jsonObject() as? [[String: Any]]).compactMap { $0["id"] as? String }
            #expect(ids == ["acme", "claude", "gemini", "local", "openai"])

            #expect(try await cli.run("llm", "model", "add", "--provider", "acme", "--name", "acme-large", "--class", "pro").exitCode == 0)
            #expect(try await cli.run("llm", "model", "add", "--provider", "acme", "--name", "acme-small", "--class", "standard").exitCode == 0)
            let unknownProvider = try await cli.run("llm", "model", "add", "--provider", "nope", "--name", "m", "--class", "pro")
            #expect(unknownProvider.exitCode == 1)
            #expect(unknownProvider.stderr.contains("unknown provider nope"))
            let badClass = try await cli.run("llm", "model", "add", "--provider", "acme", "--name", "m", "--class", "ultra")
            #expect(badClass.exitCode == 1)
            #expect(badClass.stderr == "tenantplane: model class must be 'pro' or 'standard'\n")
            let models = try await cli.run("llm", "model", "list", "--json")
            #expect(try #require(try models.jsonObject() as? [[String: Any]]).count == 4)

            // `migrate control` points the catch-all step at the offline provider.
            let seeded = try await cli.run("llm", "resolve", "outline", "--json")
            #expect(try #require(try seeded.jsonObject() as? [String: Any])["provider_id"] as? String == "local")
            _ = try await TestCluster.query(url, "DELETE FROM step_llm_defaults WHERE step = '*'")
            let none = try await cli.run("llm", "resolve", "outline")
            #expect(none.exitCode == 1)
            #expect(none.stderr.contains("step outline has no LLM default and there is no fallback"))

            #expect(try await cli.run("llm", "default", "set", "*", "--provider", "local", "--class", "standard").exitCode == 0)
            let fallback = try await cli.run("llm", "resolve", "outline", "--json")
            let fallbackJSON = try #require(try fallback.jsonObject() as? [String: Any])
            #expect(fallbackJSON["model_name"] as? String == "local-standard")
            #expect(fallbackJSON["reason"] as? String == "fallback_default")

            #expect(try await cli.run("llm", "default", "set", "outline", "--provider", "acme", "--class", "pro").exitCode == 0)
            let own = try await cli.run("llm", "resolve", "outline")
            #expect(own.stdout == "outline: provider acme, model acme-large (class pro, from the step's default)\n")

            let badStep = try await cli.run("llm", "default", "set", "Bad Step", "--provider", "acme", "--class", "pro")
            #expect(badStep.exitCode == 1)
            let unknownDefault = try await cli.run("llm", "default", "set", "draft", "--provider", "ghost", "--class", "pro")
            #expect(unknownDefault.exitCode == 1)
            #expect(unknownDefault.stderr.contains("unknown provider ghost"))
            let defaultClass = try await cli.run("llm", "default", "set", "draft", "--provider", "acme", "--class", "mega")
            #expect(defaultClass.exitCode == 1)

            // A provider+class without an active model is a conflict, not a silent pick.
            #expect(try await cli.run("llm", "provider", "add", "empty", "--name", "Empty").exitCode == 0)
            #expect(try await cli.run("llm", "default", "set", "review", "--provider", "empty", "--class", "pro").exitCode == 0)
            let noModel = try await cli.run("llm", "resolve", "review")
            #expect(noModel.exitCode == 1)
            #expect(noModel.stderr.contains("has no active model"))

            let audit = try await TestCluster.query(
                url, "SELECT count(*)::int FROM control_audit_logs WHERE actor = 'cli:tester' AND outcome = 'failure'")
            #expect(try audit.first?.decode(Int.self) ?? 0 >= 3)
        }
    }
}
