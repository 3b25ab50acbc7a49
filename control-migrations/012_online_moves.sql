-- Online moves (logical replication): a move records whether it streams,
-- two more phases (subscribed: a publication, slot, subscription and mover
-- role may exist and cleanup must look for them; synced: the initial copy is
-- done), and which serving processes acknowledged each of its signals (hold,
-- switch, release), so the old database is dropped only once every live
-- process has switched.
ALTER TABLE tenant_moves ADD COLUMN online BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE tenant_moves DROP CONSTRAINT tenant_moves_phase_check;
ALTER TABLE tenant_moves ADD CONSTRAINT tenant_moves_phase_check CHECK (phase IN (
    'started', 'fenced', 'dumped', 'creating_target', 'restored', 'subscribed', 'synced', 'verified', 'switched',
    'finished', 'rolled_back'));

CREATE TABLE tenant_move_acks (
    move_id UUID NOT NULL REFERENCES tenant_moves (id) ON DELETE CASCADE,
    process_id TEXT NOT NULL,
    signal TEXT NOT NULL CHECK (signal IN ('hold', 'switch', 'release')),
    acked_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (move_id, process_id, signal)
);
