import ArtifactStore
import ControlPlane
import Core
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import TenantRouter

/// At start-up and then every `interval`: removes the files of each active
/// tenant that no `artifacts` row refers to and that have not changed for
/// `grace` (an output a crash left between its write and its row, an upload
/// whose row was never written), and the store's own leftovers of a crash
/// (`.tmp-*`, `.aside-*`, digest sidecars without their file). One tenant at
/// a time; a tenant with nothing old enough costs no database connection, and
/// one that fails is logged and swept next time, and one whose lock is held
/// (an export is reading its files) is swept next time too.
struct ArtifactSweeper: Service {
    let control: ControlPool
    let directory: TenantDirectory
    let pools: TenantPools
    let store: ArtifactStore
    let grace: Duration
    let logger: Logger
    var interval: Duration = .seconds(3600)

    func run() async throws {
        await Periodic(interval: interval, logger: logger).run([
            .init(failure: "could not sweep the artifact store") {
                let removed = try await sweepAll()
                return removed > 0 ? "swept \(removed) unreferenced files" : nil
            }
        ])
    }

    func sweepAll() async throws -> Int {
        let tenants = try await control.run { try await $0.tenants() }.filter { $0.status == .active }
        var removed = 0
        for tenant in tenants {
            try Task.checkCancellation()
            do {
                removed += try await sweepUnlessBusy(tenant.id)
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                logger.warning(
                    "could not sweep a tenant's files; trying again next time",
                    metadata: ["tenant": "\(tenant.id)", "error": "\(OperatorFailure(error).message)"])
            }
        }
        return removed
    }

    /// Sweeps the tenant only while nobody holds its lock: an export holds
    /// it from its snapshot to its last archived file, and a file its
    /// snapshot references may have lost its row since (the sweep would see
    /// it as unreferenced). A busy tenant is swept next time.
    private func sweepUnlessBusy(_ tenantID: String) async throws -> Int {
        let slug = try TenantSlug(tenantID)
        return try await control.run { store in
            try await store.withTenantLockIfFree(slug) { try await sweep(tenantID) } ?? 0
        }
    }

    private func sweep(_ tenantID: String) async throws -> Int {
        let files = try store.tenant(tenantID)
        let cutoff = Date().addingTimeInterval(-Double(grace.components.seconds))
        let candidates = try await files.sweepCandidates(changedBefore: cutoff)
        let stored = candidates.filter { $0.kind == .stored }.map(\.path)
        var referenced: Set<String> = []
        if !stored.isEmpty {
            let identity = try await directory.identity(of: tenantID, actor: "sweeper")
            let logger = self.logger
            // Background work: behind requests, within the workers' share.
            referenced = try await pools.withConnection(for: identity, priority: .worker) { connection in
                let rows = try await connection.query(
                    "SELECT DISTINCT file_path FROM artifacts WHERE file_path = ANY(\(stored))", logger: logger)
                return Set(try await rows.collect().map { try $0.decode(String.self) })
            }
        }
        var removed = 0
        for candidate in candidates where candidate.kind == .leftover || !referenced.contains(candidate.path) {
            try await files.sweep(candidate)
            removed += 1
        }
        return removed
    }
}
