import ControlPlane
import Core
import Logging
import Migrations
import PostgresNIO

/// The `tenantplane_template` database a server keeps at the latest tenant
/// migration, so new tenants are copied from it, born current, instead of
/// replaying every migration.
///
/// Its objects belong to `pg_database_owner`, PostgreSQL's predefined role
/// whose one member is the owner of the current database. In a copy owned by
/// a tenant's role, that role alone owns them, with no hand-over and no
/// connection into the new database; no other role (another tenant's) is a
/// member there. The template itself belongs to the admin.
struct TemplateDatabase {
    static let defaultName = "tenantplane_template"
    static let objectOwner = try! SQLIdentifier("pg_database_owner")
    /// Earlier versions gave the template's objects to this NOLOGIN role and
    /// reassigned them in every copy; such a template is rebuilt, the role dropped.
    static let retiredOwner = try! SQLIdentifier("tenantplane_template_owner")

    let database: SQLIdentifier
    let migrations: MigrationSet
    let logger: Logger

    enum Outcome: Equatable {
        case current
        case migrated
        case rebuilt
        /// A newer binary's files built it: left as it is, at this version.
        case ahead(version: Int)
    }

    /// Brings the template to `migrations`: created when missing, migrated when
    /// behind, rebuilt when it drifted from the files or has the retired layout.
    /// One that holds migrations beyond these files is never touched: during a
    /// rolling deploy an older binary would otherwise rebuild it backwards, and
    /// the newer one forwards again, each dropping it under the other's copies.
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
        var retiredLayout = false
        try await DatabaseConnection.with(adminURL, logger: logger) { connection in
            let admin = ServerAdmin(connection: connection, logger: logger)
            if try await !admin.databaseExists(database) {
                try await create(admin)
                outcome = .rebuilt
            } else {
                retiredLayout = try await admin.role(Self.retiredOwner, holdsObjectsIn: database)
            }
        }
        let templateURL = adminURL.with(database: database.name)
        let state = try await DatabaseConnection.with(templateURL, logger: logger) { connection in
            try await Migrator(migrations: migrations).inspect(connection, logger: logger)
        }
        if state.isAhead {
            logger.warning(
                "template holds newer migrations than this binary knows; leaving it as it is",
                metadata: [
                    "template": "\(database.name)", "template_version": "\(state.currentVersion)",
                    "binary_version": "\(migrations.latestVersion)",
                ])
            return .ahead(version: state.currentVersion)
        }
        if !state.drift.isEmpty || retiredLayout {
            try await DatabaseConnection.with(adminURL, logger: logger) { connection in
                let admin = ServerAdmin(connection: connection, logger: logger)
                try await connection.query(
                    PostgresQuery(unsafeSQL: "ALTER DATABASE \(database.quoted) WITH IS_TEMPLATE false"),
                    logger: logger)
                try await admin.dropDatabase(database)
                try await create(admin)
                if retiredLayout { try await admin.dropRoleIfUnused(Self.retiredOwner) }
            }
            outcome = .rebuilt
        }
        if !state.pending.isEmpty || outcome == .rebuilt {
            try await DatabaseConnection.with(templateURL, logger: logger) { connection in
                try await connection.query(PostgresQuery(unsafeSQL: "SET ROLE \(Self.objectOwner.quoted)"), logger: logger)
                try await Migrator(migrations: migrations).migrate(connection, logger: logger)
            }
            if outcome == .current { outcome = .migrated }
        }
        return outcome
    }

    private func create(_ admin: ServerAdmin) async throws {
        try await admin.connection.query(
            PostgresQuery(
                unsafeSQL: "CREATE DATABASE \(database.quoted) TEMPLATE template0 STRATEGY WAL_LOG IS_TEMPLATE true"),
            logger: logger)
        try await admin.connection.query(
            PostgresQuery(unsafeSQL: "REVOKE CONNECT, TEMPORARY ON DATABASE \(database.quoted) FROM PUBLIC"),
            logger: logger)
    }
}
