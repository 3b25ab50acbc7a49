-- Which tenants have runs to execute. A tenant's runs live in its own database;
-- this queue tells workers which databases to look in, so thousands of idle
-- tenants cost nothing. A row is added (or its time bumped) whenever a run
-- becomes pending, and removed by a worker that found nothing left to do.
CREATE TABLE tenant_run_queue (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    queued_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX tenant_run_queue_time_idx ON tenant_run_queue (queued_at);

-- Out of the box every step runs on the offline provider; an operator points
-- steps (or this catch-all row) elsewhere with `tenantplane llm default set`.
INSERT INTO step_llm_defaults (step, provider_id, model_class)
VALUES ('*', 'local', 'standard')
ON CONFLICT (step) DO NOTHING;
