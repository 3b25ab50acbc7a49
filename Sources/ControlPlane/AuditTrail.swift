import Core
import Foundation
import PostgresNIO

/// One admin action as the control database's audit trail keeps it.
public struct AuditEntry: Sendable, Codable, Equatable {
    public var id: Int
    public var actor: String
    public var action: String
    public var resourceType: String
    public var resourceId: String?
    public var outcome: String
    public var details: String?
    public var createdAt: Date
}

extension ControlStore {
    /// Records an admin action. `details` must hold no secret.
    public func audit(
        _ actor: Actor,
        action: String,
        resourceType: String,
        resourceId: String?,
        succeeded: Bool,
        details: [String: String] = [:]
    ) async throws {
        let json = String(decoding: try JSONEncoder().encode(details), as: UTF8.self)
        try await connection.query(
            """
            INSERT INTO control_audit_logs (actor, action, resource_type, resource_id, outcome, details)
            VALUES (\(actor.name), \(action), \(resourceType), \(resourceId), \(succeeded ? "success" : "failure"),
                    \(json)::jsonb)
            """,
            logger: logger)
    }

    public func auditEntries(resourceType: String? = nil, resourceId: String? = nil, limit: Int = 100) async throws
        -> [AuditEntry]
    {
        let rows = try await connection.query(
            """
            SELECT id, actor, action, resource_type, resource_id, outcome, details::text, created_at
            FROM control_audit_logs
            WHERE (\(resourceType)::text IS NULL OR resource_type = \(resourceType))
              AND (\(resourceId)::text IS NULL OR resource_id = \(resourceId))
            ORDER BY id DESC LIMIT \(limit)
            """,
            logger: logger)
        var entries: [AuditEntry] = []
        for try await (id, actor, action, type, resource, outcome, details, created) in rows.decode(
            (Int, String, String, String, String?, String, String?, Date).self)
        {
            entries.append(
                AuditEntry(
                    id: id, actor: actor, action: action, resourceType: type, resourceId: resource, outcome: outcome,
                    details: details, createdAt: created))
        }
        return entries
    }
}

extension ControlStore {
    /// Runs an admin action and records its outcome, success or failure.
    public func audited<Result>(
        _ actor: Actor,
        action: String,
        resourceType: String,
        resourceId: String?,
        details: [String: String] = [:],
        _ body: () async throws -> Result
    ) async throws -> Result {
        do {
            let result = try await body()
            try await audit(actor, action: action, resourceType: resourceType, resourceId: resourceId, succeeded: true, details: details)
            return result
        } catch {
            var details = details
            details["error"] = OperatorFailure(error).message
            try? await audit(actor, action: action, resourceType: resourceType, resourceId: resourceId, succeeded: false, details: details)
            throw error
        }
    }
}
