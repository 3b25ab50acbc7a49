import ControlPlane
import Core
import Foundation
import Logging
import PostgresNIO

/// A tenant's identity for work done on its behalf without an API key (the run
/// engine): read from the control database by tenant id, role password opened.
public struct TenantDirectory: Sendable {
    private let control: ControlPool
    private let secrets: SecretBox

    public init(control: ControlPool, secrets: SecretBox) {
        self.control = control
        self.secrets = secrets
    }

    /// The tenant's identity while it is active; `notServing`/`suspended` otherwise.
    public func identity(of tenantID: String, actor: String) async throws -> TenantIdentity {
        let found: TenantDatabase?
        do {
            found = try await control.run { try await $0.tenantDatabase(tenantID) }
        } catch {
            throw TenantAccessError.controlUnavailable
        }
        guard let found else { throw TenantAccessError.notServing(.deleted) }
        return try TenantIdentity(serving: found, keyID: actor, secrets: secrets)
    }
}
