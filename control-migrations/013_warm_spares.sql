-- Warm spares: role-and-database pairs a server keeps created and migrated,
-- handed to a tenant at sign-up by renaming them. A row is written before its
-- database exists and deleted only after the database is gone or has become a
-- tenant's, so every spare database on a server has a row here.
--   filling   being created and checked; never handed out
--   ready     at schema_version/fingerprint, claimable
--   claiming  handed to claimed_by: the renames may or may not have committed
--   retiring  being dropped
CREATE TABLE tenant_spares (
    name TEXT PRIMARY KEY CHECK (name ~ '^tp__spare_[0-9a-f]{12}$'),
    server TEXT NOT NULL REFERENCES database_servers (name),
    state TEXT NOT NULL CHECK (state IN ('filling', 'ready', 'claiming', 'retiring')),
    schema_version INT,
    schema_fingerprint TEXT,
    claimed_by TEXT REFERENCES tenants (id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((state = 'claiming') = (claimed_by IS NOT NULL)),
    CHECK (state <> 'ready' OR schema_fingerprint IS NOT NULL)
);
CREATE INDEX tenant_spares_ready_idx ON tenant_spares (server, schema_fingerprint, created_at) WHERE state = 'ready';
