import Synchronization
import TenantRouter

/// Failed authentications allowed per client address: a bucket of `burst`
/// that refills at `perMinute`. An address whose bucket is empty gets 429 with
/// `Retry-After`, a second late, for anything that would need a key checked; keys already known
/// to belong to a tenant still pass, so a valid tenant behind the same address
/// (a NAT, an office) is not locked out by someone else's guessing.
public final class AuthFailureLimiter: Sendable {
    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    /// How long a refusal for too many failures is held before it is sent.
    static let refusalPause: Duration = .seconds(1)

    private let burst: Double
    private let perSecond: Double
    private let capacity: Int
    private let buckets = Mutex<[String: Bucket]>([:])

    /// `perMinute` 0 turns the limit off.
    public init(perMinute: Int, burst: Int? = nil, capacity: Int = 10_000) {
        self.perSecond = Double(perMinute) / 60
        self.burst = Double(max(1, burst ?? perMinute))
        self.capacity = capacity
    }

    /// Throws `.tooManyFailures` while `client` has no failures left.
    func admit(_ client: String) throws(TenantAccessError) {
        guard perSecond > 0 else { return }
        let now = ContinuousClock.now
        let wait = buckets.withLock { buckets -> Int? in
            guard let bucket = buckets[client].map({ refilled($0, now) }), bucket.tokens < 1 else { return nil }
            return max(1, Int(((1 - bucket.tokens) / perSecond).rounded(.up)))
        }
        if let wait { throw .tooManyFailures(retryAfter: wait) }
    }

    func recordFailure(_ client: String) {
        guard perSecond > 0 else { return }
        let now = ContinuousClock.now
        buckets.withLock { buckets in
            var bucket = buckets[client].map { refilled($0, now) } ?? Bucket(tokens: burst, updated: now)
            bucket.tokens = max(0, bucket.tokens - 1)
            if buckets[client] == nil, buckets.count >= capacity {
                // Full buckets say nothing an absent one would not.
                buckets = buckets.filter { refilled($0.value, now).tokens < burst }
                if buckets.count >= capacity { buckets.removeAll(keepingCapacity: true) }
            }
            buckets[client] = bucket
        }
    }

    private func refilled(_ bucket: Bucket, _ now: ContinuousClock.Instant) -> Bucket {
        let elapsed = now - bucket.updated
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return Bucket(tokens: min(burst, bucket.tokens + seconds * perSecond), updated: now)
    }
}
