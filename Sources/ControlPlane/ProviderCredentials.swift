import Core
import Foundation
import PostgresNIO

/// A tenant's own key for a provider as listed: whether it is set and when,
/// never the key.
public struct TenantProviderKey: Sendable, Codable, Equatable {
    public var tenantId: String
    public var providerId: String
    public var keySet: Bool
    public var createdAt: Date?
    public var updatedAt: Date?
}

/// Provider keys sealed in the control database, so every replica and worker
/// has the same ones. A key is sealed with its owner as the authenticated data
/// (`provider:<id>`, `tenant:<slug>:provider:<id>`): copied onto another row it
/// does not open. No key is ever returned by these functions but
/// `providerCredential`, nor written to an audit row or an error.
extension ControlStore {
    /// Real keys are 40-200 characters; token-style keys run to a few thousand.
    public static let maximumProviderKeyBytes = 4096

    /// What the header that carries the key allows (the provider adapters
    /// refuse anything else): one line of printable ASCII without spaces.
    static func validateProviderKey(_ key: String) throws(ControlError) {
        guard !key.isEmpty else { throw .invalid("the provider key is empty") }
        guard key.utf8.count <= maximumProviderKeyBytes else {
            throw .invalid("the provider key is longer than \(maximumProviderKeyBytes) bytes")
        }
        guard key.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw .invalid("the provider key must be one line of printable ASCII without spaces")
        }
    }

    static func sealingOwner(provider: String) -> String { "provider:\(provider)" }

    static func sealingOwner(tenant: String, provider: String) -> String { "tenant:\(tenant):provider:\(provider)" }

    /// The provider id as audit rows and messages show it: a malformed one (a
    /// key pasted where the id belongs, say) is shown as nothing.
    static func shownProviderID(_ id: String) -> String? {
        NameRule.providerID.accepts(id) ? id : nil
    }

    static func unknownProvider(_ id: String) -> ControlError {
        guard let shown = shownProviderID(id) else { return .notFound("no such provider") }
        return .notFound("unknown provider \(shown) (see: tenantplane llm provider list)")
    }

    /// Stores the key every tenant's calls to the provider use unless the
    /// tenant has its own or the process has TENANTPLANE_<ID>_API_KEY; audited.
    public func setProviderKey(_ providerID: String, key: String, secrets: SecretBox?, actor: Actor) async throws
        -> LLMProvider
    {
        try await audited(actor, .providerKeySet, resourceId: Self.shownProviderID(providerID)) {
            try Self.validateProviderKey(key)
            guard let secrets else { throw ConfigurationError.missing(.masterKey) }
            let sealed = try secrets.seal(key, owner: Self.sealingOwner(provider: providerID))
            return try await storeProviderKey(providerID, sealed: sealed)
        }
    }

    /// Removes the provider's stored key (idempotent), audited.
    public func clearProviderKey(_ providerID: String, actor: Actor) async throws -> LLMProvider {
        try await audited(actor, .providerKeyClear, resourceId: Self.shownProviderID(providerID)) {
            try await storeProviderKey(providerID, sealed: nil)
        }
    }

    private func storeProviderKey(_ providerID: String, sealed: Data?) async throws -> LLMProvider {
        let rows = try await connection.query(
            "UPDATE llm_providers SET api_key_encrypted = \(sealed) WHERE id = \(providerID) RETURNING id",
            logger: logger)
        guard try await !rows.collect().isEmpty, let provider = try await provider(id: providerID) else {
            throw Self.unknownProvider(providerID)
        }
        return provider
    }

    /// Stores a tenant's own key for a provider, used for that tenant's calls
    /// before any other; audited. A tenant being deleted takes no new key.
    public func setTenantProviderKey(
        _ slug: TenantSlug, provider providerID: String, key: String, secrets: SecretBox?, actor: Actor
    ) async throws -> TenantProviderKey {
        try await audited(
            actor, .tenantProviderKeySet, resourceId: slug.rawValue,
            details: ["provider": Self.shownProviderID(providerID) ?? "-"]
        ) {
            try Self.validateProviderKey(key)
            guard let secrets else { throw ConfigurationError.missing(.masterKey) }
            guard try await provider(id: providerID) != nil else { throw Self.unknownProvider(providerID) }
            let sealed = try secrets.seal(key, owner: Self.sealingOwner(tenant: slug.rawValue, provider: providerID))
            return try await transaction { store in
                // The row lock orders this against `tenant delete`: either the
                // delete waits and the purge later removes the key, or the key
                // waits and sees the tenant deleting.
                let status = try await store.connection.query(
                    "SELECT status FROM tenants WHERE id = \(slug.rawValue) FOR SHARE", logger: store.logger
                ).collect().first?.decode(String.self)
                switch status.flatMap(TenantStatus.init(rawValue:)) {
                case nil, .deleted?: throw ControlError.notFound("no such tenant")
                case .deleting?:
                    throw ControlError.tenantBeingDeleted("tenant \(slug) is being deleted; undelete it first")
                default: break
                }
                let rows = try await store.connection.query(
                    """
                    INSERT INTO tenant_provider_keys (tenant_id, provider_id, api_key_encrypted)
                    VALUES (\(slug.rawValue), \(providerID), \(sealed))
                    ON CONFLICT (tenant_id, provider_id)
                        DO UPDATE SET api_key_encrypted = EXCLUDED.api_key_encrypted, updated_at = now()
                    RETURNING created_at, updated_at
                    """,
                    logger: store.logger)
                guard let (created, updated) = try await rows.collect().first?.decode((Date, Date).self) else {
                    throw ControlError.notFound("no such tenant")
                }
                return TenantProviderKey(
                    tenantId: slug.rawValue, providerId: providerID, keySet: true, createdAt: created, updatedAt: updated)
            }
        }
    }

    /// Removes a tenant's own key for a provider (idempotent), audited.
    public func clearTenantProviderKey(_ slug: TenantSlug, provider providerID: String, actor: Actor) async throws
        -> TenantProviderKey
    {
        try await audited(
            actor, .tenantProviderKeyClear, resourceId: slug.rawValue,
            details: ["provider": Self.shownProviderID(providerID) ?? "-"]
        ) {
            _ = try await requireTenant(slug)
            guard try await provider(id: providerID) != nil else { throw Self.unknownProvider(providerID) }
            try await connection.query(
                "DELETE FROM tenant_provider_keys WHERE tenant_id = \(slug.rawValue) AND provider_id = \(providerID)",
                logger: logger)
            return TenantProviderKey(tenantId: slug.rawValue, providerId: providerID, keySet: false)
        }
    }

    /// The providers a tenant has its own key for.
    public func tenantProviderKeys(_ slug: TenantSlug) async throws -> [TenantProviderKey] {
        _ = try await requireTenant(slug)
        let rows = try await connection.query(
            """
            SELECT provider_id, created_at, updated_at FROM tenant_provider_keys
            WHERE tenant_id = \(slug.rawValue) ORDER BY provider_id
            """,
            logger: logger)
        var keys: [TenantProviderKey] = []
        for try await (provider, created, updated) in rows.decode((String, Date, Date).self) {
            keys.append(
                TenantProviderKey(
                    tenantId: slug.rawValue, providerId: provider, keySet: true, createdAt: created, updatedAt: updated))
        }
        return keys
    }

    /// The key a tenant's call to `provider` is made with, first found of:
    /// 1. the tenant's own key (`tenant secret set`);
    /// 2. `environmentKey`, the process's TENANTPLANE_<ID>_API_KEY, so an
    ///    operator can override the stored key on one process;
    /// 3. the provider's stored key (`llm provider set-key`).
    /// nil when there is none. A sealed key that does not open under this
    /// master key and its row's owner is `SecretBoxError.cannotOpen`, never
    /// another row's key.
    public func providerCredential(
        provider: String, tenant: String, secrets: SecretBox, environmentKey: String?
    ) async throws -> String? {
        let rows = try await connection.query(
            """
            SELECT k.api_key_encrypted, p.api_key_encrypted FROM llm_providers p
            LEFT JOIN tenant_provider_keys k ON k.provider_id = p.id AND k.tenant_id = \(tenant)
            WHERE p.id = \(provider)
            """,
            logger: logger)
        let (tenantKey, providerKey) = try await rows.collect().first?.decode((Data?, Data?).self) ?? (nil, nil)
        if let tenantKey {
            return try secrets.open(tenantKey, owner: Self.sealingOwner(tenant: tenant, provider: provider))
        }
        if let environmentKey, !environmentKey.isEmpty { return environmentKey }
        return try providerKey.map { sealed throws(SecretBoxError) in
            try secrets.open(sealed, owner: Self.sealingOwner(provider: provider))
        }
    }
}
