import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@Suite("A run's input and its steps' states, as the API shows them")
struct RunStateTests {
    static let workers = [
        "TENANTPLANE_WORKER_POLL": "50ms", "TENANTPLANE_RUN_LEASE": "2s", "TENANTPLANE_WORKERS": "1",
        "TENANTPLANE_FAKE_PROVIDER_API_KEY": FakeProvider.apiKey,
    ]

    func waitForRun(_ api: TenantAPIFixture, _ key: String, _ id: String, _ statuses: Set<String>) async throws -> String? {
        var status: String?
        _ = try await api.eventually(within: .seconds(90)) {
            status = try await api.call(.get, "/v1/runs/\(id)", key: key).json["status"] as? String
            return statuses.contains(status ?? "")
        }
        return status
    }

    func step(_ api: TenantAPIFixture, _ key: String, _ id: String) async throws -> [String: Any] {
        let steps = try await api.call(.get, "/v1/runs/\(id)/steps", key: key).json["steps"] as? [[String: Any]]
        return try #require(steps?.first)
    }

    @Test func integersPast2To53KeepEveryDigitInTheStoredRunAndInThePrompt() async throws {
        try await TenantAPIFixture.with(extra: Self.workers) { api in
            let a = try await api.tenant("bigint")
            #expect(
                try await api.call(.put, "/v1/prompts/outline", key: a.key, body: #"{"content":"Count {{n}}, then {{nested}}"}"#)
                    .status == .created)
            // Written as PostgreSQL writes jsonb back (key order, spacing), so
            // the answer can be compared byte for byte.
            let input = #"{"n": 9007199254740993, "nested": {"f": 0.5, "id": -9223372036854775808}}"#
            let created = try await api.call(.post, "/v1/runs", key: a.key, body: #"{"steps":["outline"],"input":\#(input)}"#)
            let id = try #require(created.json["id"] as? String, "\(String(buffer: created.body))")

            let shown = String(buffer: try await api.call(.get, "/v1/runs/\(id)", key: a.key).body)
            #expect(shown.contains(#""input":\#(input),"#), "\(shown)")
            let listed = String(buffer: try await api.call(.get, "/v1/runs", key: a.key).body)
            #expect(!listed.contains(#""input""#))

            #expect(try await waitForRun(api, a.key, id, ["completed", "failed"]) == "completed")
            let output = try await api.call(.get, "/v1/runs/\(id)/steps/outline/output", key: a.key)
            let text = try #require(
                (try JSONSerialization.jsonObject(with: Data(String(buffer: output.body).utf8)) as? [String: Any])?["text"]
                    as? String)
            #expect(text.contains(#"Count 9007199254740993, then {"f":0.5,"id":-9223372036854775808}"#), "\(text)")
        }
    }

    @Test func aStepInFlightEndsPausedOrCancelledWithItsRunAndRunsAgainOnResume() async throws {
        let fake = FakeProvider(style: .openai, slowDelay: .milliseconds(1500))
        try await fake.serve { baseURL in
            try await TenantAPIFixture.with(extra: Self.workers) { api in
                try await FakeProvider.register(api, baseURL: baseURL)
                let a = try await api.tenant("stepstate")
                _ = try await api.call(.put, "/v1/prompts/outline", key: a.key, body: #"{"content":"Outline"}"#)
                let body = #"{"steps":["outline"],"config":{"models":{"outline":"slow"}}}"#
                func startInFlight() async throws -> String {
                    let calls = fake.requests(for: "slow")
                    let id = try #require(try await api.call(.post, "/v1/runs", key: a.key, body: body).json["id"] as? String)
                    #expect(try await api.eventually(within: .seconds(30)) { fake.requests(for: "slow") > calls })
                    return id
                }
                func answered(_ count: Int) async throws {
                    #expect(try await api.eventually(within: .seconds(10)) { fake.slowAnswersSent >= count })
                    // The worker gets the answer and finds the run no longer its own.
                    try await Task.sleep(for: .milliseconds(500))
                }

                // Paused mid-step: the step ends paused; resumed, it runs again and completes.
                let paused = try await startInFlight()
                #expect(try await api.call(.post, "/v1/runs/\(paused)/pause", key: a.key).json["status"] as? String == "paused")
                let pausedStep = try await step(api, a.key, paused)
                #expect(pausedStep["status"] as? String == "paused")
                #expect(pausedStep["completed_at"] as? String != nil)
                try await answered(1)
                #expect(try await step(api, a.key, paused)["status"] as? String == "paused")
                #expect(try await api.call(.post, "/v1/runs/\(paused)/resume", key: a.key).status == .ok)
                #expect(try await waitForRun(api, a.key, paused, ["completed", "failed"]) == "completed")
                let resumedStep = try await step(api, a.key, paused)
                #expect(resumedStep["status"] as? String == "completed")
                #expect(resumedStep["output_digest"] as? String != nil)
                #expect(fake.requests(for: "slow") == 2)

                // Cancelled mid-step: the step ends cancelled.
                let cancelled = try await startInFlight()
                #expect(
                    try await api.call(.post, "/v1/runs/\(cancelled)/cancel", key: a.key).json["status"] as? String == "cancelled")
                try await answered(3)
                let cancelledStep = try await step(api, a.key, cancelled)
                #expect(cancelledStep["status"] as? String == "cancelled")
                #expect(cancelledStep["completed_at"] as? String != nil)

                // Paused mid-step, then cancelled: the step a pause left ends cancelled, at the pause.
                let both = try await startInFlight()
                #expect(try await api.call(.post, "/v1/runs/\(both)/pause", key: a.key).status == .ok)
                let pauseEnded = try await step(api, a.key, both)["completed_at"] as? String
                #expect(try await api.call(.post, "/v1/runs/\(both)/cancel", key: a.key).status == .ok)
                let bothStep = try await step(api, a.key, both)
                #expect(bothStep["status"] as? String == "cancelled")
                #expect(bothStep["completed_at"] as? String == pauseEnded)
                try await answered(4)
                #expect(try await step(api, a.key, both)["status"] as? String == "cancelled")
                #expect(try await api.call(.get, "/v1/runs/\(both)", key: a.key).json["status"] as? String == "cancelled")
            }
        }
    }
}
