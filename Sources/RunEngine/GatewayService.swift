import ArtifactStore
import ControlPlane
import Core
import LLMProviders
import Logging
import ServiceLifecycle
import TenantRouter

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

extension RunWorker {
    /// The workers of a process and the provider gateway they share, in the
    /// order a service group should start them (and stop them in reverse).
    public static func services(
        options: Options, control: ControlPool, controlURL: PostgresURL, secrets: SecretBox, pools: TenantPools,
        store: ArtifactStore, logger: Logger
    ) -> [any Service] {
        let gateway = LLMGateway(
            policy: RetryPolicy(maxRetries: options.providerRetries), maxConnectionsPerHost: options.maxInflight,
            logger: logger)
        let worker = RunWorker(
            options: options, control: control, secrets: secrets,
            listener: RunQueueListener(url: controlURL, logger: logger),
            directory: TenantDirectory(control: control, secrets: secrets), pools: pools, store: store,
            gateway: gateway, logger: logger)
        return [GatewayService(gateway: gateway), worker]
    }
}
