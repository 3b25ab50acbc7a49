import ControlPlane
import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Testing

@Suite("Provider keys sealed in the control database: set from standard input, listed only as set")
struct ProviderCredentialsTests {
    static func newKey(_ prefix: String) -> String {
        "\(prefix)-" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
    }

    /// A tenant row as the specification's columns alone make it (active):
    /// the keys need the row, not a database.
    static func registerTenant(_ slug: String, in url: PostgresURL) async throws {
        _ = try await TestCluster.query(
            url,
            "INSERT INTO tenants (id, name, database_url) VALUES (\(slug), 'Keys', 'postgres://x@127.0.0.1:1/none')")
    }

    static func withControl<Result: Sendable>(
        _ url: PostgresURL, _ body: (ControlStore) async throws -> Result
    ) async throws -> Result {
        try await DatabaseConnection.with(url, logger: TestCluster.logger) { connection in
            try await body(ControlStore(connection: connection, logger: TestCluster.logger))
        }
    }

    @Test func keysComeFromStandardInputAreListedOnlyAsSetAndOpenOnlyOnTheirOwnRow() async throws {
        try await ProvisioningFixture.with { fixture in
            let cli = fixture.cli
            let secrets = SecretBox(
                masterKey: try MasterKey(base64: cli.environment["TENANTPLANE_MASTER_KEY"]!, source: "test"))
            let providerKey = Self.newKey("sk-provider")
            let tenantKey = Self.newKey("sk-tenant")
            let acme = ProvisioningFixture.slug("keys-acme")
            let bare = ProvisioningFixture.slug("keys-bare")
            try await Self.registerTenant(acme, in: fixture.controlURL)
            try await Self.registerTenant(bare, in: fixture.controlURL)
            var outputs: [String] = []
            func credential(_ provider: String, for tenant: String, environment: String? = nil) async throws -> String? {
                try await Self.withControl(fixture.controlURL) { store in
                    try await store.providerCredential(
                        provider: provider, tenant: tenant, secrets: secrets, environmentKey: environment)
                }
            }

            let set = try await cli.run(["llm", "provider", "set-key", "openai", "--json"], standardInput: providerKey + "\n")
            #expect(set.exitCode == 0, "\(set.stderr)")
            #expect(try #require(try set.jsonObject() as? [String: Any])["key_set"] as? Bool == true)
            let tenantSet = try await cli.run(
                ["tenant", "secret", "set", acme, "--provider", "openai", "--json"], standardInput: tenantKey + "\r\n")
            #expect(tenantSet.exitCode == 0, "\(tenantSet.stderr)")
            let stored = try #require(try tenantSet.jsonObject() as? [String: Any])
            #expect(stored["provider_id"] as? String == "openai")
            #expect(stored["key_set"] as? Bool == true)
            outputs += [set.stdout + set.stderr, tenantSet.stdout + tenantSet.stderr]

            let listed = try await cli.run("llm", "provider", "list", "--json")
            let providers = try #require(try listed.jsonObject() as? [[String: Any]])
            let keySet = providers.compactMap { provider in
                (provider["id"] as? String).map { "\($0)=\(provider["key_set"] as? Bool ?? false)" }
            }
            #expect(keySet == ["claude=false", "gemini=false", "local=false", "openai=true"])
            let table = try await cli.run("llm", "provider", "list")
            #expect(table.stdout.contains("KEY SET"))
            let tenantList = try await cli.run("tenant", "secret", "list", acme, "--json")
            let tenantKeys = try #require(try tenantList.jsonObject() as? [[String: Any]])
            #expect(tenantKeys.compactMap { $0["provider_id"] as? String } == ["openai"])
            outputs += [listed.stdout, table.stdout, tenantList.stdout]

            // The tenant's own key first, then the environment's, then the stored one.
            #expect(try await credential("openai", for: acme, environment: "env") == tenantKey)
            #expect(try await credential("openai", for: bare, environment: "env") == "env")
            #expect(try await credential("openai", for: bare) == providerKey)
            #expect(try await credential("claude", for: bare) == nil)

            // A sealed key copied onto another provider's or tenant's row does not open there.
            _ = try await TestCluster.query(
                fixture.controlURL,
                """
                UPDATE llm_providers SET api_key_encrypted = (SELECT api_key_encrypted FROM llm_providers WHERE id = 'openai')
                WHERE id = 'claude'
                """)
            _ = try await TestCluster.query(
                fixture.controlURL,
                """
                INSERT INTO tenant_provider_keys (tenant_id, provider_id, api_key_encrypted)
                SELECT \(bare), provider_id, api_key_encrypted FROM tenant_provider_keys WHERE tenant_id = \(acme)
                """)
            await #expect(throws: SecretBoxError.cannotOpen) { try await credential("claude", for: acme) }
            await #expect(throws: SecretBoxError.cannotOpen) { try await credential("openai", for: bare) }
            _ = try await TestCluster.query(fixture.controlURL, "UPDATE llm_providers SET api_key_encrypted = NULL WHERE id = 'claude'")
            _ = try await TestCluster.query(fixture.controlURL, "DELETE FROM tenant_provider_keys WHERE tenant_id = \(bare)")

            // Bad inputs: each refused with one line, nothing stored.
            for (arguments, input, expected) in [
                (["llm", "provider", "set-key", "openai"], "", "no key on standard input"),
                (["llm", "provider", "set-key", "openai"], "\n", "no key on standard input"),
                (["llm", "provider", "set-key", "openai"], "two\nlines\n", "one line of printable ASCII"),
                (["llm", "provider", "set-key", "openai"], "with space", "one line of printable ASCII"),
                (["llm", "provider", "set-key", "openai"], String(repeating: "k", count: 5000), "longer than 4096 bytes"),
                (["llm", "provider", "set-key", "nope"], "sk-unknown", "unknown provider nope"),
                (["llm", "provider", "set-key", "SK-PASTED-AS-ID"], "sk-unknown", "no such provider"),
                (["tenant", "secret", "set", acme, "--provider", "nope"], "sk-unknown", "unknown provider nope"),
                (["tenant", "secret", "set", "ghost-tenant", "--provider", "openai"], "sk-unknown", "no such tenant"),
                (["tenant", "secret", "set", acme, "--provider", "openai"], "", "no key on standard input"),
            ] {
                let refused = try await cli.run(arguments, standardInput: input)
                #expect(refused.exitCode == 1, "\(arguments)")
                #expect(refused.stderr.hasPrefix("tenantplane: ") && refused.stderr.contains(expected), "\(refused.stderr)")
                #expect(refused.stderr.split(separator: "\n").count == 1)
            }
            #expect(try await credential("openai", for: bare) == providerKey)

            // Audit rows say what was done and to what, never the key or the
            // argument that looked like one.
            let audit = try await TestCluster.query(
                fixture.controlURL,
                """
                SELECT action, outcome, COALESCE(resource_id, '-'), details::text FROM control_audit_logs
                WHERE action LIKE 'llm.provider.key.%' OR action LIKE 'tenant.secret.%' ORDER BY id
                """
            ).map { try $0.decode((String, String, String, String).self) }
            #expect(audit.contains { $0.0 == "llm.provider.key.set" && $0.1 == "success" && $0.2 == "openai" })
            #expect(audit.contains { $0.0 == "tenant.secret.set" && $0.1 == "success" && $0.2 == acme && $0.3.contains("openai") })
            // Input refused before it reaches the store (nothing on standard input) is not an admin action.
            #expect(audit.filter { $0.1 == "failure" }.count == 7)
            for row in audit {
                #expect(!"\(row)".contains("sk-"), "\(row)")
                #expect(!"\(row)".contains("SK-PASTED"), "\(row)")
            }

            let cleared = try await cli.run("llm", "provider", "clear-key", "openai", "--json")
            #expect(try #require(try cleared.jsonObject() as? [String: Any])["key_set"] as? Bool == false)
            let tenantCleared = try await cli.run("tenant", "secret", "clear", acme, "--provider", "openai")
            #expect(tenantCleared.exitCode == 0, "\(tenantCleared.stderr)")
            #expect((try await cli.run("tenant", "secret", "list", acme, "--json").jsonObject() as? [Any])?.isEmpty == true)
            #expect(try await credential("openai", for: acme) == nil)
            outputs += [cleared.stdout, tenantCleared.stdout]
            for output in outputs {
                #expect(!output.contains(providerKey) && !output.contains(tenantKey))
            }
        }
    }

    @Test func theAdminRoutesSetAndClearKeysAndRefuseBadInput() async throws {
        try await TenantAPIFixture.with { api in
            func admin(_ method: HTTPRequest.Method, _ uri: String, _ body: String? = nil) async throws -> TestResponse {
                try await api.client.execute(
                    uri: uri, method: method, headers: TestServer.adminHeaders, body: body.map { ByteBuffer(string: $0) })
            }
            let providerKey = Self.newKey("sk-http-provider")
            let tenantKey = Self.newKey("sk-http-tenant")

            let set = try await admin(.put, "/admin/llm/providers/gemini/key", #"{"api_key":"\#(providerKey)"}"#)
            #expect(set.status == .ok)
            #expect(set.json["key_set"] as? Bool == true)
            #expect(!String(buffer: set.body).contains(providerKey))
            let list = try await admin(.get, "/admin/llm/providers")
            let gemini = (list.json["providers"] as? [[String: Any]])?.first { $0["id"] as? String == "gemini" }
            #expect(gemini?["key_set"] as? Bool == true)
            #expect(!String(buffer: list.body).contains(providerKey))

            for (uri, body, status, code) in [
                ("/admin/llm/providers/gemini/key", #"{"api_key":""}"#, HTTPResponse.Status.badRequest, "invalid_request"),
                ("/admin/llm/providers/gemini/key", #"{"api_key":"a\nb"}"#, .badRequest, "invalid_request"),
                ("/admin/llm/providers/gemini/key", #"{"key":"x"}"#, .badRequest, nil),
                ("/admin/llm/providers/ghost/key", #"{"api_key":"sk-x"}"#, .notFound, "not_found"),
            ] {
                let refused = try await admin(.put, uri, body)
                #expect(refused.status == status, "\(body): \(String(buffer: refused.body))")
                if let code { #expect(refused.errorCode == code) }
            }

            let tenant = try await api.tenant("http-keys")
            let path = "/admin/tenants/\(tenant.slug)/providers/gemini/key"
            let stored = try await admin(.put, path, #"{"api_key":"\#(tenantKey)"}"#)
            #expect(stored.status == .ok, "\(String(buffer: stored.body))")
            #expect(stored.json["key_set"] as? Bool == true)
            #expect(stored.json["tenant_id"] as? String == tenant.slug)
            let tenantList = try await admin(.get, "/admin/tenants/\(tenant.slug)/providers")
            let keys = try #require(tenantList.json["provider_keys"] as? [[String: Any]])
            #expect(keys.compactMap { $0["provider_id"] as? String } == ["gemini"])
            #expect(!String(buffer: tenantList.body).contains(tenantKey))
            #expect(try await admin(.put, "/admin/tenants/ghost-tenant/providers/gemini/key", #"{"api_key":"sk-x"}"#).status == .notFound)
            #expect(try await admin(.put, "/admin/tenants/\(tenant.slug)/providers/ghost/key", #"{"api_key":"sk-x"}"#).status == .notFound)
            #expect(try await admin(.put, path, #"{"api_key":" "}"#).status == .badRequest)

            let cleared = try await admin(.delete, path)
            #expect(cleared.status == .ok)
            #expect(cleared.json["key_set"] as? Bool == false)
            #expect((try await admin(.get, "/admin/tenants/\(tenant.slug)/providers").json["provider_keys"] as? [Any])?.isEmpty == true)
            let providerCleared = try await admin(.delete, "/admin/llm/providers/gemini/key")
            #expect(providerCleared.json["key_set"] as? Bool == false)

            // A tenant being deleted takes no new key; its purge removes the ones it has.
            #expect(try await admin(.put, path, #"{"api_key":"\#(tenantKey)"}"#).status == .ok)
            #expect(try await admin(.delete, "/admin/tenants/\(tenant.slug)").status == .ok)
            let late = try await admin(.put, path, #"{"api_key":"\#(tenantKey)"}"#)
            #expect(late.status == .conflict)
            #expect(late.errorCode == "tenant_being_deleted")
            #expect(try await admin(.delete, "/admin/tenants/\(tenant.slug)?purge_now=true").status == .ok)
            let left = try await TestCluster.query(
                api.provisioning.controlURL,
                "SELECT count(*)::int FROM tenant_provider_keys WHERE tenant_id = \(tenant.slug)")
            #expect(try left.first?.decode(Int.self) == 0)
        }
    }
}
