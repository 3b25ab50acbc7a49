import Foundation
import Hummingbird
import Logging
import PostgresNIO

// The bare-stack baseline of `ops/bench route`: GET /v1/runs/{id} written the
// plain way on the two libraries tenantplane is built on, with no keys, no
// tenants, no middleware and no pool of pools. What tenantplane serves beyond
// this is what its routing costs, so the bench puts the two side by side on
// the same database, the same row and the same number of connections.

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("barestack: \(message)\n".utf8))
    exit(2)
}

let environment = ProcessInfo.processInfo.environment
func setting(_ name: String) -> String {
    guard let value = environment[name], !value.isEmpty else { fail("\(name) is not set") }
    return value
}

// postgres://user:pass@host:port/db; any query (sslmode) is ignored: the bench's
// cluster listens on loopback only, so TLS stays off as it does for tenantplane there.
guard let url = URLComponents(string: setting("BARESTACK_DATABASE_URL")), let host = url.host,
    let user = url.user, url.path.count > 1
else { fail("BARESTACK_DATABASE_URL is not postgres://user:pass@host:port/db") }
guard let port = Int(setting("BARESTACK_PORT")) else { fail("BARESTACK_PORT is not a number") }
guard let connections = Int(setting("BARESTACK_CONNECTIONS")), connections > 0 else {
    fail("BARESTACK_CONNECTIONS is not a positive number")
}

var configuration = PostgresClient.Configuration(
    host: host, port: url.port ?? 5432, username: user, password: url.password,
    database: String(url.path.dropFirst()), tls: .disable)
// The pool's ceiling is the figure the bench matches with tenantplane's pool
// for the tenant (TENANTPLANE_TENANT_POOL_SIZE); the rest stays at the defaults.
configuration.options.maximumConnections = connections

var logger = Logger(label: "barestack")
logger.logLevel = .warning
let client = PostgresClient(configuration: configuration, backgroundLogger: logger)

// Only the plain strings need escaping: the jsonb columns arrive as JSON text
// and go out as they are, as tenantplane's do.
@Sendable func quoted(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

let router = Router()
router.get("/v1/runs/{id}") { [client] _, context -> Response in
    guard let id = context.parameters.get("id").flatMap(UUID.init(uuidString:)) else {
        return Response(status: .notFound)
    }
    // tenantplane's statement for this route, word for word (TenantStore's
    // RunWithInputByID). tenantplane prepares it once per connection; the
    // plain `query` used here is the libraries' naive path (parse, bind and
    // execute each time), which is what this baseline stands for.
    let rows = try await client.query(
        """
        SELECT id, status, current_step, steps, COALESCE(config, '{"models":{},"pause_after":[]}')::text,
        to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        COALESCE(input, '{}')::text FROM runs WHERE id = \(id)
        """)
    let row = (UUID, String, String?, [String], String, String, String, String).self
    for try await (id, status, step, steps, config, created, updated, input) in rows.decode(row) {
        // The same fields in the same order as tenantplane's body, so both send as many bytes.
        let body = "{\"config\":\(config),\"created_at\":\(quoted(created)),"
            + "\"current_step\":\(step.map(quoted) ?? "null"),\"id\":\(quoted(id.uuidString.lowercased())),"
            + "\"input\":\(input),\"status\":\(quoted(status)),"
            + "\"steps\":[\(steps.map(quoted).joined(separator: ","))],\"updated_at\":\(quoted(updated))}"
        return Response(
            status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: body)))
    }
    return Response(status: .notFound)
}

// The client's run() drives its pool: Application runs it in the same
// ServiceGroup as the server, which also stops both on SIGTERM.
let app = Application(
    router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)),
    services: [client], logger: logger)
try await app.runService()
