import Core
import Foundation
import PostgresNIO

/// A tenant in its deletion grace period (status `deleting`).
public struct DeletingTenant: Sendable, Equatable {
    public var slug: TenantSlug
    public var server: String?
    /// Whether the purge is due (by the control database's clock).
    public var isDue: Bool
}

/// The control database's side of deleting a tenant: the grace period, the
/// undelete, and what the purge removes.
extension ControlStore {
    /// Starts (or shortens) the grace period: `deleting`, purge due after
    /// `grace`. The status it had is kept for `undelete`.
    public func beginDeletion(_ slug: TenantSlug, grace: Duration) async throws {
        let seconds = Double(grace.components.seconds)
        try await connection.query(
            """
            UPDATE tenants SET
                status_before_delete = CASE WHEN status = 'deleting' THEN status_before_delete ELSE status END,
                status = 'deleting',
                purge_after = LEAST(COALESCE(purge_after, 'infinity'), now() + make_interval(secs => \(seconds)))
            WHERE id = \(slug.rawValue)
            """,
            logger: logger)
    }

    /// When the tenant's purge is due, if it is being deleted.
    public func purgeAfter(_ slug: TenantSlug) async throws -> Date? {
        let rows = try await connection.query(
            "SELECT purge_after FROM tenants WHERE id = \(slug.rawValue) AND status = 'deleting'", logger: logger)
        return try await rows.collect().first?.decode(Date?.self)
    }

    /// Ends the grace period the other way: the status the tenant had.
    public func endDeletion(_ slug: TenantSlug) async throws -> TenantStatus {
        let rows = try await connection.query(
            """
            UPDATE tenants SET status = COALESCE(status_before_delete, 'active'), status_before_delete = NULL,
                purge_after = NULL
            WHERE id = \(slug.rawValue) AND status = 'deleting'
            RETURNING status
            """,
            logger: logger)
        let status = try await rows.collect().first?.decode(String.self)
        return status.flatMap(TenantStatus.init(rawValue:)) ?? .active
    }

    public func deletingTenants() async throws -> [DeletingTenant] {
        let rows = try await connection.query(
            """
            SELECT id, server, COALESCE(purge_after <= now(), true) FROM tenants
            WHERE status = 'deleting' ORDER BY purge_after NULLS FIRST, id
            """,
            logger: logger)
        var result: [DeletingTenant] = []
        for try await (id, server, due) in rows.decode((String, String?, Bool).self) {
            result.append(DeletingTenant(slug: try TenantSlug(id), server: server, isDue: due))
        }
        return result
    }

    /// The export jobs whose archives tenantplane keeps for this tenant.
    public func exportJobs(of slug: TenantSlug) async throws -> [UUID] {
        let rows = try await connection.query(
            "SELECT id FROM admin_jobs WHERE tenant_id = \(slug.rawValue) AND kind = 'export' ORDER BY created_at",
            logger: logger)
        return try await rows.collect().map { try $0.decode(UUID.self) }
    }

    /// The purge's control-database part, in one transaction: the API keys,
    /// the tenant's own provider keys and the run-queue row go, the fence and
    /// the secret too, and the row stays as `deleted` (a tenant created later
    /// under the slug must not inherit a former customer's provider keys).
    /// Returns how many keys of each kind were removed.
    public func finishPurge(_ slug: TenantSlug) async throws -> (apiKeys: Int, providerKeys: Int) {
        try await connection.transaction(logger: logger) { connection in
            let keys = try await connection.query(
                "DELETE FROM tenant_api_keys WHERE tenant_id = \(slug.rawValue) RETURNING id", logger: logger
            ).collect().count
            let providerKeys = try await connection.query(
                "DELETE FROM tenant_provider_keys WHERE tenant_id = \(slug.rawValue) RETURNING provider_id", logger: logger
            ).collect().count
            try await connection.query("DELETE FROM tenant_run_queue WHERE tenant_id = \(slug.rawValue)", logger: logger)
            try await connection.query(
                """
                UPDATE tenants SET status = 'deleted', role_password_encrypted = NULL, provisioning_step = NULL,
                    last_error = NULL, write_fence = NULL, purge_after = NULL, status_before_delete = NULL
                WHERE id = \(slug.rawValue)
                """,
                logger: logger)
            return (keys, providerKeys)
        }
    }
}
