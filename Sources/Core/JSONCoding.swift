import Foundation

/// The JSON shapes tenantplane writes, each configured once.
public enum JSONCoding {
    /// Keys as declared, sorted, slashes unescaped: JSON kept in a tenant's
    /// database or store and served as kept (a tenant's own keys stay as sent).
    public static let stable: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    /// snake_case keys, ISO 8601 dates, sorted: the admin API's bodies.
    public static let snakeCase: JSONEncoder = makeSnakeCase(pretty: false)

    /// The same, indented, for people: the CLI's `--json` and archive manifests.
    public static let snakeCasePretty: JSONEncoder = makeSnakeCase(pretty: true)

    /// Reads what `snakeCase` writes.
    public static let snakeCaseDecoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()

    private static func makeSnakeCase(pretty: Bool) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}
