// Fleet: the tenant migrations across every tenant database (and each server's
// template) with bounded concurrency, canaries and waves, recording each
// tenant's outcome in the control database's ledger.
