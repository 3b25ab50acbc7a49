/// Any JSON value, kept as it was sent: run input, token usage, metrics.
public enum JSONValue: Sendable, Equatable, Codable {
    case null
    case bool(Bool)
    /// A whole number that fits 64 bits, kept exactly: a `Double` holds
    /// integers only up to 2^53, and ids (9007199254740993) go past it.
    case integer(Int64)
    /// Any other number: a fraction, or a whole number beyond 64 bits.
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// Whether U+0000 appears in any string or key.
    public var containsNUL: Bool {
        switch self {
        case .null, .bool, .integer, .number: false
        case .string(let value): value.contains("\u{0}")
        case .array(let values): values.contains { $0.containsNUL }
        case .object(let fields): fields.contains { $0.key.contains("\u{0}") || $0.value.containsNUL }
        }
    }

    public var isObject: Bool {
        if case .object = self { return true }
        return false
    }
}
