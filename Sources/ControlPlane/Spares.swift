import Core
import Foundation
import PostgresNIO

/// A warm spare: a role-and-database pair, both named `name`, that a server
/// keeps created and migrated and hands to a tenant at sign-up.
public struct SpareRecord: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable {
        case filling, ready, claiming, retiring
    }

    public var name: String
    public var server: String
    public var state: State
    public var schemaVersion: Int?
    public var schemaFingerprint: String?
    /// While `claiming`: the tenant it is being handed to.
    public var claimedBy: String?
    public var createdAt: Date
}

/// A spare's name. Tenant names are `tp_` and a slug, and a slug starts with
/// a letter, so no tenant's database or role can start with `tp__`.
public struct SpareName: Sendable, Hashable, CustomStringConvertible {
    public static let prefix = "tp__spare_"
    public let identifier: SQLIdentifier

    public init(_ name: String) throws {
        guard name.hasPrefix(Self.prefix), name.count == Self.prefix.count + 12,
            name.dropFirst(Self.prefix.count).allSatisfy({ $0.isHexDigit && !$0.isUppercase })
        else { throw ControlError.invalid("\(name) is not a spare's name") }
        identifier = try SQLIdentifier(name)
    }

    public static func random() -> SpareName {
        let hex = (0..<6).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        return try! SpareName(prefix + hex)
    }

    public var name: String { identifier.name }
    public var description: String { name }
}

extension ControlStore {
    static let spareColumns = "name, server, state, schema_version, schema_fingerprint, claimed_by, created_at"

    static func decodeSpare(_ row: PostgresRow) throws -> SpareRecord {
        let (name, server, state, version, fingerprint, claimedBy, created) = try row.decode(
            (String, String, String, Int?, String?, String?, Date).self)
        return SpareRecord(
            name: name, server: server, state: SpareRecord.State(rawValue: state) ?? .retiring, schemaVersion: version,
            schemaFingerprint: fingerprint, claimedBy: claimedBy, createdAt: created)
    }

    public func spares(server: String? = nil) async throws -> [SpareRecord] {
        let rows = try await connection.query(
            """
            SELECT \(unescaped: Self.spareColumns) FROM tenant_spares
            WHERE \(server)::text IS NULL OR server = \(server) ORDER BY server, created_at
            """,
            logger: logger)
        var result: [SpareRecord] = []
        for try await row in rows { result.append(try Self.decodeSpare(row)) }
        return result
    }

    /// Written (and committed) before the spare's role or database exists.
    public func recordSpareFilling(_ name: SpareName, server: String) async throws {
        try await connection.query(
            "INSERT INTO tenant_spares (name, server, state) VALUES (\(name.name), \(server), 'filling')", logger: logger)
    }

    public func markSpareReady(_ name: SpareName, version: Int, fingerprint: String) async throws {
        try await connection.query(
            """
            UPDATE tenant_spares SET state = 'ready', schema_version = \(version), schema_fingerprint = \(fingerprint),
                updated_at = now()
            WHERE name = \(name.name) AND state = 'filling'
            """,
            logger: logger)
    }

    /// Takes the oldest ready spare of `server` at `fingerprint` out of the
    /// ready set for `tenant`: the claim's intent. Two claims never take the
    /// same spare (`SKIP LOCKED`); nil when none is ready.
    public func takeSpare(server: String, fingerprint: String, for tenant: TenantSlug) async throws -> SpareRecord? {
        let rows = try await connection.query(
            """
            UPDATE tenant_spares SET state = 'claiming', claimed_by = \(tenant.rawValue), updated_at = now()
            WHERE name = (
                SELECT name FROM tenant_spares
                WHERE server = \(server) AND state = 'ready' AND schema_fingerprint = \(fingerprint)
                ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING \(unescaped: Self.spareColumns)
            """,
            logger: logger)
        return try await rows.collect().first.map(Self.decodeSpare)
    }

    /// The spare `tenant` was being handed, when a claim of it was cut short.
    public func spareClaimed(by tenant: TenantSlug) async throws -> SpareRecord? {
        let rows = try await connection.query(
            """
            SELECT \(unescaped: Self.spareColumns) FROM tenant_spares
            WHERE state = 'claiming' AND claimed_by = \(tenant.rawValue)
            """,
            logger: logger)
        return try await rows.collect().first.map(Self.decodeSpare)
    }

    /// The claim never renamed the spare: it is ready again.
    public func returnSpare(_ name: SpareName) async throws {
        try await connection.query(
            """
            UPDATE tenant_spares SET state = 'ready', claimed_by = NULL, updated_at = now()
            WHERE name = \(name.name) AND state = 'claiming'
            """,
            logger: logger)
    }

    public func markSpareRetiring(_ name: SpareName) async throws {
        try await connection.query(
            """
            UPDATE tenant_spares SET state = 'retiring', claimed_by = NULL, updated_at = now() WHERE name = \(name.name)
            """,
            logger: logger)
    }

    /// The spare's database is gone, or is a tenant's now.
    public func forgetSpare(_ name: SpareName) async throws {
        try await connection.query("DELETE FROM tenant_spares WHERE name = \(name.name)", logger: logger)
    }

    /// The last step of a claim, in one transaction: the tenant is active at
    /// the spare's schema, and the spare is no more.
    public func finishClaim(_ spare: SpareName, tenant: TenantSlug, version: Int, fingerprint: String) async throws {
        try await transaction { store in
            try await store.setSchemaVersion(tenant, version, fingerprint: fingerprint)
            try await store.activateTenant(tenant)
            try await store.forgetSpare(spare)
        }
    }

    /// Serialises the spare work on one server (filling, retiring, settling
    /// cut-short claims) across processes; nil when another holds it.
    public func withSpareLockIfFree<Result>(server: String, _ body: () async throws -> Result) async throws -> Result? {
        try await connection.withAdvisoryLockIfFree(named: "spares:\(server)", logger: logger, body)
    }
}
