import ControlPlane
import Core
import Hummingbird
import PostgresNIO

/// `/healthz`: the process answers. `/readyz`: the control database answers
/// within two seconds and is migrated to the schema this binary expects.
struct HealthRoutes {
    let control: ControlAccess
    let controlSchemaVersion: Int

    struct Status: ResponseEncodable {
        let status: String
        var controlSchemaVersion: Int?
    }

    func register(on router: Router<APIRequestContext>) {
        router.get("healthz") { _, _ in Status(status: "ok") }
        router.get("readyz") { _, _ -> Status in
            let version: Int
            do {
                version = try await withTimeout(.seconds(2)) {
                    try await control.run { store in
                        let rows = try await store.connection.query(
                            "SELECT COALESCE(max(version), 0) FROM schema_migrations", logger: store.logger)
                        return try await rows.collect().first?.decode(Int.self) ?? 0
                    }
                }
            } catch {
                throw ControlUnavailable()
            }
            guard version >= controlSchemaVersion else {
                throw APIError.unavailable(
                    "the control database is at schema version \(version), this server needs \(controlSchemaVersion) (run: tenantplane migrate control)")
            }
            return Status(status: "ready", controlSchemaVersion: version)
        }
    }
}
