-- Templates now give their objects to pg_database_owner, so a copy belongs to
-- its tenant's role without a hand-over. Forgetting what each server's template
-- was built from makes the next `tenant create` or `migrate tenants` inspect it
-- and rebuild one with the earlier layout.
UPDATE database_servers SET template_version = NULL, template_fingerprint = NULL;
