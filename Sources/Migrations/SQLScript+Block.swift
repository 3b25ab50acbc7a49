extension SQLScript {
    /// The statements, then `recording`, as one `DO` block: one message and
    /// one implicit transaction instead of BEGIN, each statement, the record
    /// and COMMIT, each a round trip on a backend whose caches are cold.
    /// postgres-nio 1.33 has no simple-query protocol, and the extended
    /// protocol refuses two statements in one message; `EXECUTE` of each
    /// statement's text runs it as it was written (its result discarded).
    ///
    /// nil when the delimiter occurs in the text, which the block could not
    /// then hold.
    func block(recording: String) -> String? {
        let body = statements.map { "EXECUTE \(Self.literal($0.text));" } + [recording]
        let text = body.joined(separator: "\n")
        guard !text.contains(Self.delimiter) else { return nil }
        return "DO \(Self.delimiter)\nBEGIN\n\(text)\nEND\n\(Self.delimiter)"
    }

    static let delimiter = "$tenantplane_migration$"

    /// An escape-string literal: it reads the same whatever
    /// `standard_conforming_strings` says.
    static func literal(_ text: String) -> String {
        "E'" + text.replacing("\\", with: "\\\\").replacing("'", with: "''") + "'"
    }
}
