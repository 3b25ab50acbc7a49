import Config
import Core
import Foundation
import HTTPAPI
import Hummingbird
import HummingbirdTesting
import Logging
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
        ]
        environment["TENANTPLANE_PG_BINDIR"] = ProcessInfo.processInfo.environment["TENANTPLANE_TEST_PG_BINDIR"]
        environment.merge(extra) { _, new in new }
        return try Settings.load(environment: environment, workingDirectory: NSTemporaryDirectory())
    }

    static func application(controlURL: PostgresURL, extra: [String: String] = [:]) throws -> some ApplicationProtocol {
        try ServerApplication(
            settings: try settings(controlURL: controlURL, extra: extra), host: "127.0.0.1", port: 0,
            logger: TestCluster.logger
        ).make()
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
