import Core
import Foundation
import Logging
import PostgresNIO

/// The control database's list of tenants with runs to execute (see
/// control-migrations/003_run_queue.sql and 009_run_queue_notify.sql).
extension ControlStore {
    /// The channel a newly queued tenant is announced on; the payload is its id.
    public static let runQueueChannel = "tenantplane_runs"

    /// Marks a tenant as having work. Idempotent; bumps the time of an
    /// existing mark. Notifies `runQueueChannel` when the mark is new, or its
    /// last notification is over a second old (see 009_run_queue_notify.sql).
    public func enqueueRuns(of tenantID: String) async throws {
        try await connection.query(
            """
            WITH marked AS (
                INSERT INTO tenant_run_queue AS q (tenant_id) VALUES (\(tenantID))
                ON CONFLICT (tenant_id) DO UPDATE SET
                    queued_at = excluded.queued_at,
                    notified_at = CASE WHEN q.notified_at < excluded.queued_at - interval '1 second'
                                       THEN excluded.queued_at ELSE q.notified_at END
                RETURNING tenant_id, (xmax = 0 OR notified_at = queued_at) AS wake
            )
            SELECT pg_notify(\(Self.runQueueChannel), tenant_id) FROM marked WHERE wake
            """,
            logger: logger)
    }

    /// Active tenants with work whose id sorts after `after`, in id order (a
    /// scan that pages on by id reaches every tenant, however busy the ones
    /// before it), each with its mark's time in microseconds (exact, unlike a
    /// `Date`, so `dequeueRuns` compares equal).
    public func queuedTenants(after: String?, limit: Int) async throws -> [(tenantID: String, mark: Int64)] {
        let rows = try await connection.query(
            """
            SELECT q.tenant_id, (extract(epoch FROM q.queued_at) * 1000000)::bigint
            FROM tenant_run_queue q JOIN tenants t ON t.id = q.tenant_id
            WHERE t.status = 'active' AND q.tenant_id > \(after ?? "")
            ORDER BY q.tenant_id LIMIT \(limit)
            """,
            logger: logger)
        var result: [(String, Int64)] = []
        for try await (id, mark) in rows.decode((String, Int64).self) { result.append((id, mark)) }
        return result
    }

    /// Every active tenant with work, page by page.
    public func queuedTenants() async throws -> [(tenantID: String, mark: Int64)] {
        var all: [(tenantID: String, mark: Int64)] = []
        while true {
            let page = try await queuedTenants(after: all.last?.tenantID, limit: 1_000)
            all += page
            if page.count < 1_000 { return all }
        }
    }

    /// The tenant's mark (as `queuedTenants` gives it), if it is queued.
    public func queueMark(of tenantID: String) async throws -> Int64? {
        let rows = try await connection.query(
            "SELECT (extract(epoch FROM queued_at) * 1000000)::bigint FROM tenant_run_queue WHERE tenant_id = \(tenantID)",
            logger: logger)
        return try await rows.collect().first?.decode(Int64.self)
    }

    /// Removes a tenant's mark unless it was bumped after `mark` (a run was
    /// queued while the worker looked), so no wake-up is ever lost; whether
    /// it was removed. A mark that stays means: look at the tenant again now.
    @discardableResult
    public func dequeueRuns(of tenantID: String, mark: Int64) async throws -> Bool {
        let rows = try await connection.query(
            """
            DELETE FROM tenant_run_queue
            WHERE tenant_id = \(tenantID) AND (extract(epoch FROM queued_at) * 1000000)::bigint <= \(mark)
            RETURNING 1
            """,
            logger: logger)
        return try await !rows.collect().isEmpty
    }
}

/// One dedicated control connection per process that LISTENs on the run
/// queue's channel. postgres-nio listens on a connection, not on a pool, and
/// notifications sent while no connection listens are lost: after every
/// (re)connect `onListening` runs, so the caller reads the queue in full.
public struct RunQueueListener: Sendable {
    let url: PostgresURL
    let logger: Logger

    public init(url: PostgresURL, logger: Logger) {
        self.url = url
        self.logger = logger
    }

    /// Listens until cancelled, reconnecting after a second when the
    /// connection fails.
    public func listen(
        onListening: @Sendable () async -> Void, onNotification: @Sendable (String) async -> Void
    ) async {
        while !Task.isCancelled {
            do {
                try await DatabaseConnection.with(url, logger: logger) { connection in
                    try await connection.listen(on: ControlStore.runQueueChannel) { notifications in
                        await onListening()
                        for try await notification in notifications {
                            await onNotification(notification.payload)
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning(
                    "the run queue listener lost the control database; reconnecting",
                    metadata: ["error": "\(OperatorFailure(error).message)"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}
