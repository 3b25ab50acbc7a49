/// The wire protocol a provider speaks. `local` is the built-in offline
/// provider: no network, no key, deterministic answers.
public enum ProviderStyle: String, Sendable, Codable, CaseIterable {
    case openai, anthropic, gemini, local

    /// Whether calls go over HTTP (and so need a base URL and an API key).
    public var isRemote: Bool { self != .local }
}
