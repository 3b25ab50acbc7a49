import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Testing

/// Tenant isolation, attacked from the outside: another tenant's ids on every
/// endpoint, hostile bytes in every path segment, query parameter and JSON
/// field, and every tenant role against every other database.
@Suite("Tenant isolation")
struct IsolationTests {
    /// What belongs to tenant B and must never reach A: any of these in a
    /// response body, a header or a log line of A's requests is a leak.
    struct Secrets {
        let strings: [String]

        func leaks(in text: String) -> [String] { strings.filter { text.contains($0) } }
    }

    /// Every tenant endpoint, with B's ids where the path takes one.
    static func endpoints(run: String) -> [(HTTPRequest.Method, String, String?)] {
        [
            (.get, "/v1/runs/\(run)", nil),
            (.get, "/v1/runs/\(run)/steps", nil),
            (.post, "/v1/runs/\(run)/pause", nil),
            (.post, "/v1/runs/\(run)/resume", nil),
            (.post, "/v1/runs/\(run)/retry", nil),
            (.post, "/v1/runs/\(run)/cancel", nil),
            (.get, "/v1/runs/\(run)/steps/outline/output", nil),
            (.get, "/v1/runs/\(run)/steps/outline/artifacts", nil),
            (.get, "/v1/runs/\(run)/steps/outline/artifacts/notes.txt", nil),
            (.post, "/v1/runs/\(run)/steps/outline/artifacts/planted.txt", "planted by A"),
        ]
    }

    /// Hostile values for a path segment, a query parameter or a JSON string.
    static let hostile: [String] = [
        "../", "../../etc/passwd", "..%2F..%2Fetc", "%2e%2e%2f", "' OR '1'='1", "1; DROP TABLE runs; --",
        "\"; SELECT pg_sleep(1); --", "%00", "a%00b", "99999999999999999999999999999", "-1", "1e309",
        "ｒｕｎｓ", "\u{0430}dmin", "%E2%80%AE", "nul\u{0}inside", "%FF%FE", "{{topic}}", "$(id)", "*", "%",
        String(repeating: "x", count: 5000),
    ]

    @Test func anotherTenantsIdsAndHostileInputNeverReachItsData() async throws {
        let log = CapturedLog()
        try await TenantAPIFixture.with(logger: log.logger(level: .debug)) { api in
            let a = try await SeededTenant.make(api, prefix: "iso-a")
            let b = try await SeededTenant.make(api, prefix: "iso-b")
            let bPrompt = try await api.call(.put, "/v1/prompts/draft", key: b.key, body: #"{"content":"B-ONLY-PROMPT {{topic}}"}"#)
            try #require(bPrompt.status == .created)
            let secrets = Secrets(strings: [b.slug, b.key, String(b.artifactBytes.prefix(50)), "B-ONLY-PROMPT"])
            let logLinesBefore = log.all.count
            var attempts = 0
            var leaks: [String] = []
            func check(_ response: TestResponse, _ what: String) {
                attempts += 1
                let headers = response.headers.map { "\($0.name): \($0.value)" }.joined(separator: "\n")
                let found = secrets.leaks(in: String(buffer: response.body) + headers)
                if !found.isEmpty { leaks.append("\(what): \(found)") }
                if response.status.code >= 500 { leaks.append("\(what): \(response.status.code) \(String(buffer: response.body))") }
            }

            // A's key with B's ids, on every endpoint: 404, as for an id that does not exist.
            for runID in b.runs {
                for (method, path, body) in Self.endpoints(run: runID) {
                    let response = try await api.call(method, path, key: a.key, body: body)
                    check(response, "\(method) \(path)")
                    #expect(response.status == .notFound, "\(method) \(path): \(response.status)")
                }
            }
            // A's own listings hold nothing of B's.
            for path in ["/v1/runs", "/v1/runs?status=pending", "/v1/prompts", "/v1/prompts/draft", "/v1/audit-logs", "/v1/usage"] {
                let response = try await api.call(.get, path, key: a.key)
                check(response, "GET \(path)")
                let body = String(buffer: response.body)
                for run in b.runs { #expect(!body.contains(run), "\(path) lists B's run") }
            }
            // B's files were not touched by A's attempted upload.
            let planted = try await api.call(.get, "/v1/runs/\(b.runs[0])/steps/outline/artifacts", key: b.key)
            #expect(!String(buffer: planted.body).contains("planted"))

            // Hostile input in every path segment, query parameter and JSON field: 4xx, never 5xx.
            for value in Self.hostile {
                let segment = value.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? value
                let query = value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? value
                let targets: [(HTTPRequest.Method, String, String?)] =
                    Self.endpoints(run: segment)
                    + [
                        (.get, "/v1/runs/\(a.runs[0])/steps/\(segment)/output", nil),
                        (.get, "/v1/runs/\(a.runs[0])/steps/outline/artifacts/\(segment)", nil),
                        (.post, "/v1/runs/\(a.runs[0])/steps/outline/artifacts/\(segment)", "x"),
                        (.get, "/v1/prompts/\(segment)", nil),
                        (.put, "/v1/prompts/\(segment)", #"{"content":"x"}"#),
                        (.get, "/v1/runs?status=\(query)", nil),
                        (.get, "/v1/runs?limit=\(query)", nil),
                        (.get, "/v1/runs?cursor=\(query)", nil),
                        (.get, "/v1/audit-logs?limit=\(query)&cursor=\(query)", nil),
                    ]
                for (method, path, body) in targets {
                    let response = try await api.call(method, path, key: a.key, body: body)
                    check(response, "\(method) \(path.prefix(80))")
                    // Some values are valid names (`9999…` as an artifact, `{{topic}}`
                    // is not): those may succeed in A's own run; none may fail.
                    let validName = value.range(of: #"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"#, options: .regularExpression) != nil
                    if validName, path.contains("/artifacts/"), !path.contains("/runs/\(segment)") {
                        #expect(response.status.code < 500, "\(method) \(path.prefix(80)): \(response.status)")
                    } else {
                        #expect((400..<500).contains(response.status.code), "\(method) \(path.prefix(80)): \(response.status)")
                    }
                }
                let json = try JSONEncoder().encode(value)
                let field = String(decoding: json, as: UTF8.self)
                for body in [
                    #"{"steps":[\#(field)],"input":{}}"#,
                    #"{"steps":["outline"],"input":{\#(field):\#(field)},"config":{"models":{"outline":\#(field)}}}"#,
                    #"{"steps":["outline"],"input":{},"config":{"pause_after":[\#(field)]}}"#,
                    #"{"steps":["outline"],"input":{},"\#(value.prefix(20))":1}"#,
                ] {
                    let response = try await api.call(.post, "/v1/runs", key: a.key, body: body)
                    check(response, "POST /v1/runs \(body.prefix(60))")
                    // A field that is merely data (input, a model name) may be accepted; nothing may fail.
                    #expect(response.status.code < 500, "POST /v1/runs \(body.prefix(60)): \(response.status)")
                }
                let prompt = try await api.call(.put, "/v1/prompts/outline", key: a.key, body: #"{"content":\#(field)}"#)
                check(prompt, "PUT /v1/prompts/outline")
                #expect(prompt.status.code < 500)
            }

            // Nothing of B's in the server's log of A's requests.
            for line in log.all.dropFirst(logLinesBefore) {
                let found = secrets.leaks(in: line)
                if !found.isEmpty { leaks.append("log: \(found)") }
            }
            // B's data is as B left it.
            let bRuns = try await api.call(.get, "/v1/runs", key: b.key)
            #expect((bRuns.json["runs"] as? [[String: Any]])?.compactMap { $0["status"] as? String }.allSatisfy { $0 == "pending" } == true)

            // Every role against every other tenant's database and the control database.
            let tenants = [a.slug, b.slug]
            for owner in tenants {
                let url = try await api.provisioning.tenantURL(owner)
                for target in tenants where target != owner {
                    attempts += 1
                    if await Self.connects(url.with(database: try TenantSlug(target).databaseName)) {
                        leaks.append("role of \(owner) opened \(target)'s database")
                    }
                }
                attempts += 1
                if await Self.connects(url.with(database: api.provisioning.controlURL.database)) {
                    leaks.append("role of \(owner) opened the control database")
                }
            }
            print("isolation: \(attempts) cross-tenant attempts, \(leaks.count) leaks")
            #expect(leaks.isEmpty, "\(leaks.prefix(10))")
            #expect(attempts > 500)
        }
    }

    static func connects(_ url: PostgresURL) async -> Bool {
        do {
            _ = try await TestCluster.query(url, "SELECT 1")
            return true
        } catch {
            return false
        }
    }
}
