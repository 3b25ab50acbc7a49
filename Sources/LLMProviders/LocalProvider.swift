import Core
import Crypto

/// The built-in offline provider: no network, no key, and the same (model,
/// prompt) always gives the same answer —
///
///     [model] <the first 200 characters of the prompt>
///     digest: <first 12 hex digits of sha256(model NUL prompt)>
///
/// Tokens are counted as whitespace-separated words: the prompt's (at least
/// one) in, the answer's out.
enum LocalProvider {
    static let echoedCharacters = 200

    static func complete(_ request: CompletionRequest) -> Completion {
        let digest = SHA256.hash(data: Array(request.model.utf8) + [0] + Array(request.prompt.utf8))
        let hex = Hex.string(digest.prefix(6))
        let text = "[\(request.model)] \(request.prompt.prefix(echoedCharacters))\ndigest: \(hex)"
        return Completion(
            text: text, inputTokens: max(1, words(in: request.prompt)), outputTokens: words(in: text))
    }

    static func words(in text: String) -> Int {
        text.split(whereSeparator: \.isWhitespace).count
    }
}
