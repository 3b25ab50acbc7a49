-- Exports and moves of one tenant.
--
-- write_fence: the tenant's database is read-only while an export or a move
-- copies it (set by the process doing it, cleared when it ends). A fence whose
-- process died is lifted by the next export, move or server start-up, which
-- can tell because the tenant's advisory lock is free.
ALTER TABLE tenants ADD COLUMN write_fence TEXT CHECK (write_fence IN ('export', 'move'));

-- One row per `tenant move`. `phase` is how far it got, so an interrupted move
-- is rolled back (before `switched`) or finished (from `switched` on).
CREATE TABLE tenant_moves (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    from_server TEXT NOT NULL REFERENCES database_servers (name),
    to_server TEXT NOT NULL REFERENCES database_servers (name),
    phase TEXT NOT NULL CHECK (phase IN (
        'started', 'fenced', 'dumped', 'creating_target', 'restored', 'verified', 'switched',
        'finished', 'rolled_back')),
    error TEXT,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ
);

CREATE UNIQUE INDEX tenant_moves_one_open_idx ON tenant_moves (tenant_id)
    WHERE phase NOT IN ('finished', 'rolled_back');

-- Long-running admin work started over HTTP (export, move): its state, for
-- GET /admin/jobs/{id}. A job still `running` when its server stopped is
-- marked failed at the next start-up.
CREATE TABLE admin_jobs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    kind TEXT NOT NULL CHECK (kind IN ('export', 'move')),
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    detail TEXT,
    result JSONB,
    error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ
);
