import ArgumentParser
import Config
import ControlPlane
import Core
import Fleet
import Foundation
import Migrations
import Runtime
import Synchronization

extension Tenantplane {
    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "migrate",
            abstract: "Apply schema migrations to the control database and the tenant databases.",
            subcommands: [Control.self, Tenants.self, Status.self]
        )
    }
}

extension Tenantplane.Migrate {
    struct Control: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "control",
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
                        store.connection.underlying, migrations: migrations, controlURL: controlURL, secrets: context.secrets,
                        logger: context.logger)
                }
                if output.json {
                    try Output.json(outcome)
                    return
                }
                for applied in outcome.report.applied {
                    Output.line("applied \(applied.file) (\(Int(applied.durationMilliseconds.rounded())) ms)")
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

    struct Tenants: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "tenants",
            abstract: "Apply the tenant migrations to every tenant database (and each server's template).",
            discussion: """
                Walks every active and suspended tenant with bounded concurrency (one control and one tenant \
                connection per worker), keeps going when a tenant fails, records each outcome in the control \
                database's ledger, and ends with a per-tenant report; exits non-zero when any tenant failed, \
                drifted or was not reached. Re-running retries the failed and skips the done: a tenant whose \
                ledger shows the current files applied is skipped without connecting to it \
                (--check-every-database connects to those too, and migrates any that are behind after all).

                --canary N migrates N tenants first and stops everything if one of them fails. --wave-size M \
                then goes on in waves of M, stopping after a wave in which more than --max-failure-rate \
                (default 0.1, i.e. 10%) of the tenants failed. Files come from TENANTPLANE_TENANT_MIGRATIONS.

                Locks: each statement waits at most --lock-timeout for a lock (default 2s). A migration whose \
                ALTER TABLE waits behind a tenant's long transaction holds up that tenant's requests behind it, \
                so the wait is bounded; the tenant's migration is rolled back and tried again after 0.25s, 0.5s, \
                1s, … (--lock-retries times, default 3). A tenant still blocked is reported as lock_timeout: \
                retryable, nothing wrong with its data; the others go on. A tenant with an open move is left \
                alone and reported as moving (DDL is not replicated to the move's target).

                A binary whose files end before the fleet's version (an older binary during a rolling deploy) \
                refuses to run: "this binary knows migrations up to N; the fleet is at M".

                Exit status: 0 when every database is current; 1 when any failed, drifted or was not reached, \
                or the run stopped; 3 when nothing failed but some tenants were left for a re-run (lock_timeout, \
                moving): run the command again later; 64 for a bad option.
                """
        )

        /// Nothing failed, but some tenants are left for a re-run.
        static let retryableExitCode = ExitCode(3)

        @Option(name: .customLong("tenant"), help: "Only this tenant (repeatable).") var tenants: [String] = []
        @Option(name: .long, help: "Tenant databases migrated at once (default: 8 per database server, at most 32).")
        var concurrency: Int?
        @Flag(name: .customLong("dry-run"), help: "List each tenant's pending files; change nothing.") var dryRun = false
        @Flag(
            name: .customLong("check-every-database"),
            help: "Connect to every tenant database, also those the ledger shows current.")
        var checkEveryDatabase = false
        @Option(name: .long, help: "Migrate this many tenants first; stop if any of them fails.") var canary = 0
        @Option(name: .customLong("wave-size"), help: "Then migrate in waves of this many tenants.") var waveSize: Int?
        @Option(name: .customLong("max-failure-rate"), help: "Stop after a wave whose failed share exceeds this (0-1).")
        var maxFailureRate = 0.1
        // Unconditional parsing lets a negative value reach validate() and its
        // message, instead of being read as an unknown option.
        @Option(
            name: .customLong("lock-timeout"), parsing: .unconditional,
            help: "How long each statement waits for a lock: 2, 2s or 300ms (above zero).")
        var lockTimeout = "2s"
        @Option(
            name: .customLong("lock-retries"), parsing: .unconditional,
            help: "Retries of a tenant whose migration timed out on a lock (zero or more).")
        var lockRetries = 3
        @Option(
            name: .customLong("statement-timeout"), parsing: .unconditional,
            help: "A time limit on each statement of the migrations, as --lock-timeout (default: none).")
        var statementTimeout: String?
        @OptionGroup var output: JSONFlag

        func validate() throws {
            if let concurrency, concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
            if canary < 0 { throw ValidationError("--canary must be zero or more") }
            if let waveSize, waveSize < 1 { throw ValidationError("--wave-size must be at least 1") }
            if !(0...1).contains(maxFailureRate) { throw ValidationError("--max-failure-rate must be between 0 and 1") }
            _ = try Self.timeout(lockTimeout, option: "--lock-timeout")
            if lockRetries < 0 { throw ValidationError("--lock-retries must be zero or more") }
            _ = try statementTimeout.map { try Self.timeout($0, option: "--statement-timeout") }
        }

        /// `2`, `2s` or `300ms`: above zero (zero would mean no limit, the
        /// very wait these options exist to bound), at most an hour.
        static func timeout(_ raw: String, option: String) throws -> Duration {
            let milliseconds: Double?
            if raw.hasSuffix("ms") {
                milliseconds = Double(raw.dropLast(2))
            } else if raw.hasSuffix("s") {
                milliseconds = Double(raw.dropLast()).map { $0 * 1000 }
            } else {
                milliseconds = Double(raw).map { $0 * 1000 }
            }
            guard let milliseconds, milliseconds >= 1, milliseconds <= 3_600_000 else {
                throw ValidationError("\(option) must be a duration above zero and at most an hour, such as 2, 2s or 300ms")
            }
            return .milliseconds(Int(milliseconds))
        }

        func run() async throws {
            var verdict = FleetMigrationReport.Verdict.succeeded
            try await reportingFailures {
                let context = try CommandContext()
                let migrator = try FleetMigrator(settings: context.settings, logger: context.logger)
                var options = FleetMigrationOptions()
                options.tenants = tenants
                options.dryRun = dryRun
                options.checkEveryDatabase = checkEveryDatabase
                options.canary = canary
                options.waveSize = waveSize
                options.maxWaveFailureRate = maxFailureRate
                options.lockTimeout = try Self.timeout(lockTimeout, option: "--lock-timeout")
                options.lockRetries = lockRetries
                options.statementTimeout = try statementTimeout.map { try Self.timeout($0, option: "--statement-timeout") }
                if let concurrency {
                    options.concurrency = concurrency
                } else {
                    let servers = try await context.withControl { try await $0.servers().filter(\.isActive).count }
                    options.concurrency = min(32, 8 * max(1, servers))
                }
                let printer = ProgressPrinter(label: dryRun ? "migrate tenants (dry run)" : "migrate tenants")
                let report = try await migrator.run(options) { printer.show($0) }
                printer.finish()
                verdict = report.verdict
                if output.json { return try Output.json(report) }
                Output.table(
                    ["TARGET", "FROM", "TO", "OUTCOME", "MS", "DETAIL"],
                    report.results.filter { $0.outcome != .skipped }.map { result in
                        [
                            result.target, result.fromVersion.map(String.init) ?? "-", result.toVersion.map(String.init) ?? "-",
                            result.outcome.rawValue, String(Int(result.durationMilliseconds.rounded())),
                            result.error ?? result.pendingFiles.map { $0.isEmpty ? "" : "pending: " + $0.joined(separator: ", ") } ?? "",
                        ]
                    })
                let counts = report.counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
                Output.line("\(report.results.count) databases (latest version \(report.latestVersion)): \(counts.isEmpty ? "nothing to do" : counts) in \(Int(report.durationMilliseconds.rounded())) ms")
                if !report.retiredSpares.isEmpty {
                    Output.line("retired \(report.retiredSpares.count) warm spares at older migrations (serve refills them)")
                }
                if let reason = report.stoppedReason { Output.line("stopped: \(reason)") }
            }
            switch verdict {
            case .succeeded:
                break
            case .retryable:
                Output.note(
                    "tenantplane: nothing failed, but some tenants were left for a re-run (lock_timeout or moving): "
                        + "run migrate tenants again")
                throw Self.retryableExitCode
            case .failed:
                Output.note("tenantplane: not every tenant database is current (see the report)")
                throw ExitCode.failure
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status",
            abstract: "Migration state of the control database and the fleet: versions, pending, failures, drift.",
            discussion: """
                Tenant figures come from the control database (what the last runs recorded): no tenant database \
                is logged in to. --verify logs in to every tenant database, checks its files for drift and \
                pending migrations, and prints how long that took. Exits non-zero on checksum drift or failed \
                tenants.
                """
        )

        @Flag(name: .long, help: "Connect to every tenant database and check it.") var verify = false
        @OptionGroup var output: JSONFlag

        struct Report: Encodable {
            var control: MigrationState
            var tenants: FleetStatus
        }

        struct FleetStatus: Encodable {
            var latestVersion: Int
            var byVersion: [String: Int]
            /// Tenants whose ledger fingerprint is not the current files':
            /// the ones the next `migrate tenants` logs in to.
            var notAtCurrentFiles: Int
            var troubled: [TenantMigrationStanding]
            var verified: [FleetMigrationResult]?
            /// How long `--verify` took, logging in to every database.
            var verifyDurationMilliseconds: Double?
        }

        func run() async throws {
            var healthy = true
            try await reportingFailures {
                let context = try CommandContext()
                let migrations = try MigrationSet(directory: context.settings.controlMigrationsDirectory)
                let tenantMigrations = try MigrationSet(directory: context.settings.tenantMigrationsDirectory)
                let (state, counts, behind, troubled) = try await context.withControl { store in
                    let state = try await Migrator(migrations: migrations).inspect(store.connection.underlying, logger: context.logger)
                    let hasLedger = state.currentVersion >= 2
                    return (
                        state,
                        try await store.tenantVersionCounts(),
                        hasLedger ? try await store.tenantsNotAt(fingerprint: tenantMigrations.fingerprint) : 0,
                        hasLedger ? try await store.troubledTenants() : []
                    )
                }
                var verification: FleetMigrationReport?
                if verify {
                    var options = FleetMigrationOptions()
                    options.dryRun = true
                    options.concurrency = 8
                    verification = try await FleetMigrator(settings: context.settings, logger: context.logger).verify(options)
                }
                let fleet = FleetStatus(
                    latestVersion: tenantMigrations.latestVersion,
                    byVersion: Dictionary(uniqueKeysWithValues: counts.map { ($0.key.map(String.init) ?? "none", $0.value) }),
                    notAtCurrentFiles: behind, troubled: troubled, verified: verification?.results,
                    verifyDurationMilliseconds: verification?.durationMilliseconds)
                let verified = verification?.results
                healthy = state.drift.isEmpty && troubled.isEmpty && !(verified ?? []).contains { $0.isFailure }
                if output.json { return try Output.json(Report(control: state, tenants: fleet)) }
                Output.line("control: version \(state.currentVersion) (latest file: \(state.latestVersion))")
                Output.line(state.pending.isEmpty ? "  pending: none" : "  pending: \(state.pending.joined(separator: ", "))")
                for drift in state.drift { Output.line("  DRIFT: \(drift.description)") }
                let total = counts.values.reduce(0, +)
                Output.line("tenants: \(total) (latest tenant migration: \(tenantMigrations.latestVersion))")
                for (version, count) in counts.sorted(by: { ($0.key ?? -1) < ($1.key ?? -1) }) {
                    Output.line("  at version \(version.map(String.init) ?? "none"): \(count)")
                }
                Output.line("  not recorded at the current files (the next migrate tenants logs in to these): \(behind)")
                for tenant in troubled {
                    Output.line("  \(tenant.outcome?.uppercased() ?? "?"): \(tenant.tenant) at version \(tenant.schemaVersion.map(String.init) ?? "-"): \(tenant.error ?? "")")
                }
                for result in verified ?? [] where result.outcome != .current {
                    let detail = result.error ?? (result.pendingFiles ?? []).joined(separator: ", ")
                    Output.line("  verify \(result.target): \(result.outcome.rawValue) \(detail)")
                }
                if let verification {
                    let databases = verification.results.filter { $0.kind == .tenant }.count
                    Output.line(
                        "verified \(databases) tenant databases (logged in to each) in "
                            + "\(Int(verification.durationMilliseconds.rounded())) ms")
                }
            }
            if !healthy {
                Output.note("tenantplane: checksum drift or failed tenants (see above)")
                throw ExitCode.failure
            }
        }
    }
}

/// A live progress line on a terminal, plain lines (at most one a second) when not.
final class ProgressPrinter: Sendable {
    let label: String
    let isTerminal = isatty(STDERR_FILENO) == 1
    private let state = Mutex<(lastLine: ContinuousClock.Instant?, printed: Bool)>((nil, false))

    init(label: String) {
        self.label = label
    }

    func show(_ progress: FleetProgress) {
        let now = ContinuousClock.now
        let line = String(
            format: "%@: %d/%d done, %d failed, %d remaining, %.1f/s, ETA %@", label, progress.done, progress.total,
            progress.failed, progress.remaining, progress.ratePerSecond,
            progress.etaSeconds.map { String(format: "%.0fs", $0) } ?? "-")
        let shouldPrint = state.withLock { state -> Bool in
            let due = state.lastLine.map { now - $0 >= .seconds(isTerminal ? 0.1 : 1) } ?? true
            if due || progress.remaining == 0 {
                state.lastLine = now
                state.printed = true
                return true
            }
            return false
        }
        guard shouldPrint else { return }
        Output.standardError(Data((isTerminal ? "\r\u{1B}[K" + line : line + "\n").utf8))
    }

    func finish() {
        if isTerminal, state.withLock({ $0.printed }) { Output.standardError(Data("\n".utf8)) }
    }
}
