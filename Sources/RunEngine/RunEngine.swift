// RunEngine: executes runs. Each process is woken by the control database
// (LISTEN/NOTIFY on the run queue, with a full sweep as the fallback), gives
// each tenant with work one feeder (TenantFeed) that claims the tenant's runs
// in batches in its own database (FOR UPDATE SKIP LOCKED, with leases one
// LeaseKeeper renews per tenant database), and holds up to
// TENANTPLANE_MAX_INFLIGHT runs at once (RunSlots, first come, first served).
// A run executes its steps in order: active prompt, model and key resolution,
// provider call, output to the artifact store, `steps` row. It reaches tenant
// databases only through the router's pools, as `.worker` (behind requests,
// within the workers' share of the budget), and never keeps a step's content
// in the database.
