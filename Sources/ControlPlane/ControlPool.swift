import Core
import Logging
import PostgresNIO

/// The control database as servers and workers reach it: a pooled connection,
/// waited for at most `wait`, after which the caller gets `ControlUnavailable`
/// rather than waiting on.
public struct ControlPool: Sendable {
    public let client: PostgresClient
    public let wait: Duration
    public let logger: Logger

    public init(client: PostgresClient, wait: Duration, logger: Logger) {
        self.client = client
        self.wait = wait
        self.logger = logger
    }

    public func run<Result: Sendable>(_ body: @escaping @Sendable (ControlStore) async throws -> Result) async throws
        -> Result
    {
        let client = self.client
        let logger = self.logger
        do {
            return try await withTimeout(wait) {
                try await client.withConnection { connection in
                    try await body(ControlStore(connection: connection, logger: logger))
                }
            }
        } catch is TimeoutError {
            throw ControlUnavailable()
        } catch where error.meansConnectionLost {
            // The control database restarted or dropped us: the caller may
            // retry, as after a timeout; nothing was acknowledged.
            logger.warning("control database connection lost", metadata: ["error": "\(String(reflecting: error))"])
            throw ControlUnavailable()
        }
    }
}

/// The control database did not answer in time.
public struct ControlUnavailable: OperatorError {
    public init() {}

    public var httpStatus: Int { 503 }
    public var code: String { "control_unavailable" }
    public var message: String { "the control database did not answer in time" }
}
