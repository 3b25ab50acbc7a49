import Core
import Foundation
import HTTPTypes
import HummingbirdTesting
import PostgresNIO
import Testing

@Suite("Run engine at LLM scale: many calls in flight, fair across tenants, shared by processes")
struct RunEngineScaleTests {
    typealias Tenant = (slug: String, key: String)
    static let prompts = ["one", "two", "three"]

    func prepare(_ api: TenantAPIFixture, _ name: String) async throws -> Tenant {
        let tenant = try await api.tenant(name)
        for step in Self.prompts {
            #expect(
                try await api.call(.put, "/v1/prompts/\(step)", key: tenant.key, body: #"{"content":"Step \#(step) of {{n}}"}"#)
                    .status == .created)
        }
        return tenant
    }

    func submit(_ api: TenantAPIFixture, _ tenant: Tenant, steps: [String], n: Int) async throws -> String {
        let models = steps.map { #""\#($0)":"slow""# }.joined(separator: ",")
        let steps = steps.map { #""\#($0)""# }.joined(separator: ",")
        let created = try await api.call(
            .post, "/v1/runs", key: tenant.key,
            body: #"{"steps":[\#(steps)],"input":{"n":\#(n)},"config":{"models":{\#(models)}}}"#)
        try #require(created.status == .accepted, "\(String(buffer: created.body))")
        return try #require(created.json["id"] as? String)
    }

    func status(_ api: TenantAPIFixture, _ tenant: Tenant, _ id: String) async throws -> String {
        try await api.call(.get, "/v1/runs/\(id)", key: tenant.key).json["status"] as? String ?? ""
    }

    @Test func oneProcessHoldsFarMoreProviderCallsInFlightThanItHasConnections() async throws {
        // Long enough that the first runs are still at the provider when the
        // last is submitted.
        let fake = FakeProvider(style: .openai, slowDelay: .seconds(8))
        try await fake.serve { baseURL in
            // 40 runs, 4 tenants, a budget of 8 connections of which workers may hold 4:
            // the calls wait on the provider, not on a connection or a lane.
            try await TenantAPIFixture.with(
                extra: [
                    "TENANTPLANE_MAX_INFLIGHT": "64", "TENANTPLANE_CONNECTION_BUDGET": "8",
                    "TENANTPLANE_FAKE_PROVIDER_API_KEY": FakeProvider.apiKey,
                ]
            ) { api in
                try await FakeProvider.register(api, baseURL: baseURL)
                var runs: [(Tenant, String)] = []
                for t in 0..<4 {
                    let tenant = try await prepare(api, "wide\(t)")
                    for n in 0..<10 { runs.append((tenant, try await submit(api, tenant, steps: ["one"], n: n))) }
                }
                try #require(
                    try await api.eventually(within: .seconds(60)) {
                        for (tenant, id) in runs where try await status(api, tenant, id) != "completed" { return false }
                        return true
                    })
                // Far more calls were at the provider at once than the budget's
                // 8 connections or the HTTP client's default of 8 per host (its
                // limit follows the in-flight limit). Not all 40: on a loaded
                // machine the first runs can finish before the last is submitted.
                #expect(fake.peakSlowInFlight > 16)
                #expect(fake.requests(for: "slow") == 40)
            }
        }
    }

    @Test func aBusyTenantsQueueDoesNotDelayAnotherTenantsFirstRun() async throws {
        let fake = FakeProvider(style: .openai, slowDelay: .seconds(1))
        try await fake.serve { baseURL in
            try await TenantAPIFixture.with(
                extra: [
                    "TENANTPLANE_MAX_INFLIGHT": "8", "TENANTPLANE_TENANT_MAX_INFLIGHT": "4",
                    "TENANTPLANE_FAKE_PROVIDER_API_KEY": FakeProvider.apiKey,
                ]
            ) { api in
                try await FakeProvider.register(api, baseURL: baseURL)
                let busy = try await prepare(api, "busy")
                let quiet = try await prepare(api, "quiet")
                var queued: [String] = []
                for n in 0..<60 { queued.append(try await submit(api, busy, steps: ["one"], n: n)) }
                try #require(try await api.eventually(within: .seconds(30)) { fake.peakSlowInFlight >= 4 })
                let probe = try await submit(api, quiet, steps: ["one"], n: 0)
                try #require(
                    try await api.eventually(within: .seconds(30)) { try await status(api, quiet, probe) == "completed" })
                // The busy tenant held at most its cap, and most of its runs still waited.
                #expect(fake.peakSlowInFlight <= 5)
                var pending = 0
                for id in queued where try await status(api, busy, id) == "pending" { pending += 1 }
                #expect(pending > 20, "the quiet tenant's run waited for the busy tenant's queue")
                let run = try await api.call(.get, "/v1/runs/\(probe)/steps", key: quiet.key).json
                let steps = try #require(run["steps"] as? [[String: Any]])
                #expect(steps.first?["status"] as? String == "completed")
            }
        }
    }

    @Test func runsUseTheKeysStoredInTheControlDatabaseATenantsOwnFirst() async throws {
        let fake = FakeProvider(style: .openai, slowDelay: .milliseconds(10))
        try await fake.serve { baseURL in
            // No TENANTPLANE_FAKE_PROVIDER_API_KEY in this process: the key comes from the control database.
            try await TenantAPIFixture.with(extra: ["TENANTPLANE_MAX_INFLIGHT": "8"]) { api in
                try await FakeProvider.register(api, baseURL: baseURL)
                let own = try await prepare(api, "ownkey")
                let shared = try await prepare(api, "sharedkey")
                let cli = api.provisioning.cli
                let stored = try await cli.run(
                    ["llm", "provider", "set-key", FakeProvider.providerID], standardInput: "sk-wrong-stored-key\n")
                try #require(stored.exitCode == 0, "\(stored.stderr)")
                let tenantKey = try await cli.run(
                    ["tenant", "secret", "set", own.slug, "--provider", FakeProvider.providerID],
                    standardInput: FakeProvider.apiKey + "\n")
                try #require(tenantKey.exitCode == 0, "\(tenantKey.stderr)")

                let ownRun = try await submit(api, own, steps: ["one"], n: 1)
                let sharedRun = try await submit(api, shared, steps: ["one"], n: 2)
                try #require(
                    try await api.eventually(within: .seconds(30)) {
                        let sharedStatus = try await status(api, shared, sharedRun)
                        return try await status(api, own, ownRun) == "completed"
                            && ["failed", "completed"].contains(sharedStatus)
                    })
                // The tenant's own key was sent for its run; the other tenant's
                // run went out with the stored key, which the provider refused.
                #expect(try await status(api, shared, sharedRun) == "failed")

                let fixed = try await cli.run(
                    ["llm", "provider", "set-key", FakeProvider.providerID], standardInput: FakeProvider.apiKey + "\n")
                try #require(fixed.exitCode == 0)
                #expect(try await api.call(.post, "/v1/runs/\(sharedRun)/retry", key: shared.key).status == .ok)
                try #require(
                    try await api.eventually(within: .seconds(30)) {
                        try await status(api, shared, sharedRun) == "completed"
                    })
            }
        }
    }

    @Test func twoReplicasAndAWorkerShareTheRunsAndOneKilledMidStepLosesNothing() async throws {
        let fake = FakeProvider(style: .openai, slowDelay: .milliseconds(700))
        try await fake.serve { baseURL in
            try await TenantAPIFixture.with { api in
                try await FakeProvider.register(api, baseURL: baseURL)
                var runs: [(Tenant, String)] = []
                for t in 0..<3 {
                    let tenant = try await prepare(api, "fleet\(t)")
                    for n in 0..<8 { runs.append((tenant, try await submit(api, tenant, steps: Self.prompts, n: n))) }
                }
                var cli = api.provisioning.cli
                cli.environment.merge([
                    "TENANTPLANE_ADMIN_TOKEN": TestServer.adminToken, "TENANTPLANE_RUN_LEASE": "2s",
                    "TENANTPLANE_WORKER_POLL": "500ms", "TENANTPLANE_FAKE_PROVIDER_API_KEY": FakeProvider.apiKey,
                ]) { $1 }
                let doomed = try cli.start(["serve", "--port", String(try freeLoopbackPort())])
                var survivors: [RunningCommand] = []
                defer {
                    doomed.send(SIGKILL)
                    for process in survivors { process.send(SIGKILL) }
                }
                var urls: [PostgresURL] = []
                for slug in Set(runs.map(\.0.slug)) { urls.append(try await api.provisioning.tenantURL(slug)) }
                // The first replica holds runs and has finished steps of them.
                try #require(try await api.eventually(within: .seconds(60)) { try await Self.completedSteps(urls) > 0 })
                survivors.append(try cli.start(["serve", "--port", String(try freeLoopbackPort())]))
                survivors.append(try cli.start(["worker"]))
                var held = 0
                for url in urls {
                    held += try await TestCluster.query(
                        url,
                        "SELECT count(*)::int FROM runs WHERE status = 'running' AND lease_owner LIKE \("%:\(doomed.pid):%")"
                    ).first?.decode(Int.self) ?? 0
                }
                #expect(held > 0, "the first replica held no run when it was killed")
                doomed.send(SIGKILL)
                _ = await doomed.result
                let before = try await Self.completedAt(urls)

                try #require(
                    try await api.eventually(within: .seconds(90)) {
                        for (tenant, id) in runs where try await status(api, tenant, id) != "completed" { return false }
                        return true
                    })
                let after = try await Self.completedAt(urls)
                #expect(after.count == runs.count * Self.prompts.count)
                for (step, time) in before {
                    #expect(after[step] == time, "step \(step) completed before the kill and ran again")
                }
                for url in urls {
                    let repeated = try await TestCluster.query(
                        url,
                        "SELECT count(*)::int FROM (SELECT run_id, step FROM artifacts WHERE file_type = 'output' GROUP BY 1, 2 HAVING count(*) > 1) d"
                    ).first?.decode(Int.self)
                    #expect(repeated == 0)
                }
                for process in survivors { process.send(SIGTERM) }
                for process in survivors { #expect(await process.result.exitCode == 0) }
                survivors.removeAll()
            }
        }
    }

    /// `run:step` → completed_at, over the tenants' databases.
    static func completedAt(_ urls: [PostgresURL]) async throws -> [String: String] {
        var found: [String: String] = [:]
        for url in urls {
            for row in try await TestCluster.query(
                url, "SELECT run_id::text, step, completed_at::text FROM steps WHERE status = 'completed'")
            {
                let (run, step, time) = try row.decode((String, String, String).self)
                found["\(run):\(step)"] = time
            }
        }
        return found
    }

    static func completedSteps(_ urls: [PostgresURL]) async throws -> Int {
        try await completedAt(urls).count
    }
}
