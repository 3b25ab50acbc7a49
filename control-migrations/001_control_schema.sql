-- The control database: tenants and where they live, their API keys, the LLM
-- catalog and the admin audit trail. Specified columns keep the names and types
-- of DESIGN.md; every added column is nullable or has a default.

CREATE TABLE database_servers (
    name TEXT PRIMARY KEY,
    admin_url TEXT NOT NULL,
    -- The admin URL's password, AES-GCM-encrypted under the master key (the
    -- server name is the authenticated data); admin_url itself holds none.
    admin_password_encrypted BYTEA,
    capacity INT NOT NULL DEFAULT 5000 CHECK (capacity >= 0),
    is_active BOOLEAN NOT NULL DEFAULT true,
    -- The tenant migrations its tenantplane_template database holds: the highest
    -- version and a fingerprint of every file's checksum.
    template_version INT,
    template_fingerprint TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    database_url TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT NOW(),
    is_active BOOLEAN DEFAULT true,
    status TEXT NOT NULL DEFAULT 'provisioning'
        CHECK (status IN ('provisioning', 'active', 'suspended', 'deleting', 'deleted', 'failed')),
    server TEXT REFERENCES database_servers (name),
    schema_version INT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    role_password_encrypted BYTEA,
    provisioning_step TEXT,
    last_error TEXT
);

CREATE INDEX tenants_server_idx ON tenants (server) WHERE status <> 'deleted';

-- is_active is the specified flag; status is the truth. A row written with only
-- the specified columns (is_active, no status) is taken as active or suspended.
CREATE FUNCTION tenants_sync_is_active() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.status = 'provisioning' AND NEW.role_password_encrypted IS NULL
       AND NEW.provisioning_step IS NULL THEN
        NEW.status := CASE WHEN COALESCE(NEW.is_active, true) THEN 'active' ELSE 'suspended' END;
    END IF;
    NEW.is_active := (NEW.status = 'active');
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER tenants_sync_is_active BEFORE INSERT OR UPDATE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_sync_is_active();

CREATE TABLE tenant_api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    key_hash BYTEA NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);

CREATE INDEX tenant_api_keys_tenant_idx ON tenant_api_keys (tenant_id);

CREATE TABLE control_audit_logs (
    id BIGSERIAL PRIMARY KEY,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT,
    outcome TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    details JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX control_audit_logs_resource_idx ON control_audit_logs (resource_type, resource_id, created_at);

CREATE TABLE llm_providers (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    api_base_url TEXT,
    is_active BOOLEAN DEFAULT true,
    -- The wire protocol the provider speaks: openai, anthropic, gemini or local.
    api_style TEXT CHECK (api_style IN ('openai', 'anthropic', 'gemini', 'local'))
);

CREATE TABLE llm_models (
    id SERIAL PRIMARY KEY,
    provider_id TEXT REFERENCES llm_providers (id),
    model_name TEXT NOT NULL,
    model_class TEXT NOT NULL CHECK (model_class IN ('pro', 'standard')),
    is_active BOOLEAN DEFAULT true,
    UNIQUE (provider_id, model_name)
);

CREATE TABLE step_llm_defaults (
    step TEXT PRIMARY KEY,
    provider_id TEXT REFERENCES llm_providers (id),
    model_class TEXT NOT NULL CHECK (model_class IN ('pro', 'standard'))
);

-- The providers of the specification, plus the offline one. Their base URLs are
-- the public defaults; an operator points them elsewhere with `llm provider add`.
INSERT INTO llm_providers (id, display_name, api_base_url, api_style) VALUES
    ('claude', 'Anthropic Claude', 'https://api.anthropic.com', 'anthropic'),
    ('gemini', 'Google Gemini', 'https://generativelanguage.googleapis.com', 'gemini'),
    ('openai', 'OpenAI', 'https://api.openai.com', 'openai'),
    ('local', 'Built-in deterministic provider (offline)', NULL, 'local');

INSERT INTO llm_models (provider_id, model_name, model_class) VALUES
    ('local', 'local-pro', 'pro'),
    ('local', 'local-standard', 'standard');
