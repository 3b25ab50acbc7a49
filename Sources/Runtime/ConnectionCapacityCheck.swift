import ControlPlane
import Core
import Logging
import PostgresNIO
import ServiceLifecycle

/// What one process may open on one database server, and whether the server
/// can hold it: at start, each active server's `max_connections` (less the
/// superuser reserve) against the tenant budget plus the admin jobs' sessions,
/// plus the control pool and the listeners (move signals, run queue) on the server that holds
/// the control database. With several processes the sum is per process; the
/// warning says how many processes fit.
struct ConnectionCapacityCheck: Service {
    struct Need: Sendable {
        var budget: Int
        var adminJobs: Int
        var controlPool: Int
        var listens: Bool

        func onServer(holdingControl: Bool) -> Int {
            // An export or move holds an admin session and a tenant session.
            // The move signal listener is one more control session; the run queue's, another.
            budget + 2 * adminJobs + (holdingControl ? controlPool + 1 + (listens ? 1 : 0) : 0)
        }
    }

    let need: Need
    let control: ControlPool
    let controlURL: PostgresURL
    let secrets: SecretBox
    let logger: Logger

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await check() }
        } catch {
            logger.warning(
                "could not compare the servers' max_connections with what this process may open",
                metadata: ["error": "\(OperatorFailure(error).message)"])
        }
        try? await gracefulShutdown()
    }

    func check() async throws {
        let controlURL = self.controlURL
        let secrets = self.secrets
        let servers = try await control.run { store in
            var found: [(String, PostgresURL)] = []
            for server in try await store.servers() where server.isActive {
                found.append(
                    (server.name, try await store.adminURL(ofServer: server.name, secrets: secrets, controlURL: controlURL)))
            }
            return found
        }
        for (name, url) in servers {
            let (maximum, reserved) = try await DatabaseConnection.with(url, logger: logger) { connection in
                let rows = try await connection.query(
                    "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int",
                    logger: logger)
                return try await rows.collect().first?.decode((Int, Int).self) ?? (0, 0)
            }
            let usable = maximum - reserved
            let holdsControl = url.host == controlURL.host && url.port == controlURL.port
            let perProcess = need.onServer(holdingControl: holdsControl)
            let metadata: Logger.Metadata = [
                "server": "\(name)", "max_connections": "\(maximum)", "reserved": "\(reserved)",
                "per_process": "\(perProcess)", "processes_that_fit": "\(usable / max(1, perProcess))",
            ]
            if perProcess > usable {
                logger.warning(
                    "this server cannot hold even one process's connections: lower TENANTPLANE_CONNECTION_BUDGET or raise max_connections",
                    metadata: metadata)
            } else {
                logger.info("connection capacity", metadata: metadata)
            }
        }
    }
}
