import Core
import Foundation
import PostgresNIO

public enum TenantStatus: String, Sendable, Codable, CaseIterable {
    case provisioning, active, suspended, deleting, deleted, failed
}

/// A tenant as the control database knows it. Holds no secret.
public struct TenantRecord: Sendable, Codable, Equatable {
    public var id: String
    public var name: String
    public var status: TenantStatus
    public var isActive: Bool
    public var server: String?
    public var schemaVersion: Int?
    /// `postgres://ROLE@HOST:PORT/DB?sslmode=…`, no password.
    public var databaseUrl: String
    public var createdAt: Date
    public var updatedAt: Date
    public var provisioningStep: String?
    public var lastError: String?
    /// While `deleting`: when the purge is due (`tenant undelete` until then).
    public var purgeAfter: Date?
}

extension ControlStore {
    static let tenantColumns = """
        id, name, status, COALESCE(is_active, false), server, schema_version, database_url,
        COALESCE(created_at, now()::timestamp), updated_at, provisioning_step, last_error, purge_after
        """

    static func decodeTenant(_ row: PostgresRow) throws -> TenantRecord {
        let (id, name, status, active, server, version, url, created, updated, step, error, purgeAfter) = try row.decode(
            (String, String, String, Bool, String?, Int?, String, Date, Date, String?, String?, Date?).self)
        return TenantRecord(
            id: id, name: name, status: TenantStatus(rawValue: status) ?? .failed, isActive: active, server: server,
            schemaVersion: version, databaseUrl: url, createdAt: created, updatedAt: updated, provisioningStep: step,
            lastError: error, purgeAfter: purgeAfter)
    }

    public func tenant(_ slug: TenantSlug) async throws -> TenantRecord? {
        let rows = try await connection.query(
            "SELECT \(unescaped: Self.tenantColumns) FROM tenants WHERE id = \(slug.rawValue)", logger: logger)
        return try await rows.collect().first.map(Self.decodeTenant)
    }

    /// The tenant, or a 404 that does not echo the id.
    public func requireTenant(_ slug: TenantSlug) async throws -> TenantRecord {
        guard let tenant = try await tenant(slug) else { throw ControlError.notFound("no such tenant") }
        return tenant
    }

    public func tenants(includingDeleted: Bool = false) async throws -> [TenantRecord] {
        let rows = try await connection.query(
            """
            SELECT \(unescaped: Self.tenantColumns) FROM tenants
            WHERE \(includingDeleted) OR status <> 'deleted' ORDER BY id
            """,
            logger: logger)
        var result: [TenantRecord] = []
        for try await row in rows { result.append(try Self.decodeTenant(row)) }
        return result
    }

    /// Inserts a tenant as `provisioning`, or takes over a row that may be
    /// resumed (`provisioning`, `failed`) or reused (`deleted`). An `active` or
    /// `suspended` tenant is left untouched: `alreadyExists`. `existing` is the
    /// row as the caller just read it under the tenant's lock.
    /// `sealedRolePassword`, when given, replaces the stored one.
    public func registerTenant(
        _ slug: TenantSlug, name: String, server: String, databaseURL: String, sealedRolePassword: Data? = nil,
        existing: TenantRecord?
    ) async throws {
        if let existing {
            switch existing.status {
            case .active, .suspended:
                throw ControlError.alreadyExists("tenant \(slug) already exists")
            case .deleting:
                throw ControlError.tenantBeingDeleted("tenant \(slug) is being deleted; finish that first (tenant delete)")
            case .provisioning, .failed:
                try await connection.query(
                    """
                    UPDATE tenants SET status = 'provisioning', last_error = NULL,
                        role_password_encrypted = COALESCE(\(sealedRolePassword), role_password_encrypted)
                    WHERE id = \(slug.rawValue)
                    """,
                    logger: logger)
                return
            case .deleted:
                try await connection.query(
                    """
                    UPDATE tenants SET status = 'provisioning', name = \(name), server = \(server),
                        database_url = \(databaseURL), schema_version = NULL,
                        role_password_encrypted = \(sealedRolePassword),
                        provisioning_step = 'registered', last_error = NULL, created_at = now()
                    WHERE id = \(slug.rawValue)
                    """,
                    logger: logger)
                return
            }
        }
        try await connection.query(
            """
            INSERT INTO tenants (id, name, database_url, status, server, provisioning_step, role_password_encrypted)
            VALUES (
                \(slug.rawValue), \(name), \(databaseURL), 'provisioning', \(server), 'registered', \(sealedRolePassword))
            """,
            logger: logger)
    }

    /// Where the tenant's database is: its server and URL (no password).
    public func setTenantLocation(_ slug: TenantSlug, server: String, databaseURL: String) async throws {
        try await connection.query(
            "UPDATE tenants SET server = \(server), database_url = \(databaseURL) WHERE id = \(slug.rawValue)",
            logger: logger)
    }

    public func setTenantStatus(_ slug: TenantSlug, _ status: TenantStatus, error: String? = nil) async throws {
        try await connection.query(
            "UPDATE tenants SET status = \(status.rawValue), last_error = \(error) WHERE id = \(slug.rawValue)",
            logger: logger)
    }

    public func setProvisioningStep(_ slug: TenantSlug, _ step: String?) async throws {
        try await connection.query(
            "UPDATE tenants SET provisioning_step = \(step) WHERE id = \(slug.rawValue)", logger: logger)
    }

    /// The tenant's database is at `version` and holds every file of the set
    /// with `fingerprint`; nil when it holds files this binary does not know
    /// (a newer binary's), so the next fleet run connects and looks.
    public func setSchemaVersion(_ slug: TenantSlug, _ version: Int, fingerprint: String?) async throws {
        try await connection.query(
            """
            UPDATE tenants SET schema_version = \(version), migration_fingerprint = \(fingerprint),
                migration_outcome = 'current', migration_error = NULL, migrated_at = now()
            WHERE id = \(slug.rawValue)
            """,
            logger: logger)
    }

    /// The last step of `create`: `active`, no step, no error.
    public func activateTenant(_ slug: TenantSlug) async throws {
        try await connection.query(
            """
            UPDATE tenants SET status = 'active', provisioning_step = NULL, last_error = NULL WHERE id = \(slug.rawValue)
            """,
            logger: logger)
    }

    /// The row stays, as `deleted`, for the audit trail; its secret goes.
    public func markDeleted(_ slug: TenantSlug) async throws {
        try await connection.query(
            """
            UPDATE tenants SET status = 'deleted', role_password_encrypted = NULL, provisioning_step = NULL,
                last_error = NULL
            WHERE id = \(slug.rawValue)
            """,
            logger: logger)
    }

    public func sealedRolePassword(_ slug: TenantSlug) async throws -> Data? {
        let rows = try await connection.query(
            "SELECT role_password_encrypted FROM tenants WHERE id = \(slug.rawValue)", logger: logger)
        return try await rows.collect().first?.decode(Data?.self)
    }

    /// The tenant's own login into its database on the server `serverURL`
    /// points at (the password unsealed from the control database).
    public func tenantLogin(_ slug: TenantSlug, server serverURL: PostgresURL, secrets: SecretBox) async throws
        -> TenantLogin
    {
        guard let sealed = try await sealedRolePassword(slug) else {
            throw ControlError.conflict("tenant \(slug) has no role password (it is being created or was deleted)")
        }
        return TenantLogin(slug: slug, password: try secrets.open(sealed, owner: slug.rawValue), server: serverURL)
    }

    public func storeSealedRolePassword(_ slug: TenantSlug, _ sealed: Data) async throws {
        try await connection.query(
            "UPDATE tenants SET role_password_encrypted = \(sealed) WHERE id = \(slug.rawValue)", logger: logger)
    }

    /// The active server with the most free capacity.
    public func pickServer() async throws -> DatabaseServer {
        let candidates = try await servers().filter { $0.isActive && $0.freeCapacity > 0 }
        guard let best = candidates.max(by: { $0.freeCapacity < $1.freeCapacity }) else {
            throw ControlError.serverFull("every active database server is full (add one: tenantplane server add)")
        }
        return best
    }

    /// How long an admin action waits for a tenant another one holds.
    public static let tenantLockWait: Duration = .seconds(5)

    /// Serialises work on one tenant across processes: a session advisory lock
    /// of the control database, held while `body` runs. Waits at most
    /// `waiting` for it; a tenant still held then (an export, a move, an
    /// import) is `tenantBusy`, saying what holds it, never a request that hangs.
    public func withTenantLock<Result>(
        _ slug: TenantSlug, waiting: Duration = Self.tenantLockWait, _ body: () async throws -> Result
    ) async throws -> Result {
        let deadline = ContinuousClock.now.advanced(by: waiting)
        while true {
            if let result = try await withTenantLockIfFree(slug, body) { return result }
            guard ContinuousClock.now < deadline else { throw ControlError.tenantBusy(try await holder(of: slug)) }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// What is most likely holding the tenant's lock, for the operator.
    private func holder(of slug: TenantSlug) async throws -> String {
        let rows = try await connection.query(
            "SELECT kind FROM admin_jobs WHERE tenant_id = \(slug.rawValue) AND status = 'running' ORDER BY started_at LIMIT 1",
            logger: logger)
        switch try await rows.collect().first?.decode(String.self) {
        case "export": return "an export of \(slug) is running; try again when it is done"
        case "move": return "a move of \(slug) is running; try again when it is done"
        default: return "another operation on \(slug) is running (an export, move, import or delete); try again shortly"
        }
    }
}
