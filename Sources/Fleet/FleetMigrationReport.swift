import Foundation
import Migrations

/// What happened to one database of the fleet.
public struct FleetMigrationResult: Sendable, Codable, Equatable {
    public enum Outcome: String, Sendable, Codable {
        /// Pending files were applied.
        case migrated
        /// Nothing was pending (checked on the database).
        case current
        /// The ledger shows the current files applied: not even connected to.
        case skipped
        /// Dry run: these files would be applied.
        case pending
        /// An applied file changed since: reported, nothing applied.
        case drift
        case failed
        /// Its locks were not granted within the lock timeout, on every
        /// attempt: rolled back, retryable, nothing wrong with its data.
        case lockTimeout = "lock_timeout"
        /// Left alone: it has an open move, and DDL is not replicated to the
        /// move's target.
        case moving
        /// The run stopped (canary or wave failure) before reaching it.
        case notAttempted = "not_attempted"
    }

    public enum Kind: String, Sendable, Codable {
        case tenant, template
    }

    public var target: String
    public var kind: Kind
    public var server: String?
    public var fromVersion: Int?
    public var toVersion: Int?
    public var outcome: Outcome
    public var durationMilliseconds: Double
    public var error: String?
    public var sqlState: String?
    public var pendingFiles: [String]?
    /// How many times its migration was tried (lock timeouts are retried).
    public var attempts: Int?

    public var isFailure: Bool { outcome == .failed || outcome == .drift }
    /// Left for a re-run through no fault of the database's contents.
    public var isRetryable: Bool { outcome == .lockTimeout || outcome == .moving }
}

public struct FleetMigrationReport: Sendable, Codable {
    public var latestVersion: Int
    public var results: [FleetMigrationResult]
    /// Why the run stopped early, when it did.
    public var stoppedReason: String?
    public var durationMilliseconds: Double
    /// Warm spares at older migrations, dropped (see `WarmSpares.retireStale`).
    public var retiredSpares: [String] = []

    public var counts: [String: Int] {
        results.reduce(into: [:]) { $0[$1.outcome.rawValue, default: 0] += 1 }
    }

    public enum Verdict: Sendable {
        /// Every database is at the latest version (or would be, dry run).
        case succeeded
        /// Nothing failed, but some databases were left for a re-run (lock
        /// timeouts, open moves).
        case retryable
        /// A database failed, drifted or was not reached.
        case failed
    }

    public var verdict: Verdict {
        if stoppedReason != nil || results.contains(where: { $0.isFailure || $0.outcome == .notAttempted }) {
            return .failed
        }
        return results.contains(where: \.isRetryable) ? .retryable : .succeeded
    }
}

/// Progress of a run, after each database.
public struct FleetProgress: Sendable {
    public var done: Int
    public var failed: Int
    public var total: Int
    public var elapsed: Duration

    public var remaining: Int { total - done }
    public var ratePerSecond: Double {
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return seconds > 0 ? Double(done) / seconds : 0
    }
    public var etaSeconds: Double? { ratePerSecond > 0 ? Double(remaining) / ratePerSecond : nil }
}

public struct FleetMigrationOptions: Sendable {
    /// Only these tenants (all active and suspended tenants when empty).
    public var tenants: [String] = []
    public var concurrency: Int = 4
    public var dryRun = false
    /// Migrate this many tenants first; any failure among them stops the run.
    public var canary = 0
    /// Then proceed in waves of this size (one wave of everything when nil)…
    public var waveSize: Int?
    /// …stopping after a wave whose share of failed tenants exceeds this.
    public var maxWaveFailureRate = 0.1
    /// Connect to every database, even those the ledger shows current.
    public var checkEveryDatabase = false
    /// How long each statement of a tenant's migration waits for a lock.
    /// Requests of the tenant queue behind a waiting `ALTER TABLE`'s lock, so
    /// this is also the longest they wait for it.
    public var lockTimeout: Duration = .seconds(2)
    /// Retries, with backoff, of a tenant whose migration timed out on a lock.
    public var lockRetries = 3
    /// A limit on each statement of the migrations; none when nil.
    public var statementTimeout: Duration?

    public init() {}
}
