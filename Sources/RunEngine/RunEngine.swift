// RunEngine: executes runs. Workers find tenants with queued runs in the control
// database, claim a run in the tenant's own database (FOR UPDATE SKIP LOCKED,
// with a lease they renew), and execute its steps in order: active prompt,
// model resolution, provider call, output to the artifact store, `steps` row.
// It reaches tenant databases only through the router's pools (the budget
// covers workers too) and never keeps a step's content in the database.
