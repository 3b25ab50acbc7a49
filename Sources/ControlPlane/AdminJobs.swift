import Core
import Foundation
import PostgresNIO

/// Long-running admin work started over HTTP (an export, a move), as its
/// status endpoint reports it.
public struct AdminJob: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable { case export, move }
    public enum Status: String, Sendable, Codable { case queued, running, succeeded, failed }

    public var id: UUID
    public var kind: Kind
    public var tenantId: String
    public var status: Status
    /// The latest progress line while running.
    public var detail: String?
    /// What the job produced (JSON text), once succeeded.
    public var result: String?
    public var error: String?
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
}

extension ControlStore {
    static let jobColumns =
        "id, kind, tenant_id, status, detail, result::text, error, created_at, started_at, finished_at"

    static func decodeJob(_ row: PostgresRow) throws -> AdminJob {
        let (id, kind, tenant, status, detail, result, error, created, started, finished) = try row.decode(
            (UUID, String, String, String, String?, String?, String?, Date, Date?, Date?).self)
        return AdminJob(
            id: id, kind: AdminJob.Kind(rawValue: kind) ?? .export, tenantId: tenant,
            status: AdminJob.Status(rawValue: status) ?? .failed, detail: detail, result: result, error: error,
            createdAt: created, startedAt: started, finishedAt: finished)
    }

    public func createJob(_ kind: AdminJob.Kind, tenant: TenantSlug) async throws -> AdminJob {
        let rows = try await connection.query(
            """
            INSERT INTO admin_jobs (kind, tenant_id, status) VALUES (\(kind.rawValue), \(tenant.rawValue), 'queued')
            RETURNING \(unescaped: Self.jobColumns)
            """,
            logger: logger)
        guard let row = try await rows.collect().first else { throw ControlError.conflict("could not record the job") }
        return try Self.decodeJob(row)
    }

    public func job(_ id: UUID) async throws -> AdminJob? {
        let rows = try await connection.query(
            "SELECT \(unescaped: Self.jobColumns) FROM admin_jobs WHERE id = \(id)", logger: logger)
        return try await rows.collect().first.map(Self.decodeJob)
    }

    public func jobs(limit: Int = 100) async throws -> [AdminJob] {
        let rows = try await connection.query(
            "SELECT \(unescaped: Self.jobColumns) FROM admin_jobs ORDER BY created_at DESC LIMIT \(limit)",
            logger: logger)
        return try await rows.collect().map(Self.decodeJob)
    }

    public func startJob(_ id: UUID) async throws {
        try await connection.query(
            "UPDATE admin_jobs SET status = 'running', started_at = now(), heartbeat_at = now() WHERE id = \(id)",
            logger: logger)
    }

    /// The job's process is alive: see `failAbandonedJobs(silentFor:)`.
    public func beatJob(_ id: UUID) async throws {
        try await connection.query(
            "UPDATE admin_jobs SET heartbeat_at = now() WHERE id = \(id) AND status IN ('queued', 'running')",
            logger: logger)
    }

    public func setJobDetail(_ id: UUID, _ detail: String) async throws {
        try await connection.query("UPDATE admin_jobs SET detail = \(detail) WHERE id = \(id)", logger: logger)
    }

    public func finishJob(_ id: UUID, result: String?, error: String?) async throws {
        let status = error == nil ? "succeeded" : "failed"
        try await connection.query(
            """
            UPDATE admin_jobs SET status = \(status), result = \(result)::jsonb, error = \(error), finished_at = now()
            WHERE id = \(id)
            """,
            logger: logger)
    }

    /// Jobs whose process died: queued or running, and no heartbeat (or, never
    /// started, no creation) for `silence`. The database's clock judges, so
    /// servers with skewed clocks agree. A job still beating on another
    /// server is left alone.
    public func failAbandonedJobs(silentFor silence: Duration) async throws -> Int {
        let rows = try await connection.query(
            """
            UPDATE admin_jobs SET status = 'failed', finished_at = now(),
                error = 'the server running the job stopped before it finished; start the job again'
            WHERE status IN ('queued', 'running')
                AND COALESCE(heartbeat_at, created_at) < now() - make_interval(secs => \(Double(silence.components.seconds)))
            RETURNING id
            """,
            logger: logger)
        return try await rows.collect().count
    }
}
