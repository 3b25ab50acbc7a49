/// A model's answer and the tokens the provider counted for it.
public struct Completion: Sendable, Equatable {
    public var text: String
    public var inputTokens: Int
    public var outputTokens: Int

    public init(text: String, inputTokens: Int, outputTokens: Int) {
        self.text = text
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
    }
}
