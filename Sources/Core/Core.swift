// Core: the vocabulary every module shares — operator-facing errors, the one
// rule for lowercase names (tenant slugs, SQL identifiers, step names), PostgreSQL
// URLs and connection helpers, the tenant login every tenant session uses, the
// storage layout, hex and base64url, and EINTR-safe POSIX wrappers. It knows
// nothing of tenants' data, the control database or HTTP.
