import Core
import Foundation
import PostgresNIO

public enum ModelClass: String, Sendable, Codable, CaseIterable {
    case pro, standard

    public init(validating raw: String) throws(ControlError) {
        guard let value = ModelClass(rawValue: raw) else {
            throw .invalid("model class must be 'pro' or 'standard'")
        }
        self = value
    }
}

/// What `llm provider update` changes; nil leaves a field as it is.
public struct ProviderChange: Sendable, Decodable, Equatable {
    public var displayName: String?
    public var apiBaseURL: String?
    public var isActive: Bool?

    enum CodingKeys: String, CodingKey {
        case displayName, isActive
        case apiBaseURL = "apiBaseUrl"
    }

    public init(displayName: String?, apiBaseURL: String?, isActive: Bool?) {
        self.displayName = displayName
        self.apiBaseURL = apiBaseURL
        self.isActive = isActive
    }
}

public struct LLMProvider: Sendable, Codable, Equatable {
    public var id: String
    public var displayName: String
    public var apiBaseURL: String?
    public var isActive: Bool
    public var apiStyle: ProviderStyle?
    /// Whether the control database holds a key for it (`llm provider
    /// set-key`); the key itself is never listed.
    public var keySet: Bool

    enum CodingKeys: String, CodingKey {
        case id, displayName, isActive, apiStyle, keySet
        case apiBaseURL = "apiBaseUrl"
    }

    public init(
        id: String, displayName: String, apiBaseURL: String?, isActive: Bool, apiStyle: ProviderStyle?,
        keySet: Bool = false
    ) {
        self.id = id
        self.displayName = displayName
        self.apiBaseURL = apiBaseURL
        self.isActive = isActive
        self.apiStyle = apiStyle
        self.keySet = keySet
    }
}

public struct LLMModel: Sendable, Codable, Equatable {
    public var id: Int
    public var providerId: String
    public var modelName: String
    public var modelClass: ModelClass
    public var isActive: Bool
}

public struct StepDefault: Sendable, Codable, Equatable {
    public var step: String
    public var providerId: String
    public var modelClass: ModelClass
}

/// The model a step runs with, and why that one.
public struct ModelResolution: Sendable, Codable, Equatable {
    public enum Reason: String, Sendable, Codable {
        /// The run's `config.models[step]` named it.
        case runOverride = "run_override"
        /// `step_llm_defaults` has a row for the step.
        case stepDefault = "step_default"
        /// No row for the step: the catch-all row (step `*`) applied.
        case fallbackDefault = "fallback_default"
    }

    public var step: String
    public var providerId: String
    public var modelName: String
    public var modelClass: ModelClass
    public var reason: Reason
}

extension ControlStore {
    static func validateProviderID(_ id: String) throws(ControlError) {
        guard NameRule.providerID.accepts(id) else { throw .invalid("provider id must be 2-32 characters of a-z, 0-9, '_' and '-', starting with a letter") }
    }

    /// Registers a provider, audited.
    public func addProvider(_ provider: LLMProvider, actor: Actor) async throws -> LLMProvider {
        try await audited(actor, .providerAdd, resourceId: provider.id) { try await addProvider(provider) }
    }

    func addProvider(_ provider: LLMProvider) async throws -> LLMProvider {
        try Self.validateProviderID(provider.id)
        guard !provider.displayName.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw ControlError.invalid("provider display name must not be empty")
        }
        if let url = provider.apiBaseURL {
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
                throw ControlError.invalid("api base URL must start with http:// or https://")
            }
        }
        do {
            try await connection.query(
                """
                INSERT INTO llm_providers (id, display_name, api_base_url, is_active, api_style)
                VALUES (\(provider.id), \(provider.displayName), \(provider.apiBaseURL), \(provider.isActive),
                        \(provider.apiStyle?.rawValue))
                """,
                logger: logger)
        } catch where error.sqlState == "23505" {
            throw ControlError.alreadyExists("provider \(provider.id) already exists")
        }
        return provider
    }

    /// Re-points a provider (a seeded one too): its base URL, name or
    /// activity; what is nil stays. One audited action for the CLI and the API.
    public func updateProvider(_ id: String, change: ProviderChange, actor: Actor) async throws -> LLMProvider {
        try await audited(actor, .providerUpdate, resourceId: id) {
            if let url = change.apiBaseURL, !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
                throw ControlError.invalid("api base URL must start with http:// or https://")
            }
            if let name = change.displayName, name.trimmingCharacters(in: .whitespaces).isEmpty {
                throw ControlError.invalid("provider display name must not be empty")
            }
            let rows = try await connection.query(
                """
                UPDATE llm_providers SET api_base_url = COALESCE(\(change.apiBaseURL), api_base_url),
                    display_name = COALESCE(\(change.displayName), display_name),
                    is_active = COALESCE(\(change.isActive), is_active)
                WHERE id = \(id) RETURNING id
                """,
                logger: logger)
            guard try await !rows.collect().isEmpty, let provider = try await provider(id: id) else {
                throw ControlError.notFound("no such provider")
            }
            return provider
        }
    }

    public func providers() async throws -> [LLMProvider] {
        let rows = try await connection.query(
            """
            SELECT id, display_name, api_base_url, COALESCE(is_active, true), api_style, api_key_encrypted IS NOT NULL
            FROM llm_providers ORDER BY id
            """,
            logger: logger)
        var result: [LLMProvider] = []
        for try await (id, name, url, active, style, keySet) in rows.decode(
            (String, String, String?, Bool, String?, Bool).self)
        {
            result.append(
                LLMProvider(
                    id: id, displayName: name, apiBaseURL: url, isActive: active,
                    apiStyle: style.flatMap(ProviderStyle.init(rawValue:)), keySet: keySet))
        }
        return result
    }

    public func provider(id: String) async throws -> LLMProvider? {
        try await providers().first { $0.id == id }
    }

    /// Registers a model of a provider, audited.
    public func addModel(providerId: String, modelName: String, modelClass: ModelClass, actor: Actor) async throws
        -> LLMModel
    {
        try await audited(actor, .modelAdd, resourceId: "\(providerId)/\(modelName)") {
            try await addModel(providerId: providerId, modelName: modelName, modelClass: modelClass)
        }
    }

    func addModel(providerId: String, modelName: String, modelClass: ModelClass) async throws -> LLMModel {
        let name = modelName.trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty, name.utf8.count <= 200 else {
            throw ControlError.invalid("model name must be 1-200 characters")
        }
        guard try await provider(id: providerId) != nil else {
            throw ControlError.notFound("unknown provider \(providerId) (see: tenantplane llm provider list)")
        }
        do {
            let rows = try await connection.query(
                """
                INSERT INTO llm_models (provider_id, model_name, model_class)
                VALUES (\(providerId), \(name), \(modelClass.rawValue)) RETURNING id
                """,
                logger: logger)
            let id = try await rows.collect().first?.decode(Int.self) ?? 0
            return LLMModel(id: id, providerId: providerId, modelName: name, modelClass: modelClass, isActive: true)
        } catch where error.sqlState == "23505" {
            throw ControlError.alreadyExists("provider \(providerId) already has a model named \(name)")
        }
    }

    public func models() async throws -> [LLMModel] {
        let rows = try await connection.query(
            """
            SELECT id, provider_id, model_name, model_class, COALESCE(is_active, true)
            FROM llm_models ORDER BY provider_id, model_class, id
            """,
            logger: logger)
        var result: [LLMModel] = []
        for try await (id, provider, name, modelClass, active) in rows.decode((Int, String, String, String, Bool).self) {
            result.append(
                LLMModel(
                    id: id, providerId: provider, modelName: name,
                    modelClass: ModelClass(rawValue: modelClass) ?? .standard, isActive: active))
        }
        return result
    }

    /// Points a step (or `*`) at a provider and class, audited.
    public func setStepDefault(step: String, providerId: String, modelClass: ModelClass, actor: Actor) async throws
        -> StepDefault
    {
        try await audited(actor, .stepDefaultSet, resourceId: step) {
            try await setStepDefault(step: step, providerId: providerId, modelClass: modelClass)
        }
    }

    func setStepDefault(step: String, providerId: String, modelClass: ModelClass) async throws -> StepDefault {
        guard step == StepName.fallback || StepName.isValid(step) else {
            throw ControlError.invalid("step name must match ^[a-z][a-z0-9_-]{0,62}$ (or be * for the fallback)")
        }
        guard try await provider(id: providerId) != nil else {
            throw ControlError.notFound("unknown provider \(providerId) (see: tenantplane llm provider list)")
        }
        try await connection.query(
            """
            INSERT INTO step_llm_defaults (step, provider_id, model_class)
            VALUES (\(step), \(providerId), \(modelClass.rawValue))
            ON CONFLICT (step) DO UPDATE SET provider_id = EXCLUDED.provider_id, model_class = EXCLUDED.model_class
            """,
            logger: logger)
        return StepDefault(step: step, providerId: providerId, modelClass: modelClass)
    }

    public func stepDefaults() async throws -> [StepDefault] {
        let rows = try await connection.query(
            "SELECT step, provider_id, model_class FROM step_llm_defaults ORDER BY step", logger: logger)
        var result: [StepDefault] = []
        for try await (step, provider, modelClass) in rows.decode((String, String?, String).self) {
            guard let provider else { continue }
            result.append(
                StepDefault(step: step, providerId: provider, modelClass: ModelClass(rawValue: modelClass) ?? .standard))
        }
        return result
    }

    /// The model a step runs with: the run's override (a model name) when given,
    /// else the step's row of `step_llm_defaults`, else the catch-all row `*`;
    /// the first active model of that provider and class (lowest id) is used.
    public func resolveModel(step: String, override modelName: String? = nil) async throws -> ModelResolution {
        guard StepName.isValid(step) else {
            throw ControlError.invalid("step name must match ^[a-z][a-z0-9_-]{0,62}$")
        }
        if let modelName {
            let rows = try await connection.query(
                """
                SELECT m.provider_id, m.model_class FROM llm_models m JOIN llm_providers p ON p.id = m.provider_id
                WHERE m.model_name = \(modelName) AND COALESCE(m.is_active, true) AND COALESCE(p.is_active, true)
                ORDER BY m.id LIMIT 1
                """,
                logger: logger)
            guard let row = try await rows.collect().first else {
                throw ControlError.notFound("step \(step) asks for model \(modelName), which is not an active model")
            }
            let (provider, modelClass) = try row.decode((String, String).self)
            return ModelResolution(
                step: step, providerId: provider, modelName: modelName,
                modelClass: ModelClass(rawValue: modelClass) ?? .standard, reason: .runOverride)
        }
        let rows = try await connection.query(
            """
            SELECT step, provider_id, model_class FROM step_llm_defaults
            WHERE step IN (\(step), \(StepName.fallback)) AND provider_id IS NOT NULL
            ORDER BY step = \(StepName.fallback)
            LIMIT 1
            """,
            logger: logger)
        guard let row = try await rows.collect().first else {
            throw ControlError.notFound(
                "step \(step) has no LLM default and there is no fallback (set one: tenantplane llm default set \(step) --provider ID --class pro|standard, or set step * for every step)"
            )
        }
        let (matchedStep, provider, rawClass) = try row.decode((String, String, String).self)
        let modelClass = ModelClass(rawValue: rawClass) ?? .standard
        let models = try await connection.query(
            """
            SELECT m.model_name FROM llm_models m JOIN llm_providers p ON p.id = m.provider_id
            WHERE m.provider_id = \(provider) AND m.model_class = \(rawClass)
              AND COALESCE(m.is_active, true) AND COALESCE(p.is_active, true)
            ORDER BY m.id LIMIT 1
            """,
            logger: logger)
        guard let model = try await models.collect().first?.decode(String.self) else {
            throw ControlError.conflict(
                "step \(step) maps to provider \(provider), class \(rawClass), which has no active model (add one: tenantplane llm model add --provider \(provider) --name NAME --class \(rawClass))"
            )
        }
        return ModelResolution(
            step: step, providerId: provider, modelName: model, modelClass: modelClass,
            reason: matchedStep == step ? .stepDefault : .fallbackDefault)
    }
}
