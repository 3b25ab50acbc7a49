import Prometheus

/// The router's own figures, registered in the server's Prometheus registry.
public struct RouterMetrics: Sendable {
    let openPools: Gauge
    let reservedConnections: Gauge
    let connectionsInUse: Gauge
    let evictions: Counter
    let budgetWaits: Counter
    let poolGrowths: Counter
    let poolOpens: Counter
    let poolMisses: Counter

    public init(registry: PrometheusCollectorRegistry) {
        openPools = registry.makeGauge(
            name: "tenantplane_tenant_pools_open", help: "Tenant database pools currently open")
        reservedConnections = registry.makeGauge(
            name: "tenantplane_tenant_connections_reserved",
            help: "Connections the open and closing tenant pools may hold (never above the budget)")
        connectionsInUse = registry.makeGauge(
            name: "tenantplane_tenant_connections_in_use", help: "Tenant connections leased to a request right now")
        evictions = registry.makeCounter(
            name: "tenantplane_tenant_pool_evictions_total",
            help: "Idle tenant pools closed to make room under the connection budget")
        budgetWaits = registry.makeCounter(
            name: "tenantplane_budget_waits_total",
            help: "Requests that had to wait because the connection budget was full")
        poolGrowths = registry.makeCounter(
            name: "tenantplane_tenant_pool_growths_total",
            help: "Tenant pools replaced by a larger one because requests queued behind a single connection")
        poolOpens = registry.makeCounter(
            name: "tenantplane_tenant_pool_opens_total",
            help: "Tenant database pools opened, by requests and run workers alike")
        poolMisses = registry.makeCounter(
            name: "tenantplane_tenant_pool_misses_total",
            help: "Requests that had to open a pool (a new connection) because their tenant had none open that fit")
    }
}
