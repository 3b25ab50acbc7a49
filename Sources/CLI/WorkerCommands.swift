import ArgumentParser
import ArtifactStore
import Foundation
import Logging
import Runtime
import ServiceLifecycle
import UnixSignals

extension Tenantplane {
    struct Worker: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "worker",
            abstract: "Execute queued runs without serving HTTP.",
            discussion: """
                Executes runs as `serve` does (up to TENANTPLANE_MAX_INFLIGHT at once, \
                TENANTPLANE_TENANT_MAX_INFLIGHT of one tenant), for a separate process or machine. It is woken \
                by the control database (LISTEN) when a tenant gets runs, and reads the queue in full every \
                TENANTPLANE_WORKER_POLL. Any number of workers and servers may share the control database: each run is claimed \
                by one of them with a lease, and a run whose process died is taken over when its lease \
                (TENANTPLANE_RUN_LEASE) ends. SIGTERM or SIGINT stop claiming, cancel the runs in hand and give \
                their leases back so another process resumes them at once.
                """
        )

        @Option(
            name: [.customLong("max-inflight"), .customLong("concurrency")],
            help: "Runs to execute at once (default: TENANTPLANE_MAX_INFLIGHT, 256).")
        var maxInflight: Int?

        func run() async throws {
            try await reportingFailures {
                let context = try CommandContext(defaultLogLevel: .info)
                let services = try Runtime(settings: context.settings, logger: context.logger)
                    .workerServices(maxInflight: maxInflight)
                let group = ServiceGroup(
                    configuration: .init(
                        services: services.map { .init(service: $0) },
                        gracefulShutdownSignals: [.sigterm, .sigint], logger: context.logger))
                try await group.run()
            }
        }
    }

    /// Stores a file through the artifact store exactly as an upload is
    /// stored; `ops/bench artifacts` times it. Hidden: an operator has no use.
    struct StoreArtifact: AsyncParsableCommand {
        struct Stored: Encodable {
            let path: String
            let digest: String
            let size: Int
        }

        static let configuration = CommandConfiguration(
            commandName: "store-artifact", abstract: "Store a file as an artifact (benchmark aid).",
            shouldDisplay: false)

        @Option(name: .long) var root: String
        @Option(name: .long) var tenant: String
        @Option(name: .long) var run: String
        @Option(name: .long) var step: String
        @Option(name: .long) var name: String
        @Option(name: .long) var file: String

        func run() async throws {
            try await reportingFailures {
                guard let runID = UUID(uuidString: run) else { throw ValidationError("--run must be a UUID") }
                let artifacts = try ArtifactStore(root: root).tenant(tenant)
                try await artifacts.createDirectory()
                let stored = try await artifacts.writeArtifact(
                    run: runID, step: step, name: name, from: try FileChunks(path: file), limit: Int.max)
                try Output.json(Stored(path: stored.path, digest: stored.digest, size: stored.size))
            }
        }
    }
}
