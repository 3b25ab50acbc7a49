import ArgumentParser
import Config
import ControlPlane
import Core

extension Tenantplane {
    struct Server: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "server",
            abstract: "PostgreSQL servers that hold tenant databases.",
            subcommands: [Add.self, List.self]
        )
    }
}

extension Tenantplane.Server {
    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add",
            abstract: "Register a database server.",
            discussion: """
                The URL's role must be able to create roles and databases. Its password is stored encrypted \
                under TENANTPLANE_MASTER_KEY; the stored URL holds none. The server is checked before it is \
                registered.
                """
        )

        @Argument(help: "Server name (a-z, 0-9, '_', '-').") var name: String
        @Option(name: .long, help: "Admin URL: postgres://user:password@host:port/db?sslmode=…") var url: String
        @Option(name: .long, help: "How many tenants it may hold.") var capacity: Int = 5000
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await reportingFailures {
                let context = try CommandContext()
                let adminURL = try PostgresURL(url)
                try await DatabaseConnection.with(adminURL, logger: context.logger) { _ in }
                let server = try await context.withControl { store in
                    try await store.audited(context.actor, action: "server.add", resourceType: "database_server", resourceId: name) {
                        try await store.addServer(name: name, adminURL: adminURL, capacity: capacity, secrets: context.secrets)
                    }
                }
                if output.json { try Output.json(server) } else { Output.line("added server \(server.name)") }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List database servers and their free capacity.")
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await reportingFailures {
                let context = try CommandContext()
                let servers = try await context.withControl { try await $0.servers() }
                if output.json { return try Output.json(servers) }
                Output.table(
                    ["NAME", "TENANTS", "CAPACITY", "ACTIVE", "TEMPLATE", "URL"],
                    servers.map {
                        [
                            $0.name, String($0.tenantCount), String($0.capacity), $0.isActive ? "yes" : "no",
                            $0.templateVersion.map(String.init) ?? "-", $0.adminUrl,
                        ]
                    })
            }
        }
    }
}
