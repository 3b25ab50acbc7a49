import Core
import Crypto
import Foundation
import PostgresNIO

/// A tenant API key as listed: never the key itself.
public struct APIKeyRecord: Sendable, Codable, Equatable {
    public var id: String
    public var tenantId: String
    public var createdAt: Date
    public var revokedAt: Date?
}

/// A key just created: the only time the key is seen.
public struct IssuedAPIKey: Sendable, Codable, Equatable {
    public var id: String
    public var key: String
}

public enum APIKeyHash {
    /// SHA-256 of the key: what the control database stores and looks up.
    public static func digest(_ key: String) -> Data {
        Data(SHA256.hash(data: Data(key.utf8)))
    }
}

extension ControlStore {
    /// Issues a key for an active or suspended tenant, audited. Only its hash
    /// is stored; the key is in the answer and nowhere else.
    public func issueKey(for slug: TenantSlug, format: APIKeyFormat, actor: Actor) async throws -> IssuedAPIKey {
        try await audited(actor, .keyIssue, resourceId: slug.rawValue) { try await createAPIKey(for: slug, format: format) }
    }

    /// Revokes a key (idempotent), audited; `tenant`, when given, must own it.
    @discardableResult
    public func revokeKey(_ id: String, of tenant: TenantSlug? = nil, actor: Actor) async throws -> APIKeyRecord {
        try await audited(actor, .keyRevoke, resourceId: id) { try await revokeAPIKey(id: id, tenant: tenant) }
    }

    func createAPIKey(for slug: TenantSlug, format: APIKeyFormat) async throws -> IssuedAPIKey {
        let tenant = try await requireTenant(slug)
        guard tenant.status == .active || tenant.status == .suspended else {
            throw ControlError.conflict("tenant \(slug) is \(tenant.status.rawValue); keys are issued to active or suspended tenants")
        }
        let id = "key_" + RandomToken.hex(bytes: 8)
        let key = format.issue()
        try await connection.query(
            """
            INSERT INTO tenant_api_keys (id, tenant_id, key_hash, signed)
            VALUES (\(id), \(slug.rawValue), \(APIKeyHash.digest(key)), true)
            """,
            logger: logger)
        return IssuedAPIKey(id: id, key: key)
    }

    public func apiKeys(for slug: TenantSlug) async throws -> [APIKeyRecord] {
        _ = try await requireTenant(slug)
        let rows = try await connection.query(
            """
            SELECT id, tenant_id, created_at, revoked_at FROM tenant_api_keys
            WHERE tenant_id = \(slug.rawValue) ORDER BY created_at, id
            """,
            logger: logger)
        var keys: [APIKeyRecord] = []
        for try await (id, tenant, created, revoked) in rows.decode((String, String, Date, Date?).self) {
            keys.append(APIKeyRecord(id: id, tenantId: tenant, createdAt: created, revokedAt: revoked))
        }
        return keys
    }

    @discardableResult
    func revokeAPIKey(id: String, tenant: TenantSlug? = nil) async throws -> APIKeyRecord {
        let rows = try await connection.query(
            """
            UPDATE tenant_api_keys SET revoked_at = COALESCE(revoked_at, now())
            WHERE id = \(id) AND (\(tenant?.rawValue)::text IS NULL OR tenant_id = \(tenant?.rawValue))
            RETURNING id, tenant_id, created_at, revoked_at
            """,
            logger: logger)
        guard let row = try await rows.collect().first else { throw ControlError.notFound("no such API key") }
        let (keyID, tenantID, created, revoked) = try row.decode((String, String, Date, Date?).self)
        return APIKeyRecord(id: keyID, tenantId: tenantID, createdAt: created, revokedAt: revoked)
    }

    public func revokeAllAPIKeys(for slug: TenantSlug) async throws {
        try await connection.query(
            "UPDATE tenant_api_keys SET revoked_at = now() WHERE tenant_id = \(slug.rawValue) AND revoked_at IS NULL",
            logger: logger)
    }
}

/// Random tokens from the system's secure generator.
public enum RandomToken {
    public static func bytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    public static func hex(bytes count: Int) -> String {
        Hex.string(bytes(count))
    }

    /// Base64url without padding: safe in URLs, headers and SQL literals.
    public static func urlSafe(bytes count: Int) -> String {
        Base64URL.encode(bytes(count))
    }
}

/// Where a tenant's database is and whether it serves: what the router needs
/// to reach it. The sealed password is opened by the caller, never stored opened.
public struct TenantDatabase: Sendable {
    public var tenantID: String
    public var status: TenantStatus
    public var databaseUrl: String
    public var sealedRolePassword: Data?
}

/// The tenant behind an unrevoked key.
public struct APIKeyHolder: Sendable {
    public var keyID: String
    public var keyHash: Data
    public var tenant: TenantDatabase
}

extension ControlStore {
    static let tenantDatabaseColumns = "t.id, t.status, t.database_url, t.role_password_encrypted"

    static func decodeTenantDatabase(_ columns: (String, String, String, Data?)) -> TenantDatabase {
        TenantDatabase(
            tenantID: columns.0, status: TenantStatus(rawValue: columns.1) ?? .failed, databaseUrl: columns.2,
            sealedRolePassword: columns.3)
    }

    public func apiKeyHolder(digest: Data) async throws -> APIKeyHolder? {
        let rows = try await connection.query(
            """
            SELECT k.id, k.key_hash, \(unescaped: Self.tenantDatabaseColumns)
            FROM tenant_api_keys k JOIN tenants t ON t.id = k.tenant_id
            WHERE k.key_hash = \(digest) AND k.revoked_at IS NULL
            """,
            logger: logger)
        guard let row = try await rows.collect().first else { return nil }
        let (keyID, hash, tenantID, status, url, sealed) = try row.decode((String, Data, String, String, String, Data?).self)
        return APIKeyHolder(keyID: keyID, keyHash: hash, tenant: Self.decodeTenantDatabase((tenantID, status, url, sealed)))
    }

    /// Whether any live key was issued before keys carried a tag: until none
    /// is, keys of that shape are looked up.
    public func hasLiveUnsignedKeys() async throws -> Bool {
        let rows = try await connection.query(
            "SELECT EXISTS (SELECT 1 FROM tenant_api_keys WHERE NOT signed AND revoked_at IS NULL)", logger: logger)
        return try await rows.collect().first?.decode(Bool.self) ?? false
    }

    public func tenantDatabase(_ tenantID: String) async throws -> TenantDatabase? {
        let rows = try await connection.query(
            "SELECT \(unescaped: Self.tenantDatabaseColumns) FROM tenants t WHERE t.id = \(tenantID)", logger: logger)
        guard let row = try await rows.collect().first else { return nil }
        return Self.decodeTenantDatabase(try row.decode((String, String, String, Data?).self))
    }
}
