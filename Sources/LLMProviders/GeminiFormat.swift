import Foundation
import NIOHTTP1

/// Gemini generateContent: `POST /v1beta/models/{model}:generateContent`, with
/// the key in `x-goog-api-key` — never in the query string, where it would
/// end up in access logs.
enum GeminiFormat: WireFormat {
    struct Part: Codable {
        var text: String?
    }

    struct Content: Codable {
        var role: String?
        var parts: [Part]?
    }

    struct Request: Encodable {
        struct GenerationConfig: Encodable {
            var maxOutputTokens: Int
        }
        var contents: [Content]
        var generationConfig: GenerationConfig
    }

    struct Answer: Decodable {
        struct Candidate: Decodable {
            var content: Content?
            var finishReason: String?
        }
        struct UsageMetadata: Decodable {
            var promptTokenCount: Int
            /// Gemini leaves out counts that are zero.
            var candidatesTokenCount: Int?
        }
        var candidates: [Candidate]?
        var usageMetadata: UsageMetadata
    }

    static let versionSegment = "/v1beta"

    /// Model names go into the URL path, so only `[A-Za-z0-9._-]` is allowed
    /// (after an optional `models/` prefix, which is dropped).
    static func path(for model: String) throws(ProviderError) -> String {
        let name = model.hasPrefix("models/") ? String(model.dropFirst("models/".count)) : model
        let allowed = name.utf8.allSatisfy { byte in
            (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
                || byte == 0x2E || byte == 0x5F || byte == 0x2D
        }
        guard !name.isEmpty, allowed, name != ".", name != ".." else {
            throw .rejected(400, "a Gemini model name may only hold letters, digits, '.', '_' and '-'")
        }
        return "/v1beta/models/\(name):generateContent"
    }

    static func authorize(_ headers: inout HTTPHeaders, apiKey: String) {
        headers.replaceOrAdd(name: "x-goog-api-key", value: apiKey)
    }

    static func body(for request: CompletionRequest) throws(ProviderError) -> Data {
        try encode(
            Request(
                contents: [Content(role: "user", parts: [Part(text: request.prompt)])],
                generationConfig: .init(maxOutputTokens: request.maxOutputTokens)))
    }

    /// The text is the first candidate's parts joined; a candidate without
    /// content (blocked, e.g. finish reason SAFETY) is malformed.
    static func completion(from body: [UInt8]) throws(ProviderError) -> Completion {
        let answer = try decode(Answer.self, from: body)
        guard let candidate = answer.candidates?.first else { throw .malformedResponse("candidates is empty") }
        guard let parts = candidate.content?.parts else {
            let reason = candidate.finishReason.map { " (finish reason \(ProviderText.oneLine($0, limit: 40)))" } ?? ""
            throw .malformedResponse("candidates[0] has no content\(reason)")
        }
        return Completion(
            text: parts.compactMap(\.text).joined(),
            inputTokens: try tokens(answer.usageMetadata.promptTokenCount, "usageMetadata.promptTokenCount"),
            outputTokens: try tokens(
                answer.usageMetadata.candidatesTokenCount ?? 0, "usageMetadata.candidatesTokenCount"))
    }
}
