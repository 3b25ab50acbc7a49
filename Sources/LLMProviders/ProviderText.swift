/// Turns text from a provider's answer into something fit for an error
/// message: one line, short, and without the API key.
enum ProviderText {
    /// The most characters of a provider's explanation an error keeps.
    static let detailLimit = 200

    /// `text` on one line (control characters and runs of whitespace become
    /// one space), at most `limit` characters, `…` marking a cut.
    static func oneLine(_ text: String, limit: Int) -> String {
        var result = ""
        var count = 0
        var pendingSpace = false
        for character in text {
            if character.isWhitespace
                || character.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
            {
                pendingSpace = !result.isEmpty
                continue
            }
            if pendingSpace {
                guard count < limit else { return result + "…" }
                result.append(" ")
                count += 1
                pendingSpace = false
            }
            guard count < limit else { return result + "…" }
            result.append(character)
            count += 1
        }
        return result
    }

    /// `text` with the secret, and every run of at least 8 of its characters
    /// (the partly masked keys some providers echo back), replaced by
    /// `[redacted]`. A secret shorter than 8 is only redacted whole.
    static func redacting(_ secret: String?, in text: String) -> String {
        guard let secret, !secret.isEmpty else { return text }
        let key = Array(secret.unicodeScalars)
        let scalars = Array(text.unicodeScalars)
        let minimum = min(8, key.count)
        var output = String.UnicodeScalarView()
        var index = 0
        while index < scalars.count {
            var longest = 0
            for start in key.indices where key[start] == scalars[index] {
                var length = 0
                while start + length < key.count, index + length < scalars.count,
                    key[start + length] == scalars[index + length]
                {
                    length += 1
                }
                longest = max(longest, length)
            }
            if longest >= minimum {
                output.append(contentsOf: "[redacted]".unicodeScalars)
                index += longest
            } else {
                output.append(scalars[index])
                index += 1
            }
        }
        return String(output)
    }

    /// The explanation in a provider's error body: `error.message` (OpenAI,
    /// Anthropic, Gemini), `error` as a string, or `message`; else the body as
    /// text. Redacted, on one line, at most `detailLimit` characters.
    static func errorDetail(from body: [UInt8], status: Int, apiKey: String?) -> String {
        let raw: String
        if let explained = ErrorBody.explanation(in: body) {
            raw = explained
        } else if let text = String(validating: body.prefix(4096), as: UTF8.self), !text.isEmpty {
            raw = text
        } else {
            raw = "no explanation (HTTP \(status))"
        }
        // Redact before the final cut, so the cut cannot leave a piece of the
        // key behind too short to recognise; normalise to a bounded line first
        // to bound the work.
        let normalized = oneLine(raw, limit: 1_000)
        let detail = oneLine(redacting(apiKey, in: normalized), limit: detailLimit)
        return detail.isEmpty ? "no explanation (HTTP \(status))" : detail
    }
}
