import ControlPlane
import Core
import Logging
import Provisioner
import ServiceLifecycle

/// At start-up, finishes every tenant an interrupted process left
/// `provisioning`, then stays idle until shutdown (a service that returned
/// would stop the whole group).
struct ProvisioningReconciler: Service {
    let provisioner: Provisioner
    let logger: Logger

    func run() async throws {
        do {
            // A shutdown while the control database is still unreachable must
            // not wait for the pool to give up.
            let finished = try await cancelWhenGracefulShutdown {
                try await provisioner.resumeInterrupted(actor: ControlPlane.Actor("reconciler"))
            }
            if !finished.isEmpty {
                logger.info("finished interrupted provisioning", metadata: ["tenants": "\(finished.map(\.tenant.id))"])
            }
        } catch {
            logger.error("could not look for interrupted provisioning", metadata: ["error": "\(OperatorFailure(error).message)"])
        }
        try? await gracefulShutdown()
    }
}
