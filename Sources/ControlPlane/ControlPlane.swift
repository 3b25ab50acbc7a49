// ControlPlane: the control database — tenants and the servers they live on,
// API keys, the LLM catalog and the admin audit trail — and the secrets kept in
// it. Every read and write of the control database goes through ControlStore.
