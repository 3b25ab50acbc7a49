// TenantRouter: from a tenant API key to that tenant's own database pool. It owns
// the key cache (key hash → tenant, refreshed from the control database) and the
// tenant pools under the global connection budget. It never reads a request: the
// HTTP layer hands it a bearer token and gets back a session for one tenant.
