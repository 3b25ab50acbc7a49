import Config
import LLMProviders
import ServiceLifecycle

/// Keeps the provider gateway's HTTP client for the life of the process and
/// shuts it down after the workers that use it have stopped.
public struct GatewayService: Service {
    let gateway: LLMGateway

    public init(gateway: LLMGateway) {
        self.gateway = gateway
    }

    public func run() async throws {
        try? await gracefulShutdown()
        try await gateway.shutdown()
    }
}

extension RunWorker.Options {
    /// The worker's options as the process is configured.
    public init(settings: Settings, concurrency: Int? = nil) {
        self.init(
            concurrency: concurrency ?? settings.workers, lease: settings.runLease, poll: settings.workerPoll,
            providerTimeout: settings.providerTimeout, providerRetries: settings.providerRetries,
            providerKey: { settings.providerKey(for: $0) })
    }
}
