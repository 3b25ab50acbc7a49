import Core
import Foundation
import PostgresNIO

/// What an operator of the tenant's API can do to a run, and from which states.
public enum RunAction: String, Sendable, CaseIterable {
    case pause, resume, retry, cancel

    /// The states the action applies to, and the state it leads to.
    var transition: (from: [RunStatus], to: RunStatus) {
        switch self {
        case .pause: ([.pending, .running], .paused)
        case .resume: ([.paused], .pending)
        case .retry: ([.failed], .pending)
        case .cancel: ([.pending, .running, .paused], .cancelled)
        }
    }

    /// Whether the run then needs a worker.
    public var queuesWork: Bool { transition.to == .pending }

    /// The step states the action ends (to the run's new state): a step in
    /// flight when the run is paused or cancelled, and a step a pause left
    /// when the run is cancelled.
    var endsSteps: [String] {
        switch self {
        case .pause: ["running"]
        case .cancel: ["running", "paused"]
        case .resume, .retry: []
        }
    }
}

extension TenantStore {
    /// Applies `action` to a run, with its audit row, or says why it cannot.
    /// A running run that is paused or cancelled loses its lease: its worker
    /// notices at the next step boundary and stops without touching it again,
    /// so the step it was in ends here, `paused` or `cancelled` with its
    /// `completed_at` (a cancel also ends a step a pause left). A resumed run
    /// starts that step again: `startStep` sets it back to `running`.
    public func apply(_ action: RunAction, toRun id: String) async throws -> RunRecord {
        let current = try await run(id: id)
        let (from, to) = action.transition
        guard from.contains(current.status) else {
            throw TenantDataError.conflict(
                "cannot \(action.rawValue) a run that is \(current.status.rawValue) (only when \(from.map(\.rawValue).joined(separator: " or ")))")
        }
        let details = try Self.json(["from": current.status.rawValue, "to": to.rawValue])
        let rows = try await connection.query(
            """
            WITH run AS (
                UPDATE runs SET status = \(to.rawValue), lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                WHERE id = \(current.id) AND status = ANY(\(from.map(\.rawValue)))
                RETURNING \(unescaped: Self.runColumns)
            ), ended AS (
                UPDATE steps SET status = \(to.rawValue), completed_at = COALESCE(completed_at, now())
                WHERE run_id IN (SELECT id FROM run) AND status = ANY(\(action.endsSteps))
            ), audit AS (
                INSERT INTO audit_logs (user_id, action, resource_type, resource_id, details)
                SELECT \(actor), \("run." + action.rawValue), 'run', id::text, \(details)::jsonb FROM run
            )
            SELECT * FROM run
            """,
            logger: logger)
        guard let row = try await rows.collect().first else {
            // The run changed state between the read and the update.
            throw TenantDataError.conflict("the run changed state meanwhile; read it again")
        }
        return try Self.decodeRun(row)
    }
}
