import ArgumentParser

public struct Tenantplane: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tenantplane",
        abstract: "Control plane for SaaS platforms that give every customer its own PostgreSQL database.",
        discussion: """
            Configuration comes from the environment (the environment wins over the file named by \
            TENANTPLANE_CONFIG_FILE, default .tenantplane/env): TENANTPLANE_CONTROL_URL, \
            TENANTPLANE_MASTER_KEY or TENANTPLANE_MASTER_KEY_FILE, TENANTPLANE_ADMIN_TOKEN, TENANTPLANE_STORAGE, \
            TENANTPLANE_CONTROL_MIGRATIONS, TENANTPLANE_TENANT_MIGRATIONS, TENANTPLANE_CONNECTION_BUDGET, \
            TENANTPLANE_TENANT_POOL_SIZE, TENANTPLANE_POOL_WAIT, TENANTPLANE_DOWNTIME_BACKOFF, TENANTPLANE_MAX_UPLOAD_BYTES, \
            TENANTPLANE_IDLE_TIMEOUT, TENANTPLANE_REQUEST_HEAD_TIMEOUT, TENANTPLANE_REQUEST_READ_TIMEOUT, \
            TENANTPLANE_REQUEST_MIN_RATE, TENANTPLANE_MAX_CONNECTIONS, TENANTPLANE_AUTH_FAILURES_PER_MINUTE, \
            TENANTPLANE_TRUSTED_PROXIES, TENANTPLANE_METRICS_ADDRESS, TENANTPLANE_WARM_SPARES, \
            TENANTPLANE_MAX_INFLIGHT, TENANTPLANE_TENANT_MAX_INFLIGHT, TENANTPLANE_WORKER_BUDGET_SHARE, \
            TENANTPLANE_RUN_LEASE, TENANTPLANE_WORKER_POLL, TENANTPLANE_PROVIDER_TIMEOUT, \
            TENANTPLANE_PROVIDER_RETRIES, TENANTPLANE_<PROVIDER_ID>_API_KEY, TENANTPLANE_PG_BINDIR, \
            TENANTPLANE_LOG_LEVEL. README.md lists them with their defaults.
            """,
        subcommands: [
            Migrate.self, Server.self, Spares.self, Tenant.self, Backup.self, LLM.self, Serve.self, Worker.self, StoreArtifact.self,
        ]
    )

    public init() {}
}
