import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LLMProviders
import PostgresNIO
import Testing

/// Every file under `directory`, relative, the store's own dot-files too.
private func everything(under directory: URL) -> [String] {
    FileManager.default.enumerator(atPath: directory.path).map { walker in
        var found: [String] = []
        while let next = walker.nextObject() as? String { found.append(next) }
        return found.sorted()
    } ?? []
}

@Suite("Deleting a tenant: a grace period, then nothing left behind")
struct DeletionTests {
    static let workers = [
        "TENANTPLANE_WORKER_POLL": "50ms", "TENANTPLANE_RUN_LEASE": "2s", "TENANTPLANE_WORKERS": "1",
        "TENANTPLANE_FAKE_PROVIDER_API_KEY": FakeProvider.apiKey,
    ]

    @Test func aDeleteMidStepThenAPurgeLeavesNothingAndTheSlugStartsEmpty() async throws {
        let fake = FakeProvider(style: .openai, slowDelay: .milliseconds(2500))
        try await fake.serve { baseURL in
            try await TenantAPIFixture.with(extra: Self.workers) { api in
                let fixture = api.provisioning
                try await FakeProvider.register(api, baseURL: baseURL)
                let seeded = try await SeededTenant.make(api, prefix: "gone")
                // An export job's archive, kept by the server for download.
                let job = try await api.client.execute(
                    uri: "/admin/tenants/\(seeded.slug)/export", method: .post, headers: TestServer.adminHeaders)
                let jobID = try #require(job.json["id"] as? String)
                #expect(try await api.eventually(within: .seconds(30)) {
                    try await api.client.execute(uri: "/admin/jobs/\(jobID)", method: .get, headers: TestServer.adminHeaders)
                        .json["status"] as? String == "succeeded"
                })
                let archives = fixture.storage.appendingPathComponent(".archives")
                #expect(everything(under: archives) == ["\(jobID.lowercased()).tar"])

                // A step in flight: its provider call is answered after the purge.
                // As a client does after a 503 with Retry-After: the export's
                // fence ended the pool's sessions a moment ago.
                var started: TestResponse?
                _ = try await api.eventually(within: .seconds(5)) {
                    started = try await api.call(
                        .post, "/v1/runs", key: seeded.key,
                        body: #"{"steps":["outline"],"input":{"topic":"t"},"config":{"models":{"outline":"slow"}}}"#)
                    return started?.status == .accepted
                }
                let run = try #require(started?.json["id"] as? String, "\(started.map { String(buffer: $0.body) } ?? "")")
                #expect(try await api.eventually(within: .seconds(30)) { fake.requests(for: "slow") > 0 })
                let purged = try await api.client.execute(
                    uri: "/admin/tenants/\(seeded.slug)?purge_now=true", method: .delete, headers: TestServer.adminHeaders)
                #expect(purged.json["status"] as? String == "deleted", "\(String(buffer: purged.body))")
                // The answer arrives, the worker tries to write and record it.
                #expect(try await api.eventually(within: .seconds(10)) { fake.slowAnswersSent > 0 })
                try await Task.sleep(for: .seconds(1))

                for place in [seeded.slug, ".deleted/\(seeded.slug)"] {
                    #expect(!FileManager.default.fileExists(atPath: fixture.storage.appendingPathComponent(place).path), "\(place)")
                }
                #expect(everything(under: archives).isEmpty)
                #expect(try await fixture.tenantDatabases(seeded.slug).isEmpty)
                #expect(try await fixture.tenantRoles(seeded.slug).isEmpty)
                #expect(try await api.call(.get, "/v1/runs/\(run)", key: seeded.key).status == .unauthorized)
                let queued = try await TestCluster.query(
                    fixture.controlURL, "SELECT count(*)::int FROM tenant_run_queue WHERE tenant_id = \(seeded.slug)")
                #expect(try queued.first?.decode(Int.self) == 0)
                let audit = try await TestCluster.query(
                    fixture.controlURL,
                    "SELECT details->>'archives_removed' FROM control_audit_logs WHERE action = 'tenant.purge' AND resource_id = \(seeded.slug)")
                #expect(try audit.map { try $0.decode(String.self) } == ["1"])

                // The slug again: an empty tree, and its export carries only its own data.
                let created = try await api.client.execute(
                    uri: "/admin/tenants", method: .post, headers: TestServer.adminHeaders,
                    body: ByteBuffer(string: #"{"id":"\#(seeded.slug)","name":"Second life"}"#))
                #expect(created.status == .created, "\(String(buffer: created.body))")
                #expect(everything(under: fixture.storage.appendingPathComponent(seeded.slug)).isEmpty)
                let out = FileManager.default.temporaryDirectory.appendingPathComponent("tp-second-\(UUID().uuidString).tar")
                defer { try? FileManager.default.removeItem(at: out) }
                let exported = try await fixture.cli.run("tenant", "export", seeded.slug, "--out", out.path, "--json")
                #expect(exported.exitCode == 0, "\(exported.stderr)")
                #expect(try #require(try exported.jsonObject() as? [String: Any])["artifacts"] as? Int == 0)
            }
        }
    }

    @Test func aDeletedTenantIsUndeletedWithItsRowsFilesAndKeys() async throws {
        try await TenantAPIFixture.with { api in
            let fixture = api.provisioning
            let seeded = try await SeededTenant.make(api, prefix: "oops")
            let deleted = try await api.client.execute(
                uri: "/admin/tenants/\(seeded.slug)", method: .delete, headers: TestServer.adminHeaders)
            #expect(deleted.json["status"] as? String == "deleting")
            #expect(try await api.eventually(within: .seconds(5)) {
                try await api.call(.get, "/v1/runs", key: seeded.key).status != .ok
            })
            #expect(!FileManager.default.fileExists(atPath: fixture.storage.appendingPathComponent(seeded.slug).path))

            // A fence a dead export left: the delete lifts it, so the tenant comes back writable.
            _ = try await TestCluster.query(
                fixture.controlURL, "UPDATE tenants SET write_fence = 'export' WHERE id = \(seeded.slug)")
            _ = try await TestCluster.query(
                try TestCluster.adminURL,
                PostgresQuery(
                    unsafeSQL: "ALTER DATABASE \(try TenantSlug(seeded.slug).databaseName) SET default_transaction_read_only = on"))
            let again = try await fixture.cli.run("tenant", "delete", seeded.slug, "--confirm", seeded.slug)
            #expect(again.exitCode == 0, "\(again.stderr)")
            let fence = try await TestCluster.query(
                fixture.controlURL, "SELECT write_fence IS NULL FROM tenants WHERE id = \(seeded.slug)")
            #expect(try fence.first?.decode(Bool.self) == true)

            let back = try await fixture.cli.run("tenant", "undelete", seeded.slug, "--json")
            #expect(back.exitCode == 0, "\(back.stderr)")
            #expect(try #require(try back.jsonObject() as? [String: Any])["status"] as? String == "active")
            #expect(try await api.eventually(within: .seconds(5)) {
                try await api.call(.get, "/v1/runs", key: seeded.key).status == .ok
            })
            let runs = try await api.call(.get, "/v1/runs", key: seeded.key)
            #expect((runs.json["runs"] as? [Any])?.count == 3)
            let file = try await api.call(.get, "/v1/runs/\(seeded.runs[0])/steps/outline/artifacts/notes.txt", key: seeded.key)
            #expect(String(buffer: file.body) == seeded.artifactBytes)
            #expect(try await api.call(.post, "/v1/runs", key: seeded.key, body: #"{"steps":["outline"]}"#).status == .accepted)
            let twice = try await fixture.cli.run("tenant", "undelete", seeded.slug)
            #expect(twice.exitCode == 1)
            #expect(twice.stderr.contains("not being deleted"), "\(twice.stderr)")
        }
    }

    /// The reconciler purges tenants whose grace period is over, one at a
    /// time: a tenant it cannot purge is logged and left for later, and every
    /// other is still done.
    @Test func theReconcilerPurgesWhatIsDueAndABrokenTenantHoldsUpNoOther() async throws {
        try await ProvisioningFixture.with { fixture in
            var cli = fixture.cli
            cli.environment["TENANTPLANE_DELETE_GRACE"] = "1s"
            let healthy = [ProvisioningFixture.slug("due"), ProvisioningFixture.slug("due")]
            let broken = ProvisioningFixture.slug("due-broken")
            let later = ProvisioningFixture.slug("not-due")
            for slug in healthy + [broken, later] {
                try #require(try await cli.run("tenant", "create", slug, "--name", slug).exitCode == 0)
            }
            for slug in healthy + [broken] {
                let deleted = try await cli.run("tenant", "delete", slug, "--confirm", slug)
                try #require(deleted.exitCode == 0, "\(deleted.stderr)")
            }
            try #require(try await fixture.cli.run("tenant", "delete", later, "--confirm", later).exitCode == 0)
            // The broken one's server stops answering.
            _ = try await TestCluster.query(
                fixture.controlURL,
                "INSERT INTO database_servers (name, admin_url, capacity) VALUES ('gone', 'postgres://postgres@127.0.0.1:1/postgres?sslmode=disable', 10)")
            _ = try await TestCluster.query(fixture.controlURL, "UPDATE tenants SET server = 'gone' WHERE id = \(broken)")
            try await Task.sleep(for: .milliseconds(1200))

            let app = try fixture.server()
            try await app.test(.router) { _ in
                let purged = try await TenantAPIFixture.poll(within: .seconds(20)) {
                    try await healthy.asyncAllSatisfy { try await fixture.status($0) == "deleted" }
                }
                #expect(purged)
            }
            for slug in healthy { #expect(try await fixture.tenantDatabases(slug).isEmpty) }
            #expect(try await fixture.status(broken) == "deleting")
            #expect(try await fixture.status(later) == "deleting")
            #expect(try await fixture.tenantDatabases(later).count == 1)
        }
    }
}

extension Array {
    fileprivate func asyncAllSatisfy(_ predicate: (Element) async throws -> Bool) async rethrows -> Bool {
        for element in self where try await !predicate(element) { return false }
        return true
    }
}

extension TenantAPIFixture {
    /// Repeats `probe` until it returns true or `limit` passes.
    static func poll(within limit: Duration, _ probe: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now.advanced(by: limit)
        while ContinuousClock.now < deadline {
            if try await probe() { return true }
            try await Task.sleep(for: .milliseconds(200))
        }
        return try await probe()
    }
}

@Suite("Write-once artifacts over the API")
struct WriteOnceUploadTests {
    @Test func twoUploadsOfOneNameAtOnceLeaveOneWinnerAndTheOtherGets409() async throws {
        try await TenantAPIFixture.with { api in
            let tenant = try await api.tenant("race")
            let run = try await api.run(tenant.key)
            let bodies = (0..<6).map { "upload \($0) " + String(repeating: "\($0)", count: 200_000) }
            let statuses = try await withThrowingTaskGroup(of: (Int, HTTPResponse.Status).self) { group in
                for (index, body) in bodies.enumerated() {
                    group.addTask {
                        let response = try await api.client.execute(
                            uri: "/v1/runs/\(run)/steps/outline/artifacts/same.txt", method: .post,
                            headers: [.authorization: "Bearer \(tenant.key)"], body: ByteBuffer(string: body))
                        return (index, response.status)
                    }
                }
                var all: [(Int, HTTPResponse.Status)] = []
                for try await result in group { all.append(result) }
                return all
            }
            let winners = statuses.filter { $0.1 == .created }.map(\.0)
            #expect(winners.count == 1, "\(statuses)")
            #expect(statuses.allSatisfy { $0.1 == .created || $0.1 == .conflict }, "\(statuses)")
            let winner = try #require(winners.first)
            let download = try await api.call(.get, "/v1/runs/\(run)/steps/outline/artifacts/same.txt", key: tenant.key)
            #expect(download.status == .ok)
            #expect(String(buffer: download.body) == bodies[winner])
            let refused = try await api.call(
                .post, "/v1/runs/\(run)/steps/outline/artifacts/same.txt", key: tenant.key, body: "again")
            #expect(refused.status == .conflict)
            #expect((refused.json["error"] as? [String: Any])?["code"] as? String == "artifact_exists")
            let out = FileManager.default.temporaryDirectory.appendingPathComponent("tp-race-\(UUID().uuidString).tar")
            defer { try? FileManager.default.removeItem(at: out) }
            let exported = try await api.provisioning.cli.run("tenant", "export", tenant.slug, "--out", out.path)
            #expect(exported.exitCode == 0, "\(exported.stderr)")
        }
    }

    @Test func anUploadWhoseRowCannotBeWrittenLeavesNoFileAndTheNameFree() async throws {
        try await TenantAPIFixture.with { api in
            let fixture = api.provisioning
            let tenant = try await api.tenant("norow")
            let run = try await api.run(tenant.key)
            let url = try await fixture.tenantURL(tenant.slug)
            // The tenant's own trigger refuses the row (as a fence or a lost pool would fail it).
            _ = try await TestCluster.query(
                url,
                PostgresQuery(
                    unsafeSQL: """
                        CREATE FUNCTION public.tp_refuse() RETURNS trigger LANGUAGE plpgsql AS $f$
                        BEGIN RAISE EXCEPTION 'no rows today'; END $f$
                        """))
            _ = try await TestCluster.query(
                url, "CREATE TRIGGER tp_refuse BEFORE INSERT ON artifacts FOR EACH ROW EXECUTE FUNCTION public.tp_refuse()")
            let failed = try await api.call(.post, "/v1/runs/\(run)/steps/outline/artifacts/a.txt", key: tenant.key, body: "first")
            #expect(failed.status.code >= 500, "\(failed.status)")
            let directory = fixture.storage.appendingPathComponent("\(tenant.slug)/\(run)/outline/artifacts")
            #expect(everything(under: directory).isEmpty)

            _ = try await TestCluster.query(url, "DROP TRIGGER tp_refuse ON artifacts")
            let stored = try await api.call(.post, "/v1/runs/\(run)/steps/outline/artifacts/a.txt", key: tenant.key, body: "second")
            #expect(stored.status == .created)
            let download = try await api.call(.get, "/v1/runs/\(run)/steps/outline/artifacts/a.txt", key: tenant.key)
            #expect(String(buffer: download.body) == "second")
        }
    }
}

@Suite("Reconcilers take one tenant at a time")
struct ReconcileOneAtATimeTests {
    /// Fences left by dead processes: a tenant whose database was dropped
    /// behind tenantplane's back cannot be lifted and is logged; the healthy
    /// one is lifted, and a purged tenant's stale fence is just cleared.
    @Test func aBrokenTenantHoldsUpNoOtherFenceLift() async throws {
        try await ProvisioningFixture.with { fixture in
            let healthy = ProvisioningFixture.slug("fenced")
            let broken = ProvisioningFixture.slug("fenced-broken")
            let purged = ProvisioningFixture.slug("fenced-purged")
            for slug in [healthy, broken, purged] {
                try #require(try await fixture.cli.run("tenant", "create", slug, "--name", slug).exitCode == 0)
            }
            try #require(try await fixture.cli.run("tenant", "delete", purged, "--confirm", purged, "--purge-now").exitCode == 0)
            for slug in [healthy, broken] {
                let name = try TenantSlug(slug).databaseName
                _ = try await TestCluster.query(
                    try TestCluster.adminURL, PostgresQuery(unsafeSQL: "ALTER DATABASE \(name) SET default_transaction_read_only = on"))
            }
            _ = try await TestCluster.query(
                fixture.controlURL, "UPDATE tenants SET write_fence = 'export' WHERE id = ANY(\([healthy, broken, purged]))")
            try await TestCluster.drop(try TenantSlug(broken).databaseName)

            let app = try fixture.server()
            try await app.test(.router) { _ in
                let lifted = try await TenantAPIFixture.poll(within: .seconds(20)) {
                    let rows = try await TestCluster.query(
                        fixture.controlURL, "SELECT id FROM tenants WHERE write_fence IS NOT NULL ORDER BY id")
                    return try rows.map { try $0.decode(String.self) } == [broken]
                }
                #expect(lifted)
            }
            _ = try await TestCluster.query(try await fixture.tenantURL(healthy), "INSERT INTO runs (status) VALUES ('pending')")
        }
    }
}

@Suite("Admin jobs are bounded and a busy tenant answers at once")
struct BoundedAdminJobTests {
    @Test func jobsBeyondTheLimitWaitQueuedAndABusyTenantGets409() async throws {
        try await TenantAPIFixture.with(extra: ["TENANTPLANE_ADMIN_JOBS": "1"]) { api in
            let held = try await api.tenant("held")
            let free = try await api.tenant("free")
            // Another process holds the first tenant (as a long import would).
            let holder = try await DatabaseConnection.open(api.provisioning.controlURL, logger: TestCluster.logger)
            _ = try await holder.query("SELECT pg_advisory_lock(hashtextextended(\("tenant:\(held.slug)"), 0))", logger: TestCluster.logger)

            let started = ContinuousClock.now
            let suspended = try await api.client.execute(
                uri: "/admin/tenants/\(held.slug)/suspend", method: .post, headers: TestServer.adminHeaders)
            #expect(suspended.status == .conflict)
            #expect((suspended.json["error"] as? [String: Any])?["code"] as? String == "tenant_busy")
            #expect(ContinuousClock.now - started < .seconds(8))

            func job(_ slug: String) async throws -> String {
                let response = try await api.client.execute(
                    uri: "/admin/tenants/\(slug)/export", method: .post, headers: TestServer.adminHeaders)
                return try #require(response.json["id"] as? String)
            }
            func status(_ id: String) async throws -> [String: Any] {
                try await api.client.execute(uri: "/admin/jobs/\(id)", method: .get, headers: TestServer.adminHeaders).json
            }
            let first = try await job(held.slug)
            #expect(try await api.eventually(within: .seconds(5)) { try await status(first)["status"] as? String == "running" })
            let second = try await job(free.slug)
            try await Task.sleep(for: .seconds(1))
            #expect(try await status(second)["status"] as? String == "queued")

            // The first gives up on the held tenant with a clear error; then the second runs.
            #expect(try await api.eventually(within: .seconds(15)) { try await status(first)["status"] as? String == "failed" })
            #expect((try await status(first)["error"] as? String)?.contains("is running") == true)
            #expect(try await api.eventually(within: .seconds(15)) { try await status(second)["status"] as? String == "succeeded" })
            try await holder.close()
        }
    }
}

@Suite("The sweep")
struct SweepTests {
    @Test func theSweepRemovesOldUnreferencedFilesAndLeftoversAndKeepsEverythingARowDescribes() async throws {
        try await TenantAPIFixture.with(extra: ["TENANTPLANE_SWEEP_INTERVAL": "1s", "TENANTPLANE_SWEEP_GRACE": "60s"]) { api in
            let tenant = try await api.tenant("sweep")
            let run = try await api.run(tenant.key)
            let upload = try await api.call(.post, "/v1/runs/\(run)/steps/outline/artifacts/kept.txt", key: tenant.key, body: "kept")
            try #require(upload.status == .created)
            let base = api.provisioning.storage.appendingPathComponent("\(tenant.slug)/\(run)")
            let old = Date().addingTimeInterval(-3_600)
            func place(_ relative: String, age: Date?) throws {
                let url = base.appendingPathComponent(relative)
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data("stray".utf8).write(to: url)
                if let age { try FileManager.default.setAttributes([.modificationDate: age], ofItemAtPath: url.path) }
            }
            let stray = ["outline/output.json", "outline/.tmp-0123456789abcdef", "outline/artifacts/.aside-99", "outline/artifacts/lost.bin"]
            for relative in stray { try place(relative, age: old) }
            try place("draft/output.json", age: nil)
            try FileManager.default.setAttributes(
                [.modificationDate: old], ofItemAtPath: base.appendingPathComponent("outline/artifacts/kept.txt").path)

            let swept = try await api.eventually(within: .seconds(15)) {
                stray.allSatisfy { !FileManager.default.fileExists(atPath: base.appendingPathComponent($0).path) }
            }
            #expect(swept)
            #expect(FileManager.default.fileExists(atPath: base.appendingPathComponent("draft/output.json").path))
            let kept = try await api.call(.get, "/v1/runs/\(run)/steps/outline/artifacts/kept.txt", key: tenant.key)
            #expect(String(buffer: kept.body) == "kept")
        }
    }
}
