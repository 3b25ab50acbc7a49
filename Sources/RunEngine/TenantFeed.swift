import ArtifactStore
import ControlPlane
import Core
import Foundation
import Logging
import Synchronization
import TenantData
import TenantRouter

/// One tenant's runs in this process: claims them in batches as slots come
/// free, executes each in its own task, and ends when the tenant has nothing
/// left here — taking the tenant off the queue when nothing is left anywhere.
final class TenantFeed: Sendable {
    let tenantID: String
    /// Fired by a run of this tenant ending and by a new wake-up for it.
    let signal = Signal()
    private let inflight = Atomic<Int>(0)
    private let worker: RunWorker

    init(tenantID: String, worker: RunWorker) {
        self.tenantID = tenantID
        self.worker = worker
    }

    private var logger: Logger { worker.logger }
    private var options: RunWorker.Options { worker.options }

    func run() async {
        let executor: RunExecutor
        do {
            let tenant = try await worker.directory.identity(of: tenantID, actor: "worker")
            executor = RunExecutor(
                tenant: tenant, artifacts: try worker.store.tenant(tenantID), pools: worker.pools,
                control: worker.control, secrets: worker.secrets, gateway: worker.gateway,
                providerKey: options.providerKey,
                providerTimeout: options.providerTimeout, retriesPerCall: options.providerRetries,
                owner: worker.owner, logger: logger)
        } catch let error as TenantAccessError where error == .suspended || error.code == "tenant_not_serving" {
            // Suspended or gone: its runs wait in its database; `tenant resume`
            // queues the tenant again.
            _ = try? await dequeue(whenIdle: nil)
            _ = worker.retire(self, restingFor: nil, mark: nil)
            return
        } catch {
            failed(error)
            _ = worker.retire(self, restingFor: .seconds(1), mark: nil)
            return
        }
        await withDiscardingTaskGroup { runs in
            while !Task.isCancelled {
                if inflight.load(ordering: .relaxed) == 0 {
                    // Nothing in flight: a wake-up still pending (a run that ended after the
                    // check below but fired after it) is answered by the claim that follows.
                    // Left pending, it made retire refuse for ever: claim, dequeue, retire, again.
                    signal.clear()
                }
                if inflight.load(ordering: .relaxed) < options.tenantMaxInflight {
                    let claimed: Int
                    let asked: Int
                    do {
                        (asked, claimed) = try await claim(with: executor, into: &runs)
                    } catch {
                        if Task.isCancelled { return }
                        failed(error)
                        if inflight.load(ordering: .relaxed) > 0 {
                            await signal.wait()
                        } else if worker.retire(self, restingFor: options.sweep, mark: 0) {
                            // Taken up again by the next sweep (no mark is 0).
                            return
                        }
                        continue
                    }
                    if claimed == asked { continue }
                }
                if inflight.load(ordering: .relaxed) > 0 {
                    await signal.wait()
                    continue
                }
                do {
                    switch try await dequeue(whenIdle: executor) {
                    case .done:
                        if worker.retire(self, restingFor: nil, mark: nil) { return }
                    case .rest(let duration, let mark):
                        if worker.retire(self, restingFor: duration, mark: mark) { return }
                    case .queuedAgain:
                        // A run came while this feeder looked, perhaps after
                        // its claim: claim again rather than wait for a sweep.
                        continue
                    }
                } catch {
                    if Task.isCancelled { return }
                    failed(error)
                    if worker.retire(self, restingFor: options.sweep, mark: 0) { return }
                }
            }
        }
    }

    /// Waits for slots, claims up to that many runs and starts them; how many
    /// it asked for and how many it got (fewer: the tenant has no more right now).
    private func claim(with executor: RunExecutor, into runs: inout DiscardingTaskGroup) async throws -> (Int, Int) {
        let room = options.tenantMaxInflight - inflight.load(ordering: .relaxed)
        let granted = await worker.slots.acquire(upTo: min(room, RunWorker.claimBatch))
        guard granted > 0 else { throw CancellationError() }
        let owner = worker.owner
        let lease = options.lease
        let claimed: [ClaimedRun]
        do {
            claimed = try await executor.store { try await $0.claimRuns(owner: owner, lease: lease, limit: granted) }
        } catch {
            worker.slots.release(granted)
            throw error
        }
        worker.slots.release(granted - claimed.count)
        for run in claimed {
            inflight.add(1, ordering: .relaxed)
            runs.addTask {
                await self.execute(run, executor: executor)
                self.inflight.subtract(1, ordering: .relaxed)
                self.worker.slots.release(1)
                self.signal.fire()
            }
        }
        return (granted, claimed.count)
    }

    /// Executes one run while its lease holds: a lost lease (paused,
    /// cancelled, taken over) cancels it.
    private func execute(_ run: ClaimedRun, executor: RunExecutor) async {
        let runLogger = {
            var logger = self.logger
            logger[metadataKey: "tenant"] = "\(tenantID)"
            logger[metadataKey: "run"] = "\(run.id)"
            return logger
        }()
        runLogger.debug("run claimed")
        let lost = worker.leases.hold(run.id, of: executor)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    try await executor.execute(run)
                } catch is CancellationError {
                } catch {
                    if Task.isCancelled { return }
                    // Left running under this process's lease, which now ends
                    // unrenewed: the run is claimed again after it.
                    runLogger.warning(
                        "run work failed; it is taken up again when its lease ends",
                        metadata: ["error": "\(OperatorFailure(error).message)"])
                }
            }
            group.addTask { await lost.wait() }
            await group.next()
            group.cancelAll()
        }
        worker.leases.drop(run.id, of: tenantID)
        if Task.isCancelled { worker.interrupted(executor.tenant) }
        runLogger.debug("run released")
    }

    /// What a feeder with nothing left to claim found.
    private enum Drained {
        /// The tenant is off the queue.
        case done
        /// Its unfinished runs are another process's: leave it alone that long
        /// unless it is queued again.
        case rest(Duration, mark: Int64)
        /// Its mark moved while this feeder looked.
        case queuedAgain
    }

    /// Nothing of this tenant runs here and nothing could be claimed: takes
    /// the tenant off the queue if nothing is left anywhere (unless it was
    /// queued again meanwhile), or says how long to leave it alone.
    private func dequeue(whenIdle executor: RunExecutor?) async throws -> Drained {
        let tenantID = self.tenantID
        // Read before the runs are counted: a run queued after the count
        // bumps the mark past it, and the mark stays.
        guard let mark = try await worker.control.run({ try await $0.queueMark(of: tenantID) }) else { return .done }
        if let executor {
            let unfinished = try await executor.store { try await $0.unfinishedRuns() }
            if unfinished.pending > 0 {
                // Locked by another process's claim a moment ago: the next sweep looks again.
                return .rest(options.sweep, mark: mark)
            }
            if unfinished.running > 0 {
                // Leased elsewhere: look again once such a lease could have ended.
                return .rest(options.lease, mark: mark)
            }
        }
        let removed = try await worker.control.run { try await $0.dequeueRuns(of: tenantID, mark: mark) }
        return removed || executor == nil ? .done : .queuedAgain
    }

    private func failed(_ error: any Error) {
        logger.warning(
            "run work for a tenant failed; it stays queued",
            metadata: ["tenant": "\(tenantID)", "error": "\(OperatorFailure(error).message)"])
    }
}
