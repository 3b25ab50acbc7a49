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
    ]

    func waitForRun(_ api: TenantAPIFixture, _ key: String, _ id: String, _ statuses: Set<String>) async throws -> String? {
        var status: String?
        _ = try await api.eventually(within: .seconds(90)) {
            status = try await api.call(.get, "/v1/runs/\(id)", key: key).json["status"] as? String
            return statuses.contains(status ?? "")
        }
        return status
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
}
