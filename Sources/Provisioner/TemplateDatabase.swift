import ControlPlane
import Core
import Logging
import Migrations
import PostgresNIO

/// The `tenantplane_template` database a server keeps at the latest tenant
/// migration, so new tenants are copied from it, born current, instead of
/// replaying every migration.
///
/// Its objects belong to the NOLOGIN role `tenantplane_template_owner`; a copy
/// hands them to the tenant's role with `REASSIGN OWNED`. The database itself
/// belongs to the admin, so that reassignment can never touch it.
struct TemplateDatabase {
    static let defaultName = "tenantplane_template"
    static let owner = try! SQLIdentifier("tenantplane_template_owner")

    let database: SQLIdentifier
    let migrations: MigrationSet
    let logger: Logger

    enum Outcome: Equatable {
        case current
        case migrated
        case rebuilt
    }

    /// Brings the template to `migrations`: created when missing, migrated when
    /// behind, rebuilt when it drifted from the files.
    /// Concurrent callers (several `create`s at once) take turns under an
    /// advisory lock of the admin database; the later ones find it current.
    func ensureCurrent(adminURL: PostgresURL) async throws -> Outcome {
        try await DatabaseConnection.with(adminURL, logger: logger) { lockConnection in
            try await lockConnection.withAdvisoryLock(named: "tenantplane.template:\(database.name)", logger: logger) {
                try await ensureCurrentWhileLocked(adminURL: adminURL)
            }
        }
    }

    private func ensureCurrentWhileLocked(adminURL: PostgresURL) async throws -> Outcome {
        var outcome = Outcome.current
        try await DatabaseConnection.with(adminURL, logger: logger) { connection in
            let admin = ServerAdmin(connection: connection, logger: logger)
            try await admin.ensureNoLoginRole(Self.owner)
            if try await !admin.databaseExists(database) {
                try await create(admin, adminURL: adminURL)
                outcome = .rebuilt
            }
        }
        let templateURL = adminURL.with(database: database.name)
        let state = try await DatabaseConnection.with(templateURL, logger: logger) { connection in
            try await Migrator(migrations: migrations).inspect(connection, logger: logger)
        }
        if !state.drift.isEmpty {
            try await DatabaseConnection.with(adminURL, logger: logger) { connection in
                let admin = ServerAdmin(connection: connection, logger: logger)
                try await connection.query(
                    PostgresQuery(unsafeSQL: "ALTER DATABASE \(database.quoted) WITH IS_TEMPLATE false"),
                    logger: logger)
                try await admin.dropDatabase(database)
                try await create(admin, adminURL: adminURL)
            }
            outcome = .rebuilt
        }
        if !state.pending.isEmpty || outcome == .rebuilt {
            try await DatabaseConnection.with(templateURL, logger: logger) { connection in
                try await connection.query(PostgresQuery(unsafeSQL: "SET ROLE \(Self.owner.quoted)"), logger: logger)
                try await Migrator(migrations: migrations).migrate(connection, logger: logger)
            }
            if outcome == .current { outcome = .migrated }
        }
        return outcome
    }

    private func create(_ admin: ServerAdmin, adminURL: PostgresURL) async throws {
        try await admin.connection.query(
            PostgresQuery(
                unsafeSQL: "CREATE DATABASE \(database.quoted) TEMPLATE template0 STRATEGY WAL_LOG IS_TEMPLATE true"),
            logger: logger)
        try await admin.connection.query(
            PostgresQuery(unsafeSQL: "REVOKE CONNECT, TEMPORARY ON DATABASE \(database.quoted) FROM PUBLIC"),
            logger: logger)
        // The owner role creates the schema's objects; copies revoke this grant.
        try await DatabaseConnection.with(adminURL.with(database: database.name), logger: logger) { connection in
            try await connection.query(
                PostgresQuery(unsafeSQL: "GRANT USAGE, CREATE ON SCHEMA public TO \(Self.owner.quoted)"), logger: logger)
        }
    }
}
