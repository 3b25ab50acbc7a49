// Config: everything tenantplane reads from its environment (and the
// optional config file that mirrors it). Nothing else reads the environment.
