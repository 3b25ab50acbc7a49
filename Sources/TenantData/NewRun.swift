import Core
import Foundation

/// A run's per-run settings: model overrides by step, and steps to pause after.
public struct RunConfig: Sendable, Equatable, Codable {
    public var models: [String: String]
    public var pauseAfter: [String]

    public init(models: [String: String] = [:], pauseAfter: [String] = []) {
        self.models = models
        self.pauseAfter = pauseAfter
    }

    enum CodingKeys: String, CodingKey {
        case models
        case pauseAfter = "pause_after"
    }
}

/// The body of `POST /v1/runs`, checked field by field so every mistake gets a
/// 400 that says which field is wrong (never echoing its value).
public struct NewRun: Sendable, Equatable {
    public static let maximumSteps = 64
    public static let maximumModelNameLength = 200

    public let steps: [StepName]
    public let input: JSONValue
    public let config: RunConfig

    public init(steps: [StepName], input: JSONValue = .object([:]), config: RunConfig = RunConfig()) {
        self.steps = steps
        self.input = input
        self.config = config
    }

    public static func parse(_ body: Data) throws(TenantDataError) -> NewRun {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: body) else {
            throw .invalid("the body is not valid JSON")
        }
        guard case .object(let fields) = value else { throw .invalid("the body must be a JSON object") }
        try requireOnly(["steps", "input", "config"], in: fields, at: "the body")

        guard case .array(let rawSteps)? = fields["steps"] else {
            throw .invalid("steps must be a list of step names")
        }
        guard (1...maximumSteps).contains(rawSteps.count) else {
            throw .invalid("steps must hold 1 to \(maximumSteps) step names")
        }
        var steps: [StepName] = []
        for (index, raw) in rawSteps.enumerated() {
            guard case .string(let text) = raw, let step = StepName(text) else {
                throw .invalid("steps[\(index)] is not a step name (^[a-z][a-z0-9_-]{0,62}$)")
            }
            guard !steps.contains(step) else { throw .invalid("steps[\(index)] repeats an earlier step") }
            steps.append(step)
        }
        let names = Set(steps.map(\.rawValue))

        let input: JSONValue
        switch fields["input"] {
        case nil, .null?: input = .object([:])
        case .object(let object)?: input = .object(object)
        default: throw .invalid("input must be a JSON object")
        }
        // PostgreSQL's jsonb cannot hold U+0000 anywhere, key or value.
        guard !input.containsNUL else {
            throw .invalid("input must not contain NUL characters (\\u0000)")
        }

        var config = RunConfig()
        switch fields["config"] {
        case nil, .null?:
            break
        case .object(let configFields)?:
            try requireOnly(["models", "pause_after"], in: configFields, at: "config")
            switch configFields["models"] {
            case nil, .null?:
                break
            case .object(let models)?:
                for (step, model) in models.sorted(by: { $0.key < $1.key }) {
                    guard names.contains(step) else { throw .invalid("config.models names a step that is not in steps") }
                    guard case .string(let name) = model, !name.isEmpty, name.count <= maximumModelNameLength,
                        name.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F })
                    else {
                        throw .invalid("config.models values must be model names (1-\(maximumModelNameLength) printable characters)")
                    }
                    config.models[step] = name
                }
            default:
                throw .invalid("config.models must be an object of step name to model name")
            }
            switch configFields["pause_after"] {
            case nil, .null?:
                break
            case .array(let pauses)?:
                for (index, pause) in pauses.enumerated() {
                    guard case .string(let step) = pause, names.contains(step) else {
                        throw .invalid("config.pause_after[\(index)] is not one of the run's steps")
                    }
                    if !config.pauseAfter.contains(step) { config.pauseAfter.append(step) }
                }
            default:
                throw .invalid("config.pause_after must be a list of step names")
            }
        default:
            throw .invalid("config must be a JSON object")
        }
        return NewRun(steps: steps, input: input, config: config)
    }

    private static func requireOnly(_ allowed: Set<String>, in fields: [String: JSONValue], at place: String)
        throws(TenantDataError)
    {
        guard fields.keys.allSatisfy(allowed.contains) else {
            throw .invalid("\(place) has an unknown field (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
    }
}
