import Core
import Foundation
import PostgresNIO

/// Every admin action `control_audit_logs` records, and the kind of thing
/// each acts on: one list, so the CLI, the routes and the lifecycle code
/// cannot spell one action two ways.
public enum AdminAction: String, Sendable, CaseIterable {
    case tenantCreate = "tenant.create"
    case tenantSuspend = "tenant.suspend"
    case tenantResume = "tenant.resume"
    case tenantDelete = "tenant.delete"
    case tenantUndelete = "tenant.undelete"
    case tenantPurge = "tenant.purge"
    case tenantExport = "tenant.export"
    case tenantImport = "tenant.import"
    case tenantMove = "tenant.move"
    case keyIssue = "tenant.key.create"
    case keyRevoke = "tenant.key.revoke"
    case tenantProviderKeySet = "tenant.secret.set"
    case tenantProviderKeyClear = "tenant.secret.clear"
    case serverAdd = "server.add"
    case sparesFill = "server.spares.fill"
    case sparesDrain = "server.spares.drain"
    case providerAdd = "llm.provider.add"
    case providerUpdate = "llm.provider.update"
    case providerKeySet = "llm.provider.key.set"
    case providerKeyClear = "llm.provider.key.clear"
    case modelAdd = "llm.model.add"
    case stepDefaultSet = "llm.default.set"

    public var resourceType: String {
        switch self {
        case .keyRevoke: "api_key"
        case .serverAdd, .sparesFill, .sparesDrain: "database_server"
        case .providerAdd, .providerUpdate, .providerKeySet, .providerKeyClear: "llm_provider"
        case .modelAdd: "llm_model"
        case .stepDefaultSet: "step_llm_default"
        case .tenantCreate, .tenantSuspend, .tenantResume, .tenantDelete, .tenantUndelete, .tenantPurge, .tenantExport,
            .tenantImport, .tenantMove, .keyIssue, .tenantProviderKeySet, .tenantProviderKeyClear:
            "tenant"
        }
    }
}

extension ControlStore {
    /// Records an admin action. `details` must hold no secret.
    public func audit(
        _ actor: Actor, _ action: AdminAction, resourceId: String?, succeeded: Bool, details: [String: String] = [:]
    ) async throws {
        let json = String(decoding: try JSONEncoder().encode(details), as: UTF8.self)
        try await connection.query(
            """
            INSERT INTO control_audit_logs (actor, action, resource_type, resource_id, outcome, details)
            VALUES (\(actor.name), \(action.rawValue), \(action.resourceType), \(resourceId),
                    \(succeeded ? "success" : "failure"), \(json)::jsonb)
            """,
            logger: logger)
    }

    /// Runs an admin action and records its outcome, success or failure.
    public func audited<Result>(
        _ actor: Actor, _ action: AdminAction, resourceId: String?, details: [String: String] = [:],
        _ body: () async throws -> Result
    ) async throws -> Result {
        do {
            let result = try await body()
            try await audit(actor, action, resourceId: resourceId, succeeded: true, details: details)
            return result
        } catch {
            var details = details
            details["error"] = OperatorFailure(error).message
            try? await audit(actor, action, resourceId: resourceId, succeeded: false, details: details)
            throw error
        }
    }
}
