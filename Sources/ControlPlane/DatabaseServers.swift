import Core
import Foundation
import PostgresNIO

/// A PostgreSQL server tenants are placed on.
public struct DatabaseServer: Sendable, Codable, Equatable {
    /// How many tenants a server holds unless its operator says otherwise.
    public static let defaultCapacity = 5_000

    public var name: String
    /// The admin URL without its password.
    public var adminUrl: String
    public var capacity: Int
    public var isActive: Bool
    /// Tenants placed on it that are not deleted.
    public var tenantCount: Int
    /// Warm spares it holds, in any state: each takes a tenant's place.
    public var spareCount: Int
    public var templateVersion: Int?
    public var templateFingerprint: String?

    /// Places left for tenants. A spare is a future tenant of this server,
    /// so claiming it takes the place it already holds.
    public var freeCapacity: Int { max(0, capacity - tenantCount) }
    /// Places left for new spares: tenants and spares together stay within capacity.
    public var roomForSpares: Int { max(0, capacity - tenantCount - spareCount) }
}

extension ControlStore {
    public static let defaultServerName = "default"

    static func validateServerName(_ name: String) throws(ControlError) {
        guard NameRule.serverName.accepts(name) else { throw .invalid("server name must be 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter") }
    }

    /// Registers a server. Its admin URL's password is sealed under the master key;
    /// a URL without a password inherits the control URL's credentials when user,
    /// host and port match (the control server itself).
    /// Registers a database server, audited: the server is reached first
    /// (with the URL as given), its password is sealed under the master key,
    /// and the stored URL holds none.
    public func addServer(
        name: String, adminURL: PostgresURL, capacity: Int = DatabaseServer.defaultCapacity, secrets: SecretBox?,
        actor: Actor
    ) async throws -> DatabaseServer {
        try await audited(actor, .serverAdd, resourceId: name) {
            try await DatabaseConnection.with(adminURL, logger: logger) { _ in }
            return try await addServer(name: name, adminURL: adminURL, capacity: capacity, secrets: secrets)
        }
    }

    func addServer(name: String, adminURL: PostgresURL, capacity: Int, secrets: SecretBox?) async throws
        -> DatabaseServer
    {
        try Self.validateServerName(name)
        guard capacity >= 0 else { throw ControlError.invalid("capacity must be zero or more") }
        var sealed: Data?
        if let password = adminURL.password {
            guard let secrets else {
                throw ConfigurationError.missing(.masterKey)
            }
            sealed = try secrets.seal(password, owner: "server:\(name)")
        }
        do {
            try await connection.query(
                """
                INSERT INTO database_servers (name, admin_url, admin_password_encrypted, capacity)
                VALUES (\(name), \(adminURL.redacted), \(sealed), \(capacity))
                """,
                logger: logger)
        } catch where error.sqlState == "23505" {
            throw ControlError.alreadyExists("server \(name) already exists")
        }
        return try await server(named: name)
    }

    /// Registers the control database's own server as `default` when no server
    /// exists yet. Returns whether it did.
    @discardableResult
    public func registerDefaultServerIfNone(controlURL: PostgresURL, secrets: SecretBox?) async throws -> Bool {
        let sealed = try controlURL.password.flatMap { password in
            try secrets?.seal(password, owner: "server:\(Self.defaultServerName)")
        }
        let rows = try await connection.query(
            """
            INSERT INTO database_servers (name, admin_url, admin_password_encrypted)
            SELECT \(Self.defaultServerName), \(controlURL.redacted), \(sealed)
            WHERE NOT EXISTS (SELECT 1 FROM database_servers)
            ON CONFLICT (name) DO NOTHING
            RETURNING name
            """,
            logger: logger)
        return try await rows.collect().count == 1
    }

    public func servers() async throws -> [DatabaseServer] {
        let rows = try await connection.query(
            """
            SELECT s.name, s.admin_url, s.capacity, s.is_active, s.template_version, s.template_fingerprint,
                   (SELECT count(*) FROM tenants t WHERE t.server = s.name AND t.status <> 'deleted')::int,
                   (SELECT count(*) FROM tenant_spares p WHERE p.server = s.name)::int
            FROM database_servers s ORDER BY s.name
            """,
            logger: logger)
        var result: [DatabaseServer] = []
        for try await (name, url, capacity, active, template, fingerprint, count, spares) in rows.decode(
            (String, String, Int, Bool, Int?, String?, Int, Int).self)
        {
            result.append(
                DatabaseServer(
                    name: name, adminUrl: url, capacity: capacity, isActive: active, tenantCount: count,
                    spareCount: spares, templateVersion: template, templateFingerprint: fingerprint))
        }
        return result
    }

    public func server(named name: String) async throws -> DatabaseServer {
        guard let server = try await servers().first(where: { $0.name == name }) else {
            throw ControlError.notFound("unknown database server \(name) (see: tenantplane server list)")
        }
        return server
    }

    /// The admin URL of a server with its password opened, for connecting.
    public func adminURL(ofServer name: String, secrets: SecretBox?, controlURL: PostgresURL?) async throws
        -> PostgresURL
    {
        let rows = try await connection.query(
            "SELECT admin_url, admin_password_encrypted FROM database_servers WHERE name = \(name)", logger: logger)
        guard let row = try await rows.collect().first else {
            throw ControlError.notFound("unknown database server \(name) (see: tenantplane server list)")
        }
        let (raw, sealed) = try row.decode((String, Data?).self)
        var url = try PostgresURL(raw)
        if let sealed {
            guard let secrets else { throw ConfigurationError.missing(.masterKey) }
            url.password = try secrets.open(sealed, owner: "server:\(name)")
        } else if let controlURL, controlURL.host == url.host, controlURL.port == url.port,
            controlURL.user == url.user
        {
            url.password = controlURL.password
        }
        return url
    }

    public func setTemplate(server name: String, version: Int, fingerprint: String) async throws {
        try await connection.query(
            """
            UPDATE database_servers SET template_version = \(version), template_fingerprint = \(fingerprint)
            WHERE name = \(name)
            """,
            logger: logger)
    }
}
