/// A step's name (工程): `^[a-z][a-z0-9_-]{0,62}$`. It names a prompt, a
/// `steps` row and a directory of the artifact store, so it is checked once here.
public struct StepName: Hashable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: String

    public init?(_ rawValue: String) {
        guard Self.isValid(rawValue) else { return nil }
        self.rawValue = rawValue
    }

    public static func isValid(_ name: some StringProtocol) -> Bool { NameRule.step.accepts(name) }

    /// The `step_llm_defaults` row that applies to every step without its own.
    public static let fallback = "*"

    public init(from decoder: any Decoder) throws {
        let value = try decoder.singleValueContainer().decode(String.self)
        guard let name = StepName(value) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "step names match ^[a-z][a-z0-9_-]{0,62}$"))
        }
        self = name
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }
}
