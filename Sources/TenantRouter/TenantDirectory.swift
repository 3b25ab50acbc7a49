import ControlPlane
import Core
import Foundation
import Logging
import PostgresNIO

/// A tenant's identity for work done on its behalf without an API key (the run
/// engine): read from the control database by tenant id, role password opened.
public struct TenantDirectory: Sendable {
    private let control: PostgresClient
    private let secrets: SecretBox
    private let wait: Duration
    private let logger: Logger

    public init(control: PostgresClient, secrets: SecretBox, wait: Duration, logger: Logger) {
        self.control = control
        self.secrets = secrets
        self.wait = wait
        self.logger = logger
    }

    /// The tenant's identity while it is active; `notServing`/`suspended` otherwise.
    public func identity(of tenantID: String, actor: String) async throws -> TenantIdentity {
        let control = self.control
        let logger = self.logger
        let found: (status: TenantStatus, databaseUrl: String, sealedPassword: Data?)?
        do {
            found = try await withTimeout(wait) {
                try await control.withConnection { connection in
                    try await ControlStore(connection: connection, logger: logger).tenantDatabase(tenantID)
                }
            }
        } catch {
            throw TenantAccessError.controlUnavailable
        }
        guard let found else { throw TenantAccessError.notServing(.deleted) }
        switch found.status {
        case .active: break
        case .suspended: throw TenantAccessError.suspended
        default: throw TenantAccessError.notServing(found.status)
        }
        guard let sealed = found.sealedPassword, let url = try? PostgresURL(found.databaseUrl) else {
            throw TenantAccessError.notServing(found.status)
        }
        let password = try secrets.open(sealed, owner: tenantID)
        return TenantIdentity(
            tenantID: tenantID, keyID: actor, status: .active, database: url.with(user: url.user, password: password))
    }
}
