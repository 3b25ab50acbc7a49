import Foundation
import NIOHTTP1

/// Anthropic messages: `POST /v1/messages`, `x-api-key`, `anthropic-version`.
enum AnthropicFormat: WireFormat {
    static let apiVersion = "2023-06-01"

    struct Request: Encodable {
        var model: String
        var maxTokens: Int
        var messages: [ChatMessage]

        enum CodingKeys: String, CodingKey {
            case model, messages
            case maxTokens = "max_tokens"
        }
    }

    struct Answer: Decodable {
        struct Block: Decodable {
            var type: String
            var text: String?
        }
        struct Usage: Decodable {
            var inputTokens: Int
            var outputTokens: Int

            enum CodingKeys: String, CodingKey {
                case inputTokens = "input_tokens"
                case outputTokens = "output_tokens"
            }
        }
        var content: [Block]
        var usage: Usage
    }

    static let versionSegment = "/v1"

    static func path(for model: String) -> String { "/v1/messages" }

    static func authorize(_ headers: inout HTTPHeaders, apiKey: String) {
        headers.replaceOrAdd(name: "x-api-key", value: apiKey)
        headers.replaceOrAdd(name: "anthropic-version", value: apiVersion)
    }

    static func body(for request: CompletionRequest) throws(ProviderError) -> Data {
        try encode(
            Request(
                model: request.model, maxTokens: request.maxOutputTokens,
                messages: [ChatMessage(content: request.prompt)]))
    }

    /// The text is every `text` block in order; other blocks (thinking, tool
    /// use) are not part of it. No text block at all gives an empty text.
    static func completion(from body: [UInt8]) throws(ProviderError) -> Completion {
        let answer = try decode(Answer.self, from: body)
        let text = answer.content.filter { $0.type == "text" }.compactMap(\.text).joined()
        return Completion(
            text: text,
            inputTokens: try tokens(answer.usage.inputTokens, "usage.input_tokens"),
            outputTokens: try tokens(answer.usage.outputTokens, "usage.output_tokens"))
    }
}
