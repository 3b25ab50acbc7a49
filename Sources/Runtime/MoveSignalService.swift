import ControlPlane
import Core
import Foundation
import Logging
import ServiceLifecycle
import TenantRouter

/// Follows online moves in this process: holds a moving tenant's requests
/// when told, sends them to the new database at the switch, lets them go if
/// the move gives up its fence, and acknowledges each signal, so the mover
/// knows when every live process has followed.
struct MoveSignalService: Service {
    let listener: MoveSignalListener
    let processID: UUID
    let pools: TenantPools
    let control: ControlPool
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await listener.listen { signal in await follow(signal) }
        }
    }

    private func follow(_ signal: MoveSignal) async {
        switch signal.kind {
        case .hold:
            await pools.holdForMove(signal.tenant, pause: .milliseconds(max(0, signal.holdMilliseconds ?? 0)))
        case .switch:
            guard let from = signal.from.flatMap({ try? PostgresURL($0) }), let to = signal.to.flatMap({ try? PostgresURL($0) })
            else {
                logger.warning("a move's switch signal named no database; key caches will follow", metadata: ["tenant": "\(signal.tenant)"])
                pools.releaseAfterMove(signal.tenant)
                return
            }
            pools.switchAfterMove(signal.tenant, from: from, to: to)
        case .release:
            pools.releaseAfterMove(signal.tenant)
        }
        do {
            try await control.run { try await $0.acknowledge(signal, process: processID) }
        } catch {
            logger.warning(
                "could not acknowledge a move signal; the mover waits for it a while",
                metadata: ["tenant": "\(signal.tenant)", "error": "\(OperatorFailure(error).message)"])
        }
    }
}
