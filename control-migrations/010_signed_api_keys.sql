-- Keys issued from now on carry a tag the router checks before any lookup
-- (APIKeyFormat). Those issued before do not; while any of them is live, keys
-- of the old shape are still looked up, and once none is, they are refused
-- without a query.
ALTER TABLE tenant_api_keys ADD COLUMN signed BOOLEAN NOT NULL DEFAULT false;
