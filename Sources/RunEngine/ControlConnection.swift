import ControlPlane
import Core
import Logging
import PostgresNIO

/// The control database as the engine reaches it: pooled, waited for at most
/// `wait`, after which the worker backs off and tries again later.
struct ControlConnection: Sendable {
    let pool: PostgresClient
    let wait: Duration
    let logger: Logger

    func run<Result: Sendable>(_ body: @escaping @Sendable (ControlStore) async throws -> Result) async throws -> Result {
        let pool = self.pool
        let logger = self.logger
        do {
            return try await withTimeout(wait) {
                try await pool.withConnection { connection in
                    try await body(ControlStore(connection: connection, logger: logger))
                }
            }
        } catch is TimeoutError {
            throw ControlUnavailable()
        }
    }
}

/// The control database did not answer in time.
struct ControlUnavailable: OperatorError {
    var httpStatus: Int { 503 }
    var code: String { "control_unavailable" }
    var message: String { "the control database did not answer in time" }
}
