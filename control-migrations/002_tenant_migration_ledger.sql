-- The fleet migration ledger: what each tenant database was migrated to, and
-- what failed there and why, so a re-run retries the failed and skips the done.

CREATE TABLE tenant_migration_ledger (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    version INT NOT NULL,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('applied', 'failed')),
    error TEXT,
    sql_state TEXT,
    attempt INT NOT NULL DEFAULT 1,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, version)
);

CREATE INDEX tenant_migration_ledger_failed_idx ON tenant_migration_ledger (tenant_id) WHERE status = 'failed';

-- The outcome of the tenant's last migration run, and the fingerprint of the
-- migration files its database holds: equal to the current files' fingerprint
-- means nothing is pending, so a run can skip the tenant without connecting.
ALTER TABLE tenants
    ADD COLUMN migration_fingerprint TEXT,
    ADD COLUMN migration_outcome TEXT
        CHECK (migration_outcome IN ('migrated', 'current', 'failed', 'drift', 'unreachable')),
    ADD COLUMN migration_error TEXT,
    ADD COLUMN migrated_at TIMESTAMPTZ;
