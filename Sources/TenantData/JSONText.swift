/// Writes JSON by hand for the hot read paths, where JSONEncoder's reflection
/// cost more than the query did. Strings are escaped per RFC 8259; `raw`
/// fragments must already be JSON (jsonb text from PostgreSQL is).
public struct JSONText: Sendable {
    public private(set) var text = ""

    public init() {}

    public mutating func raw(_ fragment: String) {
        text += fragment
    }

    public mutating func string(_ value: String) {
        text += "\""
        if !value.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) {
            text += value
            text += "\""
            return
        }
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\n": text += "\\n"
            case "\r": text += "\\r"
            case "\t": text += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                text += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: text.unicodeScalars.append(scalar)
            }
        }
        text += "\""
    }

    public mutating func optionalString(_ value: String?) {
        if let value { string(value) } else { text += "null" }
    }

    public mutating func strings(_ values: [String]) {
        text += "["
        for (index, value) in values.enumerated() {
            if index > 0 { text += "," }
            string(value)
        }
        text += "]"
    }

    /// `"key":` after a comma unless it is the object's first field.
    public mutating func key(_ name: String, first: Bool = false) {
        if !first { text += "," }
        string(name)
        text += ":"
    }
}
