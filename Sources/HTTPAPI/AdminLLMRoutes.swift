import ControlPlane
import Core
import Hummingbird

/// The LLM catalog under `/admin/llm/…`, the same operations as `tenantplane llm`.
struct AdminLLMRoutes {
    let control: ControlAccess

    struct NewProvider: Decodable {
        let id: String
        let displayName: String
        let apiBaseUrl: String?
        let apiStyle: String?
    }

    struct NewModel: Decodable {
        let providerId: String
        let modelName: String
        let modelClass: String
    }

    /// The body that stores a provider key: `{"api_key": "..."}`.
    struct NewProviderKey: Decodable {
        let apiKey: String
    }

    struct NewDefault: Decodable {
        let providerId: String
        let modelClass: String
    }

    struct Providers: ResponseEncodable { let providers: [LLMProvider] }
    struct Models: ResponseEncodable { let models: [LLMModel] }
    struct Defaults: ResponseEncodable { let defaults: [StepDefault] }

    func register(on admin: RouterGroup<APIRequestContext>) {
        let llm = admin.group("llm")
        llm.get("providers") { _, _ in
            Providers(providers: try await control.run { try await $0.providers() })
        }
        llm.post("providers") { request, context -> EditedResponse<LLMProvider> in
            let body = try await request.decode(as: NewProvider.self, context: context)
            let style = try body.apiStyle.map { raw in
                guard let style = ProviderStyle(rawValue: raw) else {
                    throw ControlError.invalid("api_style must be openai, anthropic, gemini or local")
                }
                return style
            }
            let provider = try await control.run { store in
                try await store.addProvider(
                    LLMProvider(
                        id: body.id, displayName: body.displayName, apiBaseURL: body.apiBaseUrl, isActive: true,
                        apiStyle: style ?? .openai),
                    actor: .adminToken)
            }
            return EditedResponse(status: .created, response: provider)
        }
        llm.patch("providers/:provider") { request, context -> LLMProvider in
            let id = context.parameters.get("provider") ?? ""
            let change = try await request.decode(as: ProviderChange.self, context: context)
            return try await control.run { try await $0.updateProvider(id, change: change, actor: .adminToken) }
        }
        llm.put("providers/:provider/key") { request, context -> LLMProvider in
            let id = try context.parameters.require("provider")
            let body = try await request.decode(as: NewProviderKey.self, context: context)
            return try await control.run { [secrets = control.secrets] store in
                try await store.setProviderKey(id, key: body.apiKey, secrets: secrets, actor: .adminToken)
            }
        }
        llm.delete("providers/:provider/key") { _, context -> LLMProvider in
            let id = try context.parameters.require("provider")
            return try await control.run { try await $0.clearProviderKey(id, actor: .adminToken) }
        }
        llm.get("models") { _, _ in
            Models(models: try await control.run { try await $0.models() })
        }
        llm.post("models") { request, context -> EditedResponse<LLMModel> in
            let body = try await request.decode(as: NewModel.self, context: context)
            let modelClass = try ModelClass(validating: body.modelClass)
            let model = try await control.run { store in
                try await store.addModel(
                    providerId: body.providerId, modelName: body.modelName, modelClass: modelClass, actor: .adminToken)
            }
            return EditedResponse(status: .created, response: model)
        }
        llm.get("defaults") { _, _ in
            Defaults(defaults: try await control.run { try await $0.stepDefaults() })
        }
        llm.put("defaults/:step") { request, context -> StepDefault in
            let step = try context.parameters.require("step")
            let body = try await request.decode(as: NewDefault.self, context: context)
            let modelClass = try ModelClass(validating: body.modelClass)
            return try await control.run { store in
                try await store.setStepDefault(step: step, providerId: body.providerId, modelClass: modelClass, actor: .adminToken)
            }
        }
        llm.get("resolve/:step") { _, context -> ModelResolution in
            let step = try context.parameters.require("step")
            return try await control.run { try await $0.resolveModel(step: step) }
        }
    }
}

extension LLMProvider: ResponseEncodable {}
extension LLMModel: ResponseEncodable {}
extension StepDefault: ResponseEncodable {}
extension ModelResolution: ResponseEncodable {}
