import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LLMProviders
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
