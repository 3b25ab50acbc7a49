import ControlPlane
import Core
import Crypto
import Foundation
import HTTPAPI
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization
import Testing

@Suite("Front door: an unauthenticated client costs the server little and is cut off")
struct FrontDoorTests {
    @Test func keysWithoutAValidTagAreRefusedWithoutAControlQuery() async throws {
        // A short wait, so the lookup that needs the downed control database
        // fails fast; a loaded machine may take longer than that for the
        // tenant's first connection, hence the retries of the first call.
        let settings = ["TENANTPLANE_AUTH_FAILURES_PER_MINUTE": "0", "TENANTPLANE_POOL_WAIT": "2"]
        try await TenantAPIFixture.with(extra: settings) { api in
            let a = try await api.tenant("tag")
            #expect(a.key.hasPrefix("tpk2_") && a.key.utf8.count == 65)
            #expect(try await api.eventually(within: .seconds(30)) {
                try await api.call(.get, "/v1/usage", key: a.key).status == .ok
            })
            let revoked = try await api.issueKey(a.slug)
            let unused = try await api.issueKey(a.slug)
            let gone = try await api.client.execute(
                uri: "/admin/tenants/\(a.slug)/keys/\(revoked.id)", method: .delete, headers: TestServer.adminHeaders)
            #expect(gone.status == .ok)
            // Looked up once each: the revoked key is then remembered as
            // unknown, and no untagged key is live, so that shape is refused.
            #expect(try await api.call(.get, "/v1/usage", key: revoked.key).status == .unauthorized)
            #expect(try await api.call(.get, "/v1/usage", key: "tpk_" + RandomToken.urlSafe(bytes: 32)).status == .unauthorized)

            let control = api.provisioning.controlURL.database
            try await ControlDatabase.unreachable(control) {
                var guesses = ["", "junk", a.key + "x", String(a.key.dropLast()) + (a.key.hasSuffix("A") ? "B" : "A"), revoked.key]
                for _ in 0..<100 {
                    guesses.append("junk" + RandomToken.hex(bytes: 8))
                    guesses.append("tpk2_" + RandomToken.urlSafe(bytes: 32) + "_" + RandomToken.urlSafe(bytes: 12))
                    guesses.append("tpk_" + RandomToken.urlSafe(bytes: 32))
                }
                for guess in guesses {
                    let response = try await api.call(.get, "/v1/usage", key: guess)
                    #expect(response.status == .unauthorized, "\(guess.prefix(8))…: \(response.status)")
                }
                // A well-tagged key this process has not seen needs the control
                // database, which is down: so the guesses above asked nothing of it.
                let needsLookup = try await api.call(.get, "/v1/usage", key: unused.key)
                #expect(needsLookup.status == .serviceUnavailable)
                #expect(needsLookup.errorCode == "control_unavailable")
            }
        }
    }

    @Test func keysIssuedBeforeTheTagStillWork() async throws {
        try await TenantAPIFixture.with { api in
            let a = try await api.tenant("legacy")
            let legacy = "tpk_" + RandomToken.urlSafe(bytes: 32)
            _ = try await TestCluster.query(
                api.provisioning.controlURL,
                """
                INSERT INTO tenant_api_keys (id, tenant_id, key_hash)
                VALUES ('key_legacy', \(a.slug), \(Data(SHA256.hash(data: Data(legacy.utf8)))))
                """)
            #expect(try await api.call(.get, "/v1/usage", key: legacy).status == .ok)
            #expect(try await api.call(.get, "/v1/usage", key: "tpk_" + RandomToken.urlSafe(bytes: 32)).status == .unauthorized)
        }
    }

    @Test func failedAuthenticationIsLimitedPerClientAddressButAKnownKeyStillPasses() async throws {
        let settings = ["TENANTPLANE_AUTH_FAILURES_PER_MINUTE": "5", "TENANTPLANE_TRUSTED_PROXIES": "127.0.0.0/8, ::1"]
        try await TenantAPIFixture.with(extra: settings, live: true) { api in
            let a = try await api.tenant("limit")
            #expect(try await api.call(.get, "/v1/usage", key: a.key).status == .ok)
            let forwarded: HTTPFields = [.xForwardedFor: "198.51.100.4, 203.0.113.9"]
            for _ in 0..<5 {
                #expect(try await api.call(.get, "/v1/usage", key: "junk", headers: forwarded).status == .unauthorized)
            }
            let limited = try await api.call(.get, "/v1/usage", key: "junk", headers: forwarded)
            #expect(limited.status == .tooManyRequests)
            #expect(limited.errorCode == "too_many_failed_attempts")
            #expect(Int(limited.headers[.retryAfter] ?? "") ?? 0 >= 1)
            // Even a good key that is not known yet waits out the limit.
            let fresh = try await api.issueKey(a.slug)
            #expect(try await api.call(.get, "/v1/usage", key: fresh.key, headers: forwarded).status == .tooManyRequests)
            // A key known to be a tenant's passes, also once its cache entry is
            // stale (looked up again); so does a client at another address.
            try await Task.sleep(for: .milliseconds(1_200))
            #expect(try await api.call(.get, "/v1/usage", key: a.key, headers: forwarded).status == .ok)
            let elsewhere: HTTPFields = [.xForwardedFor: "198.51.100.4, 203.0.113.10"]
            #expect(try await api.call(.get, "/v1/usage", key: "junk", headers: elsewhere).status == .unauthorized)
            // The connection itself (127.0.0.1, a trusted proxy) is not the
            // client that failed.
            #expect(try await api.call(.get, "/v1/usage", key: "junk").status == .unauthorized)
        }
    }

    @Test func forwardedForCountsOnlyFromATrustedProxy() async throws {
        try await TenantAPIFixture.with(extra: ["TENANTPLANE_AUTH_FAILURES_PER_MINUTE": "3"], live: true) { api async throws in
            for index in 0..<3 {
                let spoofed: HTTPFields = [.xForwardedFor: "203.0.113.\(index)"]
                #expect(try await api.call(.get, "/v1/usage", key: "junk", headers: spoofed).status == .unauthorized)
            }
            let spoofed: HTTPFields = [.xForwardedFor: "203.0.113.99"]
            #expect(try await api.call(.get, "/v1/usage", key: "junk", headers: spoofed).status == .tooManyRequests)
        }
        #expect(throws: ConfigurationError.self) { try TrustedProxies(parsing: "10.0.0.0/8, not-an-address") }
        #expect(throws: ConfigurationError.self) { try TrustedProxies(parsing: "10.0.0.0/33") }
    }

    @Test func idleSlowAndTricklingConnectionsAreClosed() async throws {
        let settings = [
            "TENANTPLANE_IDLE_TIMEOUT": "1", "TENANTPLANE_REQUEST_HEAD_TIMEOUT": "1",
            "TENANTPLANE_REQUEST_READ_TIMEOUT": "1", "TENANTPLANE_REQUEST_MIN_RATE": "100",
        ]
        try await TenantAPIFixture.with(extra: settings, live: true) { api in
            let a = try await api.tenant("slow")
            let port = try #require(api.client.port)
            // Sends nothing at all. (Each bound is the 1 s timeout with room
            // for a loaded machine, and short of the 9-10 s the client would
            // take to finish on its own.)
            #expect(try await RawConnection.secondsUntilClosed(port: port, sending: []) < 6)
            // A head that trickles in, a byte every 300 ms, never completes.
            let head = Array("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".utf8)
            let trickle = [head] + Array(repeating: Array("a".utf8), count: 30)
            #expect(try await RawConnection.secondsUntilClosed(port: port, sending: trickle, every: .milliseconds(300)) < 6)
            // A body that stops halfway, and one that trickles in (a byte
            // every 200 ms, each of which Hummingbird's idle timeout counts as
            // activity), both short of 100 bytes a second.
            let upload = Array(
                """
                POST /v1/runs HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \(a.key)\r\n\
                Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"steps":
                """.utf8)
            #expect(try await RawConnection.secondsUntilClosed(port: port, sending: [upload]) < 6)
            let dribble = [upload] + Array(repeating: Array(" ".utf8), count: 50)
            #expect(try await RawConnection.secondsUntilClosed(port: port, sending: dribble, every: .milliseconds(200)) < 8)
            // A client that keeps to the deadlines is served (over a new
            // connection: the test client's own sat idle past the timeout).
            let prompt = try await RawConnection.connect(port: port)
            try await prompt.send(Array("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8))
            #expect(try await prompt.response(within: .seconds(5))?.hasPrefix("HTTP/1.1 200") == true)
            try await prompt.close()
        }
    }

    /// Through the real `serve` (the test harness's own server drops the
    /// connection limit when it picks a port).
    @Test func openConnectionsAreCappedAndTheNextOneIsServedOnceOneCloses() async throws {
        try await TenantAPIFixture.with { api in
            var server = api.provisioning.cli
            server.environment.merge([
                "TENANTPLANE_ADMIN_TOKEN": TestServer.adminToken, "TENANTPLANE_WORKERS": "0",
                "TENANTPLANE_MAX_CONNECTIONS": "2",
            ]) { $1 }
            let port = try freeLoopbackPort()
            let serve = try server.start(["serve", "--port", String(port)])
            defer { serve.send(SIGKILL) }
            #expect(try await api.eventually(within: .seconds(30)) {
                guard let probe = try? await RawConnection.connect(port: port) else { return false }
                try await probe.send(Array("GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8))
                let answer = try await probe.response(within: .seconds(2))
                try? await probe.close()
                return answer?.hasPrefix("HTTP/1.1 200") == true
            })
            let first = try await RawConnection.connect(port: port)
            let second = try await RawConnection.connect(port: port)
            try await Task.sleep(for: .milliseconds(300))
            let third = try await RawConnection.connect(port: port)
            try await third.send(Array("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8))
            #expect(try await third.response(within: .milliseconds(800)) == nil, "served beyond the limit")
            try await first.close()
            #expect(try await third.response(within: .seconds(5))?.hasPrefix("HTTP/1.1 200") == true)
            try await second.close()
            try await third.close()
            serve.send(SIGTERM)
            _ = await serve.result
        }
    }

    @Test func metricsCanBeKeptBehindTheAdminTokenOrOnTheirOwnAddress() async throws {
        try await TenantAPIFixture.with(extra: ["TENANTPLANE_METRICS_ADDRESS": "admin"]) { api in
            #expect(try await api.call(.get, "/metrics", key: nil).status == .unauthorized)
            let metrics = try await api.client.execute(uri: "/metrics", method: .get, headers: TestServer.adminHeaders)
            #expect(metrics.status == .ok)
            #expect(String(buffer: metrics.body).contains("tenantplane_tenant_pool_misses_total"))
        }
        let port = try freeLoopbackPort()
        try await TenantAPIFixture.with(extra: ["TENANTPLANE_METRICS_ADDRESS": "127.0.0.1:\(port)"], live: true) { api in
            #expect(try await api.call(.get, "/metrics", key: nil).status == .notFound)
            let metrics = try await RawConnection.connect(port: port)
            try await metrics.send(Array("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8))
            let text = try #require(try await metrics.response(within: .seconds(5)))
            #expect(text.hasPrefix("HTTP/1.1 200"))
            #expect(text.contains("tenantplane_auth_failures_total"))
            try await metrics.close()
        }
        #expect(throws: ConfigurationError.self) { try FrontDoor.MetricsExposure(setting: "nowhere") }
    }
}

extension TenantAPIFixture {
    /// Issues another key of `slug` over the admin API.
    func issueKey(_ slug: String) async throws -> (id: String, key: String) {
        if live {
            let issued = try await provisioning.cli.run("tenant", "key", "create", slug, "--json")
            try #require(issued.exitCode == 0, "\(issued.stderr)")
            let json = try JSONSerialization.jsonObject(with: Data(issued.stdout.utf8)) as? [String: Any]
            return (try #require(json?["id"] as? String), try #require(json?["key"] as? String))
        }
        let issued = try await client.execute(uri: "/admin/tenants/\(slug)/keys", method: .post, headers: TestServer.adminHeaders)
        try #require(issued.status == .created)
        return (try #require(issued.json["id"] as? String), try #require(issued.json["key"] as? String))
    }
}

/// The control database refusing every connection while `body` runs.
enum ControlDatabase {
    static func unreachable(_ database: String, _ body: () async throws -> Void) async throws {
        let admin = try TestCluster.adminURL
        _ = try await TestCluster.query(admin, PostgresQuery(unsafeSQL: "ALTER DATABASE \(database) ALLOW_CONNECTIONS false"))
        _ = try await TestCluster.query(
            admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \(database)")
        do {
            try await body()
        } catch {
            _ = try? await TestCluster.query(admin, PostgresQuery(unsafeSQL: "ALTER DATABASE \(database) ALLOW_CONNECTIONS true"))
            throw error
        }
        _ = try await TestCluster.query(admin, PostgresQuery(unsafeSQL: "ALTER DATABASE \(database) ALLOW_CONNECTIONS true"))
    }
}

/// A TCP client that writes raw bytes, as a slow or idle client would, and
/// records what the server sends back and whether it closed.
final class RawConnection: Sendable {
    private let channel: any Channel
    private let received: Received

    private init(channel: any Channel, received: Received) {
        self.channel = channel
        self.received = received
    }

    static func connect(port: Int) async throws -> RawConnection {
        let received = Received()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Recorder(received)) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawConnection(channel: channel, received: received)
    }

    /// Sends `parts` one after the other (`every` apart) and returns how long
    /// the server took to close the connection from the first byte (or, with
    /// nothing to send, from connecting); it must within 10 s.
    static func secondsUntilClosed(
        port: Int, sending parts: [[UInt8]], every gap: Duration = .zero
    ) async throws -> Double {
        let connection = try await connect(port: port)
        let started = ContinuousClock.now
        for part in parts where !connection.received.closed {
            try? await connection.send(part)
            try await Task.sleep(for: gap)
        }
        let closed = try await connection.eventually(within: .seconds(10)) { $0.closed }
        try? await connection.close()
        #expect(closed, "the server kept the connection open")
        let elapsed = ContinuousClock.now - started
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    /// What the server has answered, once it answered within `limit`; else nil.
    func response(within limit: Duration) async throws -> String? {
        try await eventually(within: limit) { !$0.text.isEmpty } ? received.text : nil
    }

    func close() async throws {
        try await channel.close()
    }

    private func eventually(within limit: Duration, _ done: (Received) -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now.advanced(by: limit)
        while !done(received), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        return done(received)
    }

    final class Received: Sendable {
        private let state = Mutex((text: "", closed: false))
        var text: String { state.withLock { $0.text } }
        var closed: Bool { state.withLock { $0.closed } }
        func append(_ more: String) { state.withLock { $0.text += more } }
        func close() { state.withLock { $0.closed = true } }
    }

    final class Recorder: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received: Received

        init(_ received: Received) {
            self.received = received
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            received.append(String(buffer: unwrapInboundIn(data)))
        }

        func channelInactive(context: ChannelHandlerContext) {
            received.close()
            context.fireChannelInactive()
        }
    }
}
