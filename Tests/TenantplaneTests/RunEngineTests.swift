import Core
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LLMProviders
import PostgresNIO
import Testing

@Suite("Run engine: runs executed by workers, outputs in the artifact store")
struct RunEngineTests {
    static let fastWorker = ["TENANTPLANE_WORKER_POLL": "50ms", "TENANTPLANE_RUN_LEASE": "2s", "TENANTPLANE_WORKERS": "2"]

    /// Polls the run until it reaches one of `statuses` (or 20 s pass).
    func waitForRun(_ api: TenantAPIFixture, _ key: String, _ id: String, _ statuses: Set<String>) async throws -> [String: Any] {
        var run: [String: Any] = [:]
        // Generous: with the whole suite running on two cores a run can wait a while.
        _ = try await api.eventually(within: .seconds(90)) {
            run = try await api.call(.get, "/v1/runs/\(id)", key: key).json
            return statuses.contains(run["status"] as? String ?? "")
        }
        return run
    }

    func steps(_ api: TenantAPIFixture, _ key: String, _ id: String) async throws -> [[String: Any]] {
        try #require(try await api.call(.get, "/v1/runs/\(id)/steps", key: key).json["steps"] as? [[String: Any]])
    }

    @Test func aRunExecutesItsStepsInOrderAndKeepsOutputsByPathAndDigest() async throws {
        try await TenantAPIFixture.with(extra: Self.fastWorker) { api in
            let a = try await api.tenant("engine")
            #expect(try await api.call(.put, "/v1/prompts/outline", key: a.key, body: #"{"content":"Outline a talk on {{topic}}"}"#).status == .created)
            #expect(try await api.call(.put, "/v1/prompts/draft", key: a.key, body: #"{"content":"Draft from: {{outline}}"}"#).status == .created)
            let created = try await api.call(
                .post, "/v1/runs", key: a.key, body: #"{"steps":["outline","draft"],"input":{"topic":"tea"}}"#)
            let id = try #require(created.json["id"] as? String)
            let run = try await waitForRun(api, a.key, id, ["completed", "failed"])
            #expect(run["status"] as? String == "completed")
            #expect(run["current_step"] as? String == "draft")

            let steps = try await steps(api, a.key, id)
            try #require(steps.compactMap { $0["step"] as? String } == ["outline", "draft"])
            for step in steps {
                #expect(step["status"] as? String == "completed")
                #expect(step["llm_model"] as? String == "local-standard")
                #expect((step["token_usage"] as? [String: Int])?["output_tokens"] ?? 0 > 0)
                #expect(step["output_path"] as? String == "\(a.slug)/\(id)/\(step["step"]!)/output.json")
                #expect((step["summary"] as? String)?.isEmpty == false)
            }
            // The output as served: digest verified, ETag = digest, JSON with the text.
            let output = try await api.call(.get, "/v1/runs/\(id)/steps/draft/output", key: a.key)
            #expect(output.status == .ok)
            let digest = try #require(steps[1]["output_digest"] as? String)
            #expect(output.headers[.eTag] == "\"\(digest)\"")
            let body = Data(String(buffer: output.body).utf8)
            #expect(SHA256.hash(data: body).map { String(format: "%02x", $0) }.joined() == digest)
            let text = try #require((try JSONSerialization.jsonObject(with: body) as? [String: Any])?["text"] as? String)
            // The draft's prompt was filled with the outline's output, which was filled with the input.
            #expect(text.contains("Draft from:"))
            #expect(text.contains("tea"))
            let unchanged = try await api.client.execute(
                uri: "/v1/runs/\(id)/steps/draft/output", method: .get,
                headers: [.authorization: "Bearer \(a.key)", .ifNoneMatch: "\"\(digest)\""])
            #expect(unchanged.status == .notModified)

            // One changed byte on disk: refused before anything is sent.
            let file = api.provisioning.storage.appendingPathComponent("\(a.slug)/\(id)/draft/output.json")
            var bytes = try Data(contentsOf: file)
            bytes[bytes.startIndex] ^= 0x01
            try bytes.write(to: file)
            let tampered = try await api.call(.get, "/v1/runs/\(id)/steps/draft/output", key: a.key)
            #expect(tampered.status == .conflict)
            #expect(tampered.errorCode == "integrity_failure")

            let usage = try await api.call(.get, "/v1/usage", key: a.key)
            let daily = try #require(usage.json["daily"] as? [[String: Any]])
            #expect(daily.first?["model"] as? String == "local-standard")
            #expect(daily.first?["steps"] as? Int == 2)
            let b = try await api.tenant("engine-b")
            #expect(try await api.call(.get, "/v1/runs/\(id)/steps/draft/output", key: b.key).status == .notFound)
        }
    }

    @Test func aStepWithoutAPromptFailsTheRunAndRetryFinishesItWithoutRepeatingDoneSteps() async throws {
        try await TenantAPIFixture.with(extra: Self.fastWorker) { api in
            let a = try await api.tenant("retry")
            _ = try await api.call(.put, "/v1/prompts/outline", key: a.key, body: #"{"content":"Outline {{topic}}"}"#)
            let id = try #require(
                try await api.call(.post, "/v1/runs", key: a.key, body: #"{"steps":["outline","draft"],"input":{"topic":"x"}}"#)
                    .json["id"] as? String)
            let failed = try await waitForRun(api, a.key, id, ["completed", "failed"])
            #expect(failed["status"] as? String == "failed")
            let before = try await steps(api, a.key, id)
            try #require(before.count == 2)
            #expect(before[0]["status"] as? String == "completed")
            #expect(before[1]["status"] as? String == "failed")
            #expect((before[1]["error_message"] as? String)?.contains("no active prompt") == true)

            #expect(try await api.call(.post, "/v1/runs/\(id)/resume", key: a.key).status == .conflict)
            _ = try await api.call(.put, "/v1/prompts/draft", key: a.key, body: #"{"content":"Draft {{outline}}"}"#)
            #expect(try await api.call(.post, "/v1/runs/\(id)/retry", key: a.key).status == .ok)
            let done = try await waitForRun(api, a.key, id, ["completed", "failed"])
            #expect(done["status"] as? String == "completed")
            let after = try await steps(api, a.key, id)
            try #require(after.count == 2)
            #expect(after[0]["completed_at"] as? String == before[0]["completed_at"] as? String)
            #expect(after[0]["output_digest"] as? String == before[0]["output_digest"] as? String)
            let outputs = try await TestCluster.query(
                try await api.provisioning.tenantURL(a.slug),
                "SELECT count(*)::int FROM artifacts WHERE step = 'outline' AND file_type = 'output'")
            #expect(try outputs.first?.decode(Int.self) == 1)
        }
    }

    @Test func pauseAfterAStepThenResumeAndCancel() async throws {
        try await TenantAPIFixture.with(extra: Self.fastWorker) { api in
            let a = try await api.tenant("pause")
            _ = try await api.call(.put, "/v1/prompts/outline", key: a.key, body: #"{"content":"Outline"}"#)
            _ = try await api.call(.put, "/v1/prompts/draft", key: a.key, body: #"{"content":"Draft {{outline}}"}"#)
            let id = try #require(
                try await api.call(
                    .post, "/v1/runs", key: a.key, body: #"{"steps":["outline","draft"],"config":{"pause_after":["outline"]}}"#
                ).json["id"] as? String)
            let paused = try await waitForRun(api, a.key, id, ["paused", "completed", "failed"])
            #expect(paused["status"] as? String == "paused")
            #expect(try await steps(api, a.key, id).count == 1)
            #expect(try await api.call(.post, "/v1/runs/\(id)/resume", key: a.key).json["status"] as? String == "pending")
            let done = try await waitForRun(api, a.key, id, ["completed", "failed"])
            #expect(done["status"] as? String == "completed")
            let cancelAfter = try await api.call(.post, "/v1/runs/\(id)/cancel", key: a.key)
            #expect(cancelAfter.status == .conflict)

            // A run paused before any worker took it can be cancelled; then nothing runs.
            let other = try #require(
                try await api.call(.post, "/v1/runs", key: a.key, body: #"{"steps":["outline"]}"#).json["id"] as? String)
            let pausedOther = try await api.call(.post, "/v1/runs/\(other)/pause", key: a.key)
            if pausedOther.status == .ok {
                let cancelled = try await api.call(.post, "/v1/runs/\(other)/cancel", key: a.key)
                #expect(cancelled.json["status"] as? String == "cancelled")
                try await Task.sleep(for: .milliseconds(500))
                #expect(try await api.call(.get, "/v1/runs/\(other)", key: a.key).json["status"] as? String == "cancelled")
            } else {
                // The worker finished it first: pausing a completed run is refused.
                #expect(pausedOther.status == .conflict)
                #expect(try await api.call(.get, "/v1/runs/\(other)", key: a.key).json["status"] as? String == "completed")
            }
            #expect(try await api.call(.post, "/v1/runs/not-a-run/cancel", key: a.key).status == .notFound)
            let audit = try await api.call(.get, "/v1/audit-logs?limit=100", key: a.key)
            let actions = (audit.json["audit_logs"] as? [[String: Any]])?.compactMap { $0["action"] as? String } ?? []
            #expect(actions.contains("run.resume"))
        }
    }

    @Test func aRunLeftByADeadWorkerIsTakenOverWithoutRepeatingItsCompletedStep() async throws {
        try await TenantAPIFixture.with(extra: Self.fastWorker.merging(["TENANTPLANE_WORKERS": "0"]) { $1 }) { api in
            let a = try await api.tenant("takeover")
            _ = try await api.call(.put, "/v1/prompts/outline", key: a.key, body: #"{"content":"Outline"}"#)
            _ = try await api.call(.put, "/v1/prompts/draft", key: a.key, body: #"{"content":"Draft {{outline}}"}"#)
            let id = try #require(
                try await api.call(.post, "/v1/runs", key: a.key, body: #"{"steps":["outline","draft"]}"#).json["id"] as? String)
            let url = try await api.provisioning.tenantURL(a.slug)
            let run = try #require(UUID(uuidString: id))
            // As a worker that died after finishing "outline" and starting "draft" leaves it.
            let relative = "\(a.slug)/\(id)/outline/output.json"
            let file = api.provisioning.storage.appendingPathComponent(relative)
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            let document = Data(#"{"model":"local-standard","provider":"local","step":"outline","text":"1. tea","usage":{"input_tokens":1,"output_tokens":2}}"#.utf8)
            try document.write(to: file)
            let digest = SHA256.hash(data: document).map { String(format: "%02x", $0) }.joined()
            _ = try await TestCluster.query(
                url,
                """
                UPDATE runs SET status = 'running', lease_owner = 'dead-host:1:1', lease_expires_at = now() - interval '1 second',
                                current_step = 'draft' WHERE id = \(run)
                """)
            _ = try await TestCluster.query(
                url,
                """
                INSERT INTO steps (run_id, step, status, llm_model, token_usage, completed_at)
                VALUES (\(run), 'outline', 'completed', 'local-standard', '{"input_tokens":1,"output_tokens":2}', now()),
                       (\(run), 'draft', 'running', NULL, NULL, NULL)
                """)
            _ = try await TestCluster.query(
                url,
                "INSERT INTO artifacts (run_id, step, file_type, file_path, digest) VALUES (\(run), 'outline', 'output', \(relative), \(digest))")

            // A separate worker process takes the expired lease over.
            var worker = api.provisioning.cli
            for (key, value) in Self.fastWorker { worker.environment[key] = value }
            let finished = try await worker.run(["worker", "--concurrency", "1"], killAfter: .seconds(8))
            _ = finished
            let done = try await waitForRun(api, a.key, id, ["completed", "failed"])
            #expect(done["status"] as? String == "completed")
            let outputs = try await TestCluster.query(
                url, "SELECT step, count(*)::int FROM artifacts WHERE file_type = 'output' GROUP BY step ORDER BY step")
            let counts = try outputs.map { try $0.decode((String, Int).self) }
            #expect(counts.map(\.0) == ["draft", "outline"])
            #expect(counts.map(\.1) == [1, 1])
            let draft = try await api.call(.get, "/v1/runs/\(id)/steps/draft/output", key: a.key)
            #expect(String(buffer: draft.body).contains("1. tea"))
        }
    }

    @Test func uploadsAreStreamedHashedLimitedAndConfinedToTheirRun() async throws {
        try await TenantAPIFixture.with(extra: ["TENANTPLANE_MAX_UPLOAD_BYTES": "65536", "TENANTPLANE_WORKERS": "0"]) { api in
            let a = try await api.tenant("upload")
            let b = try await api.tenant("upload-b")
            let id = try await api.run(a.key, steps: ["outline"])
            let payload = String(repeating: "tea leaves\n", count: 1000)
            let stored = try await api.client.execute(
                uri: "/v1/runs/\(id)/steps/outline/artifacts/notes.txt", method: .post,
                headers: [.authorization: "Bearer \(a.key)"], body: ByteBuffer(string: payload))
            #expect(stored.status == .created)
            let digest = SHA256.hash(data: Data(payload.utf8)).map { String(format: "%02x", $0) }.joined()
            #expect(stored.json["digest"] as? String == digest)
            #expect(stored.json["size"] as? Int == payload.utf8.count)

            let listed = try await api.call(.get, "/v1/runs/\(id)/steps/outline/artifacts", key: a.key)
            #expect((listed.json["artifacts"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == ["notes.txt"])
            let fetched = try await api.call(.get, "/v1/runs/\(id)/steps/outline/artifacts/notes.txt", key: a.key)
            #expect(String(buffer: fetched.body) == payload)
            #expect(fetched.headers[.eTag] == "\"\(digest)\"")

            for name in ["..%2F..%2Fx", "a%2Fb", ".hidden", String(repeating: "n", count: 300), "nul%00byte", "..", "%20"] {
                let response = try await api.client.execute(
                    uri: "/v1/runs/\(id)/steps/outline/artifacts/\(name)", method: .post,
                    headers: [.authorization: "Bearer \(a.key)"], body: ByteBuffer(string: "x"))
                #expect(response.status == .badRequest || response.status == .notFound, "\(name)")
                #expect(response.status.code < 500, "\(name)")
            }
            let large = try await api.client.execute(
                uri: "/v1/runs/\(id)/steps/outline/artifacts/large.bin", method: .post,
                headers: [.authorization: "Bearer \(a.key)"], body: ByteBuffer(repeating: 0x61, count: 70_000))
            #expect(large.status == .contentTooLarge)
            let directory = api.provisioning.storage.appendingPathComponent("\(a.slug)/\(id)/outline/artifacts")
            let left = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            #expect(!left.contains { $0.contains("large") || $0.hasPrefix(".tmp") })

            // Another tenant's key, the same run id: nothing there, nothing written.
            let foreign = try await api.client.execute(
                uri: "/v1/runs/\(id)/steps/outline/artifacts/notes.txt", method: .post,
                headers: [.authorization: "Bearer \(b.key)"], body: ByteBuffer(string: "x"))
            #expect(foreign.status == .notFound)
            #expect(!FileManager.default.fileExists(atPath: api.provisioning.storage.appendingPathComponent(b.slug).appendingPathComponent(id).path))
            #expect(try await api.call(.get, "/v1/runs/\(id)/steps/outline/artifacts/notes.txt", key: b.key).status == .notFound)
        }
    }

    @Test func aProviderThatIsDownFailsTheStepWithAClearErrorAfterItsRetries() async throws {
        try await TenantAPIFixture.with(
            extra: Self.fastWorker.merging([
                "TENANTPLANE_PROVIDER_RETRIES": "1", "TENANTPLANE_PROVIDER_TIMEOUT": "2s",
                "TENANTPLANE_DOWNAI_API_KEY": "sk-test-secret-0123",
            ]) { $1 }
        ) { api in
            let admin = TestServer.adminHeaders
            // A provider on a loopback port nothing listens on.
            let provider = try await api.client.execute(
                uri: "/admin/llm/providers", method: .post, headers: admin,
                body: ByteBuffer(string: #"{"id":"downai","display_name":"Down","api_base_url":"http://127.0.0.1:1","api_style":"openai"}"#))
            #expect(provider.status == .created)
            let model = try await api.client.execute(
                uri: "/admin/llm/models", method: .post, headers: admin,
                body: ByteBuffer(string: #"{"provider_id":"downai","model_name":"gpt-test","model_class":"pro"}"#))
            #expect(model.status == .created)
            let a = try await api.tenant("down-llm")
            _ = try await api.call(.put, "/v1/prompts/outline", key: a.key, body: #"{"content":"Outline"}"#)
            let id = try #require(
                try await api.call(
                    .post, "/v1/runs", key: a.key, body: #"{"steps":["outline"],"config":{"models":{"outline":"gpt-test"}}}"#
                ).json["id"] as? String)
            let run = try await waitForRun(api, a.key, id, ["completed", "failed"])
            #expect(run["status"] as? String == "failed")
            let step = try #require(try await steps(api, a.key, id).first)
            #expect(step["retry_count"] as? Int == 1)
            #expect(step["llm_model"] as? String == "gpt-test")
            let message = try #require(step["error_message"] as? String)
            #expect(message.contains("provider"))
            #expect(!message.contains("sk-test-secret"))
        }
    }

    @Test func aServerKilledMidRunIsResumedByTheNextOneWithoutRepeatingACompletedStep() async throws {
        let fake = FakeProvider(style: .openai, slowDelay: .milliseconds(1200))
        try await fake.serve { baseURL in
            try await TenantAPIFixture.with { api in
                try await FakeProvider.register(api, baseURL: baseURL)
                let a = try await api.tenant("crash")
                for step in ["one", "two", "three"] {
                    _ = try await api.call(.put, "/v1/prompts/\(step)", key: a.key, body: #"{"content":"Step \#(step) after {{topic}}"}"#)
                }
                let id = try #require(
                    try await api.call(
                        .post, "/v1/runs", key: a.key,
                        body: #"{"steps":["one","two","three"],"input":{"topic":"t"},"config":{"models":{"one":"slow","two":"slow","three":"slow"}}}"#
                    ).json["id"] as? String)
                var server = api.provisioning.cli
                server.environment.merge([
                    "TENANTPLANE_ADMIN_TOKEN": TestServer.adminToken, "TENANTPLANE_WORKERS": "1",
                    "TENANTPLANE_WORKER_POLL": "50ms", "TENANTPLANE_RUN_LEASE": "2s",
                    "TENANTPLANE_FAKE_PROVIDER_API_KEY": FakeProvider.apiKey,
                ]) { $1 }
                let port = String(try freeLoopbackPort())
                // The first server dies by SIGKILL in the middle of the run.
                _ = try await server.runAndKill(["serve", "--port", port], after: .milliseconds(3000))
                let url = try await api.provisioning.tenantURL(a.slug)
                let before = try await TestCluster.query(
                    url, "SELECT step, completed_at::text FROM steps WHERE run_id = \(UUID(uuidString: id)!) AND status = 'completed'"
                ).map { try $0.decode((String, String).self) }
                // Killed while holding the run (or, on a very loaded machine, before claiming it).
                let status = try await api.call(.get, "/v1/runs/\(id)", key: a.key).json["status"] as? String
                #expect(status == "running" || status == "pending")

                // The next server takes the run over once the dead one's lease ends
                // (up to 40 s: the whole suite shares two cores), then is stopped.
                let next = try server.start(["serve", "--port", port])
                var run: [String: Any] = [:]
                do {
                    _ = try await api.eventually(within: .seconds(40)) {
                        run = try await api.call(.get, "/v1/runs/\(id)", key: a.key).json
                        return run["status"] as? String == "completed"
                    }
                } catch {
                    next.send(SIGKILL)
                    throw error
                }
                next.send(SIGKILL)
                let second = await next.result
                #expect(
                    run["status"] as? String == "completed",
                    "the second server's log ends: \(second.stdout.suffix(1500)) \(second.stderr.suffix(3000))")
                let after = try await TestCluster.query(
                    url, "SELECT step, completed_at::text FROM steps WHERE run_id = \(UUID(uuidString: id)!) AND status = 'completed'"
                ).map { try $0.decode((String, String).self) }
                #expect(Set(after.map(\.0)) == ["one", "two", "three"])
                for (step, completedAt) in before {
                    #expect(after.first { $0.0 == step }?.1 == completedAt, "step \(step) ran again")
                }
                let outputs = try await TestCluster.query(
                    url, "SELECT step, count(*)::int, max(file_path), max(digest) FROM artifacts WHERE file_type = 'output' GROUP BY step"
                ).map { try $0.decode((String, Int, String, String).self) }
                #expect(outputs.count == 3)
                for (step, count, path, digest) in outputs {
                    #expect(count == 1, "step \(step) stored twice")
                    // Every visible output is whole: its bytes match the recorded digest.
                    let bytes = try Data(contentsOf: api.provisioning.storage.appendingPathComponent(path))
                    #expect(SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() == digest)
                }
                #expect(fake.requests(for: "slow") <= 4)
            }
        }
    }

    @Test func anUnwritableStorageFailsTheStepCleanly() async throws {
        try await TenantAPIFixture.with(extra: Self.fastWorker) { api in
            let a = try await api.tenant("nodisk")
            _ = try await api.call(.put, "/v1/prompts/outline", key: a.key, body: #"{"content":"Outline"}"#)
            // A file stands where the tenant's storage directory belongs (tests run as
            // root, so permissions would not stop the write).
            let directory = api.provisioning.storage.appendingPathComponent(a.slug)
            try FileManager.default.removeItem(at: directory)
            try Data("not a directory".utf8).write(to: directory)
            let id = try #require(
                try await api.call(.post, "/v1/runs", key: a.key, body: #"{"steps":["outline"]}"#).json["id"] as? String)
            let run = try await waitForRun(api, a.key, id, ["completed", "failed"])
            #expect(run["status"] as? String == "failed")
            let step = try #require(try await steps(api, a.key, id).first)
            #expect((step["error_message"] as? String)?.contains("could not be stored") == true)
            #expect(step["output_path"] is NSNull)
            let rows = try await TestCluster.query(
                try await api.provisioning.tenantURL(a.slug), "SELECT count(*)::int FROM artifacts")
            #expect(try rows.first?.decode(Int.self) == 0)
        }
    }
}
