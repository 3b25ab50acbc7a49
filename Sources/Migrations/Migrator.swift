import Core
import Foundation
import Logging
import PostgresNIO

/// Applies a `MigrationSet` to the database a connection is open on.
///
/// Objects are created by the connection's current role: a caller that wants
/// them owned by another role issues `SET ROLE` first.
public struct Migrator: Sendable {
    public let migrations: MigrationSet

    /// The session advisory lock every runner takes before migrating.
    /// Advisory locks are scoped to one database, so one name serves them all.
    static let lockName = "tenantplane.migrations"

    public init(migrations: MigrationSet) {
        self.migrations = migrations
    }

    /// What is applied, what is pending and what drifted, touching nothing.
    public func inspect(_ connection: PostgresConnection, logger: Logger) async throws -> MigrationState {
        let applied = try await appliedMigrations(connection, logger: logger, createTable: false)
        return state(applied: applied)
    }

    /// Applies every pending file in order, each in its own transaction, under
    /// the database's migration lock (a second runner waits, then finds nothing
    /// left to do). Refuses to start when an applied file has drifted.
    /// A failing file is rolled back and stops the run; the files applied before
    /// it stay applied.
    @discardableResult
    public func migrate(_ connection: PostgresConnection, logger: Logger) async throws -> MigrationReport {
        try await connection.withAdvisoryLock(named: Self.lockName, logger: logger) {
            let applied = try await appliedMigrations(connection, logger: logger, createTable: true)
            let before = state(applied: applied)
            guard before.drift.isEmpty else { throw MigrationError.drift(before.drift) }
            var report = MigrationReport(fromVersion: before.currentVersion, toVersion: before.currentVersion, applied: [])
            for file in before.pendingFiles(in: migrations) {
                let milliseconds: Double
                do {
                    milliseconds = try await apply(file, on: connection, logger: logger)
                } catch let error as MigrationError {
                    throw error
                } catch {
                    throw MigrationError.failed(failure(of: file, error: error, report: report))
                }
                report.applied.append(.init(version: file.version, name: file.name, file: file.fileName, durationMilliseconds: milliseconds))
                report.toVersion = max(report.toVersion, file.version)
                logger.info(
                    "applied migration",
                    metadata: ["file": "\(file.fileName)", "ms": "\(Int(milliseconds.rounded()))"])
            }
            return report
        }
    }

    private func apply(_ file: MigrationFile, on connection: PostgresConnection, logger: Logger) async throws -> Double {
        let script = SQLScript(file.sql)
        let clock = ContinuousClock()
        let started = clock.now
        func runStatements(_ connection: PostgresConnection) async throws {
            for statement in script.statements {
                do {
                    try await connection.query(PostgresQuery(unsafeSQL: statement.text), logger: logger)
                } catch {
                    throw StatementFailure(statement: statement, script: script, underlying: error)
                }
            }
        }
        func record(_ connection: PostgresConnection, milliseconds: Double) async throws {
            try await connection.query(
                """
                INSERT INTO schema_migrations (version, name, checksum, duration_ms)
                VALUES (\(file.version), \(file.name), \(file.checksum), \(milliseconds))
                """,
                logger: logger)
        }
        if file.runsInTransaction {
            return try await connection.transaction(logger: logger) { connection in
                try await runStatements(connection)
                let milliseconds = (clock.now - started).milliseconds
                try await record(connection, milliseconds: milliseconds)
                return milliseconds
            }
        } else {
            try await runStatements(connection)
            let milliseconds = (clock.now - started).milliseconds
            try await record(connection, milliseconds: milliseconds)
            return milliseconds
        }
    }

    private func failure(of file: MigrationFile, error: any Error, report: MigrationReport) -> MigrationFailure {
        var failure = MigrationFailure(
            file: file.fileName, version: file.version, sqlState: nil, message: "",
            line: nil, column: nil, fromVersion: report.fromVersion, reachedVersion: report.toVersion,
            applied: report.applied)
        let underlying = (error as? StatementFailure)?.underlying ?? error
        if let psql = underlying as? PSQLError, let info = psql.serverInfo {
            failure.sqlState = info[.sqlState]
            var message = info[.message] ?? "server error"
            if let detail = info[.detail] { message += " (\(detail))" }
            failure.message = message
            if let statementFailure = error as? StatementFailure,
                let position = info[.position].flatMap(Int.init), position > 0
            {
                let location = statementFailure.script.location(
                    ofOffset: statementFailure.statement.offset + position - 1)
                failure.line = location.line
                failure.column = location.column
            } else if let statementFailure = error as? StatementFailure {
                failure.line = statementFailure.script.location(ofOffset: statementFailure.statement.offset).line
            }
        } else {
            failure.message = DatabaseError.describeConnectionFailure(underlying)
        }
        return failure
    }

    /// The rows of schema_migrations, in version order (none when the table is missing).
    public func applied(_ connection: PostgresConnection, logger: Logger) async throws -> [AppliedMigration] {
        try await appliedMigrations(connection, logger: logger, createTable: false)
    }

    private func appliedMigrations(
        _ connection: PostgresConnection,
        logger: Logger,
        createTable: Bool
    ) async throws -> [AppliedMigration] {
        let rows: PostgresRowSequence
        do {
            rows = try await connection.query(
                "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version", logger: logger)
        } catch where error.sqlState == "42P01" {
            guard createTable else { return [] }
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INT PRIMARY KEY,
                    name TEXT NOT NULL,
                    checksum TEXT NOT NULL,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                    duration_ms DOUBLE PRECISION NOT NULL DEFAULT 0
                )
                """,
                logger: logger)
            return []
        }
        var applied: [AppliedMigration] = []
        for try await (version, name, checksum, appliedAt) in rows.decode((Int, String, String, Date).self) {
            applied.append(.init(version: version, name: name, checksum: checksum, appliedAt: appliedAt))
        }
        return applied
    }

    func state(applied: [AppliedMigration]) -> MigrationState {
        var drift: [ChecksumDrift] = []
        for migration in applied {
            if let file = migrations.file(version: migration.version) {
                if file.checksum != migration.checksum {
                    drift.append(.init(version: migration.version, file: file.fileName, kind: .changed))
                }
            } else {
                drift.append(.init(version: migration.version, file: "\(migration.version)_\(migration.name)", kind: .missingFile))
            }
        }
        let appliedVersions = Set(applied.map(\.version))
        let pending = migrations.files.filter { !appliedVersions.contains($0.version) }.map(\.fileName)
        return MigrationState(
            currentVersion: applied.map(\.version).max() ?? 0,
            latestVersion: migrations.latestVersion,
            pending: pending,
            drift: drift)
    }
}

/// A statement of a file failed: where in the file, and why.
struct StatementFailure: Error {
    let statement: SQLScript.Statement
    let script: SQLScript
    let underlying: any Error
}

extension Duration {
    var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}

extension DatabaseError {
    /// A short text for a failure that came with no server message.
    static func describeConnectionFailure(_ error: any Error) -> String {
        if let psql = error as? PSQLError {
            return "connection failed (\(psql.code))"
        }
        return String(describing: error)
    }
}
