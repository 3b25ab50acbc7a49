import Backup
import ControlPlane
import Core
import HTTPAPI
import Logging
import ServiceLifecycle

/// At start-up and then every minute: rolls back or finishes moves, lifts
/// write fences and drops half-made imports that a dead process left behind
/// (their tenant's lock is free), and marks failed the admin jobs whose
/// process stopped (no heartbeat for `AdminJobRunner.abandonedAfter`).
struct BackupReconciler: Service {
    let mover: TenantMover
    let importer: TenantImporter
    let control: ControlPool
    let logger: Logger
    var interval: Duration = .seconds(60)

    func run() async throws {
        let control = self.control
        let mover = self.mover
        let importer = self.importer
        await Periodic(interval: interval, logger: logger).run([
            .init(failure: "could not look for abandoned admin jobs") {
                let abandoned = try await control.run {
                    try await $0.failAbandonedJobs(silentFor: AdminJobRunner.abandonedAfter)
                }
                return abandoned > 0 ? "admin jobs of a stopped server marked failed: \(abandoned)" : nil
            },
            .init(failure: "could not look for interrupted moves, fences and imports") {
                let recovered =
                    try await mover.recoverAbandoned()
                    + importer.abandonInterrupted().map { "\($0): interrupted import dropped" }
                return recovered.isEmpty ? nil : "recovered interrupted backup work: \(recovered)"
            },
        ])
    }
}
