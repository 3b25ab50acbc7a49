import ArgumentParser
import Hummingbird
import Logging
import Runtime

extension Tenantplane {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "serve",
            abstract: "Run the HTTP server (admin API, tenant API, health, metrics).",
            discussion: """
                Needs TENANTPLANE_CONTROL_URL, TENANTPLANE_MASTER_KEY and TENANTPLANE_ADMIN_TOKEN. SIGTERM or \
                SIGINT stop accepting connections, let requests in flight finish, then close the pools.
                """
        )

        @Option(name: .long, help: "Address to listen on.") var host = "127.0.0.1"
        @Option(name: .long, help: "Port to listen on.") var port = 8080

        func run() async throws {
            try await reportingFailures {
                let context = try CommandContext(defaultLogLevel: .info)
                let app = try Runtime(settings: context.settings, logger: context.logger).server(host: host, port: port)
                try await app.runService()
            }
        }
    }
}
