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
        while !Task.isShuttingDownGracefully {
            do {
                let abandoned = try await cancelWhenGracefulShutdown {
                    try await control.run { try await $0.failAbandonedJobs(silentFor: AdminJobRunner.abandonedAfter) }
                }
                if abandoned > 0 { logger.notice("admin jobs of a stopped server marked failed", metadata: ["jobs": "\(abandoned)"]) }
            } catch is CancellationError {
                return
            } catch {
                logger.error("could not look for abandoned admin jobs", metadata: ["error": "\(OperatorFailure(error).message)"])
            }
            do {
                let recovered = try await cancelWhenGracefulShutdown {
                    try await mover.recoverAbandoned() + importer.abandonInterrupted().map { "\($0): interrupted import dropped" }
                }
                if !recovered.isEmpty { logger.notice("recovered interrupted backup work", metadata: ["what": "\(recovered)"]) }
            } catch is CancellationError {
                return
            } catch {
                logger.warning("could not look for interrupted moves", metadata: ["error": "\(OperatorFailure(error).message)"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }
}
