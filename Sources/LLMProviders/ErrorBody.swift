import Foundation

/// The error bodies providers send: `{"error": {"message": …}}` (OpenAI,
/// Anthropic, Gemini), `{"error": "…"}` or `{"message": "…"}`.
struct ErrorBody: Decodable {
    enum Field: Decodable {
        case object(message: String?)
        case text(String)

        private struct Object: Decodable { var message: String? }

        init(from decoder: any Decoder) throws {
            if let text = try? decoder.singleValueContainer().decode(String.self) {
                self = .text(text)
            } else {
                self = .object(message: try Object(from: decoder).message)
            }
        }
    }

    var error: Field?
    var message: String?

    /// The provider's explanation, when the body is JSON that has one.
    static func explanation(in body: [UInt8]) -> String? {
        guard let decoded = try? JSONDecoder().decode(ErrorBody.self, from: Data(body)) else { return nil }
        switch decoded.error {
        case .object(let message?): return message
        case .text(let message): return message
        default: return decoded.message
        }
    }
}
