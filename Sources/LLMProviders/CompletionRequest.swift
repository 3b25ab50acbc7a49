/// One prompt for one model: a single user message, no system prompt, no
/// tools, no streaming.
public struct CompletionRequest: Sendable, Equatable {
    /// The provider's model name (`llm_models.model_name`).
    public var model: String
    public var prompt: String
    /// The most tokens the answer may have (the provider's `max_tokens`).
    public var maxOutputTokens: Int

    public init(model: String, prompt: String, maxOutputTokens: Int = 1024) {
        self.model = model
        self.prompt = prompt
        self.maxOutputTokens = maxOutputTokens
    }
}
