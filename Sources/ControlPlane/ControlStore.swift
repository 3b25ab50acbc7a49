import Core
import Logging
import PostgresNIO

/// The control database, reached through one connection (a pooled one in the
/// server, a plain one in the CLI).
public struct ControlStore: Sendable {
    public let connection: LiveConnection
    public let logger: Logger

    public init(connection: PostgresConnection, logger: Logger) {
        self.connection = LiveConnection(connection)
        self.logger = logger
    }

    /// Runs `body` on one control connection for its whole length (advisory
    /// locks live on it): from the server's pool when there is one, else a
    /// plain connection of its own (the CLI).
    public static func withConnection<Result: Sendable>(
        pool: PostgresClient?, url: PostgresURL, logger: Logger, _ body: (ControlStore) async throws -> Result
    ) async throws -> Result {
        if let pool {
            return try await pool.withConnection { connection in
                try await body(ControlStore(connection: connection, logger: logger))
            }
        }
        return try await DatabaseConnection.with(url, logger: logger) { connection in
            try await body(ControlStore(connection: connection, logger: logger))
        }
    }

    /// Runs `body` in one transaction of the control database.
    public func transaction<Result>(_ body: (ControlStore) async throws -> Result) async throws -> Result {
        try await connection.transaction(logger: logger) { _ in try await body(self) }
    }
}

/// Who performed an admin action, for the audit trail.
public struct Actor: Sendable, Hashable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    public static let adminToken = Actor("admin-api")
    public static func cli(user: String?) -> Actor { Actor("cli:\(user ?? "unknown")") }
}
