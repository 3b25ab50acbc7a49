/// A tenant's id: `^[a-z][a-z0-9-]{1,38}[a-z0-9]$`, not a reserved name.
///
/// The slug becomes part of a database name, a role name and a storage path, so
/// it is validated once here and every later use can rely on it.
public struct TenantSlug: Hashable, Sendable, CustomStringConvertible, Codable {
    public let rawValue: String

    /// Names PostgreSQL or tenantplane already use for themselves.
    static let reserved: Set<String> = [
        "postgres", "template0", "template1", "tenantplane", "tenantplane-template",
        "admin", "root", "public", "pg-catalog", "information-schema", "default",
    ]

    public init(_ rawValue: String) throws(SlugError) {
        guard Self.isWellFormed(rawValue) else { throw .malformed }
        guard !Self.reserved.contains(rawValue), !rawValue.hasPrefix("pg-") else { throw .reserved }
        self.rawValue = rawValue
    }

    public init(from decoder: any Decoder) throws {
        let value = try decoder.singleValueContainer().decode(String.self)
        try self.init(value)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }

    /// The tenant's database and login role share this name (hyphens become
    /// underscores so it is a plain identifier, and the prefix keeps it apart
    /// from anything else on the server).
    public var databaseName: String { "tp_" + String(rawValue.map { $0 == "-" ? "_" : $0 }) }
    public var roleName: String { databaseName }

    static func isWellFormed(_ value: String) -> Bool { NameRule.tenantID.accepts(value) }
}

public enum SlugError: OperatorError, Equatable {
    case malformed
    case reserved

    public var httpStatus: Int { 400 }
    public var code: String { "invalid_slug" }
    public var message: String {
        switch self {
        case .malformed:
            "tenant id must be 3-40 characters of a-z, 0-9 and '-', start with a letter and not end with '-'"
        case .reserved:
            "tenant id is a reserved name"
        }
    }
}
