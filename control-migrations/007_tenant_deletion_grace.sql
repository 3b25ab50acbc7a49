-- A deleted tenant stays recoverable for a grace period (TENANTPLANE_DELETE_GRACE)
-- before its purge. purge_after is when the purge is due; status_before_delete
-- is what `tenant undelete` brings the tenant back to (active or suspended).
ALTER TABLE tenants ADD COLUMN purge_after TIMESTAMPTZ;
ALTER TABLE tenants ADD COLUMN status_before_delete TEXT;
