// Migrations: applies a folder of NNN_snake_case.sql files to one database and
// records them in its schema_migrations table. It knows one database at a time
// and nothing of tenants; the control plane and the fleet runner build on it.
