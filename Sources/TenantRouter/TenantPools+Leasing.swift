import Core
import Prometheus
import PostgresNIO
import Synchronization

/// How a tenant pool is made and how one connection of it is leased.
extension TenantPools {
    /// Runs `body` on a connection of `client`; a connection not handed over
    /// by `deadline` is `LeaseTimeout`, one that was is never cut short.
    func lease<Result: Sendable>(
        _ client: PostgresClient, until deadline: ContinuousClock.Instant,
        _ body: @Sendable @escaping (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let leased = LeaseFlag()
        let inUse = metrics.connectionsInUse
        return try await withThrowingTaskGroup(of: LeaseOutcome<Result>.self) { group in
            group.addTask {
                .finished(
                    try await client.withConnection { connection in
                        leased.value.store(true, ordering: .relaxed)
                        inUse.increment()
                        defer { inUse.decrement() }
                        return try await body(connection)
                    })
            }
            group.addTask {
                do {
                    try await Task.sleep(until: deadline, clock: .continuous)
                    return .timerFired
                } catch {
                    // Cancelled: the caller gave up, which says nothing about the database.
                    return .cancelled
                }
            }
            while let outcome = try await group.next() {
                switch outcome {
                case .finished(let result):
                    group.cancelAll()
                    return result
                case .timerFired:
                    if !leased.value.load(ordering: .relaxed) {
                        group.cancelAll()
                        throw LeaseTimeout()
                    }
                case .cancelled:
                    if !leased.value.load(ordering: .relaxed) {
                        group.cancelAll()
                        throw CancellationError()
                    }
                }
            }
            throw CancellationError()
        }
    }

    func makeClient(for database: PostgresURL, size: Int) -> PostgresClient {
        var configuration = database.clientConfiguration()
        configuration.options.minimumConnections = 0
        configuration.options.maximumConnections = size
        configuration.options.connectionIdleTimeout = .seconds(60)
        // A session left inside a transaction (a request cancelled between
        // BEGIN and COMMIT) would keep its row locks, and a run locked that
        // way is skipped by every claim (SKIP LOCKED) for good. PostgreSQL
        // ends such a session after 30 s, and its locks with it. The other
        // pinned settings win over any the tenant's own SQL persisted.
        configuration.options.additionalStartupParameters = [
            ("options", TenantLogin.startupOptions(overriding: [("idle_in_transaction_session_timeout", "30s")]))
        ]
        // The pool warns when a request arrives a moment before `run()` has
        // started, which is how every new tenant pool begins; what matters
        // (unreachable databases) this type logs itself.
        var poolLogger = logger
        poolLogger.logLevel = max(logger.logLevel, .error)
        return PostgresClient(configuration: configuration, backgroundLogger: poolLogger)
    }
}

enum LeaseOutcome<Result: Sendable>: Sendable {
    case finished(Result)
    case timerFired
    case cancelled
}

struct LeaseTimeout: Error {}

/// Set once the pool has handed over a connection: from then on the wait is
/// over and the query runs to its end.
final class LeaseFlag: Sendable {
    let value = Atomic<Bool>(false)
}
