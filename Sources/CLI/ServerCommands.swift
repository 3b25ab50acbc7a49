import ArgumentParser
import Config
import ControlPlane
import Core
import Foundation

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

                Keep the password off the command line, where `ps` and the shell history would show it: give \
                the URL without it and pipe the password in with --password-stdin, or put the whole URL in a \
                file readable only by you and pass --url-file. A password inside --url still works, with a warning.
                """
        )

        @Argument(help: "Server name (a-z, 0-9, '_', '-').") var name: String
        @Option(name: .long, help: "Admin URL: postgres://user@host:port/db?sslmode=… (password: see --password-stdin).")
        var url: String?
        @Option(name: .customLong("url-file"), help: "A file holding the admin URL, password included.")
        var urlFile: String?
        @Flag(name: .customLong("password-stdin"), help: "Read the admin password from standard input (one line).")
        var passwordFromStandardInput = false
        @Option(name: .long, help: "How many tenants it may hold.") var capacity: Int = DatabaseServer.defaultCapacity
        @OptionGroup var output: JSONFlag

        func validate() throws {
            guard (url == nil) != (urlFile == nil) else { throw ValidationError("give exactly one of --url and --url-file") }
        }

        func run() async throws {
            try await reportingFailures {
                let context = try CommandContext()
                let adminURL = try adminURL()
                let server = try await context.withControl { store in
                    try await store.addServer(
                        name: name, adminURL: adminURL, capacity: capacity, secrets: context.secrets, actor: context.actor)
                }
                if output.json { try Output.json(server) } else { Output.line("added server \(server.name)") }
            }
        }

        private func adminURL() throws -> PostgresURL {
            var adminURL: PostgresURL
            if let urlFile {
                guard let data = FileManager.default.contents(atPath: urlFile) else {
                    throw ValidationError("cannot read \(urlFile)")
                }
                adminURL = try PostgresURL(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
            } else {
                adminURL = try PostgresURL(url ?? "")
                if adminURL.password != nil {
                    Output.note(
                        "tenantplane: warning: the password in --url is visible to ps and kept in shell history; "
                            + "use --password-stdin or --url-file")
                }
            }
            if passwordFromStandardInput {
                guard let line = readLine(strippingNewline: true), !line.isEmpty else {
                    throw ValidationError("--password-stdin: no password on standard input")
                }
                adminURL.password = line
            }
            return adminURL
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
