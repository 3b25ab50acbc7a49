/// How often and how patiently to retry a retryable failure: exponential
/// backoff with full jitter. Before retry `n` (0-based) the gateway waits a
/// random time between zero and `min(maxDelay, baseDelay · 2ⁿ)` — or, after a
/// 429 with `Retry-After`, at least that long, capped at `maxDelay`.
public struct RetryPolicy: Sendable {
    /// Retries after the first attempt; 0 means a single attempt.
    public var maxRetries: Int
    public var baseDelay: Duration
    public var maxDelay: Duration

    public init(maxRetries: Int = 3, baseDelay: Duration = .milliseconds(200), maxDelay: Duration = .seconds(5)) {
        self.maxRetries = max(0, maxRetries)
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    /// The ceiling of the wait before retry `retry` (0-based).
    public func delayCeiling(forRetry retry: Int) -> Duration {
        let base = max(0, baseDelay.nanoseconds)
        let cap = max(0, maxDelay.nanoseconds)  // both clamped to what Int64 holds below
        let exponent = min(max(0, retry), 62)
        let ceiling = base * Double(1 << UInt64(exponent))
        return .nanoseconds(Int64(min(ceiling, cap, 9e18)))
    }

    /// A wait before retry `retry` (0-based): uniform in 0...ceiling.
    public func delay(forRetry retry: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        let ceiling = delayCeiling(forRetry: retry).nanoseconds
        guard ceiling > 0 else { return .zero }
        return .nanoseconds(Int64(Double.random(in: 0...ceiling, using: &generator)))
    }

    public func delay(forRetry retry: Int) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return delay(forRetry: retry, using: &generator)
    }
}

extension Duration {
    /// The duration in nanoseconds, as a Double (exact enough for delays).
    var nanoseconds: Double {
        let parts = components
        return Double(parts.seconds) * 1e9 + Double(parts.attoseconds) / 1e9
    }
}
