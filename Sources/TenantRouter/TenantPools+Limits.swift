extension TenantPools {
    public struct Limits: Sendable {
        public var budget: Int
        public var perTenant: Int
        public var wait: Duration
        /// How long a tenant whose database did not answer is refused at once
        /// before its next attempt.
        public var downtimeBackoff: Duration
        /// The share of the budget run workers may hold at once.
        public var workerShare: Double

        /// Connections run workers may hold at once: at least one.
        public var workerConnections: Int { max(1, Int((Double(budget) * workerShare).rounded(.down))) }

        public init(
            budget: Int, perTenant: Int, wait: Duration, downtimeBackoff: Duration = .seconds(1),
            workerShare: Double = 0.5
        ) {
            self.budget = budget
            self.perTenant = max(1, min(perTenant, budget))
            self.wait = wait
            self.downtimeBackoff = downtimeBackoff
            self.workerShare = min(1, max(0, workerShare))
        }
    }

    /// What the router holds right now, for `/metrics` and tests.
    public struct Usage: Sendable, Equatable {
        public var openPools: Int
        public var reservedConnections: Int
        /// Leases in flight, run workers' included.
        public var requestsInFlight: Int
        public var workersInFlight: Int
        public var waitingRequests: Int
        public var waitingWorkers: Int
    }
}
