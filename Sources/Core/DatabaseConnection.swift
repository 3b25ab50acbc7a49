import Logging
import NIOSSL
import PostgresNIO

/// One-shot work against a database (CLI commands, provisioning, migrations)
/// opens a plain connection: it fails at once when the server is down, where a
/// pool would keep retrying for a minute before giving up.
public enum DatabaseConnection {
    /// `startupOptions` is the session's `options` startup parameter
    /// (`-c name=value …`).
    public static func open(
        _ url: PostgresURL, startupOptions: String? = nil, logger: Logger
    ) async throws(DatabaseError) -> PostgresConnection {
        var configuration: PostgresConnection.Configuration
        do {
            configuration = try url.connectionConfiguration()
        } catch {
            throw .unreachable(server: url.redacted, reason: "TLS set-up failed: \(error)")
        }
        if let startupOptions {
            configuration.options.additionalStartupParameters = [("options", startupOptions)]
        }
        do {
            return try await PostgresConnection.connect(
                configuration: configuration, id: Int.random(in: 1...Int.max), logger: logger)
        } catch {
            throw DatabaseError(connecting: error, to: url)
        }
    }

    /// Runs `body` on a fresh connection and closes it afterwards, whatever happens.
    @discardableResult
    public static func with<Result: Sendable>(
        _ url: PostgresURL,
        startupOptions: String? = nil,
        logger: Logger,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let connection = try await open(url, startupOptions: startupOptions, logger: logger)
        do {
            let result = try await body(connection)
            try? await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }
}

extension DatabaseConnection {
    /// Runs `body` in the tenant's database, logged in as the tenant's role,
    /// with the pinned settings of every tenant session.
    @discardableResult
    public static func with<Result: Sendable>(
        _ login: TenantLogin,
        logger: Logger,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await with(login.url, startupOptions: TenantLogin.startupOptions(), logger: logger, body)
    }
}

extension PostgresConnection {
    /// `LiveConnection.transaction` on a connection of one's own.
    public func transaction<Result>(
        logger: Logger,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await LiveConnection(self).transaction(logger: logger) { try await body($0.underlying) }
    }

    /// `LiveConnection.withAdvisoryLock` on a connection of one's own.
    public func withAdvisoryLock<Result>(
        named name: String,
        logger: Logger,
        _ body: () async throws -> Result
    ) async throws -> Result {
        try await LiveConnection(self).withAdvisoryLock(named: name, logger: logger, body)
    }
}

extension Error {
    /// The SQLSTATE of a server error, if this is one.
    public var sqlState: String? {
        (self as? PSQLError)?.serverInfo?[.sqlState]
    }

    /// The server's own message for a server error, if this is one.
    public var serverMessage: String? {
        (self as? PSQLError)?.serverInfo?[.message]
    }
}

/// Failures to reach or use a PostgreSQL server, as an operator sees them.
public enum DatabaseError: OperatorError {
    case unreachable(server: String, reason: String)
    /// The TLS handshake refused the server (or the server refused TLS).
    case tlsRefused(server: String, reason: String)
    case authenticationFailed(server: String)
    case databaseMissing(server: String)
    case server(sqlState: String, message: String)

    init(connecting error: any Error, to url: PostgresURL) {
        let server = "\(url.host):\(url.port)"
        if let state = error.sqlState {
            switch state {
            case "28P01", "28000": self = .authenticationFailed(server: server)
            case "3D000": self = .databaseMissing(server: server)
            default: self = .server(sqlState: state, message: error.serverMessage ?? "server error")
            }
        } else if let reason = Self.tlsRefusal(error, url: url) {
            self = .tlsRefused(server: server, reason: reason)
        } else {
            self = .unreachable(server: server, reason: Self.describe(error))
        }
    }

    /// What the handshake found wrong, in the URL's terms, when TLS is what
    /// failed: the raw BoringSSL error names neither the CA file nor the host.
    static func tlsRefusal(_ error: any Error, url: PostgresURL) -> String? {
        if let psql = error as? PSQLError, psql.code == .sslUnsupported {
            return "the server does not offer TLS, which sslmode=\(url.sslMode.rawValue) requires"
        }
        switch (error as? PSQLError)?.underlying ?? error {
        case let failure as NIOSSLExtraError where failure == .failedToValidateHostname:
            return "its certificate does not name \(url.host) (sslmode=verify-full checks the host name)"
        case NIOSSLError.handshakeFailed(let failure) where "\(failure)".contains("CERTIFICATE_VERIFY_FAILED"):
            let trusted = url.sslRootCert.map { "a CA in sslrootcert \($0)" } ?? "a CA of the system's trust store"
            return "its certificate is not signed by \(trusted)"
        default:
            return nil
        }
    }

    static func describe(_ error: any Error) -> String {
        if let psql = error as? PSQLError {
            if let underlying = psql.underlying { return String(describing: underlying) }
            return psql.code.description
        }
        return String(describing: error)
    }

    public var httpStatus: Int {
        switch self {
        case .unreachable, .tlsRefused, .authenticationFailed, .databaseMissing: 503
        case .server: 500
        }
    }

    public var code: String {
        switch self {
        case .unreachable: "database_unreachable"
        case .tlsRefused: "database_tls_refused"
        case .authenticationFailed: "database_authentication_failed"
        case .databaseMissing: "database_missing"
        case .server: "database_error"
        }
    }

    public var message: String {
        switch self {
        case .unreachable(let server, let reason): "cannot reach PostgreSQL at \(server): \(reason)"
        case .tlsRefused(let server, let reason): "TLS to PostgreSQL at \(server) refused: \(reason)"
        case .authenticationFailed(let server): "PostgreSQL at \(server) refused the login (wrong user or password)"
        case .databaseMissing(let server): "the database does not exist on PostgreSQL at \(server)"
        case .server(let state, let message): "PostgreSQL error \(state): \(message)"
        }
    }
}

