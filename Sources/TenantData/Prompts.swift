import Core
import Foundation
import PostgresNIO

/// One version of a step's prompt.
public struct PromptRecord: Sendable, Equatable, Encodable {
    public var step: String
    public var version: Int
    public var content: String
    public var variables: [String]
    public var isActive: Bool
    public var createdAt: String

    enum CodingKeys: String, CodingKey {
        case step, version, content, variables
        case isActive = "is_active"
        case createdAt = "created_at"
    }
}

/// The body of `PUT /v1/prompts/{step}`.
public struct NewPrompt: Sendable, Equatable {
    public static let maximumContentLength = 200_000

    public let content: String
    public let variables: [String]

    public static func parse(_ body: Data) throws(TenantDataError) -> NewPrompt {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: body) else {
            throw .invalid("the body is not valid JSON")
        }
        guard case .object(let fields) = value else { throw .invalid("the body must be a JSON object") }
        guard fields.keys.allSatisfy(["content", "variables"].contains) else {
            throw .invalid("the body has an unknown field (allowed: content, variables)")
        }
        guard case .string(let content)? = fields["content"], !content.isEmpty,
            content.count <= maximumContentLength
        else {
            throw .invalid("content must be a string of 1 to \(maximumContentLength) characters")
        }
        guard !content.contains("\u{0}") else { throw .invalid("content must not contain NUL characters") }
        var variables: [String] = []
        switch fields["variables"] {
        case nil, .null?:
            variables = placeholders(in: content)
        case .array(let names)?:
            for (index, name) in names.enumerated() {
                guard case .string(let text) = name, isVariableName(text) else {
                    throw .invalid("variables[\(index)] is not a variable name (^[A-Za-z_][A-Za-z0-9_.-]{0,62}$)")
                }
                if !variables.contains(text) { variables.append(text) }
            }
        default:
            throw .invalid("variables must be a list of variable names")
        }
        return NewPrompt(content: content, variables: variables)
    }

    /// The distinct `{{name}}` placeholders of a template, in order of appearance.
    public static func placeholders(in content: String) -> [String] {
        var names: [String] = []
        var rest = content[...]
        while let open = rest.range(of: "{{") {
            let after = rest[open.upperBound...]
            guard let close = after.range(of: "}}") else { break }
            let name = after[..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            if isVariableName(name), !names.contains(name) { names.append(name) }
            rest = after[close.upperBound...]
        }
        return names
    }

    static func isVariableName(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard (1...63).contains(bytes.count) else { return false }
        func letter(_ b: UInt8) -> Bool { (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) || b == 0x5F }
        guard letter(bytes[0]) else { return false }
        return bytes.allSatisfy { letter($0) || (0x30...0x39).contains($0) || $0 == 0x2E || $0 == 0x2D }
    }
}

extension TenantStore {
    static let promptColumns = "step, version, content, COALESCE(variables::text, '[]'), COALESCE(is_active, false), \(utc("created_at"))"

    static func decodePrompt(_ row: PostgresRow) throws -> PromptRecord {
        let (step, version, content, variables, active, created) = try row.decode(
            (String, Int, String, String, Bool, String).self)
        let names = (try? JSONDecoder().decode([String].self, from: Data(variables.utf8))) ?? []
        return PromptRecord(
            step: step, version: version, content: content, variables: names, isActive: active, createdAt: created)
    }

    /// The active version of every step's prompt.
    public func activePrompts() async throws -> [PromptRecord] {
        let rows = try await connection.query(
            "SELECT \(unescaped: Self.promptColumns) FROM prompts WHERE is_active ORDER BY step", logger: logger)
        var prompts: [PromptRecord] = []
        for try await row in rows { prompts.append(try Self.decodePrompt(row)) }
        return prompts
    }

    /// Every version of one step's prompt, newest first.
    public func promptVersions(step: StepName) async throws -> [PromptRecord] {
        let rows = try await connection.query(
            "SELECT \(unescaped: Self.promptColumns) FROM prompts WHERE step = \(step.rawValue) ORDER BY version DESC",
            logger: logger)
        var prompts: [PromptRecord] = []
        for try await row in rows { prompts.append(try Self.decodePrompt(row)) }
        guard !prompts.isEmpty else { throw TenantDataError.promptNotFound }
        return prompts
    }

    /// Adds the next version of a step's prompt and makes it the active one,
    /// with its audit row, in one transaction. The advisory lock orders writers
    /// of the same step, so two at once get consecutive versions; separate
    /// statements (not one with CTEs) so each sees what the previous one wrote.
    /// Its key is 64-bit, as `LiveConnection`'s locks are (see there for what
    /// that means during a deploy).
    public func putPrompt(step: StepName, _ prompt: NewPrompt) async throws -> PromptRecord {
        let variables = try Self.json(prompt.variables)
        let name = step.rawValue
        return try await connection.transaction(logger: logger) { connection in
            try await connection.query(
                "SELECT pg_advisory_xact_lock(hashtextextended('tenantplane.prompt.' || \(name), 0))", logger: logger)
            try await connection.query(
                "UPDATE prompts SET is_active = false WHERE step = \(name) AND is_active", logger: logger)
            let rows = try await connection.query(
                """
                INSERT INTO prompts (step, version, content, variables, is_active)
                SELECT \(name), COALESCE(max(version), 0) + 1, \(prompt.content), \(variables)::jsonb, true
                FROM prompts WHERE step = \(name)
                RETURNING \(unescaped: Self.promptColumns)
                """,
                logger: logger)
            guard let row = try await rows.collect().first else {
                throw TenantDataError.invalid("the prompt was not stored")
            }
            let stored = try Self.decodePrompt(row)
            try await connection.query(
                """
                INSERT INTO audit_logs (user_id, action, resource_type, resource_id, details)
                VALUES (\(actor), 'prompt.put', 'prompt', \(name), jsonb_build_object('version', \(stored.version)))
                """,
                logger: logger)
            return stored
        }
    }
}
