import Core
import Logging
import Migrations
import PostgresNIO

/// Bringing the control database to the current schema.
public enum ControlDatabase {
    public struct MigrationOutcome: Sendable, Codable {
        public var report: MigrationReport
        /// True when this run registered the control server as server `default`.
        public var registeredDefaultServer: Bool
    }

    /// Applies the pending control migrations, then registers the control
    /// server as database server `default` when no server exists. Idempotent.
    public static func migrate(
        _ connection: PostgresConnection,
        migrations: MigrationSet,
        controlURL: PostgresURL,
        secrets: SecretBox?,
        logger: Logger
    ) async throws -> MigrationOutcome {
        let report = try await Migrator(migrations: migrations).migrate(connection, logger: logger)
        // Tenant roles live on this server too: none of them may open the control database.
        try await connection.query(
            """
            DO $revoke$ BEGIN
                EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
            END $revoke$
            """,
            logger: logger)
        let store = ControlStore(connection: connection, logger: logger)
        let registered = try await store.registerDefaultServerIfNone(controlURL: controlURL, secrets: secrets)
        return MigrationOutcome(report: report, registeredDefaultServer: registered)
    }
}
