import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Testing

@Suite("Tenant API through the router")
struct TenantAPITests {
    @Test func runsAreStoredListedAndShownOnlyToTheirOwnTenant() async throws {
        try await TenantAPIFixture.with { api in
            let a = try await api.tenant("runs-a")
            let b = try await api.tenant("runs-b")
            let created = try await api.call(
                .post, "/v1/runs", key: a.key,
                body: #"{"steps":["outline","draft"],"input":{"topic":"tea","camelCase":1},"config":{"models":{"draft":"local-pro"},"pause_after":["outline"]}}"#)
            #expect(created.status == .accepted)
            #expect(created.json["status"] as? String == "pending")
            #expect(created.json["steps"] as? [String] == ["outline", "draft"])
            let config = try #require(created.json["config"] as? [String: Any])
            #expect(config["models"] as? [String: String] == ["draft": "local-pro"])
            #expect(config["pause_after"] as? [String] == ["outline"])
            let id = try #require(created.json["id"] as? String)

            let shown = try await api.call(.get, "/v1/runs/\(id)", key: a.key)
            #expect(shown.status == .ok)
            #expect(shown.json["id"] as? String == id)
            #expect(shown.json.keys.contains("current_step"))

            // B asking for A's run sees exactly what it sees for a run that does not exist.
            let foreign = try await api.call(.get, "/v1/runs/\(id)", key: b.key)
            let missing = try await api.call(.get, "/v1/runs/\(UUID().uuidString)", key: b.key)
            #expect(foreign.status == .notFound)
            #expect(String(buffer: foreign.body) == String(buffer: missing.body))
            #expect(!String(buffer: foreign.body).contains(id))
            let foreignSteps = try await api.call(.get, "/v1/runs/\(id)/steps", key: b.key)
            #expect(foreignSteps.status == .notFound)
            let bList = try await api.call(.get, "/v1/runs", key: b.key)
            #expect((bList.json["runs"] as? [Any])?.isEmpty == true)

            // The input stays in A's own database, keys as sent.
            let stored = try await TestCluster.query(
                try await api.provisioning.tenantURL(a.slug), "SELECT input::text FROM runs WHERE id = \(UUID(uuidString: id)!)")
            #expect(try stored.first?.decode(String.self).contains("camelCase") == true)

            let audit = try await api.call(.get, "/v1/audit-logs", key: a.key)
            let entries = try #require(audit.json["audit_logs"] as? [[String: Any]])
            #expect(entries.first?["action"] as? String == "run.create")
            #expect(entries.first?["resource_id"] as? String == id)
            #expect((entries.first?["user_id"] as? String)?.hasPrefix("key:key_") == true)
            let bAudit = try await api.call(.get, "/v1/audit-logs", key: b.key)
            #expect((bAudit.json["audit_logs"] as? [Any])?.isEmpty == true)

            let usage = try await api.call(.get, "/v1/usage", key: a.key)
            #expect((usage.json["runs"] as? [String: Int])?["pending"] == 1)

            let metrics = String(buffer: try await api.client.execute(uri: "/metrics", method: .get).body)
            #expect(metrics.contains(#"tenantplane_http_requests_total{route="/v1/runs/{id}",method="GET",status="404"}"#))
            #expect(metrics.contains(#"tenantplane_http_request_duration_seconds_bucket{route="/v1/runs",le="#))
            #expect(metrics.contains("tenantplane_tenant_pools_open 2"))
            for name in ["tenantplane_tenant_connections_reserved", "tenantplane_tenant_connections_in_use",
                         "tenantplane_tenant_pool_evictions_total", "tenantplane_budget_waits_total"] {
                #expect(metrics.contains(name), "\(name)")
            }
            // Route patterns, never raw ids, become label values.
            #expect(!metrics.contains(id))
        }
    }

    @Test func runListsPageWithACursorAndFilterByStatus() async throws {
        try await TenantAPIFixture.with { api in
            let a = try await api.tenant("page")
            var ids: [String] = []
            for _ in 0..<5 { ids.append(try await api.run(a.key)) }
            _ = try await TestCluster.query(
                try await api.provisioning.tenantURL(a.slug),
                "UPDATE runs SET status = 'completed' WHERE id = \(UUID(uuidString: ids[0])!)")

            var seen: [String] = []
            var cursor: String?
            repeat {
                let uri = "/v1/runs?limit=2" + (cursor.map { "&cursor=\($0)" } ?? "")
                let page = try await api.call(.get, uri, key: a.key)
                #expect(page.status == .ok)
                let runs = try #require(page.json["runs"] as? [[String: Any]])
                #expect(runs.count <= 2)
                seen += runs.compactMap { $0["id"] as? String }
                cursor = page.json["next_cursor"] as? String
            } while cursor != nil
            #expect(seen == ids.reversed())

            let completed = try await api.call(.get, "/v1/runs?status=completed", key: a.key)
            #expect((completed.json["runs"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [ids[0]])
            for bad in ["status=bogus", "status=pending'%20OR%201=1--", "limit=0", "limit=1000", "limit=abc",
                        "cursor=not-a-cursor", "cursor=Li4vLi4vZXRjL3Bhc3N3ZA", "cursor=%00"] {
                let response = try await api.call(.get, "/v1/runs?\(bad)", key: a.key)
                #expect(response.status == .badRequest, "\(bad)")
                #expect(response.errorCode == "invalid_request", "\(bad)")
            }
        }
    }

    static let badRunBodies: [(String, String)] = [
        ("not JSON", #"{"steps":["outline""#),
        ("not an object", #"["outline"]"#),
        ("steps missing", #"{"input":{}}"#),
        ("steps not a list", #"{"steps":"outline"}"#),
        ("empty steps", #"{"steps":[]}"#),
        ("number as step", #"{"steps":[1]}"#),
        ("duplicate step", #"{"steps":["outline","outline"]}"#),
        ("upper case", #"{"steps":["Outline"]}"#),
        ("path escape", #"{"steps":["../etc"]}"#),
        ("SQL metacharacters", #"{"steps":["a'; DROP TABLE runs;--"]}"#),
        ("NUL byte", #"{"steps":["out\u0000line"]}"#),
        ("Cyrillic confusable", #"{"steps":["оutline"]}"#),
        ("too long", #"{"steps":["a\#(String(repeating: "b", count: 63))"]}"#),
        ("unknown top-level field", #"{"steps":["outline"],"tenant_id":"someone-else"}"#),
        ("input not an object", #"{"steps":["outline"],"input":[1,2]}"#),
        ("config not an object", #"{"steps":["outline"],"config":"x"}"#),
        ("unknown config field", #"{"steps":["outline"],"config":{"tenant":"x"}}"#),
        ("model for a step not in the run", #"{"steps":["outline"],"config":{"models":{"draft":"m"}}}"#),
        ("model name not a string", #"{"steps":["outline"],"config":{"models":{"outline":7}}}"#),
        ("pause_after unknown step", #"{"steps":["outline"],"config":{"pause_after":["draft"]}}"#),
        ("huge number", #"{"steps":["outline"],"input":{"n":1e999}}"#),
    ]

    @Test func badRunBodiesAreRejectedWithAClearError() async throws {
        try await TenantAPIFixture.with { api in
            let a = try await api.tenant("bad")
            for (label, body) in Self.badRunBodies {
                let response = try await api.call(.post, "/v1/runs", key: a.key, body: body)
                #expect(response.status == .badRequest, "\(label)")
                #expect(response.errorCode == "invalid_request", "\(label)")
                #expect(!String(buffer: response.body).contains("someone-else"), "\(label)")
            }
            let tooManySteps = (0..<65).map { "\"s\($0)\"" }.joined(separator: ",")
            let many = try await api.call(.post, "/v1/runs", key: a.key, body: #"{"steps":[\#(tooManySteps)]}"#)
            #expect(many.status == .badRequest)
            let oversized = #"{"steps":["outline"],"input":{"blob":""# + String(repeating: "x", count: 1 << 20) + #""}}"#
            let large = try await api.call(.post, "/v1/runs", key: a.key, body: oversized)
            #expect(large.status == .contentTooLarge)
            #expect(large.errorCode == "body_too_large")
            // Ids that are not UUIDs, with path tricks and SQL, are simply not found.
            for id in ["not-a-uuid", "..%2F..%2Fetc%2Fpasswd", "1'%20OR%20'1'='1", "%00", String(repeating: "9", count: 400)] {
                let response = try await api.call(.get, "/v1/runs/\(id)", key: a.key)
                #expect(response.status == .notFound, "\(id)")
                let steps = try await api.call(.get, "/v1/runs/\(id)/steps", key: a.key)
                #expect(steps.status == .notFound, "\(id)")
            }
            let listed = try await api.call(.get, "/v1/runs", key: a.key)
            #expect((listed.json["runs"] as? [Any])?.isEmpty == true)
        }
    }

    @Test func keysAndSuspensionAreEnforcedWithinTwoSeconds() async throws {
        try await TenantAPIFixture.with { api in
            let a = try await api.tenant("auth")
            for (header, label) in [(nil as String?, "no key"), ("tpk_unknown", "unknown key"), ("", "empty key")] {
                let response = try await api.call(.get, "/v1/runs", key: header)
                #expect(response.status == .unauthorized, "\(label)")
                #expect(response.errorCode == "unauthorized", "\(label)")
            }
            let admin = try await api.client.execute(uri: "/v1/runs", method: .get, headers: TestServer.adminHeaders)
            #expect(admin.status == .unauthorized)
            #expect(try await api.call(.get, "/v1/runs", key: a.key).status == .ok)

            let suspended = try await api.client.execute(
                uri: "/admin/tenants/\(a.slug)/suspend", method: .post, headers: TestServer.adminHeaders)
            #expect(suspended.status == .ok)
            let started = ContinuousClock.now
            #expect(try await api.eventually { try await api.call(.get, "/v1/runs", key: a.key).status == .forbidden })
            #expect(ContinuousClock.now - started < .seconds(2))
            let refused = try await api.call(.get, "/v1/runs", key: a.key)
            #expect(refused.errorCode == "tenant_suspended")
            _ = try await api.client.execute(
                uri: "/admin/tenants/\(a.slug)/resume", method: .post, headers: TestServer.adminHeaders)
            #expect(try await api.eventually(within: .seconds(5)) {
                try await api.call(.get, "/v1/runs", key: a.key).status == .ok
            })

            let list = try await api.client.execute(
                uri: "/admin/tenants/\(a.slug)/keys", method: .get, headers: TestServer.adminHeaders)
            let keyID = try #require((list.json["keys"] as? [[String: Any]])?.first?["id"] as? String)
            let revoked = try await api.client.execute(
                uri: "/admin/tenants/\(a.slug)/keys/\(keyID)", method: .delete, headers: TestServer.adminHeaders)
            #expect(revoked.status == .ok)
            let revokedAt = ContinuousClock.now
            #expect(try await api.eventually { try await api.call(.get, "/v1/runs", key: a.key).status == .unauthorized })
            #expect(ContinuousClock.now - revokedAt < .seconds(2))
        }
    }

    @Test func promptsAreVersionedWithOneActiveVersionPerStep() async throws {
        try await TenantAPIFixture.with { api in
            let a = try await api.tenant("prompts")
            let b = try await api.tenant("prompts-b")
            let first = try await api.call(.put, "/v1/prompts/outline", key: a.key, body: #"{"content":"Outline {{topic}} for {{ audience }}"}"#)
            #expect(first.status == .created)
            #expect(first.json["version"] as? Int == 1)
            #expect(first.json["variables"] as? [String] == ["topic", "audience"])
            // Concurrent writers of one step get consecutive versions, one active.
            try await withThrowingTaskGroup(of: Int.self) { group in
                for n in 0..<4 {
                    group.addTask {
                        try await api.call(.put, "/v1/prompts/outline", key: a.key, body: #"{"content":"v\#(n)","variables":[]}"#)
                            .status.code
                    }
                }
                for try await status in group { #expect(status == 201) }
            }
            let versions = try await api.call(.get, "/v1/prompts/outline", key: a.key)
            let listed = try #require(versions.json["versions"] as? [[String: Any]])
            #expect(listed.compactMap { $0["version"] as? Int } == [5, 4, 3, 2, 1])
            #expect(listed.filter { $0["is_active"] as? Bool == true }.count == 1)
            #expect(listed.first?["is_active"] as? Bool == true)
            let active = try await api.call(.get, "/v1/prompts", key: a.key)
            #expect((active.json["prompts"] as? [[String: Any]])?.count == 1)

            #expect(try await api.call(.get, "/v1/prompts/outline", key: b.key).status == .notFound)
            #expect((try await api.call(.get, "/v1/prompts", key: b.key).json["prompts"] as? [Any])?.isEmpty == true)
            for (path, body) in [
                ("/v1/prompts/Outline", #"{"content":"x"}"#), ("/v1/prompts/..%2Fetc", #"{"content":"x"}"#),
                ("/v1/prompts/outline", #"{"content":""}"#), ("/v1/prompts/outline", #"{"content":"x","owner":"y"}"#),
                ("/v1/prompts/outline", #"{"content":5}"#), ("/v1/prompts/outline", #"{"content":"x","variables":["a b"]}"#),
                ("/v1/prompts/outline", "not json"),
            ] {
                let response = try await api.call(.put, path, key: a.key, body: body)
                #expect(response.status == .badRequest, "\(path) \(body)")
            }
            #expect(try await api.call(.get, "/v1/prompts/%27%3B--", key: a.key).status == .notFound)
            let audit = try await api.call(.get, "/v1/audit-logs?limit=2", key: a.key)
            #expect((audit.json["audit_logs"] as? [[String: Any]])?.first?["action"] as? String == "prompt.put")
            #expect(audit.json["next_cursor"] as? String != nil)
        }
    }

    @Test func stepsShowTheirOutputReferences() async throws {
        try await TenantAPIFixture.with { api in
            let a = try await api.tenant("steps")
            let id = try await api.run(a.key, steps: ["outline", "draft"])
            let run = UUID(uuidString: id)!
            let url = try await api.provisioning.tenantURL(a.slug)
            let digest = String(repeating: "ab", count: 32)
            _ = try await TestCluster.query(
                url,
                """
                INSERT INTO steps (run_id, step, status, llm_model, token_usage, completed_at)
                VALUES (\(run), 'draft', 'running', NULL, NULL, NULL), (\(run), 'outline', 'completed', 'local-pro',
                        '{"input_tokens": 12, "output_tokens": 34}', now())
                """)
            _ = try await TestCluster.query(
                url,
                """
                INSERT INTO artifacts (run_id, step, file_type, file_path, digest, metadata)
                VALUES (\(run), 'outline', 'output', \("\(a.slug)/\(id)/outline/output.json"), \(digest),
                        '{"summary": "three parts", "metrics": {"characters": 120}}')
                """)
            let response = try await api.call(.get, "/v1/runs/\(id)/steps", key: a.key)
            #expect(response.status == .ok)
            let steps = try #require(response.json["steps"] as? [[String: Any]])
            #expect(steps.compactMap { $0["step"] as? String } == ["outline", "draft"])
            #expect(steps[0]["output_digest"] as? String == digest)
            #expect(steps[0]["summary"] as? String == "three parts")
            #expect((steps[0]["token_usage"] as? [String: Int])?["output_tokens"] == 34)
            #expect((steps[0]["metrics"] as? [String: Int])?["characters"] == 120)
            #expect(steps[1]["output_path"] is NSNull)
            let usage = try await api.call(.get, "/v1/usage", key: a.key)
            #expect(usage.json["input_tokens"] as? Int == 12)
            #expect(usage.json["output_tokens"] as? Int == 34)
        }
    }

    @Test func aStoppedTenantDatabaseIs503ForThatTenantOnlyAndRecovers() async throws {
        try await TenantAPIFixture.with(extra: ["TENANTPLANE_POOL_WAIT": "2", "TENANTPLANE_DOWNTIME_BACKOFF": "5"]) { api in
            let a = try await api.tenant("down")
            let b = try await api.tenant("up")
            let runA = try await api.run(a.key)
            let runB = try await api.run(b.key)
            let database = try TenantSlug(a.slug).databaseName
            let admin = try TestCluster.adminURL
            _ = try await TestCluster.query(admin, PostgresQuery(unsafeSQL: "ALTER DATABASE \(database) ALLOW_CONNECTIONS false"))
            _ = try await TestCluster.query(
                admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \(database)")
            let down = try await api.call(.get, "/v1/runs/\(runA)", key: a.key)
            #expect(down.status == .serviceUnavailable)
            #expect(down.errorCode == "tenant_database_unavailable")
            #expect(down.headers[.retryAfter] != nil)
            #expect(try await api.call(.get, "/v1/runs/\(runB)", key: b.key).status == .ok)
            // Refused at once while the backoff lasts, without waiting on the pool.
            let started = ContinuousClock.now
            let again = try await api.call(.get, "/v1/runs/\(runA)", key: a.key)
            #expect(again.status == .serviceUnavailable)
            #expect(ContinuousClock.now - started < .seconds(3))

            _ = try await TestCluster.query(admin, PostgresQuery(unsafeSQL: "ALTER DATABASE \(database) ALLOW_CONNECTIONS true"))
            #expect(try await api.eventually(within: .seconds(15)) {
                try await api.call(.get, "/v1/runs/\(runA)", key: a.key).status == .ok
            })
        }
    }
}
