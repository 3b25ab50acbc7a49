-- A fleet migration that could not get its locks within its lock_timeout is
-- recorded as such: retryable, not a failure of the tenant's data.
ALTER TABLE tenants
    DROP CONSTRAINT tenants_migration_outcome_check,
    ADD CONSTRAINT tenants_migration_outcome_check
        CHECK (migration_outcome IN ('migrated', 'current', 'failed', 'drift', 'unreachable', 'lock_timeout'));
