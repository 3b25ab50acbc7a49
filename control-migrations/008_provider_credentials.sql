-- LLM provider keys kept in the control database, so every replica and worker
-- shares one configuration instead of each needing TENANTPLANE_<ID>_API_KEY in
-- its environment. Each key is AES-GCM-sealed under the master key with its
-- owner as the authenticated data ('provider:<id>', or
-- 'tenant:<slug>:provider:<id>' for a tenant's own key), so a sealed key
-- copied onto another row does not open. A tenant's call uses its own key,
-- else the environment variable, else the provider's stored key.
ALTER TABLE llm_providers ADD COLUMN api_key_encrypted BYTEA;

-- Keys a tenant brings for its own calls. The purge removes them; the cascade
-- covers a tenant row removed by hand.
CREATE TABLE tenant_provider_keys (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    provider_id TEXT NOT NULL REFERENCES llm_providers (id),
    api_key_encrypted BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, provider_id)
);
