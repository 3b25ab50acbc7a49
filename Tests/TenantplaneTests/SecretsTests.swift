import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Testing

/// Secrets the system makes or is given — tenant role passwords, API keys,
/// the master key, LLM provider keys (the provider's and a tenant's own) — must
/// appear nowhere an operator or an attacker could read them: not in the
/// control database (audit rows included), not in logs (at debug level), not
/// in CLI output (but for the one line that hands a new API key over).
@Suite("Secrets stay secret")
struct SecretsTests {
    @Test func noPasswordOrKeyInTheControlDumpTheLogsOrTheCLIOutput() async throws {
        let log = CapturedLog()
        try await TenantAPIFixture.with(logger: log.logger(level: .debug)) { api in
            let fixture = api.provisioning
            var outputs: [String] = []
            func run(_ arguments: [String], input: String? = nil) async throws -> CLIRunner.Result {
                var debug = fixture.cli
                debug.environment["TENANTPLANE_LOG_LEVEL"] = "debug"
                let result =
                    if let input { try await debug.run(arguments, standardInput: input) } else { try await debug.run(arguments) }
                outputs.append(result.stdout + result.stderr)
                return result
            }

            let viaCLI = ProvisioningFixture.slug("sec-cli")
            #expect(try await run(["tenant", "create", viaCLI, "--name", "Secret CLI", "--json"]).exitCode == 0)
            let issued = try await fixture.cli.run("tenant", "key", "create", viaCLI, "--json")
            outputs.append(issued.stderr)
            let cliKey = try #require(try issued.jsonObject() as? [String: Any])["key"] as? String
            let viaAPI = try await SeededTenant.make(api, prefix: "sec-api")

            // Provider keys, set through the CLI's standard input and the admin API.
            let providerKeys = ["openai", "claude", "tenant-cli", "tenant-api"].map { "sk-\($0)-\(UUID().uuidString)" }
            #expect(try await run(["llm", "provider", "set-key", "openai"], input: providerKeys[0] + "\n").exitCode == 0)
            #expect(
                try await run(["tenant", "secret", "set", viaCLI, "--provider", "openai", "--json"], input: providerKeys[2])
                    .exitCode == 0)
            for (path, key) in [
                ("/admin/llm/providers/claude/key", providerKeys[1]),
                ("/admin/tenants/\(viaAPI.slug)/providers/claude/key", providerKeys[3]),
            ] {
                let stored = try await api.client.execute(
                    uri: path, method: .put, headers: TestServer.adminHeaders,
                    body: ByteBuffer(string: #"{"api_key":"\#(key)"}"#))
                #expect(stored.status == .ok)
                #expect(!String(buffer: stored.body).contains(key))
            }
            // A refused key is not echoed either.
            #expect(try await run(["llm", "provider", "set-key", "openai"], input: providerKeys[0] + " x").exitCode == 1)

            for arguments in [
                ["tenant", "list", "--json"], ["tenant", "show", viaCLI, "--json"], ["tenant", "show", viaAPI.slug],
                ["tenant", "key", "list", viaCLI, "--json"], ["server", "list", "--json"], ["migrate", "status", "--json"],
                ["migrate", "tenants", "--json"], ["tenant", "suspend", viaCLI], ["tenant", "resume", viaCLI],
                ["llm", "resolve", "outline"], ["llm", "provider", "list"], ["llm", "provider", "list", "--json"],
                ["tenant", "secret", "list", viaCLI], ["tenant", "secret", "list", viaAPI.slug, "--json"],
            ] {
                _ = try await run(arguments)
            }
            let work = FileManager.default.temporaryDirectory.appendingPathComponent("tp-secrets-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: work) }
            #expect(try await run(["backup", "--all", "--out", work.path]).exitCode == 0)

            // Requests with the keys, and admin reads, through the server at debug level.
            let key = try #require(cliKey)
            for _ in 0..<3 {
                #expect(try await api.call(.get, "/v1/runs", key: key).status == .ok)
                #expect(try await api.call(.get, "/v1/runs", key: viaAPI.key).status == .ok)
            }
            #expect(try await api.call(.get, "/v1/runs", key: key + "x").status == .unauthorized)
            for path in [
                "/admin/tenants", "/admin/tenants/\(viaCLI)", "/admin/tenants/\(viaCLI)/keys", "/admin/servers",
                "/admin/llm/providers", "/admin/tenants/\(viaAPI.slug)/providers",
            ] {
                #expect(try await api.client.execute(uri: path, method: .get, headers: TestServer.adminHeaders).status == .ok)
            }

            var secrets = [key, viaAPI.key, fixture.cli.environment["TENANTPLANE_MASTER_KEY"]!] + providerKeys
            for slug in [viaCLI, viaAPI.slug] {
                secrets.append(try #require(try await fixture.tenantURL(slug).password))
            }
            let controlDump = try await Self.plainDump(fixture.controlURL)
            #expect(controlDump.contains("CREATE TABLE public.tenants"))

            var hits: [String] = []
            for secret in secrets {
                if controlDump.contains(secret) { hits.append("control database dump") }
                for line in log.all where line.contains(secret) { hits.append("log: \(line.prefix(120))") }
                for output in outputs where output.contains(secret) { hits.append("CLI: \(output.prefix(120))") }
            }
            print("secrets: \(secrets.count) secrets, \(log.all.count) log lines, \(outputs.count) CLI outputs, control dump \(controlDump.utf8.count) bytes, \(hits.count) hits")
            #expect(log.all.count > 10)
            #expect(hits.isEmpty, "\(hits.prefix(5))")
        }
    }

    /// `pg_dump` (plain SQL) of a database, with the real binary.
    static func plainDump(_ url: PostgresURL) async throws -> String {
        guard let bin = ProcessInfo.processInfo.environment["TENANTPLANE_TEST_PG_BINDIR"] else {
            throw SetupError("TENANTPLANE_TEST_PG_BINDIR is not set: run the tests with ops/test")
        }
        let result = try await CLIRunner.runProcess(
            URL(fileURLWithPath: "\(bin)/pg_dump"), ["--dbname=\(url.redacted)"],
            environment: ["PGPASSWORD": url.password ?? ""])
        guard result.exitCode == 0 else { throw SetupError("pg_dump of the control database failed") }
        return result.stdout
    }
}
