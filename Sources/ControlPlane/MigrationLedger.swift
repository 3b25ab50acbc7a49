import Core
import Foundation
import Migrations
import PostgresNIO

/// A tenant as the fleet migration runner sees it.
public struct FleetTenant: Sendable {
    public var slug: TenantSlug
    public var server: String
    public var schemaVersion: Int?
    /// Fingerprint of the migration files its database held after its last
    /// successful run (see `MigrationSet.fingerprint`).
    public var migrationFingerprint: String?
    public var status: TenantStatus
    /// The role password, sealed (see `SecretBox`).
    public var sealedRolePassword: Data?
}

/// One tenant's line of `migrate status`: where it stands and its last outcome.
public struct TenantMigrationStanding: Sendable, Codable, Equatable {
    public var tenant: String
    public var schemaVersion: Int?
    public var outcome: String?
    public var error: String?
    public var migratedAt: Date?
}

extension ControlStore {
    /// Active and suspended tenants (suspended ones come back, and must come
    /// back current), optionally only the named ones.
    public func fleetTenants(only slugs: [TenantSlug] = []) async throws -> [FleetTenant] {
        let names = slugs.map(\.rawValue)
        let rows = try await connection.query(
            """
            SELECT id, server, schema_version, migration_fingerprint, status, role_password_encrypted FROM tenants
            WHERE status IN ('active', 'suspended') AND server IS NOT NULL
              AND (cardinality(\(names)::text[]) = 0 OR id = ANY(\(names)::text[]))
            ORDER BY id
            """,
            logger: logger)
        var tenants: [FleetTenant] = []
        for try await (id, server, version, fingerprint, status, sealed)
            in rows.decode((String, String, Int?, String?, String, Data?).self)
        {
            tenants.append(
                FleetTenant(
                    slug: try TenantSlug(id), server: server, schemaVersion: version, migrationFingerprint: fingerprint,
                    status: TenantStatus(rawValue: status) ?? .failed, sealedRolePassword: sealed))
        }
        return tenants
    }

    /// Records a tenant's migration run in one statement: the ledger rows of
    /// the files applied (and of the one that failed), and the tenant's
    /// version and outcome.
    public func recordMigration(
        _ slug: TenantSlug,
        applied: [MigrationFile],
        failed: (file: MigrationFile, failure: MigrationFailure)?,
        version: Int?,
        fingerprint: String?,
        outcome: String,
        error: String?
    ) async throws {
        try await connection.query(
            """
            WITH applied AS (
                INSERT INTO tenant_migration_ledger AS l (tenant_id, version, name, checksum, status)
                SELECT \(slug.rawValue), v, n, c, 'applied'
                FROM unnest(\(applied.map(\.version))::int[], \(applied.map(\.name))::text[], \(applied.map(\.checksum))::text[]) AS f(v, n, c)
                ON CONFLICT (tenant_id, version) DO UPDATE SET
                    status = 'applied', name = EXCLUDED.name, checksum = EXCLUDED.checksum, error = NULL, sql_state = NULL,
                    attempt = l.attempt + 1, finished_at = now()
                RETURNING 1
            ), failed AS (
                INSERT INTO tenant_migration_ledger AS l (tenant_id, version, name, checksum, status, error, sql_state)
                SELECT \(slug.rawValue), \(failed?.file.version), \(failed?.file.name), \(failed?.file.checksum), 'failed',
                       \(failed?.failure.summary), \(failed?.failure.sqlState)
                WHERE \(failed != nil)
                ON CONFLICT (tenant_id, version) DO UPDATE SET
                    status = 'failed', error = EXCLUDED.error, sql_state = EXCLUDED.sql_state,
                    attempt = l.attempt + 1, finished_at = now()
                RETURNING 1
            )
            UPDATE tenants SET schema_version = COALESCE(\(version), schema_version),
                migration_fingerprint = \(fingerprint), migration_outcome = \(outcome), migration_error = \(error),
                migrated_at = now()
            WHERE id = \(slug.rawValue)
            """,
            logger: logger)
    }

    /// The highest tenant migration version recorded for any tenant database
    /// that exists or any active server's template: how far the newest binary
    /// that ran against this control database took the fleet.
    public func highestFleetVersion() async throws -> Int? {
        let rows = try await connection.query(
            """
            SELECT max(version)::int FROM (
                SELECT schema_version FROM tenants WHERE status <> 'deleted'
                UNION ALL SELECT template_version FROM database_servers WHERE is_active
            ) AS fleet (version)
            """,
            logger: logger)
        return try await rows.collect().first?.decode(Int?.self)
    }

    /// Tenants by schema version, for `migrate status`.
    public func tenantVersionCounts() async throws -> [Int?: Int] {
        let rows = try await connection.query(
            """
            SELECT schema_version, count(*)::int FROM tenants
            WHERE status IN ('active', 'suspended') GROUP BY schema_version
            """,
            logger: logger)
        var counts: [Int?: Int] = [:]
        for try await (version, count) in rows.decode((Int?, Int).self) { counts[version] = count }
        return counts
    }

    /// Active and suspended tenants whose ledger does not show `fingerprint`'s
    /// files applied: those a fleet run logs in to.
    public func tenantsNotAt(fingerprint: String) async throws -> Int {
        let rows = try await connection.query(
            """
            SELECT count(*)::int FROM tenants
            WHERE status IN ('active', 'suspended') AND server IS NOT NULL
              AND migration_fingerprint IS DISTINCT FROM \(fingerprint)
            """,
            logger: logger)
        return try await rows.collect().first?.decode(Int.self) ?? 0
    }

    /// Tenants whose last migration run did not end well.
    public func troubledTenants() async throws -> [TenantMigrationStanding] {
        let rows = try await connection.query(
            """
            SELECT id, schema_version, migration_outcome, migration_error, migrated_at FROM tenants
            WHERE status IN ('active', 'suspended') AND migration_outcome IN ('failed', 'drift', 'unreachable')
            ORDER BY id
            """,
            logger: logger)
        var result: [TenantMigrationStanding] = []
        for try await (id, version, outcome, error, at) in rows.decode((String, Int?, String?, String?, Date?).self) {
            result.append(TenantMigrationStanding(tenant: id, schemaVersion: version, outcome: outcome, error: error, migratedAt: at))
        }
        return result
    }
}
