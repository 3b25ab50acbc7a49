import Core
import Foundation
import TenantData

/// A prompt's `{{name}}` placeholders, filled from the run's input (top-level
/// fields) and the outputs of earlier steps (by step name).
enum PromptTemplate {
    static func render(_ content: String, input: JSONValue, outputs: [String: String]) throws(StepFailure) -> String {
        var fields: [String: JSONValue] = [:]
        if case .object(let object) = input { fields = object }
        var rendered = ""
        var rest = content[...]
        while let open = rest.range(of: "{{") {
            rendered += rest[..<open.lowerBound]
            let after = rest[open.upperBound...]
            guard let close = after.range(of: "}}") else {
                rendered += rest[open.lowerBound...]
                rest = rest[rest.endIndex...]
                break
            }
            let name = after[..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            if let output = outputs[name] {
                rendered += output
            } else if let value = fields[name] {
                rendered += text(of: value)
            } else {
                throw .unknownVariable(name.count <= 64 ? name : String(name.prefix(64)) + "…")
            }
            rest = after[close.upperBound...]
        }
        rendered += rest
        return rendered
    }

    /// Strings as they are; anything else as compact JSON.
    static func text(of value: JSONValue) -> String {
        if case .string(let string) = value { return string }
        return (try? String(decoding: JSONCoding.stable.encode(value), as: UTF8.self)) ?? ""
    }
}
