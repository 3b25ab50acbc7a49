import ArgumentParser
import Backup
import Config
import ControlPlane
import Core
import Foundation
import Provisioner
import Runtime

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
                registered, and the answer says whether it can take part in online tenant moves (logical \
                replication: wal_level = logical, a superuser admin, free replication slots, WAL senders \
                and logical replication workers), and if not, why not.

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
                let backup = try BackupContext(settings: context.settings, logger: context.logger)
                let status = try await TenantMover(context: backup).replicationStatus(of: [server])[server.name]
                if output.json { return try Output.json(ServerListing(server: server, replication: status)) }
                Output.line("added server \(server.name); online moves: \(ServerListing.describe(status))")
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
            abstract: "List database servers, their free capacity and whether they allow online moves.",
            discussion: """
                ONLINE MOVES says whether a server can be the source and the target of an online `tenant move` \
                (and how many it can publish at once, each taking three replication slots and WAL senders), \
                or why not. A replication slot on a server that no open move accounts for is printed as a \
                warning: an abandoned slot holds WAL until the server's disk is full.
                """)
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await reportingFailures {
                let context = try CommandContext()
                let servers = try await context.withControl { try await $0.servers() }
                let backup = try BackupContext(settings: context.settings, logger: context.logger)
                let statuses = try await TenantMover(context: backup).replicationStatus(of: servers)
                let listings = servers.map { ServerListing(server: $0, replication: statuses[$0.name]) }
                if output.json { return try Output.json(listings) }
                Output.table(
                    ["NAME", "TENANTS", "SPARES", "CAPACITY", "ACTIVE", "TEMPLATE", "ONLINE MOVES", "URL"],
                    listings.map {
                        [
                            $0.server.name, String($0.server.tenantCount), String($0.server.spareCount),
                            String($0.server.capacity),
                            $0.server.isActive ? "yes" : "no", $0.server.templateVersion.map(String.init) ?? "-",
                            ServerListing.describe($0.replication), $0.server.adminUrl,
                        ]
                    })
                for listing in listings {
                    for slot in listing.replication?.unknownSlots ?? [] {
                        Output.line(
                            "warning: server \(listing.server.name) holds replication slot \(slot.name) (database \(slot.database ?? "-"), \(slot.active ? "active" : "inactive"), retaining \(Output.bytes(slot.retainedBytes)) of WAL) that no open tenant move accounts for")
                    }
                }
            }
        }
    }
}

/// A server as `server add` and `server list` show it: its record and whether
/// it can take part in online moves.
struct ServerListing: Encodable {
    let server: DatabaseServer
    let replication: ServerReplicationStatus?

    private enum Keys: String, CodingKey { case onlineMoves }

    func encode(to encoder: any Encoder) throws {
        try server.encode(to: encoder)
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(replication, forKey: .onlineMoves)
    }

    static func describe(_ status: ServerReplicationStatus?) -> String {
        guard let status else { return "unknown" }
        guard status.onlineMoves else { return "no: \(status.reason ?? "unknown")" }
        return "yes (\(status.concurrentMoves) at once as source)"
    }
}
