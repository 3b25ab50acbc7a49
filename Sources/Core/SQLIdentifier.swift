/// A name that is about to become part of SQL text (a database, a role).
///
/// Only plain lowercase identifiers pass, so quoting can never be escaped;
/// values are never built this way — they are always bound parameters.
public struct SQLIdentifier: Hashable, Sendable, CustomStringConvertible {
    public let name: String

    public init(_ name: String) throws(SQLIdentifierError) {
        guard NameRule.sqlIdentifier.accepts(name) else { throw SQLIdentifierError(name: name) }
        self.name = name
    }

    /// The identifier in double quotes, ready for SQL text.
    public var quoted: String { "\"\(name)\"" }
    public var description: String { name }
}

public struct SQLIdentifierError: OperatorError {
    let name: String
    public var httpStatus: Int { 400 }
    public var code: String { "invalid_identifier" }
    public var message: String { "not a plain SQL identifier (a-z, 0-9, _; at most 63 bytes)" }
}
