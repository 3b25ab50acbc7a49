// TenantData: one tenant's own database as Swift — runs, their steps and output
// references, versioned prompts, the audit trail and usage. Every function takes
// a connection that is already to that tenant's database; nothing here knows
// which tenant it is, so nothing here can reach another one.
