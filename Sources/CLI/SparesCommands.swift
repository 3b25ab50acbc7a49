import ArgumentParser
import ControlPlane
import Core
import Foundation
import Provisioner
import Runtime

extension Tenantplane {
    struct Spares: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "spares",
            abstract: "Warm spares: databases kept created and migrated, handed to new tenants by renaming them.",
            discussion: """
                Each active server keeps TENANTPLANE_WARM_SPARES (default 4) role-and-database pairs named \
                tp__spare_…, copied from its template and checked at this binary's tenant migrations. `tenant \
                create` claims one in one admin transaction (renames, a new password, CONNECT for the tenant \
                alone) instead of copying the template; when none is ready it copies the template and says so. \
                A spare holds no tenant data and its role cannot log in. Spares count against a server's \
                capacity. `serve` refills them in the background; these commands do the same by hand.
                """,
            subcommands: [Status.self, Fill.self, Drain.self]
        )
    }
}

extension Tenantplane.Spares {
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status", abstract: "Each server's spares: ready, stale, being filled, claimed or retired.")
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await reportingFailures {
                let context = try CommandContext()
                let status = try await WarmSpares(provisioner: try context.provisioner()).status()
                if output.json { return try Output.json(status) }
                Output.table(
                    ["SERVER", "TARGET", "READY", "STALE", "FILLING", "CLAIMING", "RETIRING", "ROOM"],
                    status.map {
                        [
                            $0.server, String($0.target), String($0.ready), String($0.stale), String($0.filling),
                            String($0.claiming), String($0.retiring), String($0.roomForSpares),
                        ]
                    })
            }
        }
    }

    struct Fill: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "fill",
            abstract: "Bring each server's spares to the target now: settle cut-short work, retire stale ones, fill.",
            discussion: """
                One spare at a time per server, under the server's spare lock (a running `serve` tending the \
                same server makes this a no-op that says so). Fills never take a server past its capacity, \
                tenants and spares together. Audited as server.spares.fill.
                """)
        @Option(name: .long, help: "Only this server.") var server: String?
        @Option(name: .long, help: "Spares to keep (default: TENANTPLANE_WARM_SPARES).") var count: Int?
        @OptionGroup var output: JSONFlag

        func validate() throws {
            if let count, !(0...100).contains(count) { throw ValidationError("--count must be 0-100") }
        }

        func run() async throws {
            try await reportingFailures {
                let context = try CommandContext()
                let passes = try await WarmSpares(provisioner: try context.provisioner())
                    .fill(server: server, target: count, actor: context.actor)
                try report(passes, json: output.json)
            }
        }
    }

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "drain",
            abstract: "Drop every spare not being claimed (before retiring a server, or to turn spares off).",
            discussion: """
                A running `serve` with TENANTPLANE_WARM_SPARES above 0 fills them again; set it to 0 first to \
                keep them off. Audited as server.spares.drain.
                """)
        @Option(name: .long, help: "Only this server.") var server: String?
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await reportingFailures {
                let context = try CommandContext()
                let passes = try await WarmSpares(provisioner: try context.provisioner())
                    .drain(server: server, actor: context.actor)
                try report(passes, json: output.json)
            }
        }
    }
}

private func report(_ passes: [WarmSpares.Pass], json: Bool) throws {
    if json { return try Output.json(passes) }
    for pass in passes {
        var parts = ["created \(pass.created.count)", "retired \(pass.retired.count)"]
        if !pass.settled.isEmpty { parts.append("settled \(pass.settled.count) cut short") }
        Output.line("server \(pass.server): \(parts.joined(separator: ", "))")
        if let note = pass.note { Output.note("tenantplane: note: \(note)") }
    }
}

extension CommandContext {
    func provisioner() throws -> Provisioner { try Provisioner(settings: settings, logger: logger) }
}
