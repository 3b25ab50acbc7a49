import Logging
import PostgresNIO

/// A leased connection that refuses a statement at once when the server has
/// already closed it (a PostgreSQL restart, `pg_terminate_backend` on a
/// suspension or a fence).
///
/// postgres-nio 1.33 writes a query to its channel without a write promise:
/// on a channel that closed between two statements the write is dropped and
/// the query's own promise is never completed, so its `await` never returns
/// and cancellation does not reach it. ops/soak showed it: a worker's step
/// waited forever inside a transaction whose backend a suspension had ended,
/// while the run's lease went on being renewed. Checking before each statement
/// leaves only the moment between the check and the channel's write.
public struct LiveConnection: Sendable {
    public let underlying: PostgresConnection

    public init(_ underlying: PostgresConnection) {
        self.underlying = underlying
    }

    public var isClosed: Bool { underlying.isClosed }

    @discardableResult
    public func query(
        _ query: PostgresQuery, logger: Logger, file: String = #fileID, line: Int = #line
    ) async throws -> PostgresRowSequence {
        guard !underlying.isClosed else { throw ConnectionClosed() }
        return try await underlying.query(query, logger: logger, file: file, line: line)
    }

    public func execute<Statement: PostgresPreparedStatement, Row>(
        _ statement: Statement, logger: Logger, file: String = #fileID, line: Int = #line
    ) async throws -> AsyncThrowingMapSequence<PostgresRowSequence, Row> where Row == Statement.Row {
        guard !underlying.isClosed else { throw ConnectionClosed() }
        return try await underlying.execute(statement, logger: logger, file: file, line: line)
    }

    /// BEGIN … COMMIT around `body`, ROLLBACK when it throws; the error that
    /// caused the rollback is rethrown as is, so callers can read its SQLSTATE.
    public func transaction<Result>(logger: Logger, _ body: (LiveConnection) async throws -> Result) async throws
        -> Result
    {
        try await query("BEGIN", logger: logger)
        do {
            let result = try await body(self)
            try await query("COMMIT", logger: logger)
            return result
        } catch {
            if !isClosed { _ = try? await query("ROLLBACK", logger: logger) }
            throw error
        }
    }
}

/// Session advisory locks, scoped to the connection's database. A
/// connection that dies releases its locks.
///
/// A name's key is `hashtextextended(name, 0)`, 64 bits: with 32-bit
/// `hashtext` keys, thousands of `tenant:<slug>` names made collisions likely
/// (200,000 names held two colliding pairs), and a collision makes two
/// unrelated tenants wait for each other. Binaries before this change took the
/// 32-bit key of the same name, which does not exclude this one: nothing
/// refuses an older process against a newer control database (`/readyz` only
/// refuses a control database that is behind), so stop every older `serve`,
/// `worker` and CLI command before a newer one takes these locks.
extension LiveConnection {
    /// Runs `body` holding the session advisory lock `name`, waiting for it
    /// when another session holds it.
    public func withAdvisoryLock<Result>(
        named name: String,
        logger: Logger,
        _ body: () async throws -> Result
    ) async throws -> Result {
        try await query("SELECT pg_advisory_lock(hashtextextended(\(name), 0))", logger: logger)
        return try await holding(name, logger: logger, body)
    }

    /// Runs `body` holding the session advisory lock `name` if it is free
    /// right now; nil (and `body` not run) when another session holds it.
    public func withAdvisoryLockIfFree<Result>(
        named name: String,
        logger: Logger,
        _ body: () async throws -> Result
    ) async throws -> Result? {
        let rows = try await query("SELECT pg_try_advisory_lock(hashtextextended(\(name), 0))", logger: logger)
        guard try await rows.collect().first?.decode(Bool.self) == true else { return nil }
        return try await holding(name, logger: logger, body)
    }

    /// Runs `body`, then gives the lock back however it ended (a closed
    /// connection gave it back already).
    private func holding<Result>(_ name: String, logger: Logger, _ body: () async throws -> Result) async throws
        -> Result
    {
        do {
            let result = try await body()
            try await query("SELECT pg_advisory_unlock(hashtextextended(\(name), 0))", logger: logger)
            return result
        } catch {
            if !isClosed {
                _ = try? await query("SELECT pg_advisory_unlock(hashtextextended(\(name), 0))", logger: logger)
            }
            throw error
        }
    }
}

/// The server had closed the connection before the statement was sent, so
/// nothing of it ran; trying again on a new connection is safe.
public struct ConnectionClosed: OperatorError {
    public init() {}

    public var httpStatus: Int { 503 }
    public var code: String { "database_connection_lost" }
    public var message: String { "the database closed the connection (restarted or ended the session); retry shortly" }
}

extension Error {
    /// The connection broke (server gone, backend terminated), as opposed to
    /// the statement failing.
    public var meansConnectionLost: Bool {
        if self is ConnectionClosed { return true }
        guard let psql = self as? PSQLError else { return false }
        switch psql.code {
        case .serverClosedConnection, .connectionError, .clientClosedConnection, .uncleanShutdown, .poolClosed:
            return true
        default:
            if let state = psql.serverInfo?[.sqlState] { return state.hasPrefix("57P") || state == "08006" }
            return false
        }
    }
}
