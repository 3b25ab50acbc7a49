import Core
import Foundation
import HTTPAPI
import Hummingbird
import HummingbirdTesting
import Runtime
import Testing

@Suite("The OpenAPI document describes the API the server serves")
struct OpenAPITests {
    /// `METHOD /path` for every operation under `paths:` (path keys at two
    /// spaces, methods at four: the layout the document keeps).
    static func documentedOperations(_ yaml: String) -> Set<String> {
        var operations: Set<String> = []
        var inPaths = false
        var path: String?
        for line in yaml.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("paths:") {
                inPaths = true
                continue
            }
            guard inPaths else { continue }
            if !line.isEmpty, !line.hasPrefix(" "), !line.hasPrefix("#") { break }
            if line.hasPrefix("  /"), line.hasSuffix(":"), !line.hasPrefix("   ") {
                path = String(line.dropFirst(2).dropLast())
            } else if let path, line.hasPrefix("    "), !line.hasPrefix("     ") {
                let key = line.trimmingCharacters(in: .whitespaces).dropLast()
                if ["get", "post", "put", "delete", "patch"].contains(String(key)) {
                    operations.insert("\(key.uppercased()) \(path)")
                }
            }
        }
        return operations
    }

    @Test func everyRouteIsDocumentedAndEveryDocumentedOperationIsServed() async throws {
        let url = try PostgresURL("postgres://u:p@127.0.0.1:1/db?sslmode=disable")
        let settings = try TestServer.settings(controlURL: url)
        let served = Set(
            try Runtime(settings: settings, logger: TestCluster.logger).routes())
        let app = try TestServer.application(controlURL: url)
        try await app.test(.router) { client in
            let response = try await client.execute(uri: "/openapi.yaml", method: .get)
            #expect(response.status == .ok)
            let yaml = String(buffer: response.body)
            #expect(yaml.hasPrefix("openapi: 3.1"))
            let onDisk = try String(
                contentsOf: TestCluster.repositoryRoot.appendingPathComponent("Sources/HTTPAPI/openapi.yaml"), encoding: .utf8)
            #expect(yaml == onDisk)
            let documented = Self.documentedOperations(yaml)
            #expect(served.count > 25)
            #expect(served.subtracting(documented).sorted() == [], "served but not documented")
            #expect(documented.subtracting(served).sorted() == [], "documented but not served")
        }
    }
}
