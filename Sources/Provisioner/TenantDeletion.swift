import ArtifactStore
import ControlPlane
import Core
import Foundation
import Logging
import PostgresNIO

/// What a purge removed, for its audit row and the operator.
public struct PurgeReport: Sendable, Codable, Equatable {
    public var tenant: String
    public var databaseDropped: Bool
    public var roleDropped: Bool
    public var storageRemoved: Bool
    public var archivesRemoved: Int
    public var keysRemoved: Int
    public var providerKeysRemoved: Int

    var auditDetails: [String: String] {
        [
            "database_dropped": "\(databaseDropped)", "role_dropped": "\(roleDropped)",
            "storage_removed": "\(storageRemoved)", "archives_removed": "\(archivesRemoved)",
            "keys_removed": "\(keysRemoved)", "provider_keys_removed": "\(providerKeysRemoved)",
        ]
    }
}

/// Deleting a tenant, in two stages. `delete` stops the tenant's work at once
/// and starts a grace period: its role is NOLOGIN, CONNECT is revoked, its
/// storage tree is renamed to a tombstone (a writer that comes late gets
/// ENOENT instead of recreating the tree) and workers stop claiming its runs;
/// `undelete` brings it back as it was. The purge, when the grace period ends
/// (or at once with `--purge-now`), removes the database, the role, the tree,
/// the export-job archives kept for it, its run-queue row and its keys; the
/// control row stays as `deleted`. Every step is idempotent: a delete or purge
/// cut short finishes when run again, or when the reconciler finds it.
extension Provisioner {
    public func delete(_ slug: TenantSlug, confirmation: String, purgeNow: Bool = false, actor: ControlPlane.Actor)
        async throws -> TenantRecord
    {
        try await withControl { store in
            try await store.withTenantLock(slug) {
                try await store.audited(
                    actor, .tenantDelete, resourceId: slug.rawValue,
                    details: ["purge": purgeNow ? "now" : "after the grace period"]
                ) {
                    guard confirmation == slug.rawValue else {
                        throw ControlError.invalid("deleting a tenant needs its id repeated as confirmation (--confirm \(slug))")
                    }
                    let tenant = try await store.requireTenant(slug)
                    guard tenant.status != .deleted else { throw ControlError.notFound("no such tenant") }
                    try await store.beginDeletion(slug, grace: purgeNow ? .zero : deleteGrace)
                    try await stopWork(of: tenant, store: store)
                    if purgeNow { _ = try await purge(slug, store: store, actor: actor) }
                    return try await store.requireTenant(slug)
                }
            }
        }
    }

    /// Brings a tenant in its grace period back exactly as it was: its rows
    /// (the database was never touched), files, keys and status.
    public func undelete(_ slug: TenantSlug, actor: ControlPlane.Actor) async throws -> TenantRecord {
        try await withControl { store in
            try await store.withTenantLock(slug) {
                try await store.audited(actor, .tenantUndelete, resourceId: slug.rawValue) {
                    let tenant = try await store.requireTenant(slug)
                    guard tenant.status == .deleting else {
                        throw ControlError.conflict(
                            tenant.status == .deleted
                                ? "tenant \(slug) was purged; it cannot be undeleted (import an export of it instead)"
                                : "tenant \(slug) is \(tenant.status.rawValue), not being deleted")
                    }
                    let names = try TenantNames(slug)
                    if let server = tenant.server {
                        try await withServerAdmin(server, store: store) { admin in
                            guard try await admin.databaseExists(names.database) else {
                                throw ControlError.conflict("tenant \(slug)'s database is already gone (its purge began)")
                            }
                        }
                    }
                    guard !(trees.hasTombstone(slug) && trees.hasTree(slug)) else {
                        throw ControlError.conflict("tenant \(slug) has both a storage tree and a tombstone; move one aside by hand")
                    }
                    try trees.revive(slug)
                    let status = try await store.endDeletion(slug)
                    if let server = tenant.server {
                        try await withServerAdmin(server, store: store) { admin in
                            try await admin.restrictConnect(names.database, to: names.role)
                            try await admin.setLogin(names.role, allowed: status == .active)
                        }
                    }
                    if status == .active { try await store.enqueueRuns(of: slug.rawValue) }
                    return try await store.requireTenant(slug)
                }
            }
        }
    }

    /// Finishes what interrupted deletes left and purges the tenants whose
    /// grace period is over. One tenant at a time: a tenant that fails is
    /// logged and tried again next time, and every other is still done.
    /// Tenants whose lock is held (someone is working on them) are skipped.
    public func reconcileDeletions(actor: ControlPlane.Actor) async throws -> [String] {
        try await withControl { store in
            var done: [String] = []
            for deleting in try await store.deletingTenants() {
                do {
                    let outcome: String? = try await store.withTenantLockIfFree(deleting.slug) {
                        guard let tenant = try await store.tenant(deleting.slug), tenant.status == .deleting else {
                            return nil
                        }
                        // Renaming the tree is the stop's last step: a tenant
                        // whose tree is gone was stopped, and costs nothing here
                        // until its purge is due.
                        let stopped = !trees.hasTree(deleting.slug)
                        guard deleting.isDue || !stopped else { return nil }
                        try await stopWork(of: tenant, store: store)
                        guard deleting.isDue else { return nil }
                        _ = try await purge(deleting.slug, store: store, actor: actor)
                        return "\(deleting.slug): purged"
                    } ?? nil
                    if let outcome { done.append(outcome) }
                } catch {
                    logger.error(
                        "could not finish deleting a tenant; trying again later",
                        metadata: ["tenant": "\(deleting.slug)", "error": "\(OperatorFailure(error).message)"])
                }
            }
            return done
        }
    }

    /// Stops everything of the tenant's: no login, no connect, no session,
    /// no fence or open move left behind, its tree renamed to its tombstone.
    /// Idempotent.
    func stopWork(of tenant: TenantRecord, store: ControlStore) async throws {
        let slug = try TenantSlug(tenant.id)
        let names = try TenantNames(slug)
        if let server = tenant.server {
            try await withServerAdmin(server, store: store) { admin in
                guard try await admin.databaseExists(names.database) else { return }
                try await admin.setLogin(names.role, allowed: false)
                try await admin.revokeConnect(names.database, from: names.role)
                try await admin.terminateConnections(to: names.database)
                if try await store.writeFence(slug) != nil {
                    try await admin.setReadOnly(names.database, false)
                }
            }
        }
        try await store.setWriteFence(slug, nil)
        if let move = try await store.openMove(slug) {
            let copyServer = move.toServer == tenant.server ? move.fromServer : move.toServer
            try await withServerAdmin(copyServer, store: store) { admin in
                try await admin.terminateConnections(to: names.database)
                try await admin.dropDatabase(names.database)
                try await admin.dropRoleIfUnused(names.role)
            }
            try await store.setMovePhase(move.id, .rolledBack, error: "the tenant was deleted")
        }
        try trees.entomb(slug)
    }

    /// Removes everything the tenant has and records it. The caller holds the
    /// tenant's lock and has stopped its work.
    func purge(_ slug: TenantSlug, store: ControlStore, actor: ControlPlane.Actor) async throws -> PurgeReport {
        let tenant = try await store.requireTenant(slug)
        let names = try TenantNames(slug)
        var report = PurgeReport(
            tenant: slug.rawValue, databaseDropped: false, roleDropped: false, storageRemoved: false,
            archivesRemoved: 0, keysRemoved: 0, providerKeysRemoved: 0)
        if let server = tenant.server {
            try await withServerAdmin(server, store: store) { admin in
                report.databaseDropped = try await admin.databaseExists(names.database)
                try await admin.terminateConnections(to: names.database)
                try await admin.dropDatabase(names.database)
                try await admin.dropRole(names.role)
                report.roleDropped = true
            }
        }
        report.storageRemoved = try trees.remove(slug)
        for job in try await store.exportJobs(of: slug) where try trees.removeExportArchive(job: job) {
            report.archivesRemoved += 1
        }
        (report.keysRemoved, report.providerKeysRemoved) = try await store.finishPurge(slug)
        try await store.audit(
            actor, .tenantPurge, resourceId: slug.rawValue, succeeded: true,
            details: report.auditDetails)
        logger.notice("tenant purged", metadata: ["tenant": "\(slug)"])
        return report
    }

    /// Tenants made before provisioning made their storage directory (their
    /// first write used to) get it now: writes no longer make it.
    public func ensureStorageDirectories() async throws {
        let tenants = try await withControl { try await $0.tenants() }
        let store = ArtifactStore(root: storageRoot, logger: logger)
        for tenant in tenants where tenant.status == .active || tenant.status == .suspended {
            try await store.tenant(tenant.id).createDirectory()
        }
    }

    func withServerAdmin<Result: Sendable>(
        _ server: String, store: ControlStore, _ body: (ServerAdmin) async throws -> Result
    ) async throws -> Result {
        let adminURL = try await store.adminURL(ofServer: server, secrets: secrets, controlURL: controlURL)
        return try await DatabaseConnection.with(adminURL, logger: logger) { connection in
            try await body(ServerAdmin(connection: connection, logger: logger))
        }
    }
}
