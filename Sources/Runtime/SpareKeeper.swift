import ControlPlane
import Core
import Logging
import Provisioner
import ServiceLifecycle

/// `serve`'s warm-spare keeper: a pass every `interval`, and one at once
/// when this process claims a spare, each bringing every server to
/// `TENANTPLANE_WARM_SPARES` (see `WarmSpares`). A pass that finds nothing
/// to do costs two control queries and no admin session. After a failure
/// the keeper waits `backoff` (the control database or a server may be
/// down) instead of failing again every tick.
struct SpareKeeper: Service {
    let spares: WarmSpares
    let wakeups: SpareWakeups
    let logger: Logger
    var interval: Duration = .seconds(2)
    var backoff: Duration = .seconds(15)

    func run() async throws {
        let actor = ControlPlane.Actor("spares")
        try? await cancelWhenGracefulShutdown {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    while true {
                        wakeups.wake()
                        try await Task.sleep(for: interval)
                    }
                }
                group.addTask {
                    for await _ in wakeups.stream {
                        do {
                            for pass in try await spares.fill(onlyWhenNeeded: true, actor: actor) where pass.didWork {
                                logger.notice(
                                    "warm spares tended",
                                    metadata: [
                                        "server": "\(pass.server)", "created": "\(pass.created.count)",
                                        "retired": "\(pass.retired.count)", "settled": "\(pass.settled.count)",
                                        "note": "\(pass.note ?? "-")",
                                    ])
                            }
                        } catch is CancellationError {
                            return
                        } catch {
                            logger.error(
                                "could not tend the warm spares", metadata: ["error": "\(OperatorFailure(error).message)"])
                            try await Task.sleep(for: backoff)
                        }
                    }
                }
                try await group.next()
                group.cancelAll()
            }
        }
    }
}
