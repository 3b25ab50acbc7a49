import ControlPlane
import Core
import Logging
import Provisioner
import ServiceLifecycle

/// At start-up, finishes every tenant an interrupted process left
/// `provisioning`; then, at start and every `interval`, finishes interrupted
/// deletes and purges the tenants whose grace period is over. One tenant that
/// fails does not hold up the others (see `Provisioner.reconcileDeletions`).
struct ProvisioningReconciler: Service {
    let provisioner: Provisioner
    let logger: Logger
    var interval: Duration = .seconds(30)

    func run() async throws {
        let actor = ControlPlane.Actor("reconciler")
        do {
            // A shutdown while the control database is still unreachable must
            // not wait for the pool to give up.
            let finished = try await cancelWhenGracefulShutdown {
                try await provisioner.ensureStorageDirectories()
                return try await provisioner.resumeInterrupted(actor: actor)
            }
            if !finished.isEmpty {
                logger.info("finished interrupted provisioning", metadata: ["tenants": "\(finished.map(\.tenant.id))"])
            }
        } catch {
            logger.error("could not look for interrupted provisioning", metadata: ["error": "\(OperatorFailure(error).message)"])
        }
        await Periodic(interval: interval, logger: logger).run([
            .init(failure: "could not reconcile deletions") {
                let done = try await provisioner.reconcileDeletions(actor: actor)
                return done.isEmpty ? nil : "deletions reconciled: \(done)"
            }
        ])
    }
}
