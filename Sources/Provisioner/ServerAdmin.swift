import Core
import Logging
import PostgresNIO

/// Role and database DDL on one PostgreSQL server, through an admin connection.
///
/// Names are validated `SQLIdentifier`s; values (passwords) are bound
/// parameters handed to the server's own `format(%I, %L)`, so no value is ever
/// spliced into SQL text here.
struct ServerAdmin {
    let connection: PostgresConnection
    let logger: Logger

    func roleExists(_ role: SQLIdentifier) async throws -> Bool {
        try await connection.query("SELECT 1 FROM pg_roles WHERE rolname = \(role.name)", logger: logger)
            .collect().count == 1
    }

    func databaseExists(_ database: SQLIdentifier) async throws -> Bool {
        try await connection.query("SELECT 1 FROM pg_database WHERE datname = \(database.name)", logger: logger)
            .collect().count == 1
    }

    /// Creates a login role, or brings an existing one (from an interrupted run)
    /// to the same password and LOGIN.
    func ensureLoginRole(_ role: SQLIdentifier, scramVerifier: String) async throws {
        if try await roleExists(role) {
            try await executeFormatted("ALTER ROLE %I LOGIN PASSWORD %L", role.name, scramVerifier)
        } else {
            try await executeFormatted("CREATE ROLE %I LOGIN PASSWORD %L", role.name, scramVerifier)
        }
    }

    func ensureNoLoginRole(_ role: SQLIdentifier) async throws {
        if try await !roleExists(role) {
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE ROLE \(role.quoted) NOLOGIN"), logger: logger)
        }
    }

    func setLogin(_ role: SQLIdentifier, allowed: Bool) async throws {
        try await connection.query(
            PostgresQuery(unsafeSQL: "ALTER ROLE \(role.quoted) \(allowed ? "LOGIN" : "NOLOGIN")"), logger: logger)
    }

    /// `CREATE DATABASE` cannot run in a transaction block; WAL_LOG copies a
    /// template 3× faster than FILE_COPY here and forces no checkpoint.
    func createDatabase(_ database: SQLIdentifier, owner: SQLIdentifier, template: SQLIdentifier) async throws {
        try await connection.query(
            PostgresQuery(
                unsafeSQL:
                    "CREATE DATABASE \(database.quoted) OWNER \(owner.quoted) TEMPLATE \(template.quoted) STRATEGY WAL_LOG"
            ),
            logger: logger)
    }

    /// Only the owner (and superusers) may connect.
    func restrictConnect(_ database: SQLIdentifier, to role: SQLIdentifier) async throws {
        try await connection.query(
            PostgresQuery(unsafeSQL: "REVOKE CONNECT, TEMPORARY ON DATABASE \(database.quoted) FROM PUBLIC"),
            logger: logger)
        try await connection.query(
            PostgresQuery(unsafeSQL: "GRANT CONNECT, TEMPORARY ON DATABASE \(database.quoted) TO \(role.quoted)"),
            logger: logger)
    }

    func terminateConnections(to database: SQLIdentifier) async throws {
        try await connection.query(
            """
            SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = \(database.name) AND pid <> pg_backend_pid()
            """,
            logger: logger)
    }

    func dropDatabase(_ database: SQLIdentifier) async throws {
        try await connection.query(
            PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(database.quoted) WITH (FORCE)"), logger: logger)
    }

    func dropRole(_ role: SQLIdentifier) async throws {
        try await connection.query(PostgresQuery(unsafeSQL: "DROP ROLE IF EXISTS \(role.quoted)"), logger: logger)
    }

    /// Runs `format(statement, arguments…)` on the server. The arguments travel
    /// as bound parameters (session settings), never as SQL text.
    func executeFormatted(_ statement: StaticString, _ first: String, _ second: String) async throws {
        try await connection.query(
            """
            SELECT set_config('tenantplane.arg1', \(first), false), set_config('tenantplane.arg2', \(second), false)
            """,
            logger: logger)
        do {
            try await connection.query(
                PostgresQuery(
                    unsafeSQL: """
                        DO $tenantplane$ BEGIN
                            EXECUTE format('\(statement)', current_setting('tenantplane.arg1'), current_setting('tenantplane.arg2'));
                        END $tenantplane$
                        """),
                logger: logger)
        } catch {
            _ = try? await clearFormattedArguments()
            throw error
        }
        try await clearFormattedArguments()
    }

    private func clearFormattedArguments() async throws {
        try await connection.query(
            "SELECT set_config('tenantplane.arg1', '', false), set_config('tenantplane.arg2', '', false)",
            logger: logger)
    }
}
