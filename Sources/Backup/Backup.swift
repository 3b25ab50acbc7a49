// Backup: one tenant's data carried whole — export to a single tar archive
// (database dump, artifact tree, manifest and its signature; the tar format is
// the Tar module's), import from one, backup of every
// tenant, and move to another database server with no acknowledged write lost.
// Everything it runs inside a tenant database (pg_dump, pg_restore, fix-ups,
// checks) logs in as that tenant's role; the server's admin only creates,
// alters and drops roles and databases. It reaches the control database
// through ControlStore and the storage root directly.
