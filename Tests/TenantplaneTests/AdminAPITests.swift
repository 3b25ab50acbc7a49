import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@Suite("Server skeleton: health, readiness, admin auth, the LLM catalog over HTTP")
struct AdminAPITests {
    func migratedControl(_ body: (PostgresURL) async throws -> Void) async throws {
        try await TestCluster.withScratchDatabase { url in
            let result = try await CLIRunner.forControlDatabase(url).run("migrate", "control")
            try #require(result.exitCode == 0, "\(result.stderr)")
            try await body(url)
        }
    }

    @Test func healthAndReadiness() async throws {
        try await migratedControl { url in
            let app = try TestServer.application(controlURL: url)
            try await app.test(.router) { client in
                try await client.execute(uri: "/healthz", method: .get) { response in
                    #expect(response.status == .ok)
                    #expect(response.json["status"] as? String == "ok")
                    #expect(response.headers[HTTPField.Name("X-Request-ID")!] != nil)
                }
                // The first control connection may take a moment on a loaded machine.
                var ready = try await client.execute(uri: "/readyz", method: .get)
                for _ in 0..<20 where ready.status != .ok {
                    try await Task.sleep(for: .milliseconds(250))
                    ready = try await client.execute(uri: "/readyz", method: .get)
                }
                #expect(ready.status == .ok)
                #expect(ready.json["status"] as? String == "ready")
            }
        }
    }

    @Test func readinessFailsWhileTheControlDatabaseIsUnreachable() async throws {
        let app = try TestServer.application(controlURL: try PostgresURL("postgres://u:p@127.0.0.1:1/db?sslmode=disable"))
        try await app.test(.router) { client in
            try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(response.errorCode == "control_unavailable")
                #expect(response.headers[.retryAfter] != nil)
            }
        }
    }

    @Test func readinessFailsOnAnUnmigratedControlDatabase() async throws {
        try await TestCluster.withScratchDatabase { url in
            let app = try TestServer.application(controlURL: url)
            try await app.test(.router) { client in
                try await client.execute(uri: "/readyz", method: .get) { #expect($0.status == .serviceUnavailable) }
            }
        }
    }

    @Test func adminRoutesNeedTheAdminToken() async throws {
        try await migratedControl { url in
            let app = try TestServer.application(controlURL: url)
            try await app.test(.router) { client in
                try await client.execute(uri: "/admin/llm/providers", method: .get) { response in
                    #expect(response.status == .unauthorized)
                    #expect(response.errorCode == "unauthorized")
                }
                for header in ["Bearer wrong-token", "Bearer \(TestServer.adminToken)x", "Basic \(TestServer.adminToken)", "Bearer"] {
                    try await client.execute(
                        uri: "/admin/llm/providers", method: .get, headers: [.authorization: header]
                    ) { #expect($0.status == .unauthorized) }
                }
                try await client.execute(uri: "/admin/llm/providers", method: .get, headers: TestServer.adminHeaders) {
                    response in
                    #expect(response.status == .ok)
                    #expect((response.json["providers"] as? [[String: Any]])?.count == 4)
                }
            }
        }
    }

    @Test func llmCatalogOverHTTP() async throws {
        try await migratedControl { url in
            let app = try TestServer.application(controlURL: url)
            try await app.test(.router) { client in
                let headers = TestServer.adminHeaders
                func post(_ uri: String, _ json: String, method: HTTPRequest.Method = .post) async throws -> TestResponse {
                    try await client.execute(uri: uri, method: method, headers: headers, body: ByteBuffer(string: json))
                }
                #expect(try await post("/admin/llm/providers", #"{"id":"acme","display_name":"Acme","api_base_url":"http://127.0.0.1:9"}"#).status == .created)
                let duplicate = try await post("/admin/llm/providers", #"{"id":"acme","display_name":"Acme"}"#)
                #expect(duplicate.status == .conflict)
                #expect(duplicate.errorCode == "already_exists")
                #expect(try await post("/admin/llm/models", #"{"provider_id":"acme","model_name":"acme-1","model_class":"pro"}"#).status == .created)
                let unknown = try await post("/admin/llm/models", #"{"provider_id":"ghost","model_name":"m","model_class":"pro"}"#)
                #expect(unknown.status == .notFound)
                let badClass = try await post("/admin/llm/models", #"{"provider_id":"acme","model_name":"m","model_class":"mega"}"#)
                #expect(badClass.status == .badRequest)

                // Until a step has its own default, the seeded catch-all (offline provider) answers.
                let fallback = try await client.execute(uri: "/admin/llm/resolve/outline", method: .get, headers: headers)
                #expect(fallback.status == .ok)
                #expect(fallback.json["reason"] as? String == "fallback_default")
                #expect(fallback.json["provider_id"] as? String == "local")
                #expect(try await post("/admin/llm/defaults/outline", #"{"provider_id":"acme","model_class":"pro"}"#, method: .put).status == .ok)
                let resolved = try await client.execute(uri: "/admin/llm/resolve/outline", method: .get, headers: headers)
                #expect(resolved.status == .ok)
                #expect(resolved.json["model_name"] as? String == "acme-1")
                #expect(resolved.json["reason"] as? String == "step_default")
                #expect(try await post("/admin/llm/defaults/review", #"{"provider_id":"claude","model_class":"pro"}"#, method: .put).status == .ok)
                let noModel = try await client.execute(uri: "/admin/llm/resolve/review", method: .get, headers: headers)
                #expect(noModel.status == .conflict)
            }
        }
    }

    @Test func badBodiesAreClientErrorsWithAJSONBody() async throws {
        try await migratedControl { url in
            let app = try TestServer.application(controlURL: url)
            try await app.test(.router) { client in
                let headers = TestServer.adminHeaders
                // The last: NUL in a text value, which PostgreSQL cannot store (found by ops/fuzz).
                for body in ["{not json", "[]", #"{"id": 5, "display_name": "x"}"#, #"{"display_name":"x"}"#, "",
                             #"{"id":"nul-name","display_name":"a\u0000b","api_style":"local"}"#] {
                    let response = try await client.execute(
                        uri: "/admin/llm/providers", method: .post, headers: headers, body: ByteBuffer(string: body))
                    #expect(response.status == .badRequest, "body \(body)")
                    #expect(response.errorCode != nil)
                }
                let huge = "{\"id\":\"x\",\"display_name\":\"" + String(repeating: "a", count: 1_100_000) + "\"}"
                let tooLarge = try await client.execute(
                    uri: "/admin/llm/providers", method: .post, headers: headers, body: ByteBuffer(string: huge))
                #expect(tooLarge.status == .contentTooLarge)
                #expect(tooLarge.errorCode == "body_too_large")
                let missing = try await client.execute(uri: "/admin/nothing-here", method: .get, headers: headers)
                #expect(missing.status == .notFound)
                #expect(missing.errorCode == "not_found")
            }
        }
    }
}
