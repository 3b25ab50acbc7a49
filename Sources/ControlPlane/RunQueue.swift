import Core
import Foundation
import PostgresNIO

/// The control database's list of tenants with runs to execute (see
/// control-migrations/003_run_queue.sql).
extension ControlStore {
    /// Marks a tenant as having work. Idempotent; bumps the time of an existing mark.
    public func enqueueRuns(of tenantID: String) async throws {
        try await connection.query(
            """
            INSERT INTO tenant_run_queue (tenant_id) VALUES (\(tenantID))
            ON CONFLICT (tenant_id) DO UPDATE SET queued_at = clock_timestamp()
            """,
            logger: logger)
    }

    /// Active tenants with work, oldest mark first, each with its mark's time
    /// in microseconds (exact, unlike a `Date`, so `dequeueRuns` compares equal).
    public func queuedTenants(limit: Int) async throws -> [(tenantID: String, mark: Int64)] {
        let rows = try await connection.query(
            """
            SELECT q.tenant_id, (extract(epoch FROM q.queued_at) * 1000000)::bigint
            FROM tenant_run_queue q JOIN tenants t ON t.id = q.tenant_id
            WHERE t.status = 'active' ORDER BY q.queued_at LIMIT \(limit)
            """,
            logger: logger)
        var result: [(String, Int64)] = []
        for try await (id, mark) in rows.decode((String, Int64).self) { result.append((id, mark)) }
        return result
    }

    /// Removes a tenant's mark unless it was bumped after `mark` (a run was
    /// queued while the worker looked), so no wake-up is ever lost.
    public func dequeueRuns(of tenantID: String, mark: Int64) async throws {
        try await connection.query(
            """
            DELETE FROM tenant_run_queue
            WHERE tenant_id = \(tenantID) AND (extract(epoch FROM queued_at) * 1000000)::bigint <= \(mark)
            """,
            logger: logger)
    }
}
