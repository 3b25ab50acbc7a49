import Foundation
import NIOSSL
import PostgresNIO

/// A PostgreSQL URL (`postgres://user[:password]@host[:port]/db?sslmode=…`).
///
/// `sslmode` follows libpq: `disable`, `allow`/`prefer` (TLS when offered),
/// `require` (TLS, no certificate check), `verify-ca` (chain only) and
/// `verify-full` (chain and host name). The default is `prefer`, as in libpq.
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

    public init(host: String, port: Int, user: String, password: String?, database: String, sslMode: SSLMode) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.sslMode = sslMode
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
        for item in components.queryItems ?? [] where item.name == "sslmode" {
            guard let value = item.value, let mode = SSLMode(rawValue: value) else {
                throw .malformed("sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full")
            }
            sslMode = mode
        }
        self.init(
            host: host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host,
            port: components.port ?? 5432,
            user: user,
            password: components.password,
            database: database.removingPercentEncoding ?? database,
            sslMode: sslMode
        )
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
            && sslMode == other.sslMode
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
        components.queryItems = [URLQueryItem(name: "sslmode", value: sslMode.rawValue)]
        return components.string ?? "postgres://\(host):\(port)/\(database)"
    }

    func tlsConfiguration() -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        switch sslMode {
        case .verifyFull: break
        case .verifyCA: tls.certificateVerification = .noHostnameVerification
        default: tls.certificateVerification = .none
        }
        return tls
    }

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

    public var httpStatus: Int { 400 }
    public var code: String { "invalid_database_url" }
    public var message: String {
        switch self {
        case .malformed(let why): "invalid PostgreSQL URL: \(why)"
        }
    }
}
