import Core
import Foundation
import PostgresNIO

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
