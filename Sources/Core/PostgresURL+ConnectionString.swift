extension PostgresURL {
    /// The URL as a libpq keyword/value connection string, password
    /// included: `host='…' port='…' dbname='…' user='…' password='…'
    /// sslmode='…'` and the TLS files when set, the form a subscription's
    /// `CONNECTION` takes. `startupOptions` becomes libpq's `options`
    /// (`-c name=value …`).
    ///
    /// It holds the password: hand it only to what connects with it. Inside
    /// SQL it is still a value to quote as a string literal.
    public func libpqConnectionString(startupOptions: String? = nil) -> String {
        let parameters: [(String, String?)] = [
            ("host", host), ("port", String(port)), ("dbname", database), ("user", user), ("password", password),
            ("sslmode", sslMode.rawValue), ("sslrootcert", sslRootCert), ("sslcert", sslCert), ("sslkey", sslKey),
            ("options", startupOptions),
        ]
        return parameters.compactMap { keyword, value in value.map { "\(keyword)=\(Self.libpqQuoted($0))" } }
            .joined(separator: " ")
    }

    /// libpq's quoting of a keyword/value value: in single quotes, with `\`
    /// and `'` escaped by a backslash. Every value is quoted, so an empty one
    /// or one holding spaces stays one value.
    static func libpqQuoted(_ value: String) -> String {
        var quoted = "'"
        for character in value {
            if character == "\\" || character == "'" { quoted.append("\\") }
            quoted.append(character)
        }
        return quoted + "'"
    }
}
