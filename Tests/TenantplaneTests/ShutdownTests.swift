import AsyncHTTPClient
import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LLMProviders
import NIOCore
import NIOHTTP1
import PostgresNIO
import Testing

@Suite("Graceful shutdown")
struct ShutdownTests {
    /// SIGTERM to `tenantplane serve`: it stops accepting connections, lets
    /// the request in flight finish, gives the run it holds back (its lease
    /// ends at once, so another process takes it over without waiting),
    /// closes its pools and exits 0.
    @Test func sigtermFinishesInFlightRequestsReleasesRunsAndExitsCleanly() async throws {
        let fake = FakeProvider(style: .openai, slowDelay: .seconds(8))
        try await fake.serve { baseURL in
            try await TenantAPIFixture.with { api in
                let admin = TestServer.adminHeaders
                #expect(try await api.client.execute(
                    uri: "/admin/llm/providers", method: .post, headers: admin,
                    body: ByteBuffer(string: #"{"id":"fake-provider","display_name":"Fake","api_base_url":"\#(baseURL)","api_style":"openai"}"#)
                ).status == .created)
                #expect(try await api.client.execute(
                    uri: "/admin/llm/models", method: .post, headers: admin,
                    body: ByteBuffer(string: #"{"provider_id":"fake-provider","model_name":"slow","model_class":"pro"}"#)
                ).status == .created)
                let a = try await api.tenant("shutdown")
                _ = try await api.call(.put, "/v1/prompts/one", key: a.key, body: #"{"content":"Step one"}"#)
                let run = try await api.call(
                    .post, "/v1/runs", key: a.key, body: #"{"steps":["one"],"input":{},"config":{"models":{"one":"slow"}}}"#)
                let runText = try #require(run.json["id"] as? String)
                let runID = try #require(UUID(uuidString: runText))
                let upload = try await api.run(a.key, steps: ["one"])

                var server = api.provisioning.cli
                server.environment.merge([
                    "TENANTPLANE_ADMIN_TOKEN": TestServer.adminToken, "TENANTPLANE_WORKERS": "1",
                    "TENANTPLANE_WORKER_POLL": "50ms", "TENANTPLANE_RUN_LEASE": "60s",
                    "TENANTPLANE_FAKE_PROVIDER_API_KEY": FakeProvider.apiKey,
                ]) { $1 }
                let port = try freeLoopbackPort()
                let serve = try server.start(["serve", "--port", String(port)])
                let base = "http://127.0.0.1:\(port)"
                let tenantURL = try await api.provisioning.tenantURL(a.slug)

                // Up, and holding the slow run.
                #expect(try await api.eventually(within: .seconds(30)) {
                    (try? await HTTPClient.shared.execute(HTTPClientRequest(url: "\(base)/healthz"), timeout: .seconds(2)).status) == .ok
                })
                #expect(try await api.eventually(within: .seconds(20)) {
                    try await TestCluster.query(
                        tenantURL, "SELECT count(*)::int FROM runs WHERE id = \(runID) AND lease_expires_at > now()"
                    ).first?.decode(Int.self) == 1
                })

                // An upload whose body arrives slowly is in flight when SIGTERM comes.
                let chunks = 6
                let chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: 64 * 1024)
                let (body, feed) = AsyncStream.makeStream(of: ByteBuffer.self)
                var request = HTTPClientRequest(url: "\(base)/v1/runs/\(upload)/steps/one/artifacts/slow.bin")
                request.method = .POST
                request.headers.add(name: "Authorization", value: "Bearer \(a.key)")
                request.body = .stream(body, length: .known(Int64(chunks * chunk.readableBytes)))
                async let response = HTTPClient.shared.execute(request, timeout: .seconds(60))
                feed.yield(chunk)
                try await Task.sleep(for: .milliseconds(300))
                let signalled = ContinuousClock.now
                serve.send(SIGTERM)
                try await Task.sleep(for: .milliseconds(500))
                // No new connections while it drains.
                let late = try? await HTTPClient.shared.execute(HTTPClientRequest(url: "\(base)/healthz"), timeout: .seconds(2))
                #expect(late == nil || late?.status == .serviceUnavailable)
                for _ in 1..<chunks {
                    feed.yield(chunk)
                    try await Task.sleep(for: .milliseconds(100))
                }
                feed.finish()
                let uploaded = try await response
                #expect(uploaded.status == .created)

                // A server that does not stop is a failure, not a hung test run.
                let exited = try await api.eventually(within: .seconds(30)) { kill(serve.pid, 0) != 0 }
                if !exited { serve.send(SIGKILL) }
                #expect(exited, "serve did not exit within 30 s of SIGTERM")
                let exit = await serve.result
                let took = ContinuousClock.now - signalled
                #expect(exit.exitCode == 0, "\(exit.stderr.suffix(2000))")
                #expect(took < .seconds(15))
                // The run it held is free for the next process now, not in 60 s.
                let leased = try await TestCluster.query(
                    tenantURL, "SELECT count(*)::int FROM runs WHERE id = \(runID) AND lease_expires_at > now()")
                #expect(try leased.first?.decode(Int.self) == 0)
                // Gone: nothing listens any more.
                let after = try? await HTTPClient.shared.execute(HTTPClientRequest(url: "\(base)/healthz"), timeout: .seconds(2))
                #expect(after == nil)
                print("shutdown: drained in \(took), in-flight upload \(uploaded.status.code), exit \(exit.exitCode)")
            }
        }
    }
}
