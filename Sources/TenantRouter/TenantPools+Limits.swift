extension TenantPools {
    public struct Limits: Sendable {
        public var budget: Int
        public var perTenant: Int
        public var wait: Duration
        /// How long a tenant whose database did not answer is refused at once
        /// before its next attempt.
        public var downtimeBackoff: Duration

        public init(budget: Int, perTenant: Int, wait: Duration, downtimeBackoff: Duration = .seconds(1)) {
            self.budget = budget
            self.perTenant = max(1, min(perTenant, budget))
            self.wait = wait
            self.downtimeBackoff = downtimeBackoff
        }
    }

    /// What the router holds right now, for `/metrics` and tests.
    public struct Usage: Sendable, Equatable {
        public var openPools: Int
        public var reservedConnections: Int
        public var requestsInFlight: Int
    }
}
