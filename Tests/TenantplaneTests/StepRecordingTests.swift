import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LLMProviders
import PostgresNIO
import Testing

@Suite("Run engine: a result that cannot be recorded")
struct StepRecordingTests {
    /// PostgreSQL cannot hold U+0000 in text: the step fails with that reason
    /// after one provider call, instead of being re-run (and re-billed) for ever.
    @Test func anUnrecordableResultFailsTheStepWithTheReasonAfterOneCall() async throws {
        let fake = FakeProvider(style: .openai)
        try await fake.serve { baseURL in
            try await TenantAPIFixture.with(extra: DeletionTests.workers) { api in
                try await FakeProvider.register(api, baseURL: baseURL, models: ["nul"])
                let tenant = try await api.tenant("nul")
                #expect(try await api.call(.put, "/v1/prompts/outline", key: tenant.key, body: #"{"content":"Say {{topic}}"}"#).status == .created)
                let id = try #require(
                    try await api.call(
                        .post, "/v1/runs", key: tenant.key,
                        body: #"{"steps":["outline"],"input":{"topic":"t"},"config":{"models":{"outline":"nul"}}}"#
                    ).json["id"] as? String)
                var run: [String: Any] = [:]
                _ = try await api.eventually(within: .seconds(30)) {
                    run = try await api.call(.get, "/v1/runs/\(id)", key: tenant.key).json
                    return ["failed", "completed"].contains(run["status"] as? String ?? "")
                }
                #expect(run["status"] as? String == "failed")
                let steps = try #require(try await api.call(.get, "/v1/runs/\(id)/steps", key: tenant.key).json["steps"] as? [[String: Any]])
                let message = try #require(steps.first?["error_message"] as? String)
                #expect(message.contains("could not be recorded"), "\(message)")
                try await Task.sleep(for: .seconds(1))
                #expect(fake.requests(for: "nul") == 1)
            }
        }
    }
}

@Suite("LLM providers: the seeded ones can be re-pointed")
struct ProviderUpdateTests {
    @Test func aSeededProviderIsRePointedByTheCLIAndTheAPIAndBadChangesAreRefused() async throws {
        try await TenantAPIFixture.with { api in
            let cli = api.provisioning.cli
            let updated = try await cli.run(
                "llm", "provider", "update", "openai", "--base-url", "http://127.0.0.1:9/v1", "--active", "false", "--json")
            #expect(updated.exitCode == 0, "\(updated.stderr)")
            let provider = try #require(try updated.jsonObject() as? [String: Any])
            #expect(provider["api_base_url"] as? String == "http://127.0.0.1:9/v1")
            #expect(provider["is_active"] as? Bool == false)

            let patched = try await api.client.execute(
                uri: "/admin/llm/providers/openai", method: .patch, headers: TestServer.adminHeaders,
                body: ByteBuffer(string: #"{"display_name":"OpenAI (proxy)","is_active":true}"#))
            #expect(patched.status == .ok)
            #expect(patched.json["display_name"] as? String == "OpenAI (proxy)")
            #expect(patched.json["api_base_url"] as? String == "http://127.0.0.1:9/v1")
            #expect(patched.json["is_active"] as? Bool == true)

            let unknown = try await api.client.execute(
                uri: "/admin/llm/providers/nobody", method: .patch, headers: TestServer.adminHeaders,
                body: ByteBuffer(string: #"{"is_active":true}"#))
            #expect(unknown.status == .notFound)
            let badURL = try await cli.run("llm", "provider", "update", "openai", "--base-url", "ftp://x")
            #expect(badURL.exitCode == 1)
            #expect(badURL.stderr.contains("http://"))
            let badType = try await api.client.execute(
                uri: "/admin/llm/providers/openai", method: .patch, headers: TestServer.adminHeaders,
                body: ByteBuffer(string: #"{"is_active":"yes"}"#))
            #expect(badType.status == .badRequest)
            let audit = try await TestCluster.query(
                api.provisioning.controlURL,
                "SELECT outcome FROM control_audit_logs WHERE action = 'llm.provider.update' ORDER BY id")
            #expect(try audit.map { try $0.decode(String.self) } == ["success", "success", "failure", "failure"])
        }
    }
}
