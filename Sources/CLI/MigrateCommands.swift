import ArgumentParser
import Config
import ControlPlane
import Core
import Migrations

extension Tenantplane {
    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Apply schema migrations to the control database and the tenant databases.",
            subcommands: [Control.self, Status.self]
        )
    }
}

extension Tenantplane.Migrate {
    struct Control: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bring the control database to the latest schema (idempotent).",
            discussion: """
                Applies the pending files of TENANTPLANE_CONTROL_MIGRATIONS (default control-migrations/) in \
                order, each in its own transaction, under an advisory lock. When no database server is registered \
                yet, registers the control database's own server as server "default". Exits non-zero on checksum \
                drift (an applied file that changed since) without applying anything.
                """
        )

        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await reportingFailures {
                let context = try CommandContext()
                let migrations = try MigrationSet(directory: context.settings.controlMigrationsDirectory)
                let controlURL = try context.settings.requireControlURL()
                let outcome = try await context.withControl { store in
                    try await ControlDatabase.migrate(
                        store.connection, migrations: migrations, controlURL: controlURL, secrets: context.secrets,
                        logger: context.logger)
                }
                if output.json {
                    try Output.json(outcome)
                    return
                }
                for applied in outcome.report.applied {
                    Output.line("applied \(applied.version)_\(applied.name) (\(Int(applied.durationMilliseconds.rounded())) ms)")
                }
                Output.line(
                    outcome.report.applied.isEmpty
                        ? "control database is current at version \(outcome.report.toVersion)"
                        : "control database migrated from version \(outcome.report.fromVersion) to \(outcome.report.toVersion)")
                if outcome.registeredDefaultServer {
                    Output.line("registered the control server as database server \"default\"")
                }
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the control database's migration state: version, pending files, drift.",
            discussion: "Exits non-zero when an applied file has drifted (changed after it was applied)."
        )

        @OptionGroup var output: JSONFlag

        struct Report: Encodable {
            var control: MigrationState
        }

        func run() async throws {
            var drifted = false
            try await reportingFailures {
                let context = try CommandContext()
                let migrations = try MigrationSet(directory: context.settings.controlMigrationsDirectory)
                let state = try await context.withControl { store in
                    try await Migrator(migrations: migrations).inspect(store.connection, logger: context.logger)
                }
                drifted = !state.drift.isEmpty
                if output.json {
                    try Output.json(Report(control: state))
                } else {
                    Output.line("control: version \(state.currentVersion) (latest file: \(state.latestVersion))")
                    Output.line(state.pending.isEmpty ? "  pending: none" : "  pending: \(state.pending.joined(separator: ", "))")
                    for drift in state.drift { Output.line("  DRIFT: \(drift.description)") }
                }
            }
            if drifted {
                Output.note("tenantplane: checksum drift in the control database (see above)")
                throw ExitCode.failure
            }
        }
    }
}
