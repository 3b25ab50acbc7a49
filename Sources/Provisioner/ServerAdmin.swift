import Core
import Logging
import PostgresNIO

/// Role and database DDL on one PostgreSQL server, through an admin connection.
///
/// Names are validated `SQLIdentifier`s; values (passwords) are bound
/// parameters handed to the server's own `format(%I, %L)`, so no value is ever
/// spliced into SQL text here.
public struct ServerAdmin {
    public let connection: PostgresConnection
    public let logger: Logger

    public init(connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    public func databaseExists(_ database: SQLIdentifier) async throws -> Bool {
        try await connection.query("SELECT 1 FROM pg_database WHERE datname = \(database.name)", logger: logger)
            .collect().count == 1
    }

    /// Creates a login role, or brings an existing one (from an interrupted run)
    /// to the same password and LOGIN: one statement either way.
    public func ensureLoginRole(_ role: SQLIdentifier, scramVerifier: String) async throws {
        try await runWithArguments(
            role.name, scramVerifier,
            """
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = current_setting('tenantplane.arg1')) THEN
                EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L',
                    current_setting('tenantplane.arg1'), current_setting('tenantplane.arg2'));
            ELSE
                EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L',
                    current_setting('tenantplane.arg1'), current_setting('tenantplane.arg2'));
            END IF;
            """)
    }

    public func setLogin(_ role: SQLIdentifier, allowed: Bool) async throws {
        try await connection.query(
            PostgresQuery(unsafeSQL: "ALTER ROLE \(role.quoted) \(allowed ? "LOGIN" : "NOLOGIN")"), logger: logger)
    }

    /// Clears every session default the tenant's own SQL can persist (a
    /// restored dump may hold `ALTER ROLE CURRENT_USER SET …`, `ALTER ROLE …
    /// IN DATABASE … SET …` or `ALTER DATABASE … SET …`), so no later session
    /// inherits a `search_path` or a timeout the tenant chose. Cluster-level
    /// DDL only: nothing inside the database is read or run.
    public func clearSessionDefaults(_ role: SQLIdentifier, database: SQLIdentifier) async throws {
        try await runWithArguments(
            role.name, database.name,
            """
            EXECUTE format('ALTER ROLE %I RESET ALL', current_setting('tenantplane.arg1'));
            EXECUTE format('ALTER DATABASE %I RESET ALL', current_setting('tenantplane.arg2'));
            EXECUTE (
                SELECT coalesce(string_agg(format('ALTER ROLE %I IN DATABASE %I RESET ALL', r.rolname, d.datname), '; '), 'SELECT')
                FROM pg_db_role_setting s
                JOIN pg_roles r ON r.oid = s.setrole JOIN pg_database d ON d.oid = s.setdatabase
                WHERE r.rolname = current_setting('tenantplane.arg1')
            );
            """)
    }

    /// Takes a tenant's role and database back after the tenant's own SQL ran
    /// in it unwatched (a restored dump, its triggers): ends its sessions,
    /// clears the session defaults it set and sets tenantplane's password
    /// again (it may have run `ALTER ROLE CURRENT_USER PASSWORD`).
    public func reclaim(_ role: SQLIdentifier, database: SQLIdentifier, scramVerifier: String) async throws {
        try await terminateConnections(to: database)
        try await clearSessionDefaults(role, database: database)
        try await ensureLoginRole(role, scramVerifier: scramVerifier)
    }

    /// Runs `body` while `role` may log in, for tenantplane's own work on a
    /// suspended tenant (export, fleet migration), which logs in as the
    /// tenant like any other. The caller holds the tenant's lock, so no resume
    /// or suspension interleaves; the role is NOLOGIN again however `body` ends.
    public func withLoginAllowed<Result>(_ role: SQLIdentifier, _ body: () async throws -> Result) async throws -> Result {
        try await setLogin(role, allowed: true)
        do {
            let result = try await body()
            try await setLogin(role, allowed: false)
            return result
        } catch {
            try? await setLogin(role, allowed: false)
            throw error
        }
    }

    /// `CREATE DATABASE` cannot run in a transaction block; WAL_LOG copies a
    /// template 3× faster than FILE_COPY here and forces no checkpoint.
    public func createDatabase(_ database: SQLIdentifier, owner: SQLIdentifier, template: SQLIdentifier) async throws {
        try await connection.query(
            PostgresQuery(
                unsafeSQL:
                    "CREATE DATABASE \(database.quoted) OWNER \(owner.quoted) TEMPLATE \(template.quoted) STRATEGY WAL_LOG"
            ),
            logger: logger)
    }

    /// A warm spare: a role that cannot log in and has no password, owning a
    /// copy of the template that no role but superusers may connect to. Each
    /// half is skipped when it exists (a fill cut short is settled by dropping).
    public func createSpare(_ spare: SQLIdentifier, template: SQLIdentifier) async throws {
        try await connection.query(
            PostgresQuery(
                unsafeSQL: """
                    DO $spare$ BEGIN
                        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '\(spare.name)') THEN
                            CREATE ROLE \(spare.quoted) NOLOGIN;
                        END IF;
                    END $spare$
                    """),
            logger: logger)
        for attempt in 1...5 {
            do {
                try await createDatabase(spare, owner: spare, template: template)
                break
            } catch where error.sqlState == "55006" && attempt < 5 {
                // Someone is connected to the template (a refresh): wait a moment.
                try await Task.sleep(for: .milliseconds(100 * attempt))
            }
        }
        try await connection.query(
            PostgresQuery(unsafeSQL: "REVOKE CONNECT, TEMPORARY ON DATABASE \(spare.quoted) FROM PUBLIC"),
            logger: logger)
    }

    /// Hands a spare to a tenant in one transaction (a `DO` block is one
    /// statement): the database and the role take the tenant's names, the
    /// role may log in with its new password, and only it may connect. A
    /// crash leaves all of it done or none of it. The verifier travels as a
    /// bound parameter, read back with `current_setting`; the names are
    /// validated identifiers. `durable`: the commit waits for the disk even
    /// in a session that does not, because the tenant is activated after it
    /// on another cluster and must not outlive a lost rename.
    public func claimSpare(
        _ spare: SQLIdentifier, database: SQLIdentifier, role: SQLIdentifier, scramVerifier: String, durable: Bool
    ) async throws {
        try await connection.query(
            "SELECT set_config('tenantplane.arg1', \(scramVerifier), false)", logger: logger)
        do {
            try await connection.query(
                PostgresQuery(
                    unsafeSQL: """
                        DO $claim$ BEGIN
                            \(durable ? "SET LOCAL synchronous_commit = on;" : "")
                            ALTER DATABASE \(spare.quoted) RENAME TO \(database.quoted);
                            ALTER ROLE \(spare.quoted) RENAME TO \(role.quoted);
                            EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', '\(role.name)',
                                current_setting('tenantplane.arg1'));
                            REVOKE CONNECT, TEMPORARY ON DATABASE \(database.quoted) FROM PUBLIC;
                            GRANT CONNECT, TEMPORARY ON DATABASE \(database.quoted) TO \(role.quoted);
                            PERFORM set_config('tenantplane.arg1', '', false);
                        END $claim$
                        """),
                logger: logger)
        } catch {
            _ = try? await clearArguments()
            throw error
        }
    }

    public func dropSpare(_ spare: SQLIdentifier) async throws {
        try await dropDatabase(spare)
        try await dropRole(spare)
    }

    /// Only the owner (and superusers) may connect.
    public func restrictConnect(_ database: SQLIdentifier, to role: SQLIdentifier) async throws {
        try await connection.query(
            PostgresQuery(unsafeSQL: "REVOKE CONNECT, TEMPORARY ON DATABASE \(database.quoted) FROM PUBLIC"),
            logger: logger)
        try await connection.query(
            PostgresQuery(unsafeSQL: "GRANT CONNECT, TEMPORARY ON DATABASE \(database.quoted) TO \(role.quoted)"),
            logger: logger)
    }

    /// Not even the owner may connect (superusers still can).
    public func revokeConnect(_ database: SQLIdentifier, from role: SQLIdentifier) async throws {
        try await connection.query(
            PostgresQuery(unsafeSQL: "REVOKE CONNECT, TEMPORARY ON DATABASE \(database.quoted) FROM PUBLIC, \(role.quoted)"),
            logger: logger)
    }

    public func terminateConnections(to database: SQLIdentifier) async throws {
        try await connection.query(
            """
            SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = \(database.name) AND pid <> pg_backend_pid()
            """,
            logger: logger)
    }

    /// Makes every new session of `database` read-only (or lifts that), then
    /// ends the sessions opened before: from here on nothing writes to it
    /// until the fence is lifted. Ending them twice, a moment apart, catches a
    /// session that was starting up (past its settings) while the first pass
    /// ran. WAL senders write nothing and are kept: an online move's fence
    /// waits for its stream to confirm the last change, which a reconnect
    /// would delay by seconds.
    /// `sparing`: sessions of the caller's own that only read (an online
    /// move compares the two copies in them).
    public func setReadOnly(_ database: SQLIdentifier, _ readOnly: Bool, sparing: [Int32] = []) async throws {
        let setting = readOnly ? "SET default_transaction_read_only = on" : "RESET default_transaction_read_only"
        try await connection.query(PostgresQuery(unsafeSQL: "ALTER DATABASE \(database.quoted) \(setting)"), logger: logger)
        guard readOnly else { return }
        for pass in 1...2 {
            if pass == 2 { try await Task.sleep(for: .milliseconds(50)) }
            try await connection.query(
                """
                SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE datname = \(database.name) AND pid <> pg_backend_pid() AND backend_type <> 'walsender'
                    AND NOT pid = ANY(\(sparing))
                """,
                logger: logger)
        }
    }

    /// The cluster's identity: two server entries with the same one are the
    /// same PostgreSQL cluster, whatever their URLs say.
    public func systemIdentifier() async throws -> Int64 {
        let rows = try await connection.query("SELECT system_identifier FROM pg_control_system()", logger: logger)
        return try await rows.collect().first?.decode(Int64.self) ?? 0
    }

    public func dropDatabase(_ database: SQLIdentifier) async throws {
        try await connection.query(
            PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(database.quoted) WITH (FORCE)"), logger: logger)
    }

    public func dropRole(_ role: SQLIdentifier) async throws {
        try await connection.query(PostgresQuery(unsafeSQL: "DROP ROLE IF EXISTS \(role.quoted)"), logger: logger)
    }

    /// Drops a role unless something still depends on it, which keeps it.
    public func dropRoleIfUnused(_ role: SQLIdentifier) async throws {
        do {
            try await dropRole(role)
        } catch where error.sqlState == "2BP01" {
            logger.info("role still in use, kept", metadata: ["role": "\(role.name)"])
        }
    }

    /// Whether `role` owns, or holds a privilege on, anything in `database`:
    /// the cluster-wide `pg_shdepend` records both, so no connection to it is needed.
    public func role(_ role: SQLIdentifier, holdsObjectsIn database: SQLIdentifier) async throws -> Bool {
        try await connection.query(
            """
            SELECT 1 FROM pg_shdepend d
            JOIN pg_roles r ON r.oid = d.refobjid JOIN pg_database db ON db.oid = d.dbid
            WHERE d.refclassid = 'pg_authid'::regclass AND r.rolname = \(role.name) AND db.datname = \(database.name)
            LIMIT 1
            """,
            logger: logger
        ).collect().count == 1
    }

    /// Runs the PL/pgSQL `body` on the server with two arguments, which it
    /// reads as `current_setting('tenantplane.arg1')` and `…arg2` (to hand to
    /// `format(%I, %L)`): they travel as bound parameters, never as SQL text,
    /// and are cleared before the block ends.
    func runWithArguments(_ first: String, _ second: String, _ body: StaticString) async throws {
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
                        \(body)
                        PERFORM set_config('tenantplane.arg1', '', false), set_config('tenantplane.arg2', '', false);
                        END $tenantplane$
                        """),
                logger: logger)
        } catch {
            _ = try? await clearArguments()
            throw error
        }
    }

    private func clearArguments() async throws {
        try await connection.query(
            "SELECT set_config('tenantplane.arg1', '', false), set_config('tenantplane.arg2', '', false)",
            logger: logger)
    }
}
