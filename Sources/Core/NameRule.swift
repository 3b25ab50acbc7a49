/// The one rule behind every lowercase name tenantplane accepts — tenant ids,
/// SQL identifiers, step names, server and provider ids, migration names —
/// checked on bytes, so no accepted name can carry a quote, a slash, a NUL or
/// anything outside ASCII into SQL text or a path. Each kind of name differs
/// only in its length, its punctuation and how it may start and end.
public struct NameRule: Sendable {
    public let lengths: ClosedRange<Int>
    /// Allowed besides a-z and 0-9.
    public let punctuation: [UInt8]
    /// Allowed as the first byte besides a-z.
    public let alsoFirst: [UInt8]
    /// Whether the last byte may be punctuation.
    public let mayEndInPunctuation: Bool

    public init(
        lengths: ClosedRange<Int>, punctuation: String, alsoFirst: String = "", mayEndInPunctuation: Bool = true
    ) {
        self.lengths = lengths
        self.punctuation = Array(punctuation.utf8)
        self.alsoFirst = Array(alsoFirst.utf8)
        self.mayEndInPunctuation = mayEndInPunctuation
    }

    public func accepts(_ value: some StringProtocol) -> Bool {
        let bytes = Array(value.utf8)
        guard lengths.contains(bytes.count), let first = bytes.first, let last = bytes.last else { return false }
        guard Self.isLower(first) || alsoFirst.contains(first) else { return false }
        guard mayEndInPunctuation || Self.isLower(last) || Self.isDigit(last) else { return false }
        return bytes.allSatisfy { Self.isLower($0) || Self.isDigit($0) || punctuation.contains($0) }
    }

    /// `^[a-z][a-z0-9-]{1,38}[a-z0-9]$`
    public static let tenantID = NameRule(lengths: 3...40, punctuation: "-", mayEndInPunctuation: false)
    /// `^[a-z_][a-z0-9_]{0,62}$`
    public static let sqlIdentifier = NameRule(lengths: 1...63, punctuation: "_", alsoFirst: "_")
    /// `^[a-z][a-z0-9_-]{0,62}$`
    public static let step = NameRule(lengths: 1...63, punctuation: "_-")
    /// `^[a-z][a-z0-9_-]{0,62}$`
    public static let serverName = NameRule(lengths: 1...63, punctuation: "_-")
    /// `^[a-z][a-z0-9_-]{1,31}$`
    public static let providerID = NameRule(lengths: 2...32, punctuation: "_-")
    /// The `snake_case` of `NNN_snake_case.sql`: `^[a-z0-9_]+$`.
    public static let migrationName = NameRule(lengths: 1...200, punctuation: "_", alsoFirst: "0123456789_")

    private static func isLower(_ byte: UInt8) -> Bool { (0x61...0x7A).contains(byte) }
    private static func isDigit(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) }
}
