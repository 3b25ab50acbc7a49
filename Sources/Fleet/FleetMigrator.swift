import ControlPlane
import Core
import Foundation
import Logging
import Migrations
import PostgresNIO
import Provisioner

/// Runs the tenant migrations across the fleet.
///
/// Each worker holds one control connection for the whole run and opens one
/// connection per tenant database, so at most `concurrency` connections of
/// each kind are open at once, whatever the fleet's size. A tenant's files are
/// applied by the Migrations engine (one transaction each, under the database's
/// advisory lock), so two runs never apply a file twice and a killed run leaves
/// no file half applied.
public struct FleetMigrator: Sendable {
    let controlURL: PostgresURL
    let secrets: SecretBox?
    let migrations: MigrationSet
    let provisioner: Provisioner?
    let logger: Logger

    /// `provisioner`, when given (a master key is configured), refreshes each
    /// server's template; `secrets` open the tenants' role passwords.
    public init(
        controlURL: PostgresURL, secrets: SecretBox?, migrations: MigrationSet, provisioner: Provisioner?, logger: Logger
    ) {
        self.controlURL = controlURL
        self.secrets = secrets
        self.migrations = migrations
        self.provisioner = provisioner
        self.logger = logger
    }

    struct Target: Sendable {
        let tenant: FleetTenant
        let adminURL: PostgresURL
    }

    public func run(
        _ options: FleetMigrationOptions,
        progress: @escaping @Sendable (FleetProgress) -> Void = { _ in }
    ) async throws -> FleetMigrationReport {
        let clock = ContinuousClock()
        let started = clock.now
        let slugs = try options.tenants.map { try TenantSlug($0) }
        let fingerprint = migrations.fingerprint

        var results: [FleetMigrationResult] = []
        var targets: [Target] = []
        try await DatabaseConnection.with(controlURL, logger: logger) { connection in
            let store = ControlStore(connection: connection, logger: logger)
            let tenants = try await store.fleetTenants(only: slugs)
            let found = Set(tenants.map(\.slug))
            if let missing = slugs.first(where: { !found.contains($0) }) {
                throw ControlError.notFound("tenant \(missing) is not an active or suspended tenant")
            }
            // During a rolling deploy the older binary stops here: its files
            // would read every newer database as drift, and its template
            // refresh would take the templates back.
            if let fleetVersion = try await store.highestFleetVersion(), fleetVersion > migrations.latestVersion {
                throw MigrationError.binaryBehindFleet(knows: migrations.latestVersion, fleetAt: fleetVersion)
            }
            var adminURLs: [String: PostgresURL] = [:]
            for server in Set(tenants.map(\.server)).sorted() {
                adminURLs[server] = try await store.adminURL(ofServer: server, secrets: secrets, controlURL: controlURL)
            }
            if !options.dryRun, slugs.isEmpty, let provisioner {
                results += try await refreshTemplates(store: store, provisioner: provisioner, clock: clock)
            }
            for tenant in tenants {
                if tenant.migrationFingerprint == fingerprint, !options.checkEveryDatabase {
                    results.append(
                        FleetMigrationResult(
                            target: tenant.slug.rawValue, kind: .tenant, server: tenant.server,
                            fromVersion: tenant.schemaVersion, toVersion: tenant.schemaVersion, outcome: .skipped,
                            durationMilliseconds: 0))
                } else if let url = adminURLs[tenant.server] {
                    targets.append(Target(tenant: tenant, adminURL: url))
                }
            }
        }

        let total = targets.count
        let tracker = ProgressTracker(total: total, clock: clock, started: started, report: progress)
        var stoppedReason: String?
        var remaining = targets[...]
        let concurrency = max(1, options.concurrency)

        if options.canary > 0, !remaining.isEmpty {
            let canaries = Array(remaining.prefix(options.canary))
            remaining = remaining.dropFirst(canaries.count)
            let canaryResults = try await migrate(canaries, options: options, concurrency: concurrency, tracker: tracker)
            results += canaryResults
            if let failure = canaryResults.first(where: \.isFailure) {
                stoppedReason = "canary \(failure.target) failed: \(failure.error ?? failure.outcome.rawValue)"
            }
        }
        while stoppedReason == nil, !remaining.isEmpty {
            let wave = Array(remaining.prefix(options.waveSize ?? remaining.count))
            remaining = remaining.dropFirst(wave.count)
            let waveResults = try await migrate(wave, options: options, concurrency: concurrency, tracker: tracker)
            results += waveResults
            let failures = waveResults.filter(\.isFailure).count
            let rate = Double(failures) / Double(max(1, wave.count))
            if options.waveSize != nil, !remaining.isEmpty, rate > options.maxWaveFailureRate {
                stoppedReason = String(
                    format: "a wave had %d of %d tenants fail (%.0f%% > %.0f%%)", failures, wave.count, rate * 100,
                    options.maxWaveFailureRate * 100)
            }
        }
        for target in remaining {
            results.append(
                FleetMigrationResult(
                    target: target.tenant.slug.rawValue, kind: .tenant, server: target.tenant.server,
                    fromVersion: target.tenant.schemaVersion, toVersion: target.tenant.schemaVersion,
                    outcome: .notAttempted, durationMilliseconds: 0))
        }
        return FleetMigrationReport(
            latestVersion: migrations.latestVersion, results: results, stoppedReason: stoppedReason,
            durationMilliseconds: (clock.now - started).fleetMilliseconds)
    }

    /// Checks every tenant database for drift and pending files, changing nothing.
    public func verify(_ options: FleetMigrationOptions) async throws -> FleetMigrationReport {
        var options = options
        options.dryRun = true
        options.checkEveryDatabase = true
        options.canary = 0
        options.waveSize = nil
        return try await run(options)
    }

    private func refreshTemplates(store: ControlStore, provisioner: Provisioner, clock: ContinuousClock) async throws
        -> [FleetMigrationResult]
    {
        var results: [FleetMigrationResult] = []
        for server in try await store.servers() where server.isActive && server.templateFingerprint != migrations.fingerprint {
            let started = clock.now
            var result = FleetMigrationResult(
                target: "template:\(server.name)", kind: .template, server: server.name,
                fromVersion: server.templateVersion, toVersion: server.templateVersion, outcome: .migrated,
                durationMilliseconds: 0)
            do {
                let adminURL = try await store.adminURL(ofServer: server.name, secrets: secrets, controlURL: controlURL)
                if try await provisioner.refreshTemplate(server: server.name, adminURL: adminURL, store: store) {
                    result.toVersion = migrations.latestVersion
                } else {
                    continue
                }
            } catch {
                result.outcome = .failed
                result.error = OperatorFailure(error).message
            }
            result.durationMilliseconds = (clock.now - started).fleetMilliseconds
            results.append(result)
        }
        return results
    }

    /// Migrates `targets` with at most `concurrency` at once.
    private func migrate(
        _ targets: [Target], options: FleetMigrationOptions, concurrency: Int, tracker: ProgressTracker
    ) async throws -> [FleetMigrationResult] {
        let queue = WorkQueue(targets)
        return try await withThrowingTaskGroup(of: [FleetMigrationResult].self) { group in
            for _ in 0..<min(concurrency, targets.count) {
                group.addTask {
                    try await DatabaseConnection.with(controlURL, logger: logger) { control in
                        // The ledger is a record, not the truth (each database's own
                        // schema_migrations is): a row lost in a crash is rebuilt by
                        // the next run, so its commits need not wait for the disk.
                        try await control.query("SET synchronous_commit = off", logger: logger)
                        let store = ControlStore(connection: control, logger: logger)
                        var results: [FleetMigrationResult] = []
                        while let target = await queue.next() {
                            let result = try await migrate(target, options: options, store: store)
                            results.append(result)
                            await tracker.finished(failed: result.isFailure)
                        }
                        return results
                    }
                }
            }
            var all: [FleetMigrationResult] = []
            for try await results in group { all += results }
            let order = Dictionary(uniqueKeysWithValues: targets.enumerated().map { ($1.tenant.slug.rawValue, $0) })
            return all.sorted { order[$0.target, default: 0] < order[$1.target, default: 0] }
        }
    }

    /// One tenant: log in as the tenant's own role, migrate (or inspect, on a
    /// dry run), record the outcome. Failures of the tenant are
    /// results, not errors; only a failing control database stops the run.
    private func migrate(_ target: Target, options: FleetMigrationOptions, store: ControlStore) async throws
        -> FleetMigrationResult
    {
        let clock = ContinuousClock()
        let started = clock.now
        let slug = target.tenant.slug
        var result = FleetMigrationResult(
            target: slug.rawValue, kind: .tenant, server: target.tenant.server, fromVersion: target.tenant.schemaVersion,
            toVersion: target.tenant.schemaVersion, outcome: .current, durationMilliseconds: 0)
        // Checked right before connecting, so a move started during a long
        // run is seen too.
        if !options.dryRun, let move = try await store.openMove(slug) {
            result.outcome = .moving
            result.error =
                "it is being moved to \(move.toServer) (phase \(move.phase.rawValue)) and DDL is not replicated to the "
                + "move's target; migrate it once the move is done"
            return result
        }
        var applied: [MigrationFile] = []
        var failedFile: (file: MigrationFile, failure: MigrationFailure)?
        do {
            try await withTenantLogin(target, store: store) { login in
                try await DatabaseConnection.with(login.url, startupOptions: sessionOptions(options), logger: logger) {
                    connection in
                    let migrator = Migrator(migrations: migrations)
                    if options.dryRun {
                        let state = try await migrator.inspect(connection, logger: logger)
                        result.fromVersion = state.currentVersion
                        result.toVersion = state.currentVersion
                        if !state.drift.isEmpty {
                            result.outcome = .drift
                            result.error = MigrationError.drift(state.drift).message
                        } else {
                            result.outcome = state.pending.isEmpty ? .current : .pending
                            result.pendingFiles = state.pending
                        }
                        return
                    }
                    var firstFromVersion: Int?
                    for attempt in 1... {
                        result.attempts = attempt
                        let blocked: String
                        do {
                            let report = try await migrator.migrate(connection, logger: logger)
                            applied += report.applied.compactMap { migrations.file(version: $0.version) }
                            result.fromVersion = firstFromVersion ?? report.fromVersion
                            result.toVersion = report.toVersion
                            result.outcome = applied.isEmpty ? .current : .migrated
                            return
                        } catch MigrationError.drift(let drift) {
                            result.outcome = .drift
                            result.error = MigrationError.drift(drift).message
                            return
                        } catch MigrationError.failed(let failure) {
                            // The files before the failing one stay applied, also
                            // on an attempt that a lock timeout ends.
                            applied += failure.applied.compactMap { migrations.file(version: $0.version) }
                            firstFromVersion = firstFromVersion ?? failure.fromVersion
                            result.fromVersion = firstFromVersion
                            result.toVersion = failure.reachedVersion
                            guard failure.sqlState == Self.lockNotAvailable else {
                                failedFile = migrations.file(version: failure.version).map { ($0, failure) }
                                result.outcome = .failed
                                result.error = failure.summary
                                result.sqlState = failure.sqlState
                                return
                            }
                            blocked = failure.file
                        } catch where error.sqlState == Self.lockNotAvailable {
                            blocked = "the database's migration lock (another run is migrating it)"
                        }
                        guard attempt <= options.lockRetries else {
                            result.outcome = .lockTimeout
                            result.sqlState = Self.lockNotAvailable
                            result.error =
                                "\(blocked) waited \(Int(options.lockTimeout.fleetMilliseconds.rounded())) ms for a lock "
                                + "on \(attempt) attempts and was rolled back each time (a transaction holds a conflicting "
                                + "lock): retryable, run migrate tenants again"
                            return
                        }
                        try await Task.sleep(for: Self.lockRetryDelay(after: attempt))
                    }
                }
            }
        } catch {
            result.outcome = .failed
            result.error = OperatorFailure(error).message
            result.sqlState = error.sqlState
        }
        result.durationMilliseconds = (clock.now - started).fleetMilliseconds
        if !options.dryRun {
            let outcome: String =
                switch result.outcome {
                case .migrated: "migrated"
                case .drift: "drift"
                case .lockTimeout: "lock_timeout"
                case .failed: result.sqlState == nil && failedFile == nil ? "unreachable" : "failed"
                default: "current"
                }
            try await store.recordMigration(
                slug, applied: applied, failed: failedFile, version: result.toVersion,
                fingerprint: result.outcome == .migrated || result.outcome == .current ? migrations.fingerprint : nil,
                outcome: outcome, error: result.error)
        }
        return result
    }

    /// SQLSTATE `lock_not_available`: `lock_timeout` ran out.
    static let lockNotAvailable = "55P03"

    /// The tenant's pinned session settings, with the migration's own limits:
    /// tenant sessions log in with `lock_timeout=0` (wait for ever), which
    /// for an `ALTER TABLE` behind a long transaction would queue every later
    /// request of the tenant behind it for as long.
    func sessionOptions(_ options: FleetMigrationOptions) -> String {
        var overrides = [("lock_timeout", "\(Int(options.lockTimeout.fleetMilliseconds.rounded()))ms")]
        if let statementTimeout = options.statementTimeout {
            overrides.append(("statement_timeout", "\(Int(statementTimeout.fleetMilliseconds.rounded()))ms"))
        }
        return TenantLogin.startupOptions(overriding: overrides)
    }

    /// 0.25 s, 0.5 s, 1 s, … (at most 10 s), each ±25%, so two runs blocked on
    /// the same database do not keep retrying in step. Between attempts the
    /// tenant's requests run freely.
    static func lockRetryDelay(after attempt: Int) -> Duration {
        let milliseconds = min(10_000, 250 * (1 << min(attempt - 1, 6)))
        return .milliseconds(Int(Double(milliseconds) * Double.random(in: 0.75...1.25)))
    }
}

extension FleetMigrator {
    /// The tenant's own login: its files run with the tenant's rights, and any
    /// function or trigger of the tenant's that they fire runs with no more.
    /// A suspended tenant's role is NOLOGIN; it may log in while its files
    /// run, under the tenant's lock (so no resume or suspension interleaves).
    func withTenantLogin(
        _ target: Target, store: ControlStore, _ body: (TenantLogin) async throws -> Void
    ) async throws {
        let slug = target.tenant.slug
        guard let sealed = target.tenant.sealedRolePassword, let secrets else {
            throw ControlError.conflict("tenant \(slug) has no role password tenantplane can open")
        }
        let login = TenantLogin(slug: slug, password: try secrets.open(sealed, owner: slug.rawValue), server: target.adminURL)
        guard target.tenant.status == .suspended else { return try await body(login) }
        let done: Bool? = try await store.withTenantLockIfFree(slug) {
            try await DatabaseConnection.with(target.adminURL, logger: logger) { connection in
                try await ServerAdmin(connection: connection, logger: logger)
                    .withLoginAllowed(try SQLIdentifier(slug.roleName)) { try await body(login) }
            }
            return true
        }
        guard done == true else {
            throw ControlError.conflict("tenant \(slug) is busy (an export, move or resume holds it); run the migration again")
        }
    }
}

/// Hands out targets to the workers, each once.
actor WorkQueue {
    private var items: ArraySlice<FleetMigrator.Target>

    init(_ items: [FleetMigrator.Target]) {
        self.items = items[...]
    }

    func next() -> FleetMigrator.Target? {
        items.popFirst()
    }
}

/// Counts finished databases and reports progress after each.
actor ProgressTracker {
    let total: Int
    let clock: ContinuousClock
    let started: ContinuousClock.Instant
    let report: @Sendable (FleetProgress) -> Void
    private var done = 0
    private var failed = 0

    init(total: Int, clock: ContinuousClock, started: ContinuousClock.Instant, report: @escaping @Sendable (FleetProgress) -> Void) {
        self.total = total
        self.clock = clock
        self.started = started
        self.report = report
    }

    func finished(failed isFailure: Bool) {
        done += 1
        if isFailure { failed += 1 }
        report(FleetProgress(done: done, failed: failed, total: total, elapsed: clock.now - started))
    }
}

extension Duration {
    var fleetMilliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }
}
