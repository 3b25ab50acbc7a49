import Core
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Synchronization
import Testing

/// A tenant with data in every table and two stored files, made through the API.
struct SeededTenant {
    let slug: String
    let key: String
    let runs: [String]
    let artifactBytes: String

    static func make(_ api: TenantAPIFixture, prefix: String) async throws -> SeededTenant {
        let tenant = try await api.tenant(prefix)
        var runs: [String] = []
        for _ in 0..<3 { runs.append(try await api.run(tenant.key, steps: ["outline", "draft"])) }
        let prompt = try await api.call(.put, "/v1/prompts/outline", key: tenant.key, body: #"{"content":"Outline {{topic}}"}"#)
        try #require(prompt.status == .created)
        let bytes = "artifact-bytes-\(UUID().uuidString)\n" + String(repeating: "tea leaves\n", count: 500)
        for name in ["notes.txt", "more.txt"] {
            let stored = try await api.client.execute(
                uri: "/v1/runs/\(runs[0])/steps/outline/artifacts/\(name)", method: .post,
                headers: [.authorization: "Bearer \(tenant.key)"], body: ByteBuffer(string: bytes))
            try #require(stored.status == .created, "\(String(buffer: stored.body))")
        }
        return SeededTenant(slug: tenant.slug, key: tenant.key, runs: runs, artifactBytes: bytes)
    }
}

extension ProvisioningFixture {
    /// Nothing of `slug` exists: no control row, database, role or files.
    func expectNothingCreated(for slug: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let rows = try await TestCluster.query(controlURL, "SELECT count(*)::int FROM tenants WHERE id = \(slug)")
        #expect(try rows.first?.decode(Int.self) == 0, sourceLocation: sourceLocation)
        #expect(try await tenantDatabases(slug).isEmpty, sourceLocation: sourceLocation)
        #expect(try await tenantRoles(slug).isEmpty, sourceLocation: sourceLocation)
        #expect(!FileManager.default.fileExists(atPath: storage.appendingPathComponent(slug).path), sourceLocation: sourceLocation)
    }

    /// Registers the second test cluster as server `second`.
    func addSecondServer(named name: String = "second") async throws {
        guard let url = ProcessInfo.processInfo.environment["TENANTPLANE_TEST_SECOND_DATABASE_URL"] else {
            throw SetupError("TENANTPLANE_TEST_SECOND_DATABASE_URL is not set: run the tests with ops/test")
        }
        let added = try await cli.run("server", "add", name, "--url", url)
        try #require(added.exitCode == 0, "\(added.stderr)")
    }

    static var secondClusterURL: PostgresURL {
        get throws { try PostgresURL(ProcessInfo.processInfo.environment["TENANTPLANE_TEST_SECOND_DATABASE_URL"] ?? "") }
    }

    /// The databases named like `slug`'s on the second cluster.
    func secondClusterDatabases(_ slug: String) async throws -> [String] {
        let name = try TenantSlug(slug).databaseName
        return try await TestCluster.query(
            try Self.secondClusterURL, "SELECT datname::text FROM pg_database WHERE datname = \(name)"
        ).map { try $0.decode(String.self) }
    }

    /// Runs `body`, then drops what it left on the second cluster (the
    /// fixture cleans the first), whether it passed or not.
    func cleaningSecondCluster(_ slugs: [String], _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch {
            try? await dropSecondClusterCopies(slugs)
            throw error
        }
        try await dropSecondClusterCopies(slugs)
    }

    func dropSecondClusterCopies(_ slugs: [String]) async throws {
        for slug in slugs {
            let name = try TenantSlug(slug).databaseName
            try await DatabaseConnection.with(try Self.secondClusterURL, logger: TestCluster.logger) { connection in
                try await connection.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"), logger: TestCluster.logger)
                try await connection.query(PostgresQuery(unsafeSQL: "DROP ROLE IF EXISTS \(name)"), logger: TestCluster.logger)
            }
        }
    }
}

/// A new empty directory under the system's temporary one; the caller removes it.
func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("tp-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Runs GNU tar (to take archives apart and build hostile ones).
func tar(_ arguments: [String]) async throws {
    let result = try await CLIRunner.runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["tar"] + arguments, environment: nil)
    guard result.exitCode == 0 else { throw SetupError("tar \(arguments.joined(separator: " ")) failed: \(result.stderr)") }
}
