import Core
import Foundation
import Logging
import PostgresNIO
import Testing

/// The throwaway PostgreSQL cluster `ops/test` started for this run. Every
/// test makes its own databases on it, so tests run in parallel safely.
enum TestCluster {
    static let logger: Logger = {
        var logger = Logger(label: "tenantplane-tests")
        logger.logLevel = .warning
        return logger
    }()

    /// The cluster's superuser URL. Tests must run through ops/test, which sets it.
    static var adminURL: PostgresURL {
        get throws {
            guard let raw = ProcessInfo.processInfo.environment["TENANTPLANE_TEST_DATABASE_URL"] else {
                throw SetupError("TENANTPLANE_TEST_DATABASE_URL is not set: run the tests with ops/test")
            }
            return try PostgresURL(raw)
        }
    }

    /// The repository's root folder.
    static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var controlMigrations: String { repositoryRoot.appendingPathComponent("control-migrations").path }
    static var tenantMigrations: String { repositoryRoot.appendingPathComponent("tenant-migrations").path }

    /// A temporary copy of a migration folder that a test may add files to, as
    /// an operator stages a release. The caller removes it.
    static func stagedCopy(of directory: String) throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("migrations-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
            try FileManager.default.copyItem(atPath: "\(directory)/\(name)", toPath: folder.appendingPathComponent(name).path)
        }
        return folder
    }

    /// Creates an empty database, hands its superuser URL to `body`, drops it after.
    static func withScratchDatabase<Result: Sendable>(
        _ body: (PostgresURL) async throws -> Result
    ) async throws -> Result {
        let admin = try adminURL
        let name = "scratch_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(20)
        try await DatabaseConnection.with(admin, logger: logger) { connection in
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: logger)
        }
        let url = admin.with(database: String(name))
        do {
            let result = try await body(url)
            try await drop(String(name))
            return result
        } catch {
            try? await drop(String(name))
            throw error
        }
    }

    static func drop(_ database: String) async throws {
        try await DatabaseConnection.with(try adminURL, logger: logger) { connection in
            try await connection.query(
                PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(database) WITH (FORCE)"), logger: logger)
        }
    }

    /// Runs one query on `url` and returns its rows.
    static func query(_ url: PostgresURL, _ sql: PostgresQuery) async throws -> [PostgresRow] {
        try await DatabaseConnection.with(url, logger: logger) { connection in
            try await connection.query(sql, logger: logger).collect()
        }
    }
}

struct SetupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
