import Core

/// What an unauthenticated client can make the server spend, and the limits
/// on it: the settings of the HTTP listener (`Runtime` applies them) and of
/// tenant authentication.
public struct FrontDoor: Sendable {
    /// Where `/metrics` is served.
    public enum MetricsExposure: Sendable, Equatable {
        /// On the main port, to anyone (the default; it holds no tenant's data
        /// and no per-tenant label).
        case open
        /// On the main port, behind the admin token.
        case admin
        /// On its own listener only (an internal address), not on the main port.
        case separate(host: String, port: Int)

        /// `TENANTPLANE_METRICS_ADDRESS`: unset or `open`, `admin`, or `HOST:PORT`.
        public init(setting: String?) throws(ConfigurationError) {
            guard let setting, setting != "open" else {
                self = .open
                return
            }
            if setting == "admin" {
                self = .admin
                return
            }
            guard let colon = setting.lastIndex(of: ":"), let port = Int(setting[setting.index(after: colon)...]),
                (1...65_535).contains(port), colon > setting.startIndex
            else {
                throw .invalid("TENANTPLANE_METRICS_ADDRESS", "must be open, admin or HOST:PORT (such as 127.0.0.1:9090)")
            }
            var host = String(setting[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            self = .separate(host: host, port: port)
        }
    }

    public var limiter: AuthFailureLimiter
    public var trustedProxies: TrustedProxies
    public var metrics: MetricsExposure
    /// A connection with no request for this long is closed.
    public var idleTimeout: Duration
    /// A request head must be whole within this long of its first byte.
    public var requestHeadTimeout: Duration
    /// Every this long, a request body must have brought at least
    /// `requestMinimumRate` bytes a second, or its connection is closed.
    public var requestReadTimeout: Duration
    public var requestMinimumRate: Int
    /// Connections open at once; beyond it new ones wait in the listen backlog.
    public var maxConnections: Int

    public init(
        limiter: AuthFailureLimiter, trustedProxies: TrustedProxies, metrics: MetricsExposure,
        idleTimeout: Duration, requestHeadTimeout: Duration, requestReadTimeout: Duration, requestMinimumRate: Int,
        maxConnections: Int
    ) {
        self.limiter = limiter
        self.trustedProxies = trustedProxies
        self.metrics = metrics
        self.idleTimeout = idleTimeout
        self.requestHeadTimeout = requestHeadTimeout
        self.requestReadTimeout = requestReadTimeout
        self.requestMinimumRate = requestMinimumRate
        self.maxConnections = maxConnections
    }
}
