import Foundation
import NIOHTTP1

/// One provider API's request and answer shapes.
protocol WireFormat {
    /// The API version segment the paths start with (`/v1`); a base URL that
    /// already ends with it does not get it twice.
    static var versionSegment: String { get }
    /// The path after the base URL, version segment included.
    static func path(for model: String) throws(ProviderError) -> String
    /// Adds the authentication (and any version) headers.
    static func authorize(_ headers: inout HTTPHeaders, apiKey: String)
    static func body(for request: CompletionRequest) throws(ProviderError) -> Data
    static func completion(from body: [UInt8]) throws(ProviderError) -> Completion
}

extension WireFormat {
    static func encode(_ value: some Encodable) throws(ProviderError) -> Data {
        do {
            return try JSONEncoder().encode(value)
        } catch {
            throw .rejected(400, "the request could not be encoded as JSON")
        }
    }

    /// Decodes an answer, describing a mismatch by where it is (never by the
    /// answer's content).
    static func decode<Answer: Decodable>(_ type: Answer.Type, from body: [UInt8]) throws(ProviderError) -> Answer {
        do {
            return try JSONDecoder().decode(type, from: Data(body))
        } catch let error as DecodingError {
            throw .malformedResponse(describe(error))
        } catch {
            throw .malformedResponse("the answer is not JSON")
        }
    }

    static func tokens(_ count: Int, _ field: String) throws(ProviderError) -> Int {
        guard count >= 0 else { throw .malformedResponse("\(field) is negative") }
        return count
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            var result = ""
            for key in keys {
                if let index = key.intValue {
                    result += "[\(index)]"
                } else {
                    result += result.isEmpty ? key.stringValue : ".\(key.stringValue)"
                }
            }
            return result.isEmpty ? "the top level" : result
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "missing \(path(context.codingPath + [key]))"
        case .valueNotFound(_, let context):
            return "\(path(context.codingPath)) is null"
        case .typeMismatch(_, let context):
            return "\(path(context.codingPath)) has the wrong type"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "the answer is not JSON" : "\(path(context.codingPath)) is invalid"
        @unknown default:
            return "the answer does not have the expected shape"
        }
    }
}

/// The one user message all styles send.
struct ChatMessage: Encodable {
    var role = "user"
    var content: String
}
