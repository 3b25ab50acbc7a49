import ArtifactStore
import ControlPlane
import Core
import Foundation
import Logging
import Migrations
import PostgresNIO
import Provisioner

/// A tenant database as of one moment: a `pg_dump -Fc` and what was read
/// beside it (migrations, artifact references, row counts), all in one
/// exported snapshot, so they match exactly while writes go on.
struct DatabaseSnapshot: Sendable {
    let dumpFile: String
    /// When the snapshot was taken (the server's clock).
    let takenAt: Date
    let migrations: [AppliedMigration]
    /// Every artifact path the database references (its newest row) → digest.
    let references: [String: String]
    let rowCounts: [String: Int64]
}

extension BackupContext {
    /// Makes the tenant's database read-only (recorded in the control
    /// database first, so a crash leaves a fence someone will lift).
    func raiseFence(_ slug: TenantSlug, _ kind: WriteFence, server: String, store: ControlStore) async throws {
        try await store.setWriteFence(slug, kind)
        let names = try TenantNames(slug)
        do {
            try await DatabaseConnection.with(try await adminURL(of: server, store: store), logger: logger) { connection in
                try await ServerAdmin(connection: connection, logger: logger).setReadOnly(names.database, true)
            }
        } catch {
            // Nothing was fenced (the database is gone or unreachable): no record either.
            try? await store.setWriteFence(slug, nil)
            throw error
        }
    }

    func lowerFence(_ slug: TenantSlug, server: String, store: ControlStore) async throws {
        let names = try TenantNames(slug)
        try await DatabaseConnection.with(try await adminURL(of: server, store: store), logger: logger) { connection in
            try await ServerAdmin(connection: connection, logger: logger).setReadOnly(names.database, false)
        }
        try await store.setWriteFence(slug, nil)
        logger.info("write fence lifted", metadata: ["tenant": "\(slug)"])
    }

    /// Lifts a fence whose process died. The caller holds the tenant's lock,
    /// so any fence still recorded is nobody's.
    func liftAbandonedFence(_ slug: TenantSlug, store: ControlStore) async throws {
        guard try await store.writeFence(slug) != nil else { return }
        let tenant = try await store.requireTenant(slug)
        // A deleted tenant's database is gone (or about to be): only the record is left to clear.
        if let server = tenant.server, tenant.status != .deleted, tenant.status != .deleting {
            logger.notice("lifting a write fence left by an interrupted export or move", metadata: ["tenant": "\(slug)"])
            try await lowerFence(slug, server: server, store: store)
        } else {
            try await store.setWriteFence(slug, nil)
        }
    }

    /// The tenant's own login on `server`. A suspended tenant's role is
    /// NOLOGIN, so for it the login is allowed while `body` runs (the caller
    /// holds the tenant's lock).
    func withTenantLogin<Result: Sendable>(
        _ tenant: TenantRecord, server: String, store: ControlStore, _ body: (TenantLogin) async throws -> Result
    ) async throws -> Result {
        let slug = try TenantSlug(tenant.id)
        let adminURL = try await adminURL(of: server, store: store)
        let login = try await store.tenantLogin(slug, server: adminURL, secrets: secrets)
        guard tenant.status == .suspended else { return try await body(login) }
        let logger = self.logger
        return try await DatabaseConnection.with(adminURL, logger: logger) { connection in
            try await ServerAdmin(connection: connection, logger: logger)
                .withLoginAllowed(try TenantNames(slug).role) { try await body(login) }
        }
    }

    /// Dumps the database into `directory` and reads what must match the
    /// dump, logged in as the tenant, with no pause to its writes: one
    /// REPEATABLE READ transaction exports its snapshot to `pg_dump` and makes
    /// the reads. Stored files are write-once, so the references read here
    /// name exactly the bytes the archive will hold.
    func snapshot(_ login: TenantLogin, into directory: String) async throws -> DatabaseSnapshot {
        let dumpFile = URL(fileURLWithPath: directory).appendingPathComponent(ArchiveManifest.databaseFileName).path
        let tools = try await tools()
        let logger = self.logger
        let migrations = self.migrations
        return try await DatabaseConnection.with(login, logger: logger) { connection in
            // The transaction stays open, idle, for the whole dump: no timeout may end it.
            try await connection.query("SET idle_in_transaction_session_timeout = 0", logger: logger)
            try await connection.query("SET statement_timeout = 0", logger: logger)
            try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", logger: logger)
            let rows = try await connection.query("SELECT pg_export_snapshot(), statement_timestamp()", logger: logger)
            guard let (snapshotID, takenAt) = try await rows.collect().first?.decode((String, Date).self) else {
                throw BackupError.verificationFailed("the server exported no snapshot")
            }
            try await tools.dump(login, to: dumpFile, snapshot: snapshotID)
            let snapshot = DatabaseSnapshot(
                dumpFile: dumpFile, takenAt: takenAt,
                migrations: try await Migrator(migrations: migrations).applied(connection, logger: logger),
                references: try await Self.artifactReferences(connection, tenant: login.slug, logger: logger),
                rowCounts: try await Self.rowCounts(connection, logger: logger))
            try await connection.query("COMMIT", logger: logger)
            return snapshot
        }
    }

    /// Every path the tenant's rows reference → its digest. The rows are the
    /// tenant's to write, so a path outside its own tree is refused here,
    /// before any file is opened by it.
    static func artifactReferences(_ connection: PostgresConnection, tenant: TenantSlug, logger: Logger) async throws
        -> [String: String]
    {
        let rows = try await connection.query(
            """
            SELECT DISTINCT ON (file_path) file_path, digest FROM artifacts ORDER BY file_path, id DESC
            """,
            logger: logger)
        var references: [String: String] = [:]
        var foreign = 0
        for try await (path, digest) in rows.decode((String, String?).self) {
            guard StoredArtifactPath.isInside(path, tenant: tenant.rawValue) else {
                foreign += 1
                continue
            }
            references[path] = digest
        }
        guard foreign == 0 else { throw BackupError.foreignArtifactPaths(foreign) }
        return references
    }

    /// Exact row counts of every table of the tenant's schema, in one round
    /// trip (the server quotes the names itself).
    static func rowCounts(_ connection: PostgresConnection, logger: Logger) async throws -> [String: Int64] {
        let rows = try await connection.query(
            """
            SELECT table_name::text,
                (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', table_schema, table_name),
                    false, true, '')))[1]::text::bigint
            FROM information_schema.tables
            WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
            """,
            logger: logger)
        var counts: [String: Int64] = [:]
        for try await (table, count) in rows.decode((String, Int64).self) { counts[table] = count }
        return counts
    }
}
