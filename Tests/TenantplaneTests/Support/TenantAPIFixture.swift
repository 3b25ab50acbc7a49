import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import PostgresNIO
import Testing

/// A running server application over a provisioning fixture, with helpers that
/// act as an operator (admin token) and as tenants (their API keys) would.
struct TenantAPIFixture {
    let provisioning: ProvisioningFixture
    let client: any TestClientProtocol
    /// Over real sockets, where set-up goes through the CLI: a tenant's
    /// creation on a loaded machine can outlast the test client's timeout.
    let live: Bool

    static func with(
        extra: [String: String] = [:], live: Bool = false, logger: Logger = TestCluster.logger,
        _ body: @escaping @Sendable (TenantAPIFixture) async throws -> Void
    ) async throws {
        try await ProvisioningFixture.with { provisioning in
            var environment = [
                // Runs stay pending unless a test asks for workers.
                "TENANTPLANE_WORKERS": "0",
                "TENANTPLANE_MASTER_KEY": provisioning.cli.environment["TENANTPLANE_MASTER_KEY"]!,
                "TENANTPLANE_STORAGE": provisioning.storage.path,
                "TENANTPLANE_TEMPLATE_DATABASE": provisioning.template,
            ]
            environment.merge(extra) { _, new in new }
            let app = try TestServer.application(controlURL: provisioning.controlURL, extra: environment, logger: logger)
            try await app.test(live ? .ahc(.http) : .router) { client in
                try await body(TenantAPIFixture(provisioning: provisioning, client: client, live: live))
            }
        }
    }

    /// Creates an active tenant over the admin API and returns its slug and a key.
    func tenant(_ prefix: String) async throws -> (slug: String, key: String) {
        let slug = ProvisioningFixture.slug(prefix)
        if live {
            let created = try await provisioning.cli.run("tenant", "create", slug, "--name", "Tenant \(prefix)")
            try #require(created.exitCode == 0, "\(created.stderr)")
            return (slug, try await issueKey(slug).key)
        }
        let created = try await client.execute(
            uri: "/admin/tenants", method: .post, headers: TestServer.adminHeaders,
            body: ByteBuffer(string: #"{"id":"\#(slug)","name":"Tenant \#(prefix)"}"#))
        try #require(created.status == .created, "\(String(buffer: created.body))")
        let key = try await client.execute(uri: "/admin/tenants/\(slug)/keys", method: .post, headers: TestServer.adminHeaders)
        try #require(key.status == .created)
        return (slug, try #require(key.json["key"] as? String))
    }

    func call(
        _ method: HTTPRequest.Method, _ uri: String, key: String?, body: String? = nil, headers extra: HTTPFields = [:]
    ) async throws -> TestResponse {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let key { headers[.authorization] = "Bearer \(key)" }
        headers.append(contentsOf: extra)
        return try await client.execute(
            uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
    }

    /// Creates a run and returns its id.
    func run(_ key: String, steps: [String] = ["outline", "draft"]) async throws -> String {
        let body = try String(decoding: JSONSerialization.data(withJSONObject: ["steps": steps, "input": ["topic": "x"]]), as: UTF8.self)
        let response = try await call(.post, "/v1/runs", key: key, body: body)
        try #require(response.status == .accepted, "\(String(buffer: response.body))")
        return try #require(response.json["id"] as? String)
    }

    /// Repeats `probe` until it returns true or `limit` passes.
    func eventually(within limit: Duration = .seconds(3), _ probe: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now.advanced(by: limit)
        while ContinuousClock.now < deadline {
            if try await probe() { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return try await probe()
    }

    func tenantConnections(_ slugs: [String]) async throws -> Int {
        let names = try slugs.map { try TenantSlug($0).databaseName }
        let rows = try await TestCluster.query(
            provisioning.controlURL, "SELECT count(*)::int FROM pg_stat_activity WHERE datname = ANY(\(names))")
        return try rows.first?.decode(Int.self) ?? 0
    }
}
