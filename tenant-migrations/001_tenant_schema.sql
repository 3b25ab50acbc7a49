-- A tenant's own database: its runs, their steps, the artifacts the steps wrote
-- (by path and digest; the content lives in the artifact store), its audit trail
-- and its versioned prompts.

CREATE TABLE runs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    current_step TEXT,
    config JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    steps TEXT[] NOT NULL DEFAULT '{}',
    input JSONB,
    lease_owner TEXT,
    lease_expires_at TIMESTAMPTZ
);

CREATE INDEX runs_status_idx ON runs (status, created_at);
CREATE INDEX runs_created_idx ON runs (created_at DESC, id DESC);

CREATE TABLE steps (
    id SERIAL PRIMARY KEY,
    run_id UUID REFERENCES runs (id),
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    llm_model TEXT,
    token_usage JSONB,
    error_message TEXT,
    retry_count INT DEFAULT 0,
    started_at TIMESTAMP DEFAULT NOW(),
    completed_at TIMESTAMP,
    UNIQUE (run_id, step)
);

CREATE TABLE artifacts (
    id SERIAL PRIMARY KEY,
    run_id UUID REFERENCES runs (id),
    step TEXT NOT NULL,
    file_type TEXT NOT NULL CHECK (file_type IN ('output', 'artifact')),
    file_path TEXT NOT NULL,
    digest TEXT CHECK (digest ~ '^[0-9a-f]{64}$'),
    metadata JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX artifacts_run_idx ON artifacts (run_id, step);

CREATE TABLE audit_logs (
    id SERIAL PRIMARY KEY,
    user_id TEXT NOT NULL,
    action TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    details JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE prompts (
    id SERIAL PRIMARY KEY,
    step TEXT NOT NULL,
    version INT NOT NULL,
    content TEXT NOT NULL,
    variables JSONB,
    is_active BOOLEAN DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (step, version)
);

CREATE UNIQUE INDEX prompts_one_active_idx ON prompts (step) WHERE is_active;
