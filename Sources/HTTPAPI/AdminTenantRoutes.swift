import ControlPlane
import Core
import Hummingbird
import Provisioner

/// Tenants under `/admin/tenants/…`, the same operations as `tenantplane tenant`.
struct AdminTenantRoutes {
    let control: ControlAccess
    let provisioner: Provisioner
    let keyFormat: APIKeyFormat
    /// Tells this process's router that a tenant's status or keys changed, so it
    /// acts on it now (other replicas notice within the key cache's lifetime).
    let tenantChanged: @Sendable (TenantSlug) -> Void

    struct NewTenant: Decodable {
        let id: String
        let name: String
        let server: String?
    }

    struct Tenants: ResponseEncodable { let tenants: [TenantRecord] }
    struct Keys: ResponseEncodable { let keys: [APIKeyRecord] }
    struct ProviderKeys: ResponseEncodable { let providerKeys: [TenantProviderKey] }

    func register(on admin: RouterGroup<APIRequestContext>) {
        admin.post("tenants") { request, context -> EditedResponse<Provisioner.CreateOutcome> in
            let body = try await request.decode(as: NewTenant.self, context: context)
            let slug = try TenantSlug(body.id)
            let outcome = try await provisioner.create(slug, name: body.name, server: body.server, actor: .adminToken)
            return EditedResponse(status: .created, response: outcome)
        }
        admin.get("tenants") { _, _ in
            Tenants(tenants: try await control.run { try await $0.tenants() })
        }
        admin.get("tenants/:id") { _, context -> TenantRecord in
            let slug = try Self.slug(context)
            return try await control.run { try await $0.requireTenant(slug) }
        }
        admin.post("tenants/:id/suspend") { _, context -> TenantRecord in
            let slug = try Self.slug(context)
            defer { tenantChanged(slug) }
            return try await provisioner.suspend(slug, actor: .adminToken)
        }
        admin.post("tenants/:id/resume") { _, context -> TenantRecord in
            let slug = try Self.slug(context)
            defer { tenantChanged(slug) }
            return try await provisioner.resume(slug, actor: .adminToken)
        }
        admin.delete("tenants/:id") { request, context -> TenantRecord in
            let slug = try Self.slug(context)
            defer { tenantChanged(slug) }
            let purgeNow = request.uri.queryParameters.get("purge_now") == "true"
            return try await provisioner.delete(slug, confirmation: slug.rawValue, purgeNow: purgeNow, actor: .adminToken)
        }
        admin.post("tenants/:id/undelete") { _, context -> TenantRecord in
            let slug = try Self.slug(context)
            defer { tenantChanged(slug) }
            return try await provisioner.undelete(slug, actor: .adminToken)
        }
        admin.post("tenants/:id/keys") { _, context -> EditedResponse<IssuedAPIKey> in
            let slug = try Self.slug(context)
            let key = try await control.run { try await $0.issueKey(for: slug, format: keyFormat, actor: .adminToken) }
            return EditedResponse(status: .created, response: key)
        }
        admin.get("tenants/:id/keys") { _, context -> Keys in
            let slug = try Self.slug(context)
            return Keys(keys: try await control.run { try await $0.apiKeys(for: slug) })
        }
        admin.delete("tenants/:id/keys/:key") { _, context -> APIKeyRecord in
            let slug = try Self.slug(context)
            let keyID = try context.parameters.require("key")
            defer { tenantChanged(slug) }
            return try await control.run { try await $0.revokeKey(keyID, of: slug, actor: .adminToken) }
        }
        admin.get("tenants/:id/providers") { _, context -> ProviderKeys in
            let slug = try Self.slug(context)
            return ProviderKeys(providerKeys: try await control.run { try await $0.tenantProviderKeys(slug) })
        }
        admin.put("tenants/:id/providers/:provider/key") { request, context -> TenantProviderKey in
            let slug = try Self.slug(context)
            let provider = try context.parameters.require("provider")
            let body = try await request.decode(as: AdminLLMRoutes.NewProviderKey.self, context: context)
            return try await control.run { [secrets = control.secrets] store in
                try await store.setTenantProviderKey(
                    slug, provider: provider, key: body.apiKey, secrets: secrets, actor: .adminToken)
            }
        }
        admin.delete("tenants/:id/providers/:provider/key") { _, context -> TenantProviderKey in
            let slug = try Self.slug(context)
            let provider = try context.parameters.require("provider")
            return try await control.run { try await $0.clearTenantProviderKey(slug, provider: provider, actor: .adminToken) }
        }
    }

    /// The path's tenant id; a malformed one is a 404 like an unknown one.
    static func slug(_ context: APIRequestContext) throws -> TenantSlug {
        guard let raw = context.parameters.get("id"), let slug = try? TenantSlug(raw) else {
            throw ControlError.notFound("no such tenant")
        }
        return slug
    }
}

extension Provisioner.CreateOutcome: ResponseEncodable {}
extension TenantRecord: ResponseEncodable {}
extension IssuedAPIKey: ResponseEncodable {}
extension APIKeyRecord: ResponseEncodable {}
extension TenantProviderKey: ResponseEncodable {}
