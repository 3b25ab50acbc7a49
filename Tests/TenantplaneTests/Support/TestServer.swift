import Config
import Core
import Foundation
import HTTPAPI
import Hummingbird
import Runtime
import HummingbirdTesting
import Logging
import Synchronization
import Testing

/// Builds the real server application against a control database.
enum TestServer {
    static let adminToken = "test-admin-token-0123456789"

    static func settings(controlURL: PostgresURL, extra: [String: String] = [:]) throws -> Settings {
        var environment = [
            "TENANTPLANE_CONFIG_FILE": "/dev/null",
            "TENANTPLANE_CONTROL_URL": controlURL.withPassword,
            "TENANTPLANE_MASTER_KEY": Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString(),
            "TENANTPLANE_ADMIN_TOKEN": adminToken,
            "TENANTPLANE_CONTROL_MIGRATIONS": TestCluster.controlMigrations,
            "TENANTPLANE_TENANT_MIGRATIONS": TestCluster.tenantMigrations,
            // Debug builds compute SCRAM slowly, and the suite loads both cores.
            "TENANTPLANE_POOL_WAIT": "15",
            // Spares cost a template copy each; the spare tests turn them on.
            "TENANTPLANE_WARM_SPARES": "0",
        ]
        environment["TENANTPLANE_PG_BINDIR"] = ProcessInfo.processInfo.environment["TENANTPLANE_TEST_PG_BINDIR"]
        environment.merge(extra) { _, new in new }
        return try Settings.load(environment: environment, workingDirectory: NSTemporaryDirectory())
    }

    static func application(
        controlURL: PostgresURL, extra: [String: String] = [:], logger: Logger = TestCluster.logger
    ) throws -> some ApplicationProtocol {
        try Runtime(settings: try settings(controlURL: controlURL, extra: extra), logger: logger)
            .server(host: "127.0.0.1", port: 0)
    }

    static var adminHeaders: HTTPFields {
        [.authorization: "Bearer \(adminToken)", .contentType: "application/json"]
    }
}

extension TestResponse {
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(String(buffer: body).utf8)) as? [String: Any]) ?? [:]
    }

    var errorCode: String? {
        (json["error"] as? [String: Any])?["code"] as? String
    }
}

/// Every log line a test's server wrote, message and metadata, for tests that
/// prove what never appears in a log.
final class CapturedLog: Sendable {
    private let lines = Mutex<[String]>([])

    var all: [String] { lines.withLock { $0 } }

    /// A logger at `level` that writes here.
    func logger(level: Logger.Level = .debug) -> Logger {
        var logger = Logger(label: "tenantplane-captured") { _ in Handler(log: self) }
        logger.logLevel = level
        return logger
    }

    fileprivate func append(_ line: String) { lines.withLock { $0.append(line) } }

    private struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            log.append("\(event.level) \(event.message) \(merged.map { "\($0)=\($1)" }.sorted().joined(separator: " ")) \(event.source)")
        }
    }
}
