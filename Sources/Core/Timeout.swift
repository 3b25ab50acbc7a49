/// Thrown by `withTimeout` when the work did not finish in time.
public struct TimeoutError: Error, Sendable {
    public let limit: Duration
}

/// Runs `body`, cancelling it when it takes longer than `limit`.
public func withTimeout<Result: Sendable>(
    _ limit: Duration,
    _ body: @Sendable @escaping () async throws -> Result
) async throws -> Result {
    try await withThrowingTaskGroup(of: Result?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let result = first else {
            throw TimeoutError(limit: limit)
        }
        return result
    }
}
