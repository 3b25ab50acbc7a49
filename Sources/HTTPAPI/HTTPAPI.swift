// HTTPAPI: the HTTP routes and middleware (Hummingbird 2): health and
// readiness, the admin API behind the admin token, the tenant API (/v1) behind
// tenant keys, and metrics, plus the runner of the admin jobs its routes start.
// Handlers throw; ErrorMiddleware turns every failure into one JSON error body.
// It builds nothing of the process: the Runtime hands it what it serves.
