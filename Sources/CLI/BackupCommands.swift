import ArgumentParser
import Backup
import ControlPlane
import Core
import Foundation
import Runtime

extension Tenantplane.Tenant {
    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "export",
            abstract: "Write one tenant's database, artifacts and manifest to a single tar archive.",
            discussion: """
                The archive is plain tar: database.dump (pg_dump --format=custom; pg_restore reads it), \
                artifacts/… (the files the dumped rows reference) and manifest.json (tenant record without \
                secrets, snapshot time, schema version and migration checksums, size and sha256 of every \
                member). The tenant's reads and writes go on throughout: the dump is one consistent snapshot, \
                stored files are write-once, and the archive holds exactly the files that snapshot's rows \
                reference, each checked against its recorded digest (files written since are the next \
                export's). FILE must not exist; it appears only once complete.
                """
        )
        @Argument(help: "Tenant id.") var slug: String
        @Option(name: .long, help: "Archive to write (must not exist).") var out: String
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await reportingFailures {
                let slug = try TenantSlug(slug)
                let context = try CommandContext()
                let backup = try BackupContext(settings: context.settings, logger: context.logger)
                let report = try await TenantExporter(context: backup).export(
                    slug, to: out, actor: context.actor, progress: Output.progress(quiet: output.json))
                if output.json { return try Output.json(report) }
                Output.line(
                    "exported \(report.tenant) to \(report.file): \(Output.bytes(report.bytes)) (database \(Output.bytes(report.databaseBytes)), \(report.artifacts) artifacts \(Output.bytes(report.artifactBytes))), schema version \(report.schemaVersion), as of \(report.snapshotAt.formatted(.iso8601)) with no write pause, \(report.durationMilliseconds) ms in all")
            }
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Create a tenant from an export archive.",
            discussion: """
                Every member is checked against the manifest's sizes and sha256 digests, and the manifest's \
                schema against this binary's tenant migrations, before anything is created; a damaged, \
                tampered or unsafe archive (paths leaving the archive, links) is refused with nothing created. \
                Then a new role and database (on --server, or the server with the most free capacity), the \
                restore, any newer migrations, the artifacts, and the tenant is active. API keys are not \
                carried over: issue new ones with `tenantplane tenant key create`.

                An archive is the tenant's own data and is treated as untrusted: its dump is restored, and \
                everything else inside the new database runs, logged in as the new tenant's role, never as \
                the server's admin; every artifact row must name a file of the archive with its recorded \
                digest. Exports carry an HMAC of their manifest under a key derived from the master key: \
                the import says whether this deployment made the archive, and --require-signed refuses \
                archives it did not make (or that were edited since).
                """
        )
        @Argument(help: "Archive written by tenant export or backup --all.") var file: String
        @Flag(name: .customLong("require-signed"), help: "Refuse an archive this deployment did not sign.")
        var requireSigned = false
        @Option(name: .customLong("as"), help: "Tenant id to import as (default: the archive's).") var slug: String?
        @Option(name: .long, help: "Database server to place it on.") var server: String?
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await reportingFailures {
                let slug = try slug.map { try TenantSlug($0) }
                let context = try CommandContext()
                let backup = try BackupContext(settings: context.settings, logger: context.logger)
                let report = try await TenantImporter(context: backup).importArchive(
                    file, as: slug, server: server, requireSigned: requireSigned, actor: context.actor,
                    progress: Output.progress(quiet: output.json))
                if output.json { return try Output.json(report) }
                let forward = report.migratedForward.isEmpty ? "" : ", migrated forward: \(report.migratedForward.joined(separator: ", "))"
                Output.line(
                    "imported \(report.sourceTenant) as \(report.tenant) on server \(report.server) at schema version \(report.schemaVersion) (archive: \(report.archiveSchemaVersion)\(forward)), \(report.artifacts) artifacts, \(report.signedByThisDeployment ? "signed by this deployment" : "not signed by this deployment"), \(report.durationMilliseconds) ms")
                Output.note("tenantplane: API keys are not carried over; issue one with: tenantplane tenant key create \(report.tenant)")
            }
        }
    }

    struct Move: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "move",
            abstract: "Move a tenant's database to another database server.",
            discussion: """
                Online (the default, where both servers allow it; `server list` says): the target database is \
                built from the tenant migrations, the tenant's tables are published on the old server and \
                subscribed to on the new one (logical replication: an initial copy, then streaming), and \
                writes go on meanwhile. Once the target has caught up, every serving process holds the \
                tenant's requests for at most TENANTPLANE_MOVE_PAUSE (default 1 s) while the old database \
                refuses writes, the target confirms the last change, sequences are carried over and row \
                counts compared; then routing switches and the held requests go to the new database. The \
                subscription, replication slots, publication and the move's replication role are dropped, \
                and the old database once every live process has acknowledged the switch. A tenant whose \
                schema is not the template's (run `migrate tenants` first, or it has tables of its own) is \
                refused: use --offline.

                --offline (and the fallback when a server cannot replicate): the tenant's writes get 503 \
                with Retry-After while its database is dumped and restored (reads go on).

                Either way the copy is checked (row counts per table, artifact digests) before the switch, \
                a failure before the switch leaves the tenant on its old server, active, and a move cut \
                short (crash, kill) is rolled back or finished by running this command again, or by `serve`.
                """
        )
        @Argument(help: "Tenant id.") var slug: String
        @Option(name: .long, help: "Target database server (see: tenantplane server list).") var to: String
        @Flag(name: .long, help: "Move by dump and restore, pausing writes for the copy (no replication).")
        var offline = false
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await reportingFailures {
                let slug = try TenantSlug(slug)
                let context = try CommandContext()
                let backup = try BackupContext(settings: context.settings, logger: context.logger)
                let report = try await TenantMover(context: backup).move(
                    slug, to: to, offline: offline, actor: context.actor, progress: Output.progress(quiet: output.json))
                if output.json { return try Output.json(report) }
                if let earlier = report.recoveredEarlierMove { Output.note("tenantplane: earlier interrupted move: \(earlier)") }
                let rows = report.rowCounts.values.reduce(0, +)
                Output.line(
                    "moved \(report.tenant) from \(report.fromServer) to \(report.toServer): \(rows) rows in \(report.rowCounts.count) tables and \(report.artifactsVerified) artifacts verified, \(report.online ? "online, requests held" : "offline, writes paused") \(report.writeBlockedMilliseconds) ms, \(report.durationMilliseconds) ms in all")
            }
        }
    }
}

extension Tenantplane {
    struct Backup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "backup",
            abstract: "Export every active tenant into a directory.",
            discussion: """
                One archive per tenant ({tenant}-{UTC time}.tar, the format of `tenant export`), at most \
                --concurrency at a time. A tenant that fails is reported and the others go on; the exit \
                status is 1 when any failed. Progress goes to stderr, the report to stdout.
                """
        )
        @Flag(name: .long, help: "Every active tenant (required; there is no partial mode yet).") var all = false
        @Option(name: .long, help: "Directory for the archives (created if missing).") var out: String
        @Option(name: .long, help: "Exports at a time.") var concurrency = 4
        @OptionGroup var output: JSONFlag

        func validate() throws {
            guard all else { throw ValidationError("say --all: backup exports every active tenant") }
            guard (1...64).contains(concurrency) else { throw ValidationError("--concurrency must be 1 to 64") }
        }

        func run() async throws {
            try await reportingFailures {
                let context = try CommandContext()
                let backup = try BackupContext(settings: context.settings, logger: context.logger)
                let report = try await FleetBackup(context: backup).run(
                    into: out, concurrency: concurrency, actor: context.actor, progress: { Output.note($0) })
                if output.json {
                    try Output.json(report)
                } else {
                    Output.table(
                        ["TENANT", "OUTCOME", "SIZE", "MS", "FILE / ERROR"],
                        report.tenants.map {
                            [$0.tenant, $0.outcome, $0.bytes.map(Output.bytes) ?? "-", String($0.durationMilliseconds), $0.file ?? $0.error ?? ""]
                        })
                    Output.line(
                        "\(report.succeeded) backed up, \(report.failed) failed, \(Output.bytes(report.bytes)) in \(report.durationMilliseconds) ms")
                }
                if report.failed > 0 { throw ExitCode.failure }
            }
        }
    }
}

extension Output {
    /// Progress on stderr, unless the command prints JSON for a script.
    static func progress(quiet: Bool) -> ProgressReporter {
        if quiet { return { _ in } }
        return { line in note("tenantplane: \(line)") }
    }

    static func bytes(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : "\(String(format: "%.1f", value)) \(units[unit])"
    }
}
