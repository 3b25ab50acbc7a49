-- Workers are woken by NOTIFY on channel tenantplane_runs instead of polling
-- the queue. NOTIFY takes a cluster-wide lock at commit, so a wake-up is sent
-- when a tenant's mark is newly set, or when its last one is over a second
-- old: a tenant whose runs keep coming costs at most one a second. This is
-- when that last one was sent.
ALTER TABLE tenant_run_queue ADD COLUMN notified_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp();
