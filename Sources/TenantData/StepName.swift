/// A step's name (工程): `^[a-z][a-z0-9_-]{0,62}$`. It names a prompt, a
/// `steps` row and a directory of the artifact store, so it is checked once here.
public struct StepName: Hashable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: String

    public init?(_ rawValue: String) {
        let bytes = Array(rawValue.utf8)
        guard (1...63).contains(bytes.count), (0x61...0x7A).contains(bytes[0]) else { return nil }
        let allowed = bytes.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F || $0 == 0x2D }
        guard allowed else { return nil }
        self.rawValue = rawValue
    }

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
