import Core
import Foundation

/// The process's configuration. Values a command does not need may be absent;
/// `require…` turns an absent one into a one-line error that says how to fix it.
public struct Settings: Sendable {
    public var controlURL: PostgresURL?
    public var masterKey: MasterKey?
    public var adminToken: String?
    public var storageRoot: String
    public var controlMigrationsDirectory: String
    public var tenantMigrationsDirectory: String
    public var connectionBudget: Int
    /// Connections a busy tenant's pool may hold (`TENANTPLANE_TENANT_POOL_SIZE`);
    /// a tenant starts with one and grows to this when its requests queue.
    public var tenantPoolSize: Int
    public var controlPoolSize: Int
    public var poolWait: Duration
    /// How long a tenant whose database did not answer is refused at once.
    public var downtimeBackoff: Duration
    /// `TENANTPLANE_MOVE_PAUSE`: the longest an online move holds a tenant's
    /// requests while it switches servers (it tries again, up to three times,
    /// rather than hold longer).
    public var movePause: Duration
    /// The front door: what an unauthenticated client may hold or cost.
    public var idleTimeout: Duration
    public var requestHeadTimeout: Duration
    public var requestReadTimeout: Duration
    public var requestMinimumRate: Int
    public var maxConnections: Int
    public var authFailuresPerMinute: Int
    public var trustedProxies: String?
    public var metricsAddress: String?
    /// `TENANTPLANE_DELETE_GRACE`: how long a deleted tenant can be undeleted.
    public var deleteGrace: Duration
    /// `TENANTPLANE_SWEEP_GRACE`: how old an unreferenced file must be before
    /// the sweep removes it.
    public var sweepGrace: Duration
    /// `TENANTPLANE_SWEEP_INTERVAL`: how often the sweep walks the store.
    public var sweepInterval: Duration
    public var maxUploadBytes: Int
    /// API keys of LLM providers from `TENANTPLANE_<ID>_API_KEY`, by the id as
    /// written there (lower case, `_` for `-`); read them with `providerKey(for:)`.
    public var providerKeys: [String: String]

    /// A provider's key: `TENANTPLANE_FAKE_PROVIDER_API_KEY` for `fake-provider`
    /// (a variable name cannot hold `-`).
    public func providerKey(for providerID: String) -> String? {
        providerKeys[providerID.lowercased().replacingOccurrences(of: "-", with: "_")]
    }
    /// Runs this process executes at once (`TENANTPLANE_MAX_INFLIGHT`, or its
    /// old name `TENANTPLANE_WORKERS`; 0 leaves execution to other processes).
    /// A run waiting on its provider holds no database connection, so this can
    /// be far above the connection budget.
    public var maxInflight: Int
    /// Runs of one tenant this process executes at once (`TENANTPLANE_TENANT_MAX_INFLIGHT`).
    public var tenantMaxInflight: Int
    /// The share of the connection budget run workers may hold at once
    /// (`TENANTPLANE_WORKER_BUDGET_SHARE`); requests may use all of it.
    public var workerBudgetShare: Double
    /// `TENANTPLANE_ADMIN_JOBS`: exports and moves a server runs at once.
    public var adminJobs: Int
    /// How long a claimed run stays a worker's without renewal (`TENANTPLANE_RUN_LEASE`):
    /// a run left by a crashed process is taken over after it.
    public var runLease: Duration
    /// How often the run queue is read in full (`TENANTPLANE_WORKER_POLL`): the
    /// fallback for a notification lost while the listener reconnected, and
    /// for runs whose lease ended in a process that died.
    public var workerPoll: Duration
    /// One provider call's time limit (`TENANTPLANE_PROVIDER_TIMEOUT`).
    public var providerTimeout: Duration
    /// Retries of a failed provider call: 429, 5xx, timeouts (`TENANTPLANE_PROVIDER_RETRIES`).
    public var providerRetries: Int
    /// Test hook (`TENANTPLANE_FAULT_AFTER`): the provisioner kills its own
    /// process right after the named step, to prove every step resumable.
    public var faultAfterStep: String?
    /// Test hook (`TENANTPLANE_FAULT_AFTER_MOVE`): `tenant move` kills its own
    /// process right after the named phase, to prove a move resumable.
    public var faultAfterMovePhase: String?
    /// Where the real `pg_dump` and `pg_restore` live (`TENANTPLANE_PG_BINDIR`);
    /// by default `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`.
    public var postgresBinDirectory: String?
    /// The template database tenants are copied from (`TENANTPLANE_TEMPLATE_DATABASE`,
    /// default `tenantplane_template`): another name lets two control planes share
    /// one PostgreSQL server without refreshing each other's template.
    public var templateDatabase: String?
    /// `TENANTPLANE_WARM_SPARES`: role-and-database pairs each server keeps
    /// created and migrated for sign-ups (0 turns them off).
    public var warmSpares: Int
    /// `TENANTPLANE_LOG_LEVEL`: trace, debug, info, notice, warning, error, critical.
    public var logLevel: String?
    /// Who runs the CLI (`USER`), for the audit trail.
    public var operatorName: String?

    /// Reads the configuration. The environment wins over the config file
    /// (`TENANTPLANE_CONFIG_FILE`, default `.tenantplane/env` when it exists),
    /// which holds `KEY=VALUE` lines.
    public static func load(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        workingDirectory: String = FileManager.default.currentDirectoryPath
    ) throws(ConfigurationError) -> Settings {
        var values = try configFile(environment: environment, workingDirectory: workingDirectory)
        values.merge(environment) { _, fromEnvironment in fromEnvironment }
        return try Settings(values: values, workingDirectory: workingDirectory)
    }

    init(values: [String: String], workingDirectory: String) throws(ConfigurationError) {
        func value(_ key: String) -> String? {
            guard let raw = values[key]?.trimmingCharacters(in: .whitespaces), !raw.isEmpty else { return nil }
            return raw
        }
        func integer(_ key: String, default fallback: Int, range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
            guard let raw = value(key) else { return fallback }
            guard let number = Int(raw), range.contains(number) else {
                throw .invalid(key, "must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
            return number
        }

        if let raw = value("TENANTPLANE_CONTROL_URL") {
            do {
                controlURL = try PostgresURL(raw)
            } catch {
                throw .invalid("TENANTPLANE_CONTROL_URL", error.message)
            }
        }
        if let raw = value("TENANTPLANE_MASTER_KEY") {
            masterKey = try MasterKey(base64: raw, source: "TENANTPLANE_MASTER_KEY")
        } else if let path = value("TENANTPLANE_MASTER_KEY_FILE") {
            guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw .invalid("TENANTPLANE_MASTER_KEY_FILE", "cannot read \(path)")
            }
            masterKey = try MasterKey(
                base64: contents.trimmingCharacters(in: .whitespacesAndNewlines), source: "TENANTPLANE_MASTER_KEY_FILE")
        }
        adminToken = value("TENANTPLANE_ADMIN_TOKEN")
        if let token = adminToken, token.utf8.count < 16 {
            throw .invalid("TENANTPLANE_ADMIN_TOKEN", "must be at least 16 characters")
        }
        storageRoot = value("TENANTPLANE_STORAGE") ?? "./storage"
        controlMigrationsDirectory =
            value("TENANTPLANE_CONTROL_MIGRATIONS")
            ?? Self.bundledDirectory("control-migrations", workingDirectory: workingDirectory)
        tenantMigrationsDirectory =
            value("TENANTPLANE_TENANT_MIGRATIONS")
            ?? Self.bundledDirectory("tenant-migrations", workingDirectory: workingDirectory)
        connectionBudget = try integer("TENANTPLANE_CONNECTION_BUDGET", default: 80, range: 2...10_000)
        tenantPoolSize = try integer("TENANTPLANE_TENANT_POOL_SIZE", default: 4, range: 1...100)
        guard tenantPoolSize <= connectionBudget else {
            throw .invalid("TENANTPLANE_TENANT_POOL_SIZE", "must not exceed TENANTPLANE_CONNECTION_BUDGET")
        }
        controlPoolSize = try integer("TENANTPLANE_CONTROL_POOL", default: 10, range: 1...1_000)
        let waitMilliseconds = try milliseconds(value("TENANTPLANE_POOL_WAIT"), key: "TENANTPLANE_POOL_WAIT")
        poolWait = .milliseconds(waitMilliseconds ?? 5_000)
        downtimeBackoff = .milliseconds(
            try milliseconds(value("TENANTPLANE_DOWNTIME_BACKOFF"), key: "TENANTPLANE_DOWNTIME_BACKOFF") ?? 1_000)
        movePause = .milliseconds(
            max(50, try milliseconds(value("TENANTPLANE_MOVE_PAUSE"), key: "TENANTPLANE_MOVE_PAUSE") ?? 1_000))
        idleTimeout = .milliseconds(
            max(1, try milliseconds(value("TENANTPLANE_IDLE_TIMEOUT"), key: "TENANTPLANE_IDLE_TIMEOUT") ?? 30_000))
        requestHeadTimeout = .milliseconds(
            max(1, try milliseconds(value("TENANTPLANE_REQUEST_HEAD_TIMEOUT"), key: "TENANTPLANE_REQUEST_HEAD_TIMEOUT") ?? 10_000))
        requestReadTimeout = .milliseconds(
            max(1, try milliseconds(value("TENANTPLANE_REQUEST_READ_TIMEOUT"), key: "TENANTPLANE_REQUEST_READ_TIMEOUT") ?? 10_000))
        requestMinimumRate = try integer("TENANTPLANE_REQUEST_MIN_RATE", default: 1_024, range: 1...(1 << 30))
        maxConnections = try integer("TENANTPLANE_MAX_CONNECTIONS", default: 4_096, range: 1...1_000_000)
        warmSpares = try integer("TENANTPLANE_WARM_SPARES", default: 4, range: 0...100)
        authFailuresPerMinute = try integer("TENANTPLANE_AUTH_FAILURES_PER_MINUTE", default: 60, range: 0...1_000_000)
        trustedProxies = value("TENANTPLANE_TRUSTED_PROXIES")
        metricsAddress = value("TENANTPLANE_METRICS_ADDRESS")
        deleteGrace = .seconds(try seconds(value("TENANTPLANE_DELETE_GRACE"), key: "TENANTPLANE_DELETE_GRACE") ?? 7 * 86_400)
        sweepGrace = .seconds(try seconds(value("TENANTPLANE_SWEEP_GRACE"), key: "TENANTPLANE_SWEEP_GRACE") ?? 3_600)
        sweepInterval = .seconds(
            max(1, try seconds(value("TENANTPLANE_SWEEP_INTERVAL"), key: "TENANTPLANE_SWEEP_INTERVAL") ?? 3_600))
        maxUploadBytes = try integer(
            "TENANTPLANE_MAX_UPLOAD_BYTES", default: 100 * 1024 * 1024, range: 1...(1 << 40))
        var keys: [String: String] = [:]
        for (key, secret) in values where key.hasPrefix("TENANTPLANE_") && key.hasSuffix("_API_KEY") {
            let provider = key.dropFirst("TENANTPLANE_".count).dropLast("_API_KEY".count).lowercased()
            if !provider.isEmpty, !secret.isEmpty { keys[provider] = secret }
        }
        providerKeys = keys
        maxInflight = try integer(
            value("TENANTPLANE_MAX_INFLIGHT") == nil ? "TENANTPLANE_WORKERS" : "TENANTPLANE_MAX_INFLIGHT",
            default: 256, range: 0...10_000)
        tenantMaxInflight = try integer("TENANTPLANE_TENANT_MAX_INFLIGHT", default: 32, range: 1...10_000)
        let share = value("TENANTPLANE_WORKER_BUDGET_SHARE") ?? "0.5"
        guard let workerShare = Double(share), workerShare > 0, workerShare <= 1 else {
            throw .invalid("TENANTPLANE_WORKER_BUDGET_SHARE", "must be a fraction above 0 and at most 1, such as 0.5")
        }
        workerBudgetShare = workerShare
        adminJobs = try integer("TENANTPLANE_ADMIN_JOBS", default: 2, range: 1...64)
        runLease = .milliseconds(try milliseconds(value("TENANTPLANE_RUN_LEASE"), key: "TENANTPLANE_RUN_LEASE") ?? 15_000)
        workerPoll = .milliseconds(
            try milliseconds(value("TENANTPLANE_WORKER_POLL"), key: "TENANTPLANE_WORKER_POLL") ?? 2_000)
        providerTimeout = .milliseconds(
            try milliseconds(value("TENANTPLANE_PROVIDER_TIMEOUT"), key: "TENANTPLANE_PROVIDER_TIMEOUT") ?? 60_000)
        providerRetries = try integer("TENANTPLANE_PROVIDER_RETRIES", default: 3, range: 0...20)
        guard runLease >= .seconds(1) else {
            throw .invalid("TENANTPLANE_RUN_LEASE", "must be at least 1 s")
        }
        faultAfterStep = value("TENANTPLANE_FAULT_AFTER")
        faultAfterMovePhase = value("TENANTPLANE_FAULT_AFTER_MOVE")
        postgresBinDirectory = value("TENANTPLANE_PG_BINDIR")
        templateDatabase = value("TENANTPLANE_TEMPLATE_DATABASE")
        logLevel = value("TENANTPLANE_LOG_LEVEL")
        operatorName = value("USER")
    }

    public func requireControlURL() throws(ConfigurationError) -> PostgresURL {
        guard let controlURL else { throw .missing(.controlURL) }
        return controlURL
    }

    public func requireMasterKey() throws(ConfigurationError) -> MasterKey {
        guard let masterKey else { throw .missing(.masterKey) }
        return masterKey
    }

    public func requireAdminToken() throws(ConfigurationError) -> String {
        guard let adminToken else { throw .missing(.adminToken) }
        return adminToken
    }

    /// The repository's migration folder: in the working directory, or beside
    /// the binary's build folder (`<repo>/.build/…/tenantplane`).
    static func bundledDirectory(_ name: String, workingDirectory: String) -> String {
        let fileManager = FileManager.default
        let inWorkingDirectory = URL(fileURLWithPath: workingDirectory).appendingPathComponent(name).path
        if fileManager.fileExists(atPath: inWorkingDirectory) { return inWorkingDirectory }
        var directory = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath()
            .deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = directory.appendingPathComponent(name).path
            if fileManager.fileExists(atPath: candidate) { return candidate }
            directory.deleteLastPathComponent()
        }
        return inWorkingDirectory
    }

    static func configFile(
        environment: [String: String], workingDirectory: String
    ) throws(ConfigurationError) -> [String: String] {
        let explicit = environment["TENANTPLANE_CONFIG_FILE"].flatMap { $0.isEmpty ? nil : $0 }
        let path = explicit ?? URL(fileURLWithPath: workingDirectory).appendingPathComponent(".tenantplane/env").path
        guard FileManager.default.fileExists(atPath: path) else {
            if explicit != nil { throw .invalid("TENANTPLANE_CONFIG_FILE", "names \(path), which does not exist") }
            return [:]
        }
        guard let handle = FileHandle(forReadingAtPath: path), let data = try? handle.readToEnd() ?? Data() else {
            throw .invalid("TENANTPLANE_CONFIG_FILE", "cannot read \(path)")
        }
        let contents = String(decoding: data, as: UTF8.self)
        var values: [String: String] = [:]
        for line in contents.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, !trimmed.hasPrefix("#"), let equals = trimmed.firstIndex(of: "=") else { continue }
            let key = trimmed[..<equals].trimmingCharacters(in: .whitespaces)
                .replacingOccurrences(of: "export ", with: "")
            var value = trimmed[trimmed.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let first = value.first, first == "'" || first == "\"", value.last == first {
                value = String(value.dropFirst().dropLast())
            }
            values[key] = value
        }
        return values
    }
}

func milliseconds(_ raw: String?, key: String) throws(ConfigurationError) -> Int? {
    guard let raw else { return nil }
    let number: Double?
    if raw.hasSuffix("ms") {
        number = Double(raw.dropLast(2))
    } else if raw.hasSuffix("s") {
        number = Double(raw.dropLast()).map { $0 * 1000 }
    } else {
        number = Double(raw).map { $0 * 1000 }
    }
    guard let number, number >= 0, number <= 3_600_000 else {
        throw .invalid(key, "must be a duration such as 5, 5s or 500ms")
    }
    return Int(number)
}

/// A period such as `7d`, `12h`, `30m`, `90s` or `90` (seconds), at most a year.
func seconds(_ raw: String?, key: String) throws(ConfigurationError) -> Int? {
    guard let raw else { return nil }
    let units: [Character: Double] = ["d": 86_400, "h": 3_600, "m": 60, "s": 1]
    let unit = raw.last.flatMap { units[$0] }
    let number = Double(unit == nil ? Substring(raw) : raw.dropLast()).map { $0 * (unit ?? 1) }
    guard let number, number >= 0, number <= 366 * 86_400 else {
        throw .invalid(key, "must be a period such as 7d, 12h, 30m or 90s")
    }
    return Int(number)
}
