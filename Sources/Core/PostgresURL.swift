import Foundation
import NIOSSL
import PostgresNIO

/// A PostgreSQL URL (`postgres://user[:password]@host[:port]/db?sslmode=…`).
///
/// `sslmode` follows libpq: `disable`, `allow`/`prefer` (TLS when offered),
/// `require` (TLS, no certificate check unless `sslrootcert` is given), `verify-ca` (chain only) and
/// `verify-full` (chain and host name). The default is `prefer`, as in libpq.
/// `sslrootcert`, `sslcert` and `sslkey` are libpq's too (see PostgresURL+TLS).
public struct PostgresURL: Sendable, Hashable, CustomStringConvertible {
    public enum SSLMode: String, Sendable, CaseIterable {
        case disable, allow, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode
    /// A PEM file of the CAs that vouch for the server, in place of the
    /// system's trust store (a private CA, a cloud provider's bundle).
    public var sslRootCert: String?
    /// A client certificate (PEM) and its key (PEM), for servers that ask for one.
    public var sslCert: String?
    public var sslKey: String?

    public init(
        host: String, port: Int, user: String, password: String?, database: String, sslMode: SSLMode,
        sslRootCert: String? = nil, sslCert: String? = nil, sslKey: String? = nil
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.sslMode = sslMode
        self.sslRootCert = sslRootCert
        self.sslCert = sslCert
        self.sslKey = sslKey
    }

    public init(_ string: String) throws(PostgresURLError) {
        guard let components = URLComponents(string: string),
            let scheme = components.scheme, ["postgres", "postgresql"].contains(scheme)
        else { throw .malformed("expected postgres://user[:password]@host[:port]/database") }
        guard let host = components.host, !host.isEmpty else { throw .malformed("the URL has no host") }
        guard let user = components.user, !user.isEmpty else { throw .malformed("the URL has no user name") }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty else { throw .malformed("the URL names no database") }
        var sslMode = SSLMode.prefer
        var files: [String: String] = [:]
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let value = item.value, let mode = SSLMode(rawValue: value) else {
                    throw .malformed("sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full")
                }
                sslMode = mode
            case "sslrootcert", "sslcert", "sslkey":
                guard let value = item.value, !value.isEmpty else { throw .malformed("\(item.name) needs a file path") }
                files[item.name] = value
            default:
                continue
            }
        }
        self.init(
            host: host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host,
            port: components.port ?? 5432,
            user: user,
            password: components.password,
            database: database.removingPercentEncoding ?? database,
            sslMode: sslMode,
            sslRootCert: files["sslrootcert"],
            sslCert: files["sslcert"],
            sslKey: files["sslkey"]
        )
        try checkTLSFiles()
    }

    /// The same server and credentials, another database.
    public func with(database: String) -> PostgresURL {
        var copy = self
        copy.database = database
        return copy
    }

    /// The same server and database, another login.
    public func with(user: String, password: String?) -> PostgresURL {
        var copy = self
        copy.user = user
        copy.password = password
        return copy
    }

    /// Whether a session opened with `other` is also a session of this URL's
    /// login on this URL's server (the database may differ).
    public func isSameLogin(as other: PostgresURL) -> Bool {
        host == other.host && port == other.port && user == other.user && password == other.password
            && sslMode == other.sslMode && sslRootCert == other.sslRootCert && sslCert == other.sslCert
            && sslKey == other.sslKey
    }

    /// The URL without its password: safe to store, print and log.
    public var redacted: String { render(includingPassword: false) }
    public var description: String { redacted }

    /// The full URL, password included: for handing to a child process only.
    public var withPassword: String { render(includingPassword: true) }

    private func render(includingPassword: Bool) -> String {
        var components = URLComponents()
        components.scheme = "postgres"
        components.user = user
        if includingPassword { components.password = password }
        components.host = host.contains(":") ? "[\(host)]" : host
        components.port = port
        components.path = "/" + database
        let parameters = [("sslmode", sslMode.rawValue), ("sslrootcert", sslRootCert), ("sslcert", sslCert), ("sslkey", sslKey)]
        // Encoded by hand, so that a file path holding `&`, `=`, `#` or `+`
        // reads back as it was, whichever parser (ours, libpq's) reads it.
        components.percentEncodedQuery = parameters.compactMap { name, value in
            value.map { "\(name)=\($0.addingPercentEncoding(withAllowedCharacters: Self.queryValueCharacters) ?? $0)" }
        }.joined(separator: "&")
        return components.string ?? "postgres://\(host):\(port)/\(database)"
    }

    private static let queryValueCharacters = CharacterSet.urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=+#"))

    public func connectionConfiguration() throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        switch sslMode {
        case .disable: tls = .disable
        case .allow, .prefer: tls = .prefer(try NIOSSLContext(configuration: tlsConfiguration()))
        case .require, .verifyCA, .verifyFull: tls = .require(try NIOSSLContext(configuration: tlsConfiguration()))
        }
        var configuration = PostgresConnection.Configuration(
            host: host, port: port, username: user, password: password, database: database, tls: tls)
        configuration.options.connectTimeout = .seconds(5)
        return configuration
    }

    public func clientConfiguration() -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS
        switch sslMode {
        case .disable: tls = .disable
        case .allow, .prefer: tls = .prefer(tlsConfiguration())
        case .require, .verifyCA, .verifyFull: tls = .require(tlsConfiguration())
        }
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: user, password: password, database: database, tls: tls)
        configuration.options.connectTimeout = .seconds(5)
        return configuration
    }
}

public enum PostgresURLError: OperatorError {
    case malformed(String)
    /// `parameter` names a file that cannot serve: missing, unreadable, not PEM, too open.
    case unusableFile(parameter: String, path: String, reason: String)
    /// One of `sslcert` and `sslkey` without the other.
    case incompleteClientCertificate(missing: String)

    public var httpStatus: Int { 400 }
    public var code: String { "invalid_database_url" }
    public var message: String {
        switch self {
        case .malformed(let why): "invalid PostgreSQL URL: \(why)"
        case .unusableFile(let parameter, let path, let reason): "invalid PostgreSQL URL: \(parameter) \(path): \(reason)"
        case .incompleteClientCertificate(let missing):
            "invalid PostgreSQL URL: sslcert and sslkey go together (\(missing) is missing)"
        }
    }
}
