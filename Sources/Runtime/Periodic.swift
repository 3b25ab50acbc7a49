import Core
import Logging
import ServiceLifecycle

/// The loop every reconciler runs: each pass at once and then every
/// `interval`, until the graceful shutdown, which also cuts a pass or a wait
/// short. A pass that fails is logged (`failure`, with the error) and the next
/// one runs on time.
struct Periodic {
    let interval: Duration
    let logger: Logger

    /// One pass: what it did, to log at notice level when not empty.
    struct Pass {
        let failure: String
        let work: @Sendable () async throws -> String?
    }

    func run(_ passes: [Pass]) async {
        while !Task.isShuttingDownGracefully {
            for pass in passes {
                do {
                    if let done = try await cancelWhenGracefulShutdown(pass.work) { logger.notice("\(done)") }
                } catch is CancellationError {
                    return
                } catch {
                    logger.error("\(pass.failure)", metadata: ["error": "\(OperatorFailure(error).message)"])
                }
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }
}
