import Foundation
import NIOHTTP1

/// OpenAI chat completions: `POST /v1/chat/completions`, `Authorization: Bearer`.
enum OpenAIFormat: WireFormat {
    struct Request: Encodable {
        var model: String
        var messages: [ChatMessage]
        var maxTokens: Int

        enum CodingKeys: String, CodingKey {
            case model, messages
            case maxTokens = "max_tokens"
        }
    }

    struct Answer: Decodable {
        struct Choice: Decodable {
            struct Message: Decodable {
                var content: String?
                var refusal: String?
            }
            var message: Message
        }
        struct Usage: Decodable {
            var promptTokens: Int
            var completionTokens: Int

            enum CodingKeys: String, CodingKey {
                case promptTokens = "prompt_tokens"
                case completionTokens = "completion_tokens"
            }
        }
        var choices: [Choice]
        var usage: Usage
    }

    static let versionSegment = "/v1"

    static func path(for model: String) -> String { "/v1/chat/completions" }

    static func authorize(_ headers: inout HTTPHeaders, apiKey: String) {
        headers.replaceOrAdd(name: "Authorization", value: "Bearer \(apiKey)")
    }

    static func body(for request: CompletionRequest) throws(ProviderError) -> Data {
        try encode(
            Request(
                model: request.model, messages: [ChatMessage(content: request.prompt)],
                maxTokens: request.maxOutputTokens))
    }

    static func completion(from body: [UInt8]) throws(ProviderError) -> Completion {
        let answer = try decode(Answer.self, from: body)
        guard let message = answer.choices.first?.message else { throw .malformedResponse("choices is empty") }
        // A refusal is the model's answer too; no text at all is not.
        guard let text = message.content ?? message.refusal else {
            throw .malformedResponse("choices[0].message has no content")
        }
        return Completion(
            text: text,
            inputTokens: try tokens(answer.usage.promptTokens, "usage.prompt_tokens"),
            outputTokens: try tokens(answer.usage.completionTokens, "usage.completion_tokens"))
    }
}
