import Core
import Foundation

/// What `output.json` holds for a step: the text and where it came from.
struct OutputDocument: Codable, Equatable {
    struct Usage: Codable, Equatable {
        let inputTokens: Int
        let outputTokens: Int

        enum CodingKeys: String, CodingKey {
            case inputTokens = "input_tokens"
            case outputTokens = "output_tokens"
        }
    }

    let step: String
    let provider: String
    let model: String
    let text: String
    let usage: Usage

    func encoded() throws -> [UInt8] {
        Array(try JSONCoding.stable.encode(self))
    }

    /// The first line, cut to 200 characters: the `summary` the API shows.
    var summary: String {
        let firstLine = text.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        return firstLine.count <= 200 ? firstLine : String(firstLine.prefix(199)) + "…"
    }
}
