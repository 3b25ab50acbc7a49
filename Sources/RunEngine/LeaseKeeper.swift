import Foundation
import Logging
import Synchronization
import TenantData
import TenantRouter

/// The runs this process holds, by tenant, and the one loop that renews their
/// leases: every third of the lease, one statement per tenant database for
/// all of that tenant's runs, the tenants side by side. A run whose lease
/// could not be renewed (paused, cancelled, taken over) is told so through
/// its `lost` signal and stops.
final class LeaseKeeper: Sendable {
    private struct Held {
        var executor: RunExecutor
        var runs: [UUID: Signal]
    }

    private let held = Mutex<[String: Held]>([:])
    private let owner: String
    private let lease: Duration
    private let logger: Logger

    init(owner: String, lease: Duration, logger: Logger) {
        self.owner = owner
        self.lease = lease
        self.logger = logger
    }

    /// Takes charge of a claimed run; its signal fires when the lease is lost.
    func hold(_ run: UUID, of executor: RunExecutor) -> Signal {
        let lost = Signal()
        held.withLock { held in
            held[executor.tenant.tenantID, default: Held(executor: executor, runs: [:])].runs[run] = lost
        }
        return lost
    }

    func drop(_ run: UUID, of tenantID: String) {
        held.withLock { held in
            held[tenantID]?.runs[run] = nil
            if held[tenantID]?.runs.isEmpty == true { held[tenantID] = nil }
        }
    }

    /// Renews until cancelled.
    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: lease / 3)
            if Task.isCancelled { return }
            await renewAll()
        }
    }

    func renewAll() async {
        let snapshot = held.withLock { $0 }
        let owner = self.owner
        let lease = self.lease
        await withDiscardingTaskGroup { group in
            for (tenantID, tenant) in snapshot {
                group.addTask {
                    let runs = Array(tenant.runs.keys)
                    do {
                        let kept = try await tenant.executor.store {
                            try await $0.renewLeases(runs: runs, owner: owner, lease: lease)
                        }
                        for (run, lost) in tenant.runs where !kept.contains(run) { lost.fire() }
                    } catch {
                        // Tried again in a third of the lease; a lease that
                        // ends meanwhile is found lost by the next write.
                        self.logger.warning(
                            "could not renew run leases", metadata: ["tenant": "\(tenantID)", "runs": "\(runs.count)"])
                    }
                }
            }
        }
    }
}
